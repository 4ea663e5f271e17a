"""The IMS native API end to end, as an SDK user drives it, against real servers.

A real ims-api (gunicorn, noauth) stores images in a real Swift, a container
per project, and reads users' files from the same cluster's S3 front (s3api). The user puts a
qcow2 and a vmdk in a bucket with boto3, creates images from them, polls
the jobs, lists, shares with another project that accepts, exports in
every format (each checked with ``qemu-img compare`` against the source
disk; ZVHD and ZVHD2 through IMS's own reader, since qemu has none), copies
and deletes. Requests carry exactly what the IMS SDK sends
(``application/json;charset=UTF-8`` bodies, ids in paths).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
import swiftclient
from boto3.s3.transfer import TransferConfig

from ims.disk import registry
from tests.functional.servers import IMSServer
from tests.real import store_backends as backends
from tests.real.swift_server import SwiftServer

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img"),
]

MKDISK = Path(__file__).resolve().parents[3] / "shared" / "tools" / "mkdisk.py"
DISK_MIB = 48
QEMU_NAMES = {"qcow2": "qcow2", "vhd": "vpc", "vmdk": "vmdk"}
JSON = {"Content-Type": "application/json;charset=UTF-8"}


class User:
    """One project's view of the API, over real HTTP."""

    def __init__(self, url: str, project: str) -> None:
        self.url = url
        self.project = project
        self.http = requests.Session()
        self.http.headers.update(
            {"X-Project-Id": project, "X-User-Id": f"user-{project}", "X-Roles": "member"}
        )

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        **kw: Any,
    ) -> requests.Response:
        headers = {**(JSON if body is not None else {}), **(headers or {})}
        return self.http.request(
            method, self.url + path, json=body, headers=headers, timeout=60, **kw
        )

    def job(self, resp: requests.Response, timeout: float = 300) -> dict[str, Any]:
        """Start: the 200 {"job_id"} answer; return the finished job."""
        assert resp.status_code == 200, resp.text
        job_id = resp.json()["job_id"]
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            job = self.call("GET", f"/v1/{self.project}/jobs/{job_id}").json()
            seen.append(job["status"])
            if job["status"] in ("SUCCESS", "FAIL"):
                assert set(seen) <= {"INIT", "RUNNING", job["status"]}
                return job
            assert time.monotonic() < deadline, job
            time.sleep(0.2)

    def image(self, image_id: str) -> dict[str, Any]:
        resp = self.call("GET", f"/v2/images/{image_id}")
        assert resp.status_code == 200, resp.text
        return resp.json()


@pytest.fixture
def disks(tmp_path: Path) -> dict[str, Path]:
    raw = tmp_path / "disk.raw"
    if MKDISK.exists():
        subprocess.run([sys.executable, str(MKDISK), str(raw), str(DISK_MIB), "11"], check=True)
    else:  # pragma: no cover - the shared tools are absent outside the workspace
        subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(raw), f"{DISK_MIB}M"])
    found = {"raw": raw}
    for fmt, opts in (("qcow2", []), ("vmdk", ["-o", "subformat=streamOptimized"])):
        found[fmt] = tmp_path / f"disk.{fmt}"
        subprocess.run(
            ["qemu-img", "convert", "-f", "raw", "-O", fmt, *opts, str(raw), str(found[fmt])],
            check=True,
        )
    return found


@pytest.fixture
def ims(swift_up: SwiftServer, tmp_path: Path) -> Any:
    tag = uuid.uuid4().hex[:8]
    server = IMSServer(
        tmp_path,
        extra_conf={
            "DEFAULT": {"enabled_backends": "swift:swift"},
            "glance_store": {"default_backend": "swift"},
            "swift": {
                **{k: str(v) for k, v in backends.swift_options(swift_up, f"ims-{tag}").items()},
                "swift_store_large_object_size": "16",
                "swift_store_large_object_chunk_size": "8",
                "swift_store_container_per_project": "True",
            },
            "imaging": {"object_store": "obs", "object_store_type": "s3"},
            "obs": {
                **{k: str(v) for k, v in backends.s3_options(swift_up, f"obs-{tag}").items()},
            },
            "jobs": {"poll_interval": "0.1"},
        },
    ).start()
    try:
        yield server
    finally:
        server.stop()


def compare(source: Path, exported: Path, fmt: str) -> None:
    if fmt in QEMU_NAMES:
        result = subprocess.run(
            [
                "qemu-img",
                "compare",
                "-f",
                "raw",
                "-F",
                QEMU_NAMES[fmt],
                str(source),
                str(exported),
            ],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return
    with open(exported, "rb") as f, registry.get(fmt).open(f) as reader:
        assert reader.virtual_size == source.stat().st_size
        with open(source, "rb") as src:
            pos = 0
            while pos < reader.virtual_size:
                length = min(4 << 20, reader.virtual_size - pos)
                assert reader.read(pos, length) == src.read(length), f"{fmt} differs at {pos}"
                pos += length


def test_native_api_end_to_end(ims, swift_up, disks, tmp_path):
    alice, bob = uuid.uuid4().hex, uuid.uuid4().hex
    owner, other = User(ims.url, alice), User(ims.url, bob)
    bucket = f"{alice}-e2e"
    s3 = backends.s3_client(swift_up)
    s3.create_bucket(Bucket=bucket)
    small_parts = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20)
    for fmt in ("qcow2", "vmdk"):
        s3.upload_file(str(disks[fmt]), bucket, f"upload/disk.{fmt}", Config=small_parts)

    # Create: a system image from the qcow2, a data image from the vmdk.
    system_job = owner.job(
        owner.call(
            "POST",
            "/v2/cloudimages/action",
            {
                "name": "e2e-system",
                "image_url": f"{bucket}:upload/disk.qcow2",
                "min_disk": 40,
                "os_version": "Ubuntu 22.04 server 64bit",
                "type": "ECS",
                "is_config": False,
                "description": "made from a qcow2",
            },
        )
    )
    assert system_job["status"] == "SUCCESS", system_job
    data_job = owner.job(
        owner.call(
            "POST",
            "/v1/cloudimages/dataimages/action",
            {"name": "e2e-data", "image_url": f"{bucket}:upload/disk.vmdk", "min_disk": 40},
        )
    )
    assert data_job["status"] == "SUCCESS", data_job
    system_id = system_job["entities"]["image_id"]
    data_id = data_job["entities"]["image_id"]
    raw_size = disks["raw"].stat().st_size
    for image_id, env in ((system_id, "FusionCompute"), (data_id, "DataImage")):
        image = owner.image(image_id)
        assert image["status"] == "active" and image["disk_format"] == "zvhd2"
        assert image["virtual_size"] == raw_size
        assert image["virtual_env_type"] == env and image["__root_origin"] == "file"
    # The stored data is the internal format, readable through Glance.
    stored = tmp_path / "stored.zvhd2"
    with owner.call("GET", f"/v2/images/{system_id}/file", stream=True) as resp:
        assert resp.status_code == 200
        with open(stored, "wb") as out:
            for chunk in resp.iter_content(1 << 20):
                out.write(chunk)
    compare(disks["raw"], stored, "zvhd2")

    # Each project's images live in its own container; Glance uploads too.
    conn = backends.swift_connection(swift_up)
    container = ims.conf["swift"]["swift_store_container"]

    def stored_in(project: str, suffix: str = "") -> set[str]:
        try:
            _, objects = conn.get_container(f"{container}_{project}{suffix}", full_listing=True)
        except swiftclient.ClientException as ex:
            assert ex.http_status == 404
            return set()
        return {obj["name"] for obj in objects}

    assert stored_in(alice) == {system_id, data_id}
    resp = owner.call("POST", "/v2/images", {"disk_format": "raw", "container_format": "bare"})
    assert resp.status_code == 201, resp.text
    glance_id = resp.json()["id"]
    resp = owner.call(
        "PUT",
        f"/v2/images/{glance_id}/file",
        data=b"\0" * 4096,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert resp.status_code == 204, resp.text
    assert stored_in(alice) == {system_id, data_id, glance_id}
    # One PUT to Swift: the checksum is Swift's ETag, which must be the data's md5.
    assert owner.image(glance_id)["checksum"] == hashlib.md5(b"\0" * 4096).hexdigest()
    assert owner.call("DELETE", f"/v2/images/{glance_id}").status_code == 204
    # The interoperable import: staged, then imported into Swift, checksum from the ETag.
    resp = owner.call("POST", "/v2/images", {"disk_format": "raw", "container_format": "bare"})
    staged_id = resp.json()["id"]
    staged = bytes(range(256)) * 64
    resp = owner.call(
        "PUT",
        f"/v2/images/{staged_id}/stage",
        data=staged,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert resp.status_code == 204, resp.text
    resp = owner.call(
        "POST", f"/v2/images/{staged_id}/import", {"method": {"name": "glance-direct"}}
    )
    assert resp.status_code == 202, resp.text
    deadline = time.monotonic() + 60
    while owner.image(staged_id)["status"] != "active":
        assert time.monotonic() < deadline, owner.image(staged_id)
        time.sleep(0.1)
    assert owner.image(staged_id)["checksum"] == hashlib.md5(staged).hexdigest()
    assert staged_id in stored_in(alice)
    assert owner.call("DELETE", f"/v2/images/{staged_id}").status_code == 204

    # List with IMS filters (the Glance listing if this deployment has no cloudimages list).
    resp = owner.call("GET", "/v2/cloudimages", params={"__imagetype": "private"})
    if resp.status_code == 404:
        resp = owner.call("GET", "/v2/images", params={"owner": alice})
    assert resp.status_code == 200, resp.text
    listed = {image["id"] for image in resp.json()["images"]}
    assert {system_id, data_id} <= listed
    assert system_id not in {
        image["id"] for image in other.call("GET", "/v2/images").json()["images"]
    }

    # Share with another project, which accepts.
    resp = owner.call(
        "PATCH",
        f"/v2/images/{system_id}",
        data=b'[{"op": "replace", "path": "/visibility", "value": "shared"}]',
        headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
    )
    assert resp.status_code == 200, resp.text
    resp = owner.call("POST", f"/v2/images/{system_id}/members", {"member": bob})
    assert resp.status_code == 200, resp.text
    resp = other.call("PUT", f"/v2/images/{system_id}/members/{bob}", {"status": "accepted"})
    assert resp.status_code == 200, resp.text
    assert other.image(system_id)["id"] == system_id

    # Export in every format, and quickly; check each against the source disk.
    exports = {fmt: fmt for fmt in ("qcow2", "vhd", "zvhd", "vmdk")}
    exports["quick"] = "zvhd2"
    for name, fmt in exports.items():
        body: dict[str, Any] = {"bucket_url": f"{bucket}:export/{name}.{fmt}"}
        if name == "quick":
            body["is_quick_export"] = True
        else:
            body["file_format"] = fmt
        job = owner.job(owner.call("POST", f"/v1/cloudimages/{system_id}/file", body))
        assert job["status"] == "SUCCESS", (name, job)
        local = tmp_path / f"export.{name}.{fmt}"
        s3.download_file(bucket, f"export/{name}.{fmt}", str(local))
        compare(disks["raw"], local, fmt)
    again = owner.call(
        "POST",
        f"/v1/cloudimages/{system_id}/file",
        {"bucket_url": f"{bucket}:export/qcow2.qcow2", "file_format": "qcow2"},
    )
    assert again.status_code == 400 and again.json()["error"]["code"] == "IMG.0070"
    theirs = other.call(
        "POST",
        f"/v1/cloudimages/{system_id}/file",
        {"bucket_url": f"{bucket}:export/stolen.qcow2", "file_format": "qcow2"},
    )
    assert theirs.status_code == 400 and theirs.json()["error"]["code"] in ("IMG.0047", "IMG.0069")

    # Copy: the owner's own copy, and the recipient's private copy of the shared image.
    copies = []
    for user in (owner, other):
        job = user.job(
            user.call(
                "POST", f"/v1/cloudimages/{system_id}/copy", {"name": f"copy-{user.project}"}
            )
        )
        assert job["status"] == "SUCCESS", job
        copy = user.image(job["entities"]["image_id"])
        assert copy["owner"] == user.project and copy["status"] == "active"
        assert copy["checksum"] == owner.image(system_id)["checksum"]
        copies.append((user, copy["id"]))
        assert copy["id"] in stored_in(user.project)

    # Delete everything; the data leaves Swift.
    for user, image_id in [*copies, (owner, system_id), (owner, data_id)]:
        resp = user.call("DELETE", f"/v2/images/{image_id}")
        assert resp.status_code == 204, resp.text
        assert user.call("GET", f"/v2/images/{image_id}").status_code == 404
    for project in (alice, bob):
        assert stored_in(project) == stored_in(project, "_segments") == set()
