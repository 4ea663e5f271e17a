"""IMS native imaging: create from files, register, quick import, export, copy.

The object store is a filesystem store (buckets are directories); jobs run
in-process; qemu-img is the oracle for exported files it can read.
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from falcon import testing

from ims import conf as ims_conf
from ims import errors
from ims.api.app import build_services, create_app
from ims.core import imaging
from ims.db.job_models import Job
from ims.disk import registry
from tests.conftest import Client
from tests.unit.native_support import wait_job

MiB = 1024 * 1024
BUCKET = "p1-images"
CONF = """
[DEFAULT]
enabled_backends = main:filesystem, far:filesystem
[glance_store]
default_backend = main
[main]
filesystem_store_datadir = $TMP/main
[far]
filesystem_store_datadir = $TMP/far
[imaging]
object_store = obs
object_store_type = filesystem
regions = region-two:far
[obs]
filesystem_store_datadir = $TMP/obs
[jobs]
poll_interval = 0.05
"""

needs_qemu = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")


class Env:
    """An app, its services and the directories behind its stores."""

    def __init__(self, tmp: Path, conf_text: str = CONF) -> None:
        path = tmp / "ims.conf"
        path.write_text(conf_text.replace("$TMP", str(tmp)))
        conf = ims_conf.load(["--config-file", str(path)])
        conf.set_override("state_path", str(tmp / "state"))
        self.tmp = tmp
        self.services = build_services(conf)
        client = testing.TestClient(create_app(conf, self.services))
        self.owner = Client(client, "p1", "member")
        self.other = Client(client, "p2", "member")
        self.admin = Client(client, "adminproject", "admin")
        self.obs = tmp / "obs"
        (self.obs / BUCKET).mkdir(parents=True)
        self.main = tmp / "main"

    def put(self, name: str, source: Path | bytes) -> str:
        target = self.obs / BUCKET / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, bytes):
            target.write_bytes(source)
        else:
            shutil.copyfile(source, target)
        return f"{BUCKET}:{name}"

    def wait(self, job_id: str, client: Client | None = None, timeout: float = 60) -> dict:
        client = client or self.owner
        return wait_job(client, client.headers["X-Project-Id"], job_id, timeout)

    def image(self, image_id: str, client: Client | None = None) -> dict:
        resp = (client or self.owner).get(f"/v2/images/{image_id}")
        assert resp.status_code == 200, resp.text
        return resp.json

    def stored_files(self) -> list[str]:
        return sorted(os.listdir(self.main))


@pytest.fixture
def make_env(tmp_path: Path) -> Iterator[Callable[..., Env]]:
    """Build Envs (on tmp_path unless told) and stop their job threads afterwards."""
    made: list[Env] = []

    def build(conf_text: str = CONF, where: Path | None = None) -> Env:
        if where is not None:
            where.mkdir(parents=True, exist_ok=True)
        made.append(Env(where or tmp_path, conf_text))
        return made[-1]

    yield build
    for env in made:
        if env.services.job_runner is not None:
            env.services.job_runner.stop()


@pytest.fixture
def env(make_env: Callable[..., Env]) -> Env:
    return make_env()


def make_raw(path: Path, size: int = 8 * MiB) -> Path:
    """A disk with data, text and holes (as a used filesystem looks)."""
    with open(path, "wb") as f:
        f.truncate(size)
        for block in range(0, size // MiB, 3):
            f.seek(block * MiB)
            f.write(os.urandom(300 * 1024) + b"IMS test block %d " % block * 4000)
    return path


def qemu_convert(src: Path, fmt: str, dst: Path, *opts: str) -> Path:
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", fmt, *opts, str(src), str(dst)], check=True
    )
    return dst


def read_disk(path: Path, fmt: str | None = None) -> bytes:
    with open(path, "rb") as f:
        name = fmt or registry.detect(f)
        with registry.get(name).open(f) as reader:
            return reader.read(0, reader.virtual_size)


def create(env: Env, ref: str, **extra: Any) -> Any:
    body = {"name": "from-file", "image_url": ref, "min_disk": 40, **extra}
    return env.owner.post("/v2/cloudimages/action", body)


def created(env: Env, ref: str, **extra: Any) -> tuple[dict, dict]:
    resp = create(env, ref, **extra)
    assert resp.status_code == 200, resp.text
    job = env.wait(resp.json["job_id"])
    assert job["status"] == "SUCCESS", job
    return job, env.image(job["entities"]["image_id"])


def error(resp: Any, code: str, status: int = 400) -> str:
    assert resp.status_code == status, resp.text
    assert resp.json["error"]["code"] == code, resp.json
    return resp.json["error"]["message"]


# -- create ----------------------------------------------------------------------


@needs_qemu
def test_create_from_raw_and_qcow2(env, tmp_path):
    raw = make_raw(tmp_path / "disk.raw")
    qcow2 = qemu_convert(raw, "qcow2", tmp_path / "disk.qcow2")
    for name, source in (("disk.raw", raw), ("dir/disk.qcow2", qcow2)):
        job, image = created(env, env.put(name, source), os_version="Ubuntu 22.04 server 64bit")
        assert job["job_type"] == imaging.JOB_CREATE
        assert job["entities"]["process_percent"] == 100.0
        assert image["status"] == "active" and image["disk_format"] == "zvhd2"
        assert image["virtual_size"] == raw.stat().st_size
        assert image["visibility"] == "private" and image["owner"] == "p1"
        assert image["min_disk"] == 40
        assert image["__os_version"] == "Ubuntu 22.04 server 64bit"
        assert image["__root_origin"] == "file" and image["__isregistered"] == "true"
        assert image["__lazyloading"] == "true"
        assert image["virtual_env_type"] == "FusionCompute"
        data = env.owner.get(f"/v2/images/{image['id']}/file")
        assert data.status_code == 200 and len(data.content) == image["size"]
        out = tmp_path / f"{image['id']}.zvhd2"
        out.write_bytes(data.content)
        assert read_disk(out, "zvhd2") == raw.read_bytes()
        assert image["size"] < raw.stat().st_size  # zeros and text compress


@needs_qemu
def test_hostile_file_fails_the_job_and_leaves_nothing(env, tmp_path):
    base = make_raw(tmp_path / "base.raw", 2 * MiB)
    child = tmp_path / "child.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(child)],
        check=True,
    )
    resp = create(env, env.put("child.qcow2", child))
    assert resp.status_code == 200, resp.text
    job = env.wait(resp.json["job_id"])
    assert job["status"] == "FAIL"
    assert job["error_code"] == "IMG.0057" and "backing file" in job["fail_reason"]
    image = env.image(job["entities"]["image_id"])
    assert image["status"] == "killed"
    assert env.stored_files() == []
    assert os.listdir(env.services.stores.get("os_glance_tasks_store").datadir) == []


def test_unknown_and_quick_formats_are_refused_with_codes(env):
    resp = create(env, env.put("disk.bin", os.urandom(MiB)), is_quick_import=True)
    error(resp, "IMG.0159")  # quick import needs os_version
    zeros = env.put("zeros.raw", bytes(MiB))
    resp = env.owner.post(
        "/v2/cloudimages/quickimport/action",
        {"name": "quick", "image_url": zeros, "min_disk": 1, "os_version": "CentOS 7.9 64bit"},
    )
    assert resp.status_code == 200, resp.text
    job = env.wait(resp.json["job_id"])
    assert job["status"] == "SUCCESS", job
    image = env.image(job["entities"]["image_id"])
    assert image["disk_format"] == "raw" and image["size"] == MiB
    assert image["__lazyloading"] == "true"
    gzip_file = env.put("disk.vhd", b"\x1f\x8b\x08\x00" + bytes(MiB))
    resp = env.owner.post(
        "/v2/cloudimages/quickimport/action",
        {"name": "quick", "image_url": gzip_file, "min_disk": 1, "type": "DataImage"},
    )
    job = env.wait(resp.json["job_id"])
    assert job["status"] == "SUCCESS"  # a file no format claims is raw


@needs_qemu
def test_quick_import_refuses_qcow2_and_keeps_zvhd2_as_is(env, tmp_path):
    raw = make_raw(tmp_path / "disk.raw", 4 * MiB)
    qcow2 = qemu_convert(raw, "qcow2", tmp_path / "disk.qcow2")
    body = {"name": "quick", "min_disk": 1, "os_version": "CentOS 7.9 64bit"}
    resp = env.owner.post(
        "/v2/cloudimages/quickimport/action", {**body, "image_url": env.put("q.qcow2", qcow2)}
    )
    job = env.wait(resp.json["job_id"])
    assert job["status"] == "FAIL" and job["error_code"] == "IMG.0158"
    _job, image = created(env, env.put("disk.raw", raw))
    zvhd2 = env.owner.get(f"/v2/images/{image['id']}/file").content
    resp = env.owner.post(
        "/v2.1/cloudimages/quickimport/action",
        {**body, "image_url": env.put("disk.zvhd2", zvhd2)},
    )
    job = env.wait(resp.json["job_id"])
    assert job["status"] == "SUCCESS", job
    quick = env.image(job["entities"]["image_id"])
    assert quick["disk_format"] == "zvhd2" and quick["checksum"] == image["checksum"]


def test_data_image_and_data_images_with_sub_results(env):
    disk = env.put("data.raw", os.urandom(MiB))
    resp = env.owner.post(
        "/v1/cloudimages/dataimages/action",
        {"name": "data", "image_url": disk, "min_disk": 40, "os_type": "Windows"},
    )
    job = env.wait(resp.json["job_id"])
    assert job["status"] == "SUCCESS" and job["job_type"] == imaging.JOB_DATA
    image = env.image(job["entities"]["image_id"])
    assert image["virtual_env_type"] == "DataImage" and image["__os_type"] == "Windows"
    bad = env.put("bad.vmdk", b"KDMV" + bytes(MiB))  # a VMDK header that does not parse
    resp = create(
        env,
        env.put("system.raw", os.urandom(MiB)),
        data_images=[
            {"name": "d1", "image_url": disk, "min_disk": 10},
            {"name": "d2", "image_url": bad, "min_disk": 10},
        ],
    )
    assert resp.status_code == 200, resp.text
    job = env.wait(resp.json["job_id"])
    assert job["status"] == "FAIL" and "d2" in job["fail_reason"]
    system = env.image(job["entities"]["image_id"])
    assert system["status"] == "active"
    first, second = job["entities"]["sub_jobs_result"]
    assert job["entities"]["sub_jobs_list"] == [first["job_id"], second["job_id"]]
    assert first["status"] == "SUCCESS" and first["job_type"] == "createDataImageByFile"
    assert first["begin_time"] <= first["end_time"] and first["end_time"].endswith("Z")
    assert env.image(first["entities"]["image_id"])["status"] == "active"
    assert second["status"] == "FAIL" and second["error_code"] == "IMG.0057"
    assert env.image(second["entities"]["image_id"])["status"] == "killed"


def test_a_request_that_fails_after_making_records_removes_them(env, monkeypatch):
    def refuse(*args, **kwargs):
        raise errors.Unavailable("the job table is down")

    monkeypatch.setattr(env.services.jobs, "submit", refuse)
    disk = env.put("disk.raw", os.urandom(MiB))
    resp = create(env, disk, data_images=[{"name": "d", "image_url": disk, "min_disk": 1}])
    assert resp.status_code == 503 and resp.json["error"]["code"].startswith("IMG.")
    assert env.owner.get("/v2/images").json["images"] == []
    shell = env.owner.create(name="shell")
    resp = env.owner.put(f"/v1/cloudimages/{shell['id']}/upload", json={"image_url": disk})
    assert resp.status_code == 503
    assert env.image(shell["id"])["status"] == "queued"


def test_register_a_file_into_a_queued_image(env):
    image = env.owner.create(name="shell", disk_format="vhd")
    disk = env.put("reg.raw", os.urandom(2 * MiB))
    resp = env.owner.put(f"/v1/cloudimages/{image['id']}/upload", json={"image_url": disk})
    assert resp.status_code == 200, resp.text
    job = env.wait(resp.json["job_id"])
    assert job["status"] == "SUCCESS", job
    done = env.image(image["id"])
    assert done["status"] == "active" and done["disk_format"] == "zvhd2"
    assert done["virtual_size"] == 2 * MiB
    again = env.owner.put(f"/v1/cloudimages/{image['id']}/upload", json={"image_url": disk})
    error(again, "IMG.0046")
    other = env.other.create(name="theirs")
    error(
        env.owner.put(f"/v1/cloudimages/{other['id']}/upload", json={"image_url": disk}),
        "IMG.0027",
        404,
    )


def test_failed_register_returns_the_image_to_queued(env):
    image = env.owner.create(name="shell")
    bad = env.put("bad.vmdk", b"KDMV" + bytes(MiB))
    resp = env.owner.put(f"/v1/cloudimages/{image['id']}/upload", json={"image_url": bad})
    job = env.wait(resp.json["job_id"])
    assert job["status"] == "FAIL"
    assert env.image(image["id"])["status"] == "queued"
    assert env.stored_files() == []


def test_conversion_failure_midway_removes_partial_data(env, monkeypatch):
    zvhd2 = registry.get("zvhd2")
    real_write = zvhd2.write

    def broken(reader, out, options=None):
        out.write(b"x" * (5 * MiB))
        raise OSError("disk on fire")

    monkeypatch.setattr(zvhd2, "write", broken)
    resp = create(env, env.put("disk.raw", os.urandom(2 * MiB)))
    job = env.wait(resp.json["job_id"])
    monkeypatch.setattr(zvhd2, "write", real_write)
    assert job["status"] == "FAIL" and "disk on fire" in job["fail_reason"]
    assert env.image(job["entities"]["image_id"])["status"] == "killed"
    assert env.stored_files() == []


def test_a_job_whose_workers_keep_dying_kills_its_image(make_env):
    env = make_env(CONF + "api_workers = 0\n")
    resp = create(env, env.put("disk.raw", os.urandom(MiB)))
    job_id = resp.json["job_id"]
    jobs = env.services.jobs
    image_id = env.owner.get(f"/v1/p1/jobs/{job_id}").json["entities"]["image_id"]
    assert env.image(image_id)["status"] == "saving"
    for attempt in range(env.services.conf.jobs.max_attempts):
        assert jobs.claim(f"dead-{attempt}") is not None
        with env.services.db.session() as session:
            session.execute(
                sa.update(Job)
                .where(Job.id == job_id)
                .values(heartbeat_at=datetime.datetime(2000, 1, 1))
            )
    assert jobs.claim("another") is None
    job = env.owner.get(f"/v1/p1/jobs/{job_id}").json
    assert job["status"] == "FAIL"
    assert env.image(image_id)["status"] == "killed"


def test_a_resumed_job_starts_again_cleanly(make_env):
    env = make_env(CONF + "api_workers = 0\n")
    resp = create(env, env.put("disk.raw", os.urandom(MiB)))
    job_id = resp.json["job_id"]
    jobs = env.services.jobs
    image_id = env.owner.get(f"/v1/p1/jobs/{job_id}").json["entities"]["image_id"]
    # A dead attempt left data under the image id: the rerun replaces it.
    (env.main / image_id).write_bytes(b"left by a dead worker")
    claimed = jobs.claim("w1")
    jobs.run(claimed)
    job = env.owner.get(f"/v1/p1/jobs/{job_id}").json
    assert job["status"] == "SUCCESS", job
    image = env.image(image_id)
    assert image["status"] == "active" and image["virtual_size"] == MiB
    assert env.stored_files() == [image_id]


# -- export ----------------------------------------------------------------------


QEMU_NAMES = {"qcow2": "qcow2", "vhd": "vpc", "vmdk": "vmdk"}


@needs_qemu
def test_export_in_every_format(env, tmp_path):
    raw = make_raw(tmp_path / "disk.raw")
    _job, image = created(env, env.put("disk.qcow2", qemu_convert(raw, "qcow2", tmp_path / "q")))
    for fmt in imaging.EXPORT_FORMATS:
        resp = env.owner.post(
            f"/v1/cloudimages/{image['id']}/file",
            {"bucket_url": f"{BUCKET}:export/disk.{fmt}", "file_format": fmt},
        )
        assert resp.status_code == 200, resp.text
        job = env.wait(resp.json["job_id"])
        assert job["status"] == "SUCCESS", job
        assert job["entities"]["image_id"] == image["id"]
        out = env.obs / BUCKET / "export" / f"disk.{fmt}"
        if fmt in QEMU_NAMES:
            subprocess.run(
                ["qemu-img", "compare", "-f", "raw", "-F", QEMU_NAMES[fmt], str(raw), str(out)],
                check=True,
                capture_output=True,
            )
        else:
            assert read_disk(out, fmt) == raw.read_bytes()
    resp = env.owner.post(
        f"/v2.1/cloudimages/{image['id']}/file",
        {"bucket_url": f"{BUCKET}:export/quick.zvhd2", "is_quick_export": True},
    )
    job = env.wait(resp.json["job_id"])
    assert job["status"] == "SUCCESS", job
    quick = (env.obs / BUCKET / "export" / "quick.zvhd2").read_bytes()
    assert quick == env.owner.get(f"/v2/images/{image['id']}/file").content
    assert not [n for n in os.listdir(env.obs / BUCKET / "export") if n.startswith(".")]


def test_export_refusals(env):
    _job, image = created(env, env.put("disk.raw", os.urandom(MiB)))
    path = f"/v1/cloudimages/{image['id']}/file"
    target = f"{BUCKET}:out.qcow2"
    error(env.owner.post(path, {"bucket_url": target, "file_format": "raw"}), "IMG.0072")
    error(env.owner.post(path, {"bucket_url": target}), "IMG.0072")
    error(
        env.owner.post(
            path, {"bucket_url": target, "file_format": "vhd", "is_quick_export": True}
        ),
        "IMG.0072",
    )
    error(env.owner.post(path, {"bucket_url": "nocolon", "file_format": "vhd"}), "IMG.0017")
    error(env.owner.post(path, {"bucket_url": "p2-x:f", "file_format": "vhd"}), "IMG.0069")
    env.put("exists.vhd", b"mine")
    error(
        env.owner.post(path, {"bucket_url": f"{BUCKET}:exists.vhd", "file_format": "vhd"}),
        "IMG.0070",
    )
    error(env.other.post(path, {"bucket_url": "p2-x:f", "file_format": "vhd"}), "IMG.0027", 404)
    public = env.admin.create(name="gold", visibility="public")
    assert env.admin.upload(public["id"], os.urandom(MiB)).status_code == 204
    error(
        env.owner.post(
            f"/v1/cloudimages/{public['id']}/file", {"bucket_url": target, "file_format": "vhd"}
        ),
        "IMG.0077",
    )
    queued = env.owner.create(name="empty")
    error(
        env.owner.post(
            f"/v1/cloudimages/{queued['id']}/file", {"bucket_url": target, "file_format": "vhd"}
        ),
        "IMG.0046",
    )


# -- copy ------------------------------------------------------------------------


def test_copy_in_region_and_across(env):
    _job, image = created(env, env.put("disk.raw", os.urandom(MiB)), os_version="Debian 12")
    resp = env.owner.post(
        f"/v1/cloudimages/{image['id']}/copy", {"name": "copy", "description": "a copy"}
    )
    assert resp.status_code == 200, resp.text
    job = env.wait(resp.json["job_id"])
    assert job["status"] == "SUCCESS" and job["job_type"] == imaging.JOB_COPY
    copy = env.image(job["entities"]["image_id"])
    assert copy["id"] != image["id"] and copy["status"] == "active"
    assert copy["checksum"] == image["checksum"] and copy["size"] == image["size"]
    assert copy["virtual_size"] == image["virtual_size"]
    assert copy["__originalimagename"] == image["id"] and copy["__description"] == "a copy"
    assert copy["__os_version"] == "Debian 12" and copy["visibility"] == "private"
    assert env.owner.get(f"/v2/images/{copy['id']}/file").content == (
        env.owner.get(f"/v2/images/{image['id']}/file").content
    )
    body = {"name": "far", "region": "region-two", "project_name": "p", "agency_name": "a"}
    resp = env.owner.post(f"/v1/cloudimages/{image['id']}/cross_region_copy", body)
    job = env.wait(resp.json["job_id"])
    assert job["status"] == "SUCCESS", job
    far = env.image(job["entities"]["image_id"])
    assert os.listdir(env.tmp / "far") == [far["id"]]
    path = f"/v1/cloudimages/{image['id']}/cross_region_copy"
    error(env.owner.post(path, {**body, "region": "nowhere"}), "IMG.0001")
    error(env.owner.post(path, {**body, "region": "RegionOne"}), "IMG.0142")
    error(env.owner.post(path, {**body, "agency_name": ""}), "IMG.0001")
    copy_path = f"/v1/cloudimages/{image['id']}/copy"
    error(env.owner.post(copy_path, {"name": "x", "cmk_id": "k"}), "IMG.0095")
    error(env.owner.post(copy_path, {}), "IMG.0007")
    error(env.owner.post(copy_path, {"description": "no name"}), "IMG.0013")
    error(env.other.post(copy_path, {"name": "mine now"}), "IMG.0027", 404)


def test_copy_of_a_shared_image_needs_acceptance(env):
    _job, image = created(env, env.put("disk.raw", os.urandom(MiB)))
    assert (
        env.owner.patch(
            f"/v2/images/{image['id']}",
            [{"op": "replace", "path": "/visibility", "value": "shared"}],
        ).status_code
        == 200
    )
    assert env.owner.post(f"/v2/images/{image['id']}/members", {"member": "p2"}).status_code == 200
    path = f"/v1/cloudimages/{image['id']}/copy"
    error(env.other.post(path, {"name": "mine"}), "IMG.0196")
    resp = env.other.put(f"/v2/images/{image['id']}/members/p2", json={"status": "accepted"})
    assert resp.status_code == 200, resp.text
    resp = env.other.post(path, {"name": "mine"})
    job = env.wait(resp.json["job_id"], env.other)
    assert job["status"] == "SUCCESS", job
    copy = env.image(job["entities"]["image_id"], env.other)
    assert copy["owner"] == "p2" and copy["checksum"] == image["checksum"]


# -- bad input never gives a 500 ---------------------------------------------------


F = {"name": "n", "image_url": "p1-images:x", "min_disk": 40}


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        ({**F, "name": None}, "IMG.0013", "name"),
        ({**F, "name": "n" * 129}, "IMG.0002", "128"),
        ({**F, "name": " lead"}, "IMG.0003", "name"),
        ({**F, "image_url": "nocolon"}, "IMG.0017", "bucket"),
        ({**F, "image_url": "p1-images:../x"}, "IMG.0017", ".."),
        ({**F, "image_url": "p1-images:a b"}, "IMG.0175", "spaces"),
        ({**F, "image_url": "p2-images:x"}, "IMG.0069", "accessible"),
        ({**F, "image_url": "p1-images:none"}, "IMG.0057", "exist"),
        ({**F, "min_disk": 10}, "IMG.0055", "min_disk"),
        ({**F, "min_disk": "40"}, "IMG.0055", "min_disk"),
        ({**F, "min_disk": None}, "IMG.0055", "min_disk"),
        ({**F, "type": "X"}, "IMG.0024", "type"),
        ({**F, "os_type": "Mac"}, "IMG.0056", "os_type"),
        ({**F, "architecture": "mips"}, "IMG.0212", "architecture"),
        ({**F, "hw_firmware_type": "efi"}, "IMG.0141", "hw_firmware_type"),
        ({**F, "cmk_id": "k"}, "IMG.0095", "key"),
        ({**F, "tags": ["a.b"] * 11}, "IMG.0116", "10"),
        ({**F, "image_tags": [{"key": "="}]}, "IMG.0115", "key"),
        ({**F, "tags": ["a.b"], "image_tags": []}, "IMG.0115", "not both"),
        ({**F, "data_images": [{}] * 4}, "IMG.0001", "3"),
        ({**F, "data_images": ["x"]}, "IMG.0001", "object"),
        ({**F, "data_images": 5}, "IMG.0001", "list"),
        ({**F, "data_images": {"name": "d"}}, "IMG.0001", "list"),
        ({**F, "data_images": [{"name": "d", "image_url": 5, "min_disk": 1}]}, "IMG.0017", ""),
        ({**F, "is_quick_import": "yes"}, "IMG.0001", "true or false"),
        ({**F, "type": "IsoImage"}, "IMG.0159", "os_version"),
        ({"name": "n", "instance_id": "i-1"}, "IMG.0005", "compute plugin"),
        ({"name": "n", "volume_id": "v-1", "os_version": "x"}, "IMG.0001", "volume plugin"),
        ({"data_images": [{"name": "d", "volume_id": "v"}]}, "IMG.0001", "volume plugin"),
        ({"name": "n", "backup_id": "b"}, "IMG.0020", "backup plugin"),
        ({"name": "n"}, "IMG.0017", "image_url"),
        ({}, "IMG.0007", "empty"),
        ([], "IMG.0001", "object"),
    ],
)
def test_create_refusals(env, body, code, words):
    env.put("x", os.urandom(4096))
    message = error(env.owner.post("/v2/cloudimages/action", body), code)
    assert words in message


QUICK = "/v2/cloudimages/quickimport/action"


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        (QUICK, {**F, "type": []}, "IMG.0024"),
        (QUICK, {**F, "os_version": 5}, "IMG.0001"),
        (QUICK, {**F, "os_version": "x", "min_disk": 0}, "IMG.0055"),
        ("/v1/cloudimages/dataimages/action", {**F, "min_disk": 39}, "IMG.0055"),
        ("/v1/cloudimages/dataimages/action", {**F, "os_type": "Other"}, "IMG.0056"),
        ("/v1/cloudimages/dataimages/action", {**F, "image_url": None}, "IMG.0017"),
        ("/v1/cloudimages/dataimages/action", {**F, "description": "<b>"}, "IMG.0004"),
        ("/v1/cloudimages/dataimages/action", {**F, "enterprise_project_id": 5}, "IMG.0001"),
    ],
)
def test_other_create_refusals(env, path, body, code):
    """Quick import and data images check their own limits."""
    env.put("x", os.urandom(4096))
    error(env.owner.post(path, body), code)


def test_malformed_requests(env):
    for path in ("/v2/cloudimages/action", "/v1/cloudimages/dataimages/action"):
        resp = env.owner.post(path, body=None, headers={"Content-Type": "application/json"})
        assert resp.status_code == 400 and resp.json["error"]["code"].startswith("IMG.")
    resp = env.owner._client.simulate_post(
        "/v2/cloudimages/action", body="{bad", headers={**env.owner.headers}
    )
    error(resp, "IMG.0001")
    resp = env.owner._client.simulate_post(
        "/v2/cloudimages/action", body="[" * 100000, headers={**env.owner.headers}
    )
    assert resp.status_code in (400, 413) and resp.json["error"]["code"].startswith("IMG.")
    resp = env.owner.post("/v1/cloudimages/wholeimages/action", {"name": "w", "backup_id": "b"})
    assert "backup" in error(resp, "IMG.0001")
    assert env.owner.put("/v2/cloudimages/action", json={}).status_code == 405
    error(env.owner.put("/v1/cloudimages/nope/upload", json={"image_url": "x"}), "IMG.0017")
    assert (
        env.owner.put("/v1/cloudimages/nope/upload", json={"image_url": f"{BUCKET}:x"}).status_code
        == 404
    )


def test_bucket_rule_listed_and_no_object_store(make_env, tmp_path):
    conf = CONF.replace(
        "regions = region-two:far",
        "regions = region-two:far\nbucket_owner_rule = listed\nproject_buckets = p1:shared-bkt",
    )
    env = make_env(conf)
    (env.obs / "shared-bkt").mkdir()
    (env.obs / "shared-bkt" / "x").write_bytes(os.urandom(4096))
    env.put("x", os.urandom(4096))
    error(create(env, f"{BUCKET}:x"), "IMG.0069")  # the prefix rule is off
    assert create(env, "shared-bkt:x").status_code == 200
    bare = make_env(CONF.replace("object_store = obs", ""), tmp_path / "bare")
    error(create(bare, f"{BUCKET}:x"), "IMG.0069")


def make_iso(blocks: int = 64) -> bytes:
    """A minimal ISO 9660 volume: a primary descriptor and a set terminator."""
    data = bytearray(blocks * 2048)
    pvd = 16 * 2048
    data[pvd : pvd + 7] = b"\x01CD001\x01"
    data[pvd + 40 : pvd + 48] = b"IMS_TEST"
    data[pvd + 80 : pvd + 84] = blocks.to_bytes(4, "little")
    data[pvd + 128 : pvd + 130] = (2048).to_bytes(2, "little")
    data[pvd + 2048 : pvd + 2048 + 7] = b"\xffCD001\x01"
    return bytes(data)


def test_iso_files_make_iso_images_only(env):
    iso = env.put("boot.iso", make_iso())
    resp = create(env, iso)
    job = env.wait(resp.json["job_id"])
    assert job["status"] == "FAIL" and job["error_code"] == "IMG.0166"
    _job, image = created(env, iso, type="IsoImage", os_version="Debian 12")
    assert image["disk_format"] == "iso" and image["virtual_env_type"] == "IsoImage"
    assert image["size"] == len(make_iso()) and image["__lazyloading"] == "false"
    assert env.owner.get(f"/v2/images/{image['id']}/file").content == make_iso()
    resp = create(env, env.put("disk.raw", os.urandom(MiB)), type="IsoImage", os_version="x")
    job = env.wait(resp.json["job_id"])
    assert job["status"] == "FAIL" and job["error_code"] == "IMG.0167"
    body = {"bucket_url": f"{BUCKET}:iso.vhd", "file_format": "vhd"}
    error(env.owner.post(f"/v1/cloudimages/{image['id']}/file", body), "IMG.0071")
    error(env.owner.post(f"/v1/cloudimages/{image['id']}/copy", {"name": "c"}), "IMG.0166")


@needs_qemu
def test_internal_format_that_needs_a_temporary_file(make_env, tmp_path):
    env = make_env(CONF.replace("[imaging]", "[imaging]\ninternal_format = qcow2"))
    raw = make_raw(tmp_path / "disk.raw", 4 * MiB)
    _job, image = created(env, env.put("disk.raw", raw))
    assert image["disk_format"] == "qcow2" and image["__lazyloading"] == "false"
    out = tmp_path / "stored.qcow2"
    out.write_bytes(env.owner.get(f"/v2/images/{image['id']}/file").content)
    subprocess.run(
        ["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(raw), str(out)], check=True
    )
    tasks = env.services.stores.get("os_glance_tasks_store").datadir
    assert os.listdir(tasks) == []


ODD = [None, 2**70, 1.5, "x" * 5000, [None], {"a": {}}]


def test_odd_values_in_every_field_never_give_a_500(make_env):
    env = make_env(CONF + "api_workers = 0\n")  # requests only: no job runs
    env.put("x", os.urandom(4096))
    image = env.owner.create(name="uploaded")
    assert env.owner.upload(image["id"], os.urandom(MiB)).status_code == 204
    calls = [
        ("post", "/v2/cloudimages/action", {**F, "os_version": "v", "data_images": [dict(F)]}),
        ("post", "/v1/cloudimages/dataimages/action", dict(F)),
        ("post", QUICK, {**F, "os_version": "v"}),
        ("put", f"/v1/cloudimages/{image['id']}/upload", {"image_url": "p1-images:x"}),
        (
            "post",
            f"/v1/cloudimages/{image['id']}/file",
            {"bucket_url": "p1-images:y", "file_format": "vhd", "is_quick_export": False},
        ),
        ("post", f"/v1/cloudimages/{image['id']}/copy", {"name": "c", "description": "d"}),
        (
            "post",
            f"/v1/cloudimages/{image['id']}/cross_region_copy",
            {"name": "c", "region": "region-two", "project_name": "p", "agency_name": "a"},
        ),
    ]
    for method, path, good in calls:
        keys = [*good, "type", "os_type", "architecture", "tags", "image_tags", "cmk_id"]
        for key in keys:
            for value in ODD:
                body = {**good, key: value}
                if method == "put":
                    resp = env.owner.put(path, json=body)
                else:
                    resp = env.owner.post(path, body)
                assert resp.status_code < 500, (path, key, value, resp.text)
                if resp.status_code != 200:
                    assert resp.json["error"]["code"].startswith("IMG."), resp.text
                with env.services.db.session() as session:  # stay below flow control
                    session.execute(sa.delete(Job))


def test_private_image_quota_stops_create(tmp_path: Path) -> None:
    env = Env(tmp_path, CONF + "api_workers = 0\n[native]\nprivate_image_quota = 1\n")
    ref = env.put("disk.raw", os.urandom(4096))
    assert create(env, ref).status_code == 200
    resp = create(env, ref)
    assert resp.status_code == 400, resp.text
    assert resp.json["error"]["code"] == "IMG.0015"
