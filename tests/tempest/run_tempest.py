"""Run Tempest's image API tests against ims-api with a real Keystone.

Nothing is installed at run time: ``tempest`` (and ``keystone``) must be in
the Python environment that runs this. Used two ways:

- from pytest (tests/functional/test_tempest.py), with the session's
  Keystone and keystone-mode ims-api;
- by hand, starting its own Keystone and ims-api::

      python tests/tempest/run_tempest.py [--regex RE] [--workdir DIR] [--multistore]

  ``--multistore`` runs the store and import tests (MULTISTORE_REGEX) against
  an ims-api with two stores, a filesystem one and an S3 one on a real Swift
  s3api (tests/real/swift_server.py), which it starts too.

  It prints the counts and every failing test with the reason, and exits 1
  when a test failed that is not in KNOWN_FAILURES.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.functional.servers import (  # noqa: E402
    ADMIN_PASSWORD,
    REGION,
    IMSServer,
    KeystoneServer,
    clean_env,
    free_port,
)
from tests.real.swift_server import SwiftServer  # noqa: E402

DEFAULT_REGEX = r"^tempest\.api\.image"
#: web-download fetches http_qcow2_image from the internet; CI has no egress.
#: (Its negative twin, test_image_web_download_import_with_bad_url, runs.)
DEFAULT_EXCLUDE = r"test_image_web_download_import\b"
#: IMS configuration that lets Tempest upload mislabelled data (listing tests).
LENIENT_FORMATS = {"image_format": {"require_image_format_match": "false"}}
RUN_TIMEOUT = 1800

#: Tempest's store and import tests, for an IMS with more than one store.
#: They find the stores in GET /v2/info/stores (Tempest 47 has no multistore
#: option); ImportImagesTest's glance-download and remote tests skip (no
#: second region), its web-download test is excluded (DEFAULT_EXCLUDE).
MULTISTORE_REGEX = (
    r"^tempest\.api\.image\.v2\."
    r"(test_images\.(ImportImagesTest|MultiStoresImportImagesTest|MultistoreLocationImportTest"
    r"|StoreWeightTest|BasicOperationsImagesTest)"
    r"|test_images_negative\.ImportImagesNegativeTest"
    r"|admin\.test_images\.(ImportCopyImagesTest|MultiStoresImagesTest))\b"
)
#: The two stores: ids sort in weight order, because Tempest's waiter
#: compares the image's ``stores`` with the sorted ids, while StoreWeightTest
#: wants them by weight.
FILE_STORE = "file"
S3_STORE = "s3"

#: Tests expected to fail for a stated reason (test id prefix → reason).
#: Keep this short and honest: every entry is missing IMS behaviour.
KNOWN_FAILURES: dict[str, str] = {}


def _ini(sections: dict[str, dict[str, str]]) -> str:
    out = []
    for name, values in sections.items():
        out.append(f"[{name}]")
        out.extend(f"{k} = {v}" for k, v in values.items())
        out.append("")
    return "\n".join(out)


def multistore_conf(data_dir: Path, swift: SwiftServer, bucket: str) -> dict[str, dict[str, str]]:
    """IMS configuration with two stores: ``file`` (default) and ``s3`` on ``swift``."""
    return {
        "DEFAULT": {"enabled_backends": f"{FILE_STORE}:filesystem, {S3_STORE}:s3"},
        "glance_store": {"default_backend": FILE_STORE},
        FILE_STORE: {
            "filesystem_store_datadir": str(data_dir),
            "store_description": "Local disks",
            "weight": "100",
        },
        S3_STORE: {
            "s3_store_host": swift.endpoint,
            "s3_store_access_key": swift.user,
            "s3_store_secret_key": swift.key,
            "s3_store_region_name": swift.region,
            "s3_store_bucket": bucket,
            "s3_store_bucket_url_format": "path",
            "s3_store_create_bucket_on_put": "true",
            "store_description": "Swift s3api",
            "weight": "50",
        },
    }


def tempest_conf(
    workspace: Path,
    keystone: KeystoneServer,
    import_image: bool = True,
    enforce_scope: bool = True,
    format_enforcement: bool = True,
    multistore: bool = False,
) -> str:
    """tempest.conf for an IMS behind ``keystone``.

    ``format_enforcement`` must match IMS's [image_format]
    require_image_format_match: with it, Tempest skips the listing tests,
    which upload bogus bytes as every disk format. ``multistore`` says the
    stores have different weights (see multistore_conf), for StoreWeightTest;
    the other multistore tests need no option, they read /v2/info/stores.
    """
    return _ini(
        {
            "DEFAULT": {
                "log_dir": str(workspace / "logs"),
                "log_file": "tempest.log",
                "debug": "true",
            },
            "oslo_concurrency": {"lock_path": str(workspace / "tempest_lock")},
            "auth": {
                "use_dynamic_credentials": "true",
                "admin_username": "admin",
                "admin_password": ADMIN_PASSWORD,
                "admin_project_name": "admin",
                "admin_domain_name": "Default",
                "create_isolated_networks": "false",
            },
            "identity": {
                "uri_v3": keystone.auth_url,
                "auth_version": "v3",
                "region": REGION,
                "disable_ssl_certificate_validation": "true",
            },
            "service_available": {
                "glance": "true",
                "nova": "false",
                "cinder": "false",
                "neutron": "false",
                "swift": "false",
                "horizon": "false",
                "placement": "false",
            },
            "image": {
                "catalog_type": "image",
                "endpoint_type": "publicURL",
                "region": REGION,
                "hashing_algorithm": "sha512",
                "container_formats": "bare,ami,ari,aki,ovf,ova",
                "disk_formats": "qcow2,raw,ami,ari,aki,vhd,vmdk,vdi,iso,vhdx",
                "image_caching_enabled": "false",
                # No egress here: web-download must not reach the internet.
                "http_image": "http://127.0.0.1:9/cirros.tar.gz",
                "http_qcow2_image": "http://127.0.0.1:9/cirros.qcow2",
                "build_timeout": "60",
                "build_interval": "1",
            },
            "image-feature-enabled": {
                "api_v2": "true",
                "import_image": str(import_image).lower(),
                "os_glance_reserved": "true",
                "manage_locations": "false",
                "image_conversion": "false",
                "image_format_enforcement": str(format_enforcement).lower(),
                "do_secure_hash": "true",
                "http_store_enabled": "false",
                "store_weight_enabled": str(multistore).lower(),
            },
            "enforce_scope": {"glance": str(enforce_scope).lower()},
            "validation": {"run_validation": "false"},
        }
    )


@dataclasses.dataclass
class Result:
    """One Tempest run: counts, failures with their reasons, and timing."""

    passed: list[str]
    failed: dict[str, str]
    skipped: dict[str, str]
    seconds: float
    returncode: int

    def summary(self) -> str:
        lines = [
            f"tempest: {len(self.passed)} passed, {len(self.failed)} failed, "
            f"{len(self.skipped)} skipped in {self.seconds:.0f}s (rc {self.returncode})"
        ]
        for test_id, reason in sorted(self.failed.items()):
            known = known_failure(test_id)
            tag = f" [known: {known}]" if known else ""
            lines.append(f"FAILED {test_id}{tag}\n    {short_reason(reason)}")
        return "\n".join(lines)


def known_failure(test_id: str) -> str | None:
    for prefix, reason in KNOWN_FAILURES.items():
        if test_id.startswith(prefix):
            return reason
    return None


def short_reason(details: str, limit: int = 600) -> str:
    """The last exception line(s) of a traceback, which usually say why."""
    lines = [line for line in details.strip().splitlines() if line.strip()]
    for i in range(len(lines) - 1, -1, -1):
        if re.match(
            r"^[\w.]+(Error|Exception|Failure|Mismatch|Conflict|NotFound|Forbidden)", lines[i]
        ):
            return " ".join(lines[i:])[:limit]
    return " ".join(lines[-3:])[:limit]


def _strip_attrs(test_id: str) -> str:
    return re.sub(r"\[.*\]$", "", test_id)


def parse_subunit(stream: bytes) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """Return (passed, failed: id→details, skipped: id→reason) from a subunit v2 stream."""
    import subunit
    import testtools

    passed: list[str] = []
    failed: dict[str, str] = {}
    skipped: dict[str, str] = {}

    def on_test(test: dict) -> None:
        test_id = _strip_attrs(test["id"])
        details = {
            name: b"".join(content.iter_bytes()).decode(errors="replace")
            for name, content in test["details"].items()
        }
        status = test["status"]
        if status in ("success", "xfail"):
            passed.append(test_id)
        elif status == "skip":
            skipped[test_id] = details.get("reason", "")
        elif status in ("fail", "uxsuccess"):
            failed[test_id] = details.get("traceback", "") or "\n".join(details.values())

    result = testtools.StreamToDict(on_test)
    result.startTestRun()
    subunit.ByteStreamToStreamResult(io.BytesIO(stream), non_subunit_name="stdout").run(result)
    result.stopTestRun()
    # Class-level fixtures fail as "setUpClass (module.Class)": keep them.
    return passed, failed, skipped


def run(
    workdir: Path,
    keystone: KeystoneServer,
    regex: str = DEFAULT_REGEX,
    concurrency: int = 2,
    import_image: bool = True,
    enforce_scope: bool = True,
    format_enforcement: bool = True,
    exclude: str | None = DEFAULT_EXCLUDE,
    multistore: bool = False,
) -> Result:
    """Init a workspace in ``workdir``, write tempest.conf, run, parse."""
    workspace = workdir / "tempest"
    env = clean_env(PYTHON=sys.executable, TEMPEST_CONFIG_DIR=str(workspace / "etc"))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("TEMPEST_CONFIG", None)
    tempest = [
        sys.executable,
        "-c",
        "import sys; from tempest.cmd.main import main; sys.exit(main())",
    ]
    subprocess.run(
        [*tempest, "init", "--workspace-path", str(workdir / "workspace.yaml"), str(workspace)],
        env=env,
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    (workspace / "etc" / "tempest.conf").write_text(
        tempest_conf(
            workspace, keystone, import_image, enforce_scope, format_enforcement, multistore
        )
    )
    selection = ["--regex", regex] + (["--exclude-regex", exclude] if exclude else [])
    started = time.monotonic()
    with open(workdir / "tempest-run.log", "wb") as log:
        proc = subprocess.run(
            [*tempest, "run", *selection, "--concurrency", str(concurrency)],
            cwd=workspace,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=RUN_TIMEOUT,
        )
    seconds = time.monotonic() - started
    stream = subprocess.run(
        [sys.executable, "-m", "stestr.cli", "last", "--subunit"],
        cwd=workspace,
        env=env,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    ).stdout
    passed, failed, skipped = parse_subunit(stream)
    return Result(passed, failed, skipped, seconds, proc.returncode)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regex", help=f"default {DEFAULT_REGEX} (--multistore: the store tests)")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--exclude", default=DEFAULT_EXCLUDE, help="'' to exclude nothing")
    parser.add_argument("--no-import", dest="import_image", action="store_false")
    parser.add_argument("--no-enforce-scope", dest="enforce_scope", action="store_false")
    parser.add_argument(
        "--lenient-formats",
        action="store_true",
        help="run IMS without format enforcement, so the listing tests run",
    )
    parser.add_argument(
        "--multistore",
        action="store_true",
        help="two stores (filesystem, S3 on a local Swift s3api); default regex: "
        "the store and import tests",
    )
    args = parser.parse_args(argv)
    regex = args.regex or (MULTISTORE_REGEX if args.multistore else DEFAULT_REGEX)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ims-tempest-"))
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    swift = SwiftServer()
    with contextlib.ExitStack() as stack:
        keystone = KeystoneServer(workdir, image_url=f"http://127.0.0.1:{port}").start()
        stack.callback(keystone.stop)
        conf = keystone.authtoken_conf()
        if args.lenient_formats:
            conf.update(LENIENT_FORMATS)
        if args.multistore:
            swift.start(workdir / "swift")
            stack.callback(swift.stop)
            conf.update(multistore_conf(workdir / "file-store", swift, "ims-tempest"))
        stack.enter_context(IMSServer(workdir, "keystone", conf, port=port).start())
        result = run(
            workdir,
            keystone,
            regex,
            args.concurrency,
            args.import_image,
            args.enforce_scope,
            not args.lenient_formats,
            args.exclude or None,
            args.multistore,
        )
    print(result.summary())
    print(f"logs: {workdir}")
    unknown = [t for t in result.failed if not known_failure(t)]
    return 1 if unknown or not result.passed else 0


if __name__ == "__main__":
    sys.exit(main())
