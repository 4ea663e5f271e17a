"""The real OpenStack clients drive a real ims-api through an image's whole life.

python-glanceclient's ``glance`` CLI, openstackclient's ``openstack image``
and openstacksdk each create, upload (raw and qcow2), download (md5 and
sha512 checked against the file), update, tag, share and accept,
deactivate/reactivate and delete, once against ims-api with a real Keystone
(tokens, catalog) and once in noauth mode (no token at all).

The CLIs run as subprocesses with a clean environment and a closed stdin
(both CLIs read image data from a non-terminal stdin).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.functional.servers import REGION, IMSServer, KeystoneServer, clean_env

CLI_TIMEOUT = 180
QCOW2_VIRTUAL_SIZE = 4 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class ImageFile:
    path: Path
    disk_format: str
    md5: str
    sha512: str
    size: int


def _describe(path: Path, disk_format: str) -> ImageFile:
    data = path.read_bytes()
    return ImageFile(
        path,
        disk_format,
        hashlib.md5(data).hexdigest(),
        hashlib.sha512(data).hexdigest(),
        len(data),
    )


@pytest.fixture(scope="module")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ImageFile]:
    """A small raw disk and a qcow2 with real data in it, made by qemu tools."""
    if not (shutil.which("qemu-img") and shutil.which("qemu-io")):
        if os.environ.get("CI"):
            pytest.fail("qemu-img/qemu-io missing (apt-get install qemu-utils)")
        pytest.skip("qemu-img/qemu-io missing")
    work = tmp_path_factory.mktemp("images")
    raw = work / "disk.raw"
    # Not a multiple of 512 and not all zero: what arrives must be these bytes.
    raw.write_bytes(os.urandom(1024 * 1024) + b"tail" * 300)
    qcow2 = work / "disk.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-f", "qcow2", str(qcow2), str(QCOW2_VIRTUAL_SIZE)],
        check=True,
        capture_output=True,
    )
    for pattern, offset in (("0xab", "0"), ("0x5c", "1M")):
        subprocess.run(
            ["qemu-io", "-c", f"write -P {pattern} {offset} 64k", str(qcow2)],
            check=True,
            capture_output=True,
        )
    return {"raw": _describe(raw, "raw"), "qcow2": _describe(qcow2, "qcow2")}


def _hashes(path: Path) -> tuple[str, str]:
    data = path.read_bytes()
    return hashlib.md5(data).hexdigest(), hashlib.sha512(data).hexdigest()


def _bin(name: str) -> str:
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} CLI not installed")
    return found


def _run_cli(cmd: list[str]) -> str:
    """Run a CLI with a clean environment and a closed stdin; return stdout."""
    result = subprocess.run(
        cmd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        # Closed, not /dev/null: both CLIs read image data from a non-tty stdin.
        preexec_fn=lambda: os.close(0),
    )
    if result.returncode:
        shown = " ".join(
            "***" if i and cmd[i - 1] == "--os-password" else arg for i, arg in enumerate(cmd)
        )
        raise AssertionError(
            f"{shown!r} exited {result.returncode}\nstdout:\n{result.stdout}\n"
            f"stderr:\n{result.stderr[-4000:]}"
        )
    return result.stdout


def parse_glance_table(text: str) -> dict[str, str]:
    """Read glance's two-column Property/Value table; wrapped values are joined."""
    values: dict[str, str] = {}
    last = None
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or cells == ["Property", "Value"]:
            continue
        key, value = cells
        if key:
            values[key] = value
            last = key
        elif last:
            values[last] += value
    return values


def parse_glance_rows(text: str) -> list[list[str]]:
    """Read the data rows of a glance list table (header row dropped)."""
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("|")
    ]
    return rows[1:]


class Glance:
    """python-glanceclient's ``glance`` CLI."""

    def __init__(self, args: list[str]) -> None:
        self.cmd = [_bin("glance"), "--os-image-api-version", "2", *args]

    def _table(self, *args: str) -> dict[str, str]:
        return parse_glance_table(_run_cli([*self.cmd, *args]))

    def create(self, name: str, disk_format: str) -> str:
        shown = self._table(
            "image-create",
            "--name",
            name,
            "--disk-format",
            disk_format,
            "--container-format",
            "bare",
        )
        assert shown["status"] == "queued", shown
        return shown["id"]

    def upload(self, image_id: str, path: Path) -> None:
        _run_cli([*self.cmd, "image-upload", "--file", str(path), image_id])

    def show(self, image_id: str) -> dict[str, Any]:
        shown: dict[str, Any] = self._table("image-show", image_id)
        shown["tags"] = json.loads(shown["tags"].replace("'", '"'))
        return shown

    def download(self, image_id: str, dest: Path) -> None:
        _run_cli([*self.cmd, "image-download", "--file", str(dest), image_id])

    def update(self, image_id: str, name: str, key: str, value: str) -> None:
        self._table("image-update", "--name", name, "--property", f"{key}={value}", image_id)

    def tag(self, image_id: str, tag: str) -> None:
        _run_cli([*self.cmd, "image-tag-update", image_id, tag])

    def set_shared(self, image_id: str) -> None:
        self._table("image-update", "--visibility", "shared", image_id)

    def add_member(self, image_id: str, project: str) -> None:
        _run_cli([*self.cmd, "member-create", image_id, project])

    def accept(self, image_id: str, project: str) -> None:
        _run_cli([*self.cmd, "member-update", image_id, project, "accepted"])

    def members(self, image_id: str) -> dict[str, str]:
        rows = parse_glance_rows(_run_cli([*self.cmd, "member-list", "--image-id", image_id]))
        return {row[1]: row[2] for row in rows}

    def visible(self) -> set[str]:
        return {row[0] for row in parse_glance_rows(_run_cli([*self.cmd, "image-list"]))}

    def deactivate(self, image_id: str) -> None:
        _run_cli([*self.cmd, "image-deactivate", image_id])

    def reactivate(self, image_id: str) -> None:
        _run_cli([*self.cmd, "image-reactivate", image_id])

    def delete(self, image_id: str) -> None:
        _run_cli([*self.cmd, "image-delete", image_id])


class OpenStack:
    """openstackclient's ``openstack image ...`` commands.

    ``image create --file`` creates and uploads in one command; there is no
    separate upload command for an existing image.
    """

    combined_upload = True

    def __init__(self, args: list[str]) -> None:
        self.cmd = [_bin("openstack"), *args]

    def _json(self, *args: str) -> Any:
        return json.loads(_run_cli([*self.cmd, *args, "-f", "json"]))

    def create_with_data(self, name: str, image: ImageFile) -> str:
        created = self._json(
            "image",
            "create",
            "--disk-format",
            image.disk_format,
            "--container-format",
            "bare",
            "--file",
            str(image.path),
            name,
        )
        return str(created["id"])

    def show(self, image_id: str) -> dict[str, Any]:
        shown = self._json("image", "show", image_id)
        # openstackclient folds the extra properties into "properties".
        props = shown.pop("properties", {}) or {}
        return {**props, **shown}

    def download(self, image_id: str, dest: Path) -> None:
        _run_cli([*self.cmd, "image", "save", "--file", str(dest), image_id])

    def update(self, image_id: str, name: str, key: str, value: str) -> None:
        _run_cli(
            [*self.cmd, "image", "set", "--name", name, "--property", f"{key}={value}", image_id]
        )

    def tag(self, image_id: str, tag: str) -> None:
        _run_cli([*self.cmd, "image", "set", "--tag", tag, image_id])

    def set_shared(self, image_id: str) -> None:
        _run_cli([*self.cmd, "image", "set", "--shared", image_id])

    def add_member(self, image_id: str, project: str) -> None:
        self._json("image", "add", "project", image_id, project)

    def accept(self, image_id: str, project: str) -> None:
        # The member accepts for its own project (taken from its token).
        _run_cli([*self.cmd, "image", "set", "--accept", image_id])

    def members(self, image_id: str) -> dict[str, str]:
        rows = self._json("image", "member", "list", image_id)
        return {row["Member ID"]: row["Status"] for row in rows}

    def visible(self) -> set[str]:
        return {row["ID"] for row in self._json("image", "list")}

    def deactivate(self, image_id: str) -> None:
        _run_cli([*self.cmd, "image", "set", "--deactivate", image_id])

    def reactivate(self, image_id: str) -> None:
        _run_cli([*self.cmd, "image", "set", "--activate", image_id])

    def delete(self, image_id: str) -> None:
        _run_cli([*self.cmd, "image", "delete", image_id])


class SDK:
    """openstacksdk's image proxy, in this process."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.image = conn.image

    def create(self, name: str, disk_format: str) -> str:
        created = self.image.create_image(
            name=name, disk_format=disk_format, container_format="bare"
        )
        assert created.status == "queued"
        return str(created.id)

    def upload(self, image_id: str, path: Path) -> None:
        image = self.image.get_image(image_id)
        with open(path, "rb") as data:
            resp = image.upload(self.image, data=data)
        assert resp.status_code == 204, resp.text

    def show(self, image_id: str) -> dict[str, Any]:
        image = self.image.get_image(image_id)
        shown = image.to_dict(computed=False)
        shown.update(image.properties or {})
        shown["checksum"] = image.checksum
        shown["os_hash_algo"] = image.hash_algo
        shown["os_hash_value"] = image.hash_value
        return shown

    def download(self, image_id: str, dest: Path) -> None:
        # openstacksdk verifies the data against the image's checksum itself.
        self.image.download_image(image_id, output=str(dest))

    def update(self, image_id: str, name: str, key: str, value: str) -> None:
        self.image.update_image(image_id, name=name, **{key: value})

    def tag(self, image_id: str, tag: str) -> None:
        self.image.add_tag(image_id, tag)

    def set_shared(self, image_id: str) -> None:
        self.image.update_image(image_id, visibility="shared")

    def add_member(self, image_id: str, project: str) -> None:
        member = self.image.add_member(image_id, member_id=project)
        assert member.status == "pending"

    def accept(self, image_id: str, project: str) -> None:
        member = self.image.update_member(project, image_id, status="accepted")
        assert member.status == "accepted"

    def members(self, image_id: str) -> dict[str, str]:
        return {m.member_id: m.status for m in self.image.members(image_id)}

    def visible(self) -> set[str]:
        return {image.id for image in self.image.images()}

    def deactivate(self, image_id: str) -> None:
        self.image.deactivate_image(image_id)

    def reactivate(self, image_id: str) -> None:
        self.image.reactivate_image(image_id)

    def delete(self, image_id: str) -> None:
        self.image.delete_image(image_id)


def _sdk_keystone(keystone: KeystoneServer, user: str) -> SDK:
    import openstack

    conn = openstack.connect(
        auth=keystone.users[user].auth(keystone.auth_url),
        auth_type="password",
        region_name=REGION,
        identity_api_version="3",
        load_yaml_config=False,
        load_envvars=False,
    )
    return SDK(conn)


def _sdk_noauth(url: str, project: str | None) -> SDK:
    """openstacksdk without a token; ``project`` is sent as noauth identity headers."""
    import openstack

    conn = openstack.connect(
        auth_type="none",
        image_endpoint_override=url,
        load_yaml_config=False,
        load_envvars=False,
    )
    if project:
        conn.session.additional_headers.update(
            {"X-Project-Id": project, "X-User-Id": f"user-{project}", "X-Roles": "member"}
        )
    return SDK(conn)


@dataclasses.dataclass
class Actors:
    owner: Any
    other: Any
    #: The project the image is shared with (the other actor's project).
    member_project: str
    #: Whether the member can be added and accepted with this client here.
    can_share: bool = True
    #: Whether ``other`` lists only what its project may see (not an admin).
    other_is_scoped: bool = True


def _verify_content(client: Any, image_id: str, image: ImageFile, dest: Path) -> None:
    shown = client.show(image_id)
    assert shown["status"] == "active", shown
    assert shown["disk_format"] == image.disk_format
    assert int(shown["size"]) == image.size
    assert shown["checksum"] == image.md5
    assert shown["os_hash_algo"] == "sha512"
    assert shown["os_hash_value"] == image.sha512
    if image.disk_format == "qcow2":
        assert int(shown["virtual_size"]) == QCOW2_VIRTUAL_SIZE
    client.download(image_id, dest)
    assert _hashes(dest) == (image.md5, image.sha512)


def run_lifecycle(actors: Actors, files: dict[str, ImageFile], work: Path) -> None:
    """Create, upload, download, update, tag, share, accept, (de/re)activate, delete."""
    owner, other = actors.owner, actors.other
    suffix = uuid.uuid4().hex[:8]
    ids: dict[str, str] = {}
    for fmt, image in files.items():
        name = f"cli-{fmt}-{suffix}"
        if getattr(owner, "combined_upload", False):
            ids[fmt] = owner.create_with_data(name, image)
        else:
            ids[fmt] = owner.create(name, image.disk_format)
            owner.upload(ids[fmt], image.path)
        _verify_content(owner, ids[fmt], image, work / f"download-{fmt}")

    image_id = ids["raw"]
    owner.update(image_id, f"renamed-{suffix}", "ims_test_prop", "value-1")
    owner.tag(image_id, "ims-tag")
    shown = owner.show(image_id)
    assert shown["name"] == f"renamed-{suffix}"
    assert shown["ims_test_prop"] == "value-1"
    assert "ims-tag" in shown["tags"]

    owner.set_shared(image_id)
    assert owner.show(image_id)["visibility"] == "shared"
    if actors.can_share:
        if actors.other_is_scoped:
            assert image_id not in other.visible()
        owner.add_member(image_id, actors.member_project)
        assert owner.members(image_id) == {actors.member_project: "pending"}
        other.accept(image_id, actors.member_project)
        assert owner.members(image_id) == {actors.member_project: "accepted"}
        assert image_id in other.visible()
        if actors.other_is_scoped:
            # The member now reads the shared data, and it is the same data.
            other.download(image_id, work / "download-member")
            assert _hashes(work / "download-member") == (files["raw"].md5, files["raw"].sha512)

    owner.deactivate(image_id)
    assert owner.show(image_id)["status"] == "deactivated"
    owner.reactivate(image_id)
    assert owner.show(image_id)["status"] == "active"

    for made in ids.values():
        owner.delete(made)
    left = owner.visible()
    assert not set(ids.values()) & left


CLIENTS = ["glance", "openstack", "sdk"]


@pytest.mark.real
@pytest.mark.slow
@pytest.mark.parametrize("client", CLIENTS)
def test_lifecycle_keystone(
    client: str,
    keystone: KeystoneServer,
    ims_keystone: IMSServer,
    image_files: dict[str, ImageFile],
    tmp_path: Path,
) -> None:
    """Real tokens and the catalog: demo owns, alt is the member."""
    demo, alt = keystone.users["demo"], keystone.users["alt"]
    actors: Actors
    if client == "glance":
        actors = Actors(
            Glance(demo.cli_args(keystone.auth_url)),
            Glance(alt.cli_args(keystone.auth_url)),
            alt.project_id,
        )
    elif client == "openstack":
        actors = Actors(
            OpenStack([*demo.cli_args(keystone.auth_url), "--os-identity-api-version", "3"]),
            OpenStack([*alt.cli_args(keystone.auth_url), "--os-identity-api-version", "3"]),
            alt.project_id,
        )
    else:
        actors = Actors(
            _sdk_keystone(keystone, "demo"), _sdk_keystone(keystone, "alt"), alt.project_id
        )
    run_lifecycle(actors, image_files, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("client", CLIENTS)
def test_lifecycle_noauth(
    client: str, ims_noauth: IMSServer, image_files: dict[str, ImageFile], tmp_path: Path
) -> None:
    """No token at all.

    The CLIs cannot send identity headers, so they act as the unauthenticated
    admin and accept on the member's behalf. openstacksdk sends X-Project-Id,
    so owner and member are two projects. openstackclient resolves a member
    project through the identity API, which does not exist without Keystone,
    so it cannot add members here (it does in the keystone test).
    """
    url = ims_noauth.url
    actors: Actors
    if client == "glance":
        cli = Glance(["--os-image-url", url, "--os-auth-token", "x"])
        actors = Actors(cli, cli, "alt-project", other_is_scoped=False)
    elif client == "openstack":
        cli = OpenStack(["--os-auth-type", "none", "--os-endpoint", url])
        actors = Actors(cli, cli, "alt-project", can_share=False, other_is_scoped=False)
    else:
        actors = Actors(
            _sdk_noauth(url, "demo-project"), _sdk_noauth(url, "alt-project"), "alt-project"
        )
    run_lifecycle(actors, image_files, tmp_path)


@pytest.fixture
def _no_leak(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("OS_AUTH_URL", "http://127.0.0.1:1/v3")
    yield


@pytest.mark.usefixtures("_no_leak")
def test_cli_env_is_clean() -> None:
    """An OS_* variable of the developer's shell never reaches the CLIs."""
    out = _run_cli([sys.executable, "-c", "import os; print(os.environ.get('OS_AUTH_URL'))"])
    assert out.strip() == "None"
