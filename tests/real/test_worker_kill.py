"""Kill ims-worker mid-import: the job ends SUCCESS or FAIL, never stuck or half-active.

A real ims-api with no job threads ([jobs] api_workers = 0) and real
ims-worker processes share one database (a SQLite file, or PostgreSQL when
IMS_TEST_POSTGRES_URL is set); images go to a real Swift, users' files come
from the same cluster's S3 front. A qcow2 of random data makes the import
take a few seconds. The worker is killed (SIGKILL, whole process group)
while it converts the system image, and again while it converts the data
image; a new worker resumes the job each time once the heartbeat is stale.
The job must end SUCCESS with images whose data is the source disk, or FAIL
with a reason and no data left; no attempt's leftovers may stay in Swift.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from boto3.s3.transfer import TransferConfig
from sqlalchemy.engine import make_url

from tests.functional.servers import IMSServer, ServerError, ServerProcess, clean_env
from tests.real import store_backends as backends
from tests.real.swift_server import SwiftServer
from tests.real.test_native_e2e import User, compare

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img"),
]

DISK_MIB = 96
IMPORT_MIB = 128
#: Segment names of Swift large objects: <image id>/<upload token>/<number>.
SEGMENT = re.compile(r"^(?P<image>[^/]+)/(?P<token>[^/]+)/\d+$")


class Worker(ServerProcess):
    """``ims-worker --config-file F`` in its own process group."""

    name = "ims-worker"

    def __init__(self, workdir: Path, conf_path: Path, number: int) -> None:
        self.name = f"ims-worker-{number}"
        super().__init__(workdir)
        self.conf_path = conf_path

    def start(self, timeout: float = 60.0) -> Worker:
        self._spawn(
            [sys.executable, "-m", "ims.cmd.worker", "--config-file", str(self.conf_path)],
            clean_env(),
        )
        deadline = time.monotonic() + timeout
        while "job threads" not in self.log_text():
            self.check_alive()
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"{self.name} did not start; log:\n{self.log_text()}")
            time.sleep(0.1)
        return self

    def kill(self) -> None:
        """SIGKILL the whole process group: no cleanup, no last heartbeat."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.stop()


@contextlib.contextmanager
def database(kind: str, state: Path) -> Iterator[str]:
    """Yield the URL of a new database of ``kind``; drop it afterwards."""
    if kind == "sqlite":
        state.mkdir(parents=True, exist_ok=True)
        yield f"sqlite:///{state / 'jobs.sqlite'}"
        return
    server = os.environ.get("IMS_TEST_POSTGRES_URL")
    if not server:
        pytest.skip("IMS_TEST_POSTGRES_URL is not set")
    name = f"ims_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


@pytest.fixture
def disk(tmp_path: Path) -> dict[str, Path]:
    """A raw disk of random data (incompressible, so the import takes time) and its qcow2."""
    raw = tmp_path / "disk.raw"
    with open(raw, "wb") as out:
        for _ in range(DISK_MIB):
            out.write(os.urandom(1 << 20))
    qcow2 = tmp_path / "disk.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)], check=True
    )
    return {"raw": raw, "qcow2": qcow2}


@pytest.fixture(params=["sqlite", "postgresql"])
def cluster(request: pytest.FixtureRequest, swift_up: SwiftServer, tmp_path: Path) -> Any:
    """Start an ims-api without job threads; ims-workers beside it on demand.

    Yields ``start(**jobs_options)`` -> (server, worker factory).
    """
    tag = uuid.uuid4().hex[:8]
    servers: list[IMSServer] = []
    workers: list[Worker] = []
    with database(request.param, tmp_path / "db") as url:

        def start(**jobs: str) -> tuple[IMSServer, Any]:
            server = IMSServer(
                tmp_path,
                extra_conf={
                    "DEFAULT": {"enabled_backends": "swift:swift"},
                    "database": {"connection": url},
                    "glance_store": {"default_backend": "swift"},
                    "swift": {
                        **{
                            k: str(v)
                            for k, v in backends.swift_options(swift_up, f"ims-{tag}").items()
                        },
                        "swift_store_large_object_size": "8",
                        "swift_store_large_object_chunk_size": "8",
                    },
                    "imaging": {"object_store": "obs", "object_store_type": "s3"},
                    "obs": {
                        k: str(v) for k, v in backends.s3_options(swift_up, f"obs-{tag}").items()
                    },
                    "jobs": {
                        "api_workers": "0",
                        "worker_threads": "2",
                        "poll_interval": "0.2",
                        "heartbeat_interval": "1",
                        "stale_after": "3",
                        "max_attempts": "3",
                        **jobs,
                    },
                },
            )
            servers.append(server)
            server.start()

            def worker() -> Worker:
                started = Worker(server.workdir, server.conf_path, len(workers) + 1)
                workers.append(started)
                return started.start()

            return server, worker

        try:
            yield start
        finally:
            for started in workers:
                started.stop()
            for server in servers:
                server.stop()


def poll(user: User, job_id: str, until: Any, timeout: float = 60.0) -> dict[str, Any]:
    """Poll the job until ``until(job)`` holds; return it."""
    deadline = time.monotonic() + timeout
    while True:
        job = user.call("GET", f"/v1/{user.project}/jobs/{job_id}").json()
        if until(job):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def leftovers(swift_up: SwiftServer, server: IMSServer) -> tuple[set[str], dict[str, set[str]]]:
    """The objects in the image container, and each image's upload tokens in its segments."""
    conn = backends.swift_connection(swift_up)
    container = server.conf["swift"]["swift_store_container"]
    names = set(backends.container_names(conn, container))
    tokens: dict[str, set[str]] = {}
    for name in backends.container_names(conn, f"{container}_segments"):
        match = SEGMENT.match(name)
        assert match, name
        tokens.setdefault(match["image"], set()).add(match["token"])
    return names, tokens


def download(user: User, image_id: str, path: Path) -> None:
    with user.call("GET", f"/v2/images/{image_id}/file", stream=True) as resp:
        assert resp.status_code == 200, resp.text
        with open(path, "wb") as out:
            for chunk in resp.iter_content(1 << 20):
                out.write(chunk)


def create(server: IMSServer, swift_up: SwiftServer, disk: dict[str, Path]) -> tuple[User, str]:
    """Put the qcow2 in a bucket; ask for a system image and a data image from it."""
    project = uuid.uuid4().hex
    user = User(server.url, project)
    bucket = f"{project}-kill"
    s3 = backends.s3_client(swift_up)
    s3.create_bucket(Bucket=bucket)
    parts = TransferConfig(multipart_threshold=16 << 20, multipart_chunksize=16 << 20)
    s3.upload_file(str(disk["qcow2"]), bucket, "disk.qcow2", Config=parts)
    resp = user.call(
        "POST",
        "/v2/cloudimages/action",
        {
            "name": "killed-system",
            "image_url": f"{bucket}:disk.qcow2",
            "min_disk": 40,
            "data_images": [
                {"name": "killed-data", "image_url": f"{bucket}:disk.qcow2", "min_disk": 40}
            ],
        },
    )
    assert resp.status_code == 200, resp.text
    return user, resp.json()["job_id"]


def running_past(percent: float) -> Any:
    return lambda job: job["status"] == "RUNNING" and job["entities"]["process_percent"] >= percent


def check_outcome(
    user: User, job: dict[str, Any], images: tuple[str, str], raw: Path, tmp_path: Path
) -> None:
    """SUCCESS with the source disk's data in every image, or FAIL with a reason."""
    if job["status"] == "SUCCESS":
        assert job["entities"]["sub_jobs_result"][0]["status"] == "SUCCESS", job
        for image_id in images:
            image = user.image(image_id)
            assert image["status"] == "active", image
            assert image["virtual_size"] == DISK_MIB << 20
            stored = tmp_path / f"{image_id}.zvhd2"
            download(user, image_id, stored)
            compare(raw, stored, "zvhd2")
            stored.unlink()
    else:
        assert job["status"] == "FAIL" and job["fail_reason"], job
        for image_id in images:
            assert user.image(image_id)["status"] == "killed"


def test_killed_worker_job_is_resumed(cluster, swift_up, disk, tmp_path):
    server, worker = cluster()
    user, job_id = create(server, swift_up, disk)
    system_id = user.call("GET", f"/v1/{user.project}/jobs/{job_id}").json()["entities"][
        "image_id"
    ]

    # Phase 1: kill while the system image is being converted.
    first = worker()
    job = poll(user, job_id, running_past(10))
    data_id = job["entities"]["sub_jobs_result"][0]["entities"]["image_id"]
    first.kill()
    assert user.image(system_id)["status"] == "saving"
    assert user.image(data_id)["status"] == "saving"
    assert user.call("GET", f"/v1/{user.project}/jobs/{job_id}").json()["status"] == "RUNNING"

    # Phase 2: a new worker resumes after stale_after; kill it during the data image.
    second = worker()
    poll(user, job_id, running_past(60))
    second.kill()
    assert user.image(system_id)["status"] == "active"
    assert user.image(data_id)["status"] == "saving"

    # A third worker finishes the job.
    worker()
    job = poll(user, job_id, lambda job: job["status"] in ("SUCCESS", "FAIL"))
    assert job["status"] == "SUCCESS", job
    check_outcome(user, job, (system_id, data_id), disk["raw"], tmp_path)
    # The killed attempts' unfinished uploads are gone: one upload per image is left.
    names, tokens = leftovers(swift_up, server)
    assert names == {system_id, data_id}
    assert {image: len(found) for image, found in tokens.items()} == {system_id: 1, data_id: 1}


def test_killed_worker_job_fails_after_max_attempts(cluster, swift_up, disk, tmp_path):
    server, worker = cluster(max_attempts="1")
    user, job_id = create(server, swift_up, disk)
    first = worker()
    job = poll(user, job_id, running_past(10))
    images = (
        job["entities"]["image_id"],
        job["entities"]["sub_jobs_result"][0]["entities"]["image_id"],
    )
    first.kill()
    assert user.image(images[0])["status"] == "saving"

    # The next worker finds the job stale with no attempts left: it fails it and cleans up.
    worker()
    job = poll(user, job_id, lambda job: job["status"] in ("SUCCESS", "FAIL"))
    assert job["status"] == "FAIL", job
    check_outcome(user, job, images, disk["raw"], tmp_path)
    assert leftovers(swift_up, server) == (set(), {})


def test_killed_worker_glance_import_is_resumed(cluster, swift_up, tmp_path):
    """A Glance interoperable import (a job too) survives its worker's death."""
    server, worker = cluster()
    user = User(server.url, uuid.uuid4().hex)
    data = tmp_path / "staged.raw"
    digest = hashlib.md5()
    with open(data, "wb") as out:
        for _ in range(IMPORT_MIB):
            chunk = os.urandom(1 << 20)
            digest.update(chunk)
            out.write(chunk)
    resp = user.call(
        "POST",
        "/v2/images",
        {"name": "imported", "disk_format": "raw", "container_format": "bare"},
    )
    assert resp.status_code == 201, resp.text
    image_id = resp.json()["id"]
    with open(data, "rb") as body:
        resp = user.call(
            "PUT",
            f"/v2/images/{image_id}/stage",
            data=body,
            headers={"Content-Type": "application/octet-stream"},
        )
    assert resp.status_code == 204, resp.text
    first = worker()
    resp = user.call(
        "POST", f"/v2/images/{image_id}/import", {"method": {"name": "glance-direct"}}
    )
    assert resp.status_code == 202, resp.text

    # Kill the worker once its copy into Swift has begun (the first segment is there).
    deadline = time.monotonic() + 60
    while not leftovers(swift_up, server)[1].get(image_id):
        assert time.monotonic() < deadline, user.image(image_id)
        time.sleep(0.02)
    first.kill()
    (task,) = user.call("GET", f"/v2/images/{image_id}/tasks").json()["tasks"]
    assert task["status"] == "processing", task
    image = user.image(image_id)
    assert image["status"] == "importing" and image["os_glance_import_task"] == task["id"]

    worker()
    deadline = time.monotonic() + 60
    while (task := user.call("GET", f"/v2/tasks/{task['id']}").json())["status"] == "processing":
        assert time.monotonic() < deadline, task
        time.sleep(0.1)
    image = user.image(image_id)
    assert task["status"] == "success", task
    assert image["status"] == "active" and image["checksum"] == digest.hexdigest()
    assert "os_glance_import_task" not in image
    downloaded = hashlib.md5()
    with user.call("GET", f"/v2/images/{image_id}/file", stream=True) as resp:
        assert resp.status_code == 200
        for chunk in resp.iter_content(1 << 20):
            downloaded.update(chunk)
    assert downloaded.hexdigest() == digest.hexdigest()
    # The dead attempt's segments went before the new one wrote.
    names, tokens = leftovers(swift_up, server)
    assert names == {image_id} and len(tokens[image_id]) == 1
