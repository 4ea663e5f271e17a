"""Jobs: run once, fail with reasons, resume after a dead worker, never stick."""

from __future__ import annotations

import collections
import datetime
import threading
import time

import pytest
import sqlalchemy as sa
from falcon import testing

from ims import conf as ims_conf
from ims.api.app import build_services, create_app
from ims.context import RequestContext, expand_roles
from ims.core import jobs
from ims.db import migration
from ims.db.job_models import Job
from ims.db.session import Database, create_engine

CTX = RequestContext(project_id="p1", user_id="u1", roles=expand_roles(["member"]))


@pytest.fixture
def database_url(tmp_path):
    return f"sqlite:///{tmp_path}/jobs.sqlite"


@pytest.fixture
def service(database_url):
    conf = ims_conf.load([])
    conf.set_override("poll_interval", 0.05, group="jobs")
    conf.set_override("heartbeat_interval", 1, group="jobs")
    conf.set_override("stale_after", 3, group="jobs")
    engine = create_engine(database_url)
    migration.upgrade(engine)
    yield jobs.JobService(conf, Database(engine))
    engine.dispose()


def wait_done(service, job_id, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        job = service.get(CTX, job_id)
        if job.status in (jobs.SUCCESS, jobs.FAIL):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def run_all(service, threads=2):
    runner = jobs.JobRunner(service, threads)
    runner.start()
    return runner


def test_success_with_progress_and_entities(service):
    seen = []

    def handler(jctx):
        seen.append((jctx.params["x"], jctx.ctx.project_id, sorted(jctx.ctx.roles)))
        jctx.entities["image_id"] = "img-1"
        jctx.progress(50, "half")
        return {"image_name": "n"}

    service.register("demo", handler)
    job_id = service.submit(CTX, "demo", {"x": 1})
    assert service.get(CTX, job_id).status == jobs.INIT
    runner = run_all(service)
    try:
        job = wait_done(service, job_id)
    finally:
        runner.stop()
    assert job.status == jobs.SUCCESS
    assert job.entities == {"image_id": "img-1", "image_name": "n"}
    assert job.process_percent == 100.0 and job.end_time is not None
    assert seen == [(1, "p1", ["member", "reader"])]


def test_failure_records_reason_code_and_cleans_up(service):
    cleaned = []

    def handler(jctx):
        raise jobs.JobFailed("bucket not found", code="IMG.0069")

    service.register("bad", handler, cleanup=lambda jctx, reason: cleaned.append(reason))
    job_id = service.submit(CTX, "bad", {})
    runner = run_all(service)
    try:
        job = wait_done(service, job_id)
    finally:
        runner.stop()
    assert job.status == jobs.FAIL
    assert job.fail_reason == "bucket not found" and job.error_code == "IMG.0069"
    assert cleaned == ["bucket not found"]


def test_unexpected_exception_fails_the_job(service):
    service.register("boom", lambda jctx: 1 / 0)
    job_id = service.submit(CTX, "boom", {})
    runner = run_all(service)
    try:
        job = wait_done(service, job_id)
    finally:
        runner.stop()
    assert job.status == jobs.FAIL and "division" in job.fail_reason


def _make_stale(service, job_id):
    with service.db.session() as session:
        session.execute(
            sa.update(Job)
            .where(Job.id == job_id)
            .values(heartbeat_at=datetime.datetime(2000, 1, 1))
        )


def test_dead_worker_job_is_resumed(service):
    resumed = []

    def handler(jctx):
        resumed.append(jctx.resumed)
        return {"done": True}

    service.register("resumable", handler)
    job_id = service.submit(CTX, "resumable", {})
    claimed = service.claim("dead-worker")  # claimed, then the worker "dies"
    assert claimed[0].id == job_id and service.get(CTX, job_id).status == jobs.RUNNING
    _make_stale(service, job_id)
    runner = run_all(service)
    try:
        job = wait_done(service, job_id)
    finally:
        runner.stop()
    assert job.status == jobs.SUCCESS and job.attempts == 2
    assert resumed == [True]


def test_a_stalled_worker_cannot_overwrite_the_worker_that_took_over(service):
    """Worker A stalls past stale_after; B resumes the job. A's late progress stops A,
    and A's late result is dropped: the job keeps B's outcome."""
    events = []

    def handler(jctx):
        events.append(jctx.job.worker)
        jctx.progress(50, "working")
        return {"by": jctx.job.worker}

    service.register("fenced", handler)
    job_id = service.submit(CTX, "fenced", {})
    stalled = service.claim("worker-a")
    _make_stale(service, job_id)
    taken_over = service.claim("worker-b")
    assert taken_over[0].attempts == 2
    service.run(taken_over)
    assert service.get(CTX, job_id).entities["by"] == "worker-b"
    service.run(stalled)  # A wakes up: its progress report finds the job is not its own
    job = service.get(CTX, job_id)
    assert events == ["worker-b", "worker-a"]
    assert job.status == jobs.SUCCESS and job.entities["by"] == "worker-b"
    with pytest.raises(jobs.JobLost):
        jobs.JobContext(service, stalled[0], None, []).progress(10)
    service._finish(job_id, jobs.FAIL, fence=stalled[0], fail_reason="late")
    assert service.get(CTX, job_id).status == jobs.SUCCESS


def test_job_that_keeps_killing_workers_fails(service):
    cleaned = []
    service.register("doomed", lambda jctx: None, cleanup=lambda j, r: cleaned.append(r))
    job_id = service.submit(CTX, "doomed", {})
    for attempt in range(service.conf.jobs.max_attempts):
        assert service.claim(f"dead-{attempt}") is not None
        _make_stale(service, job_id)
    assert service.claim("another") is None
    job = service.get(CTX, job_id)
    assert job.status == jobs.FAIL and "Gave up after 3 attempts" in job.fail_reason
    assert len(cleaned) == 1


def test_heartbeat_keeps_a_long_job_alive(service):
    release = threading.Event()
    runs = collections.Counter()

    def slow(jctx):
        runs[jctx.job.id] += 1
        release.wait(10)

    service.register("slow", slow)
    job_id = service.submit(CTX, "slow", {})
    first, second = run_all(service, 1), run_all(service, 1)
    try:
        time.sleep(4.5)  # longer than stale_after: only heartbeats keep it claimed
        release.set()
        job = wait_done(service, job_id)
    finally:
        first.stop()
        second.stop()
    assert job.status == jobs.SUCCESS and runs[job_id] == 1 and job.attempts == 1


def test_no_job_runs_twice_across_runners(service):
    runs = collections.Counter()
    lock = threading.Lock()

    def count(jctx):
        with lock:
            runs[jctx.job.id] += 1
        time.sleep(0.01)

    service.register("count", count)
    ids = [service.submit(CTX, "count", {"i": i}) for i in range(30)]
    runners = [run_all(service, 2) for _ in range(3)]
    try:
        for job_id in ids:
            assert wait_done(service, job_id).status == jobs.SUCCESS
    finally:
        for runner in runners:
            runner.stop()
    assert set(runs) == set(ids) and set(runs.values()) == {1}


def test_job_api_views_and_scoping(tmp_path):
    conf = ims_conf.load([])
    conf.set_override("state_path", str(tmp_path))
    services = build_services(conf)
    services.jobs.register("demo", lambda jctx: {"image_id": "x"})
    conf.set_override("api_workers", 0, group="jobs")
    client = testing.TestClient(create_app(conf, services))
    job_id = services.jobs.submit(CTX, "demo", {})
    headers = {"X-Project-Id": "p1", "X-Roles": "member"}
    resp = client.simulate_get(f"/v1/p1/jobs/{job_id}", headers=headers)
    assert resp.status_code == 200
    assert resp.json["status"] == "INIT" and resp.json["job_type"] == "demo"
    assert resp.json["entities"]["process_percent"] == 0.0
    resp = client.simulate_get(f"/v1/cloudimages/job/{job_id}", headers=headers)
    assert resp.status_code == 200 and resp.json["job_id"] == job_id
    other = {"X-Project-Id": "p2", "X-Roles": "member"}
    resp = client.simulate_get(f"/v1/p2/jobs/{job_id}", headers=other)
    assert resp.status_code == 404
    assert resp.json["error"]["code"] == "IMG.0027"
    assert client.simulate_get(f"/v1/p1/jobs/{job_id}", headers=other).status_code == 404
