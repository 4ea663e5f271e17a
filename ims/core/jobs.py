"""Persistent asynchronous jobs, safe across processes and restarts.

A job is a row: INIT until a worker claims it (a row lock, so no job runs
twice), RUNNING while that worker heartbeats, then SUCCESS or FAIL. A job
whose worker stops heartbeating is claimed again and resumed from the start
by its handler, which must therefore be idempotent; after
``max_attempts`` starts it fails with the reason recorded, never stuck.

Workers are threads: inside the API process on embedded defaults, or in
``ims-worker`` processes for scale-out, all taking jobs from the same table.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from oslo_config import cfg

from ims import errors
from ims.context import RequestContext, expand_roles
from ims.db.job_models import Job
from ims.db.models import utcnow
from ims.db.session import Database

LOG = logging.getLogger(__name__)

INIT = "INIT"
RUNNING = "RUNNING"
SUCCESS = "SUCCESS"
FAIL = "FAIL"


@dataclasses.dataclass(frozen=True)
class JobRecord:
    id: str
    job_type: str
    status: str
    project_id: str | None
    params: dict[str, Any]
    entities: dict[str, Any]
    process_percent: float
    current_task: str | None
    error_code: str | None
    fail_reason: str | None
    attempts: int
    begin_time: datetime.datetime | None
    end_time: datetime.datetime | None
    created_at: datetime.datetime
    worker: str | None = None


def _record(row: Job) -> JobRecord:
    return JobRecord(
        row.id,
        row.job_type,
        row.status,
        row.project_id,
        dict(row.params or {}),
        dict(row.entities or {}),
        row.process_percent,
        row.current_task,
        row.error_code,
        row.fail_reason,
        row.attempts,
        row.begin_time,
        row.end_time,
        row.created_at,
        row.worker,
    )


class JobFailed(errors.IMSError):
    """Raised by a handler to fail its job with an IMS error code."""

    _msg_fmt = "%(reason)s"

    def __init__(self, reason: str, code: str = "IMG.0001") -> None:
        super().__init__(reason=reason)
        self.code = code


class JobLost(Exception):
    """This worker's claim on a job was taken over (it was thought dead): stop quietly."""


class JobContext:
    """What a handler gets: its parameters, who asked, and a way to report."""

    def __init__(
        self, service: JobService, job: JobRecord, user_id: str | None, roles: list[str]
    ) -> None:
        self.service = service
        self.job = job
        self.params = job.params
        self.entities: dict[str, Any] = dict(job.entities)
        self.resumed = job.attempts > 1
        self.ctx = RequestContext(
            project_id=job.project_id, user_id=user_id, roles=expand_roles(roles)
        )

    def progress(self, percent: float, current_task: str | None = None) -> None:
        """Record progress (0-100) and merge the entities gathered so far."""
        self.service._update(
            self.job.id,
            fence=self.job,
            process_percent=max(0.0, min(100.0, percent)),
            current_task=current_task,
            entities=dict(self.entities),
        )


#: A handler runs one job and returns its final entities.
Handler = Callable[[JobContext], dict[str, Any]]
#: A cleanup runs once when a job fails for good (undo partial work).
Cleanup = Callable[[JobContext, str], None]


class JobService:
    """Submit, query, claim and run jobs."""

    def __init__(self, conf: cfg.ConfigOpts, db: Database) -> None:
        self.conf = conf
        self.db = db
        self._handlers: dict[str, tuple[Handler, Cleanup | None]] = {}
        self._wake = threading.Event()

    def register(self, job_type: str, handler: Handler, cleanup: Cleanup | None = None) -> None:
        self._handlers[job_type] = (handler, cleanup)

    def has_handlers(self) -> bool:
        return bool(self._handlers)

    # -- clients ----------------------------------------------------------

    def submit(
        self,
        ctx: RequestContext,
        job_type: str,
        params: dict[str, Any],
        entities: dict[str, Any] | None = None,
        session: Any = None,
    ) -> str:
        """Queue a job; with ``session``, in that transaction (it runs once committed)."""
        if job_type not in self._handlers:
            raise errors.ConfigError(reason=f"no handler for job type {job_type}")
        job_id = uuid.uuid4().hex
        now = utcnow()
        row = Job(
            id=job_id,
            job_type=job_type,
            status=INIT,
            project_id=ctx.project_id,
            user_id=ctx.user_id,
            request_id=ctx.request_id,
            params={**params, "_roles": sorted(ctx.roles)},
            entities=entities or {},
            process_percent=0.0,
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        if session is None:
            with self.db.session() as own:
                own.add(row)
            self._wake.set()
        else:
            # Wake this process's job threads when the caller commits, not before.
            session.add(row)
            sa.event.listen(session, "after_commit", lambda _s: self._wake.set(), once=True)
        return job_id

    def get(self, ctx: RequestContext, job_id: str) -> JobRecord:
        with self.db.session() as session:
            row = session.get(Job, job_id)
            if row is None or not (ctx.is_admin or row.project_id == ctx.project_id):
                raise errors.NotFound(f"Job {job_id} not found")
            return _record(row)

    # -- workers ----------------------------------------------------------

    def claim(self, worker: str) -> tuple[JobRecord, str | None, list[str]] | None:
        """Take the oldest runnable job, or a stale one, for ``worker``.

        A stale job that used up its attempts is failed (and cleaned up) here,
        and the search goes on.
        """
        while True:
            claimed, exhausted = self._claim_once(worker)
            if exhausted is None:
                return claimed
            # Undo first, then FAIL: a client that sees FAIL finds the images
            # already killed. Dying here leaves the job stale for another try.
            job, params, reason = exhausted
            self._cleanup(job, params, reason)
            self._finish(job.id, FAIL, fail_reason=reason, error_code="IMG.0001")

    def _claim_once(
        self, worker: str
    ) -> tuple[
        tuple[JobRecord, str | None, list[str]] | None,
        tuple[JobRecord, dict[str, Any], str] | None,
    ]:
        now = utcnow()
        stale = now - datetime.timedelta(seconds=self.conf.jobs.stale_after)
        with self.db.session() as session:
            stmt = (
                sa.select(Job)
                .where(
                    sa.or_(
                        Job.status == INIT,
                        sa.and_(Job.status == RUNNING, Job.heartbeat_at < stale),
                    )
                )
                .order_by(Job.created_at)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            row = session.scalars(stmt).first()
            if row is None:
                return None, None
            params = dict(row.params or {})
            if row.attempts >= self.conf.jobs.max_attempts:
                LOG.warning("Job %s lost its worker %s; no attempts left", row.id, row.worker)
                reason = (
                    f"Gave up after {row.attempts} attempts; the last worker "
                    f"({row.worker}) stopped without finishing."
                )
                # Held (RUNNING, heartbeat now) while its cleanup runs.
                row.status = RUNNING
                row.worker = worker
                row.heartbeat_at = now
                row.updated_at = now
                return None, (_record(row), params, reason)
            if row.status == RUNNING:
                LOG.warning("Job %s lost its worker %s; resuming", row.id, row.worker)
            row.status = RUNNING
            row.worker = worker
            row.attempts += 1
            row.heartbeat_at = now
            row.begin_time = row.begin_time or now
            row.updated_at = now
            return (_record(row), row.user_id, list(params.get("_roles", []))), None

    def run(self, claimed: tuple[JobRecord, str | None, list[str]]) -> None:
        job, user_id, roles = claimed
        handler, _cleanup = self._handlers.get(job.job_type, (None, None))
        jctx = JobContext(self, job, user_id, roles)
        if handler is None:
            self._finish(
                job.id, FAIL, fail_reason=f"Unknown job type {job.job_type}", error_code="IMG.0001"
            )
            return
        try:
            entities = handler(jctx)
        except JobLost:
            LOG.warning("Job %s was taken over by another worker; this attempt stops", job.id)
            return
        except Exception as ex:  # noqa: BLE001 - every failure ends the job
            code = getattr(ex, "code", None) if isinstance(ex, JobFailed) else None
            reason = str(ex) or type(ex).__name__
            if not isinstance(ex, errors.IMSError):
                LOG.exception("Job %s (%s) failed", job.id, job.job_type)
            self._run_cleanup(jctx, reason)
            self._finish(
                job.id,
                FAIL,
                fence=job,
                fail_reason=reason,
                error_code=code or "IMG.0001",
                entities=jctx.entities,
            )
            return
        self._finish(
            job.id,
            SUCCESS,
            fence=job,
            entities={**jctx.entities, **(entities or {})},
            process_percent=100.0,
        )

    def _cleanup(self, job: JobRecord, params: dict[str, Any], reason: str) -> None:
        _handler, _cleanup = self._handlers.get(job.job_type, (None, None))
        jctx = JobContext(self, job, None, list(params.get("_roles", [])))
        self._run_cleanup(jctx, reason)

    def _run_cleanup(self, jctx: JobContext, reason: str) -> None:
        _handler, cleanup = self._handlers.get(jctx.job.job_type, (None, None))
        if cleanup is None:
            return
        try:
            cleanup(jctx, reason)
        except Exception:  # noqa: BLE001 - cleanup must not hide the failure
            LOG.exception("Cleanup of job %s failed", jctx.job.id)

    def heartbeat(self, job_ids: list[str], worker: str) -> None:
        if not job_ids:
            return
        with self.db.session() as session:
            session.execute(
                sa.update(Job)
                .where(Job.id.in_(job_ids), Job.worker == worker, Job.status == RUNNING)
                .values(heartbeat_at=utcnow())
            )

    def _update(self, job_id: str, fence: JobRecord | None = None, **values: Any) -> None:
        """Write ``values``; with ``fence``, only while that claim still owns the job.

        Raises JobLost when the fence fails: a worker that stalled past
        ``stale_after`` must not overwrite what the worker that took over does.
        """
        values["updated_at"] = utcnow()
        stmt = sa.update(Job).where(Job.id == job_id)
        if fence is not None:
            stmt = stmt.where(
                Job.worker == fence.worker,
                Job.attempts == fence.attempts,
                Job.status == RUNNING,
            )
        with self.db.session() as session:
            updated = session.execute(stmt.values(**values)).rowcount
        if fence is not None and not updated:
            raise JobLost(job_id)

    def _finish(
        self, job_id: str, status: str, fence: JobRecord | None = None, **values: Any
    ) -> None:
        try:
            self._update(job_id, fence=fence, status=status, end_time=utcnow(), **values)
        except JobLost:
            LOG.warning(
                "Job %s was taken over; its %s from this attempt is dropped", job_id, status
            )


class JobRunner:
    """Threads that claim and run jobs until stopped."""

    def __init__(self, service: JobService, threads: int) -> None:
        self.service = service
        self.threads = threads
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._stop = threading.Event()
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.threads):
            thread = threading.Thread(target=self._loop, name=f"ims-job-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        beat = threading.Thread(target=self._beat, name="ims-job-heartbeat", daemon=True)
        beat.start()
        self._threads.append(beat)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.service._wake.set()
        for thread in self._threads:
            thread.join(timeout)

    def _loop(self) -> None:
        poll = self.service.conf.jobs.poll_interval
        while not self._stop.is_set():
            try:
                claimed = self.service.claim(self.worker)
            except errors.IMSError:
                LOG.exception("Could not look for jobs")
                claimed = None
            if claimed is None:
                self.service._wake.wait(poll)
                self.service._wake.clear()
                continue
            job_id = claimed[0].id
            with self._lock:
                self._running.add(job_id)
            try:
                self.service.run(claimed)
            finally:
                with self._lock:
                    self._running.discard(job_id)

    def _beat(self) -> None:
        interval = self.service.conf.jobs.heartbeat_interval
        while not self._stop.wait(interval):
            with self._lock:
                running = list(self._running)
            try:
                self.service.heartbeat(running, self.worker)
            except errors.IMSError:
                LOG.exception("Heartbeat failed")
