"""Interoperable import: stage + glance-direct, web-download, copy-image."""

from __future__ import annotations

import datetime
import hashlib
import http.server
import os
import threading
import time

import pytest
import sqlalchemy as sa
from falcon import testing

from ims import conf as ims_conf
from ims.api.app import build_services, create_app
from ims.core.jobs import JobRunner
from ims.db import api as db
from ims.db.job_models import Job
from ims.db.models import utcnow
from tests.conftest import Client

DATA = os.urandom(1024 * 1024 + 5)
MULTISTORE = """
[DEFAULT]
enabled_backends = fast:filesystem, cheap:filesystem
[glance_store]
default_backend = fast
[fast]
filesystem_store_datadir = $TMP/fast
store_description = Fast disks
weight = 100
[cheap]
filesystem_store_datadir = $TMP/cheap
store_description = Cheap disks
weight = 10
"""


@pytest.fixture
def clients(clients):
    """Apps with a job thread: imports run as jobs."""

    def build(**overrides):
        overrides.setdefault("jobs__api_workers", 1)
        return clients(**overrides)

    return build


def wait_for(client, image_id, predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        doc = client.get(f"/v2/images/{image_id}").json
        if predicate(doc):
            return doc
        assert time.monotonic() < deadline, doc
        time.sleep(0.05)


def stage(client, image_id, data=DATA):
    return client.put(
        f"/v2/images/{image_id}/stage",
        body=data,
        headers={"Content-Type": "application/octet-stream"},
    )


def do_import(client, image_id, body, headers=None):
    return client.post(f"/v2/images/{image_id}/import", body, headers=headers)


def test_import_info_and_header(api):
    info = api["owner"].get("/v2/info/import").json
    assert info["import-methods"]["value"] == ["glance-direct", "web-download", "copy-image"]
    resp = api["owner"].post("/v2/images", {"name": "x"})
    assert resp.headers["openstack-image-import-methods"] == (
        "glance-direct,web-download,copy-image"
    )


def test_glance_direct(api):
    owner = api["owner"]
    image = owner.create(disk_format="raw")
    assert stage(owner, image["id"]).status_code == 204
    assert owner.get(f"/v2/images/{image['id']}").json["status"] == "uploading"
    assert stage(owner, image["id"]).status_code == 409
    resp = do_import(owner, image["id"], {"method": {"name": "glance-direct"}, "all_stores": True})
    assert resp.status_code == 202, resp.text
    doc = wait_for(owner, image["id"], lambda d: d["status"] == "active")
    assert doc["checksum"] == hashlib.md5(DATA).hexdigest()
    assert doc["os_hash_value"] == hashlib.sha512(DATA).hexdigest()
    assert doc["size"] == len(DATA)
    assert "os_glance_import_task" not in doc
    assert owner.get(f"/v2/images/{image['id']}/file").content == DATA
    tasks = owner.get(f"/v2/images/{image['id']}/tasks").json["tasks"]
    assert len(tasks) == 1
    task = tasks[0]
    assert task["status"] == "success" and task["type"] == "api_image_import"
    assert task["input"]["import_req"]["method"]["name"] == "glance-direct"
    assert task["request_id"] == resp.headers["x-openstack-request-id"]
    assert owner.get(f"/v2/tasks/{task['id']}").json["id"] == task["id"]
    assert api["other"].get(f"/v2/tasks/{task['id']}").status_code == 404


def test_glance_direct_format_mismatch_fails_task(api):
    owner = api["owner"]
    image = owner.create(disk_format="qcow2")
    assert stage(owner, image["id"]).status_code == 204
    assert do_import(owner, image["id"], {"method": {"name": "glance-direct"}}).status_code == 202
    doc = wait_for(owner, image["id"], lambda d: d["status"] == "queued")
    assert doc["os_glance_failed_import"] == "file"
    task = owner.get(f"/v2/images/{image['id']}/tasks").json["tasks"][0]
    assert task["status"] == "failure" and "qcow2" in task["message"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 400),
        ({"method": "glance-direct"}, 400),
        ({"method": {"name": "nope"}}, 400),
        ({"method": {"name": "glance-direct"}, "all_stores": "yes"}, 400),
        ({"method": {"name": "glance-direct"}, "all_stores_must_succeed": False}, 400),
        ({"method": {"name": "web-download"}}, 409),  # image is uploading, not queued
        ({"method": {"name": "copy-image"}}, 403),  # admin only
    ],
)
def test_import_refusals(api, body, status):
    owner = api["owner"]
    image = owner.create()
    stage(owner, image["id"])
    assert do_import(owner, image["id"], body).status_code == status


def test_glance_direct_needs_staged_data(api):
    image = api["owner"].create()
    resp = do_import(api["owner"], image["id"], {"method": {"name": "glance-direct"}})
    assert resp.status_code == 409


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        if self.path == "/image":
            self.send_response(200)
            self.send_header("Content-Length", str(len(DATA)))
            self.end_headers()
            self.wfile.write(DATA)
        elif self.path == "/redirect-out":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data")
            self.end_headers()
        elif self.path == "/redirect-in":
            self.send_response(302)
            self.send_header("Location", "/image")
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def web_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _web_api(clients, web_server, private=True):
    port = web_server.rsplit(":", 1)[1]
    return clients(
        import_filtering_opts__allowed_ports=[port],
        import_filtering_opts__allow_private_addresses=private,
    )


def test_web_download(clients, web_server):
    api = _web_api(clients, web_server)
    owner = api["owner"]
    image = owner.create()
    resp = do_import(
        owner,
        image["id"],
        {"method": {"name": "web-download", "uri": f"{web_server}/redirect-in"}},
    )
    assert resp.status_code == 202, resp.text
    doc = wait_for(owner, image["id"], lambda d: d["status"] == "active")
    assert doc["checksum"] == hashlib.md5(DATA).hexdigest()


def test_web_download_refuses_private_addresses_by_default(clients, web_server):
    api = _web_api(clients, web_server, private=False)
    owner = api["owner"]
    image = owner.create()
    resp = do_import(
        owner, image["id"], {"method": {"name": "web-download", "uri": f"{web_server}/image"}}
    )
    # The address check happens when the task resolves the host.
    assert resp.status_code == 202
    doc = wait_for(
        owner, image["id"], lambda d: d["status"] == "queued" and d.get("os_glance_failed_import")
    )
    task = owner.get(f"/v2/images/{doc['id']}/tasks").json["tasks"][0]
    assert "not a public address" in task["message"]


def test_web_download_redirect_is_filtered(clients, web_server):
    api = _web_api(clients, web_server)
    owner = api["owner"]
    image = owner.create()
    do_import(
        owner,
        image["id"],
        {"method": {"name": "web-download", "uri": f"{web_server}/redirect-out"}},
    )
    wait_for(
        owner, image["id"], lambda d: d["status"] == "queued" and d.get("os_glance_failed_import")
    )
    task = owner.get(f"/v2/images/{image['id']}/tasks").json["tasks"][0]
    assert "filtering" in task["message"]


@pytest.mark.parametrize(
    "uri",
    [
        "ftp://example.com/x",
        "http://example.com:8080/x",
        "file:///etc/passwd",
        "http://user:pw@example.com/x",
        5,
    ],
)
def test_web_download_filter_is_400(api, uri):
    image = api["owner"].create()
    resp = do_import(api["owner"], image["id"], {"method": {"name": "web-download", "uri": uri}})
    assert resp.status_code == 400


def test_multistore_upload_copy_and_delete_from_store(clients):
    api = clients(conf_text=MULTISTORE)
    owner, admin = api["owner"], api["admin"]
    stores = owner.get("/v2/info/stores").json["stores"]
    assert stores == [
        {"id": "fast", "description": "Fast disks", "default": "true"},
        {"id": "cheap", "description": "Cheap disks"},
    ]
    assert owner.get("/v2/info/stores/detail").status_code == 403
    detail = admin.get("/v2/info/stores/detail").json["stores"]
    assert {s["id"]: s["weight"] for s in detail} == {"fast": 100, "cheap": 10}
    resp = owner.post(
        "/v2/images", {"name": "m", "disk_format": "raw", "container_format": "bare"}
    )
    assert resp.headers["openstack-image-store-ids"] == "fast,cheap"
    image_id = resp.json["id"]
    resp = owner.put(
        f"/v2/images/{image_id}/file",
        body=DATA,
        headers={"Content-Type": "application/octet-stream", "X-Image-Meta-Store": "cheap"},
    )
    assert resp.status_code == 204
    assert owner.get(f"/v2/images/{image_id}").json["stores"] == "cheap"
    # copy-image is admin-only
    body = {"method": {"name": "copy-image"}, "stores": ["fast"]}
    assert do_import(owner, image_id, body).status_code == 403
    assert (
        do_import(
            admin, image_id, {"method": {"name": "copy-image"}, "stores": ["cheap"]}
        ).status_code
        == 400
    )
    assert (
        do_import(
            admin, image_id, {"method": {"name": "copy-image"}, "stores": ["nowhere"]}
        ).status_code
        == 409
    )
    assert do_import(admin, image_id, body).status_code == 202
    doc = wait_for(owner, image_id, lambda d: d.get("stores") == "cheap,fast")
    assert doc["os_glance_importing_to_stores"] == ""
    assert owner.get(f"/v2/images/{image_id}/file").content == DATA
    assert owner.delete(f"/v2/stores/fast/{image_id}").status_code == 403
    assert admin.delete(f"/v2/stores/fast/{image_id}").status_code == 204
    assert owner.get(f"/v2/images/{image_id}").json["stores"] == "cheap"
    assert admin.delete(f"/v2/stores/cheap/{image_id}").status_code == 403  # last one
    assert admin.delete(f"/v2/stores/fast/{image_id}").status_code == 404


def test_multistore_import_to_all_stores(clients):
    api = clients(conf_text=MULTISTORE)
    owner = api["owner"]
    image = owner.create()
    stage(owner, image["id"])
    body = {"method": {"name": "glance-direct"}, "all_stores": True}
    assert do_import(owner, image["id"], body).status_code == 202
    doc = wait_for(owner, image["id"], lambda d: d["status"] == "active")
    assert doc["stores"] == "cheap,fast"
    body = {"method": {"name": "glance-direct"}, "all_stores": True, "stores": ["fast"]}
    other = owner.create()
    stage(owner, other["id"])
    assert do_import(owner, other["id"], body).status_code == 400


def test_single_store_has_no_stores_api(api):
    assert api["owner"].get("/v2/info/stores").status_code == 404
    image = api["owner"].create()
    assert api["admin"].delete(f"/v2/stores/file/{image['id']}").status_code == 404


def test_delete_while_staged_removes_staging(api, tmp_path):
    owner = api["owner"]
    image = owner.create()
    stage(owner, image["id"])
    staging = tmp_path / "state" / "staging" / "staging"
    assert (staging / image["id"]).exists()
    assert owner.delete(f"/v2/images/{image['id']}").status_code == 204
    assert not (staging / image["id"]).exists()


@pytest.fixture
def dead_worker_app(tmp_path):
    """An app with no job threads, its services, and a runner to start later."""
    made = []

    def build(**jobs_options):
        path = tmp_path / "ims.conf"
        path.write_text(MULTISTORE.replace("$TMP", str(tmp_path)))
        conf = ims_conf.load(["--config-file", str(path)])
        conf.set_override("state_path", str(tmp_path / "state"))
        for name, value in {"api_workers": 0, "poll_interval": 0.05, **jobs_options}.items():
            conf.set_override(name, value, group="jobs")
        services = build_services(conf)
        client = Client(testing.TestClient(create_app(conf, services)), "p1", "member")
        runner = JobRunner(services.jobs, 1)
        made.append(runner)
        return services, client, runner

    yield build
    for runner in made:
        runner.stop()


def _die_mid_import(services, client, image_id):
    """Start a glance-direct import; a worker takes it, writes part of it and dies."""
    stage(client, image_id)
    body = {"method": {"name": "glance-direct"}, "all_stores": True}
    assert do_import(client, image_id, body).status_code == 202
    job, _user, _roles = services.jobs.claim("dead-worker")
    assert job.job_type == "api_image_import"
    # It finished the copy to 'cheap' (the location is recorded, the data is not this
    # image's yet: it gets rewritten) and was halfway through 'fast'.
    cheap, fast = services.stores.get("cheap"), services.stores.get("fast")
    stored = cheap.add(image_id, [b"first attempt"])
    with services.db.session() as session:
        db.location_add(session, image_id, "cheap", stored.url)
    partial = os.path.join(fast.datadir, f".partial-{image_id}-dead")
    with open(partial, "wb") as out:
        out.write(DATA[:1000])
    # Its heartbeat stops.
    with services.db.session() as session:
        session.execute(
            sa.update(Job)
            .where(Job.id == job.id)
            .values(heartbeat_at=utcnow() - datetime.timedelta(hours=1))
        )
    return partial


def test_import_of_a_dead_worker_is_resumed(dead_worker_app):
    services, client, runner = dead_worker_app()
    image = client.create(disk_format="raw")
    partial = _die_mid_import(services, client, image["id"])
    assert client.get(f"/v2/images/{image['id']}").json["status"] == "importing"

    runner.start()
    doc = wait_for(client, image["id"], lambda d: d["status"] == "active")
    assert doc["stores"] == "cheap,fast"
    assert doc["checksum"] == hashlib.md5(DATA).hexdigest()
    assert doc["os_glance_importing_to_stores"] == "" and doc["os_glance_failed_import"] == ""
    assert "os_glance_import_task" not in doc
    assert client.get(f"/v2/images/{image['id']}/file").content == DATA
    for store_id in ("cheap", "fast"):
        store = services.stores.get(store_id)
        assert b"".join(store.get(store.url_prefix() + image["id"])) == DATA
    assert not os.path.exists(partial)
    (task,) = client.get(f"/v2/images/{image['id']}/tasks").json["tasks"]
    assert task["status"] == "success" and task["message"] == ""


def test_import_of_a_dead_worker_fails_after_max_attempts(dead_worker_app, tmp_path):
    services, client, runner = dead_worker_app(max_attempts=1)
    image = client.create(disk_format="raw")
    partial = _die_mid_import(services, client, image["id"])

    runner.start()
    doc = wait_for(client, image["id"], lambda d: d["status"] == "queued")
    assert doc["os_glance_failed_import"] == "cheap,fast"
    assert doc["os_glance_importing_to_stores"] == ""
    assert "os_glance_import_task" not in doc and "stores" not in doc
    (task,) = client.get(f"/v2/images/{image['id']}/tasks").json["tasks"]
    assert task["status"] == "failure" and "Gave up after 1 attempts" in task["message"]

    # Nothing of the import is left: no data, no partial upload, no staged file
    # (the cleanup removes them right after it puts the image back).
    def leftovers():
        found = [partial] if os.path.exists(partial) else []
        for store_id in ("cheap", "fast"):
            found += os.listdir(services.stores.get(store_id).datadir)
        staged = tmp_path / "state" / "staging" / "staging" / image["id"]
        return found + ([str(staged)] if staged.exists() else [])

    deadline = time.monotonic() + 10
    while leftovers():
        assert time.monotonic() < deadline, leftovers()
        time.sleep(0.05)
    # The image can be staged and imported again.
    assert stage(client, image["id"]).status_code == 204


def test_import_whose_lock_was_taken_over_leaves_the_image_alone(dead_worker_app):
    services, client, runner = dead_worker_app()
    image = client.create(disk_format="raw")
    stage(client, image["id"])
    body = {"method": {"name": "glance-direct"}, "all_stores": True}
    assert do_import(client, image["id"], body).status_code == 202
    # No worker ran it before the lock went stale, and another import took the lock.
    with services.db.session() as session:
        db.image_update(session, image["id"], properties={"os_glance_import_task": "other"})

    runner.start()
    (task,) = client.get(f"/v2/images/{image['id']}/tasks").json["tasks"]
    deadline = time.monotonic() + 20
    while task["status"] == "pending":
        assert time.monotonic() < deadline, task
        time.sleep(0.05)
        task = client.get(f"/v2/tasks/{task['id']}").json
    assert task["status"] == "failure" and "took over" in task["message"]
    doc = client.get(f"/v2/images/{image['id']}").json
    assert doc["status"] == "importing" and doc["os_glance_import_task"] == "other"
