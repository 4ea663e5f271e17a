"""Options, policy overrides and the start-up checks of ims-api."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

from ims import conf as ims_conf
from ims import errors
from ims.cmd import api as cmd_api


def _opts():
    (entry,) = [
        ep for ep in importlib.metadata.entry_points(group="oslo.config.opts") if ep.name == "ims"
    ]
    return {group: {opt.name for opt in opts} for group, opts in entry.load()()}


def test_option_names_are_pinned():
    opts = _opts()
    assert {
        "state_path",
        "auth_strategy",
        "bind_host",
        "bind_port",
        "enabled_backends",
        "image_size_cap",
        "user_storage_quota",
        "image_member_quota",
        "image_property_quota",
        "image_tag_quota",
        "image_location_quota",
        "hashing_algorithm",
        "enabled_import_methods",
    } <= opts[None]
    assert {"connection", "auto_migrate"} <= opts["database"]
    assert {"workers", "threads", "timeout", "cert_file", "key_file"} <= opts["wsgi"]
    assert {"default_backend", "filesystem_store_datadir"} <= opts["glance_store"]
    assert {"require_image_format_match", "disk_formats"} <= opts["image_format"]
    assert "s3_store_bucket" in opts["s3_store_example"]
    assert "swift_store_container" in opts["swift_store_example"]


def test_defaults_are_embedded():
    conf = ims_conf.load([])
    assert conf.state_path == "./ims-data"
    assert conf.database.connection == "sqlite:///./ims-data/ims.sqlite"
    assert (conf.bind_host, conf.bind_port) == ("127.0.0.1", 9292)
    assert conf.auth_strategy == "noauth"


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::"])
def test_noauth_refuses_public_bind(host):
    conf = ims_conf.load([])
    conf.set_override("bind_host", host)
    with pytest.raises(errors.ConfigError, match="noauth"):
        cmd_api.check_startup(conf)
    conf.set_override("noauth_allow_remote", True)
    cmd_api.check_startup(conf)


def test_keystone_may_bind_anywhere():
    conf = ims_conf.load([])
    conf.set_override("bind_host", "0.0.0.0")
    conf.set_override("auth_strategy", "keystone")
    cmd_api.check_startup(conf)


def test_ims_api_reports_bad_config(tmp_path):
    path = tmp_path / "ims.conf"
    path.write_text(f"[DEFAULT]\nstate_path = {tmp_path}\nbind_host = 0.0.0.0\n")
    proc = subprocess.run(
        [sys.executable, "-m", "ims.cmd.api", "--config-file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "noauth" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_store_config_stops_start(tmp_path):
    path = tmp_path / "ims.conf"
    path.write_text(
        f"[DEFAULT]\nstate_path = {tmp_path}\nenabled_backends = a:nosuchdriver\n"
        "[glance_store]\ndefault_backend = a\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "ims.cmd.api", "--config-file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "nosuchdriver" in proc.stderr


def test_reserved_store_id_is_refused(make_app):
    with pytest.raises(errors.ConfigError, match="reserved"):
        make_app(
            conf_text="[DEFAULT]\nenabled_backends = os_glance_x:filesystem\n"
            "[glance_store]\ndefault_backend = os_glance_x\n"
        )


def test_policy_file_overrides(clients, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text('"add_image": "role:admin"\n')
    api = clients(conf_text=f"[oslo_policy]\npolicy_file = {policy}\n")
    assert api["owner"].post("/v2/images", {"name": "x"}).status_code == 403
    assert api["admin"].post("/v2/images", {"name": "x"}).status_code == 201


def test_manage_db_sync_and_version(tmp_path):
    env_conf = tmp_path / "ims.conf"
    env_conf.write_text(f"[database]\nconnection = sqlite:///{tmp_path}/x.sqlite\n")
    run = [sys.executable, "-m", "ims.cmd.manage", "--config-file", str(env_conf)]
    out = subprocess.run([*run, "db", "version"], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "none", out.stderr
    out = subprocess.run([*run, "db", "sync"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "Schema at revision" in out.stdout
    out = subprocess.run([*run, "db", "version"], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() not in ("", "none")
