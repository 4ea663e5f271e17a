"""Interoperable import: stage, then import with glance-direct, web-download
or copy-image, as a task that users can follow.

The image is locked for one import at a time (``os_glance_import_task``);
progress shows in ``os_glance_importing_to_stores`` and
``os_glance_failed_import``. Failure puts the image back where it was
(``queued``, or ``active`` for copy-image) and removes what was written.

The work runs as a persistent job (ims.core.jobs, type ``api_image_import``),
queued in the transaction that records the task and takes the lock, and run
by the job threads of any API process or by ims-worker: an import outlives
the process that accepted it. A job whose worker died is resumed by another,
which first removes what the dead attempt wrote (the image's data in the
target stores, a half-downloaded file) and keeps what copy-image had already
finished; after ``[jobs] max_attempts`` the task fails with the reason and
the image is put back. Staged data is read by whichever process runs the job,
so ``[glance_store] staging_dir`` must be shared by the API processes and the
workers (it is, on one host).
"""

from __future__ import annotations

import datetime
import logging
import os
import time
import uuid
from typing import Any, BinaryIO

from oslo_config import cfg

from ims import errors
from ims.context import RequestContext
from ims.core import status as st
from ims.core import streams, webdownload
from ims.core.image_data import ImageDataService, hashes_for, settle_md5
from ims.core.images import ImageService
from ims.core.jobs import JobContext, JobService
from ims.core.storefile import open_stored
from ims.core.stores import STAGING, StoreRegistry
from ims.db import api as db
from ims.db.models import utcnow
from ims.disk.model import PROBE_HEAD, PROBE_TAIL, Sample
from ims.drivers.stores.base import Store, StoredObject

LOG = logging.getLogger(__name__)

LOCK = "os_glance_import_task"
IMPORTING_TO = "os_glance_importing_to_stores"
FAILED_IMPORT = "os_glance_failed_import"
STAGE_HOST = "os_glance_stage_host"
METHODS = ("glance-direct", "web-download", "copy-image")
_REQUIRED_STATUS = {
    "glance-direct": st.UPLOADING,
    "web-download": st.QUEUED,
    "copy-image": st.ACTIVE,
}
_PROGRESS_EVERY = 2.0  # seconds between task progress writes
#: The job type that runs import tasks (the Glance task type).
JOB_IMPORT = "api_image_import"


class ImportService:
    """Stages data, records import tasks and runs them as jobs."""

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        images: ImageService,
        data: ImageDataService,
        jobs: JobService,
    ) -> None:
        self.conf = conf
        self.images = images
        self.data = data
        self.jobs = jobs
        self.db = images.db
        self.stores: StoreRegistry = images.stores
        self.methods = [m for m in conf.enabled_import_methods if m in METHODS]
        jobs.register(JOB_IMPORT, self._run_job, self._cleanup_job)

    # -- stage ------------------------------------------------------------

    def stage(
        self, ctx: RequestContext, image_id: str, stream: BinaryIO, expected: int | None
    ) -> None:
        if "glance-direct" not in self.methods:
            raise errors.NotFound("The glance-direct import method is not enabled.")
        staging = self.stores.get(STAGING)
        with self.db.session() as session:
            image = self.images.load_visible(ctx, session, image_id)
            self.images.policy.enforce(ctx, "upload_image", self.images.target(image))
            if image.status != st.QUEUED:
                raise errors.Conflict(
                    f"Image {image_id} is {image.status}; only queued images can be staged."
                )
            limit = self.data.limit_for(session, image)
            db.image_update(
                session,
                image_id,
                values={"status": st.UPLOADING},
                properties={STAGE_HOST: os.uname().nodename},
                from_status=[st.QUEUED],
            )
        try:
            if expected is not None and expected > limit:
                raise self.data.too_large(limit)
            size_check = streams.SizeLimit(limit, expected, on_exceed=self.data.too_large)
            chunks = streams.through(streams.read_chunks(stream), [size_check])
            staging.add(image_id, chunks, size_hint=expected)
        except BaseException:
            self._set_status(image_id, st.QUEUED, [st.UPLOADING], {STAGE_HOST: None})
            raise

    # -- import -----------------------------------------------------------

    def start(
        self, ctx: RequestContext, image_id: str, body: Any, header_store: str | None
    ) -> db.Task:
        """Validate an import request, lock the image, record and queue the task."""
        method, targets, must_all = self._parse(body, header_store)
        with self.db.session() as session:
            image = self.images.load_visible(ctx, session, image_id)
            rule = "copy_image" if method == "copy-image" else "modify_image"
            self.images.policy.enforce(ctx, rule, self.images.target(image))
            if not image.disk_format or not image.container_format:
                raise errors.Conflict(
                    "disk_format and container_format must be set before import."
                )
            if image.status != _REQUIRED_STATUS[method]:
                raise errors.Conflict(
                    f"Image status {image.status} is not valid for {method} import."
                )
            if method == "web-download":
                webdownload.check_uri(self.conf, body["method"].get("uri"))
            have = {loc.store for loc in image.locations if loc.status == "active"}
            if method == "copy-image":
                if body.get("all_stores"):
                    targets = [s for s in targets if s not in have]
                    if not targets:
                        raise errors.Invalid("Image is already present in all stores.")
                elif have & set(targets):
                    raise errors.Invalid(
                        "Image is already present at store "
                        f"{', '.join(sorted(have & set(targets)))}"
                    )
            self._take_lock(session, image)
            task_id = str(uuid.uuid4())
            task = db.task_create(
                session,
                {
                    "id": task_id,
                    "type": "api_image_import",
                    "status": "pending",
                    "owner": image.owner,
                    "image_id": image_id,
                    "user_id": ctx.user_id,
                    "request_id": ctx.request_id,
                    "input": {"image_id": image_id, "import_req": body, "backend": targets},
                    "message": "",
                },
            )
            values = {} if method == "copy-image" else {"status": st.IMPORTING}
            db.image_update(
                session,
                image_id,
                values=values,
                properties={
                    LOCK: task_id,
                    IMPORTING_TO: ",".join(targets),
                    FAILED_IMPORT: "",
                },
            )
            self.jobs.submit(
                ctx,
                JOB_IMPORT,
                {
                    "task_id": task_id,
                    "image_id": image_id,
                    "method": method,
                    "uri": body["method"].get("uri"),
                    "targets": targets,
                    "must_all": must_all,
                    "owner": image.owner,
                },
                session=session,
            )
        return task

    def _parse(self, body: Any, header_store: str | None) -> tuple[str, list[str], bool]:
        if not isinstance(body, dict) or not isinstance(body.get("method"), dict):
            raise errors.Invalid("Import request requires a 'method' object.")
        method = body["method"].get("name")
        if method not in self.methods:
            raise errors.Invalid(
                f"Import method {method!r} is not enabled; choose one of "
                f"{', '.join(self.methods)}."
            )
        all_stores = body.get("all_stores", False)
        must_all = body.get("all_stores_must_succeed", True)
        if not isinstance(all_stores, bool) or not isinstance(must_all, bool):
            raise errors.Invalid("all_stores and all_stores_must_succeed must be booleans.")
        stores = body.get("stores")
        if stores is not None and (
            not isinstance(stores, list) or not all(isinstance(s, str) for s in stores)
        ):
            raise errors.Invalid("stores must be a list of store ids.")
        if not self.stores.multistore:
            if must_all is False:
                raise errors.Invalid(
                    "all_stores_must_succeed can only be false with multiple stores."
                )
            # NOTE(ims): like Glance, ignore all_stores on a single-store cloud.
            return method, [self.stores.default_id], True
        if all_stores and (stores or header_store):
            raise errors.Invalid("all_stores cannot be combined with stores.")
        if all_stores:
            targets = [info.id for info in self.stores.infos()]
        elif stores:
            targets = list(dict.fromkeys(stores))
        elif header_store:
            targets = [header_store]
        else:
            targets = [self.stores.default_id]
        for store_id in targets:
            try:
                self.stores.user_store(store_id)
            except errors.StoreNotFound:
                raise errors.Conflict(f"Unknown store {store_id}") from None
        return method, targets, must_all

    def _take_lock(self, session: Any, image: db.Image) -> None:
        holder = image.properties.get(LOCK)
        if not holder:
            return
        try:
            task = db.task_get(session, holder)
        except errors.TaskNotFound:
            return
        age = (utcnow() - task.updated_at).total_seconds()
        if task.status in ("pending", "processing") and age < self.conf.task.import_lock_timeout:
            raise errors.ImageLocked(image_id=image.id)

    # -- the task, as a job ------------------------------------------------

    def _run_job(self, jctx: JobContext) -> dict[str, Any]:
        params = jctx.params
        task_id, image_id, method = params["task_id"], params["image_id"], params["method"]
        targets = self._prepare(task_id, image_id, method, list(params["targets"]), jctx.resumed)
        if targets is None:
            return {}
        self._task(task_id, status="processing")
        try:
            if method == "copy-image":
                failed = self._copy(task_id, image_id, targets, params["must_all"])
            else:
                if method == "web-download":
                    staged = self._download(task_id, image_id, params["uri"])
                else:
                    staged = self._staged(image_id)
                failed = self._import_staged(
                    task_id, image_id, staged, targets, params["must_all"]
                )
        except Exception as ex:
            # The job's cleanup (_cleanup_job) fails the task and puts the image back.
            LOG.warning("Import task %s of image %s failed: %s", task_id, image_id, ex)
            raise
        self._succeed(task_id, image_id, method, failed, told=True)
        return {}

    def _prepare(
        self, task_id: str, image_id: str, method: str, targets: list[str], resumed: bool
    ) -> list[str] | None:
        """Check the task still holds the image; after a dead attempt, clear its writes.

        Returns the stores still to write, or None when there is nothing to do
        (the task was finished, or failed, here).
        """
        # Decide in the transaction, write the task after it (one writer at a time on SQLite).
        outcome = "run"
        failed: list[str] = []
        stale: list[tuple[str, str]] = []
        with self.db.session() as session:
            image = db.image_get(session, image_id)
            owner = image.owner
            holder = image.properties.get(LOCK)
            if holder and holder != task_id:
                # The lock went stale before a worker got here, and another import took it.
                outcome = "lost"
            elif resumed and not holder:
                # The dead attempt finished the import; only the task was not told.
                outcome = "done"
                failed = [s for s in image.properties.get(FAILED_IMPORT, "").split(",") if s]
            elif resumed:
                LOG.warning("Resuming import task %s of image %s", task_id, image_id)
                if method == "copy-image":
                    done = {loc.store for loc in image.locations if loc.status == "active"}
                    targets = [s for s in targets if s not in done]
                else:
                    if image.status != st.IMPORTING:
                        raise errors.Conflict(f"Image {image_id} is {image.status}, not importing")
                    # Nothing of an unfinished import is active yet: all of it goes.
                    stale = [(loc.store, loc.url) for loc in image.locations]
                    for _store, url in stale:
                        db.location_delete(session, image_id, url)
                db.image_update(
                    session,
                    image_id,
                    properties={IMPORTING_TO: ",".join(targets), FAILED_IMPORT: ""},
                )
        if outcome == "lost":
            self._task(
                task_id,
                status="failure",
                message="Another import took over the image's import lock.",
                expires_at=self._expiry(utcnow()),
            )
            return None
        if outcome == "done":
            self._succeed(task_id, image_id, method, failed)
            return None
        if not resumed:
            return targets
        for store_id, url in stale:
            self._drop(self.stores.get(store_id), StoredObject(url=url, size=0))
        for store_id in targets:
            self._discard_writes(self.stores.user_store(store_id), image_id, owner)
        if method == "web-download":
            self._discard_writes(self.stores.get(STAGING), image_id)
        return targets

    def _cleanup_job(self, jctx: JobContext, reason: str) -> None:
        """Fail the task and put the image back (the job failed, or ran out of attempts)."""
        params = jctx.params
        task_id, image_id, method = params["task_id"], params["image_id"], params["method"]
        kept = self._fail(task_id, image_id, method, params["targets"], reason)
        if kept is None:
            return  # not this task's image any more: leave it alone
        for store_id in params["targets"]:
            if store_id not in kept:
                self._discard_writes(
                    self.stores.user_store(store_id), image_id, params.get("owner")
                )
        if method != "copy-image":
            self._discard_writes(self.stores.get(STAGING), image_id)

    def _succeed(
        self, task_id: str, image_id: str, method: str, failed: list[str], told: bool = False
    ) -> None:
        """Finish a task that succeeded; ``told``: the task already says so."""
        if not told:
            self._task(task_id, **self._success(image_id, failed))
        if method != "copy-image":
            self._discard_writes(self.stores.get(STAGING), image_id)

    def _success(self, image_id: str, failed: list[str]) -> dict[str, Any]:
        """The task's values once its image is imported (to some stores at least)."""
        return {
            "status": "success",
            "result": {"image_id": image_id},
            "message": f"Import failed for stores: {', '.join(failed)}" if failed else "",
            "expires_at": self._expiry(utcnow()),
        }

    def _settle_or_drop(self, hashes: streams.Hashes, store: Store, stored: StoredObject) -> None:
        """Complete the hashes from the store; without them the copy is of no use."""
        try:
            settle_md5(hashes, store, stored)
        except BaseException:
            self._drop(store, stored)
            raise

    def _discard_writes(self, store: Store, image_id: str, owner: str | None = None) -> None:
        """Remove what an attempt wrote for the image to ``store``, finished or not."""
        self._drop(store, StoredObject(url=store.url_for(image_id, owner), size=0))
        try:
            store.discard_partial(image_id, owner)
        except errors.IMSError as ex:
            LOG.warning("Could not remove unfinished uploads of %s: %s", image_id, ex)

    def _expiry(self, now: datetime.datetime) -> datetime.datetime:
        return now + datetime.timedelta(hours=self.conf.task.task_time_to_live)

    def _staged(self, image_id: str) -> StoredObject:
        staging = self.stores.get(STAGING)
        url = staging.url_for(image_id)
        return StoredObject(url=url, size=staging.get_size(url))

    def _download(self, task_id: str, image_id: str, uri: str) -> StoredObject:
        staging = self.stores.get(STAGING)
        with self.db.session() as session:
            image = db.image_get(session, image_id)
            limit = self.data.limit_for(session, image)
        size_check = streams.SizeLimit(limit, on_exceed=self.data.too_large)
        progress = _Progress(self, task_id, "Downloaded")
        chunks = streams.through(webdownload.fetch(self.conf, uri), [size_check, progress])
        return staging.add(image_id, chunks)

    def _import_staged(
        self, task_id: str, image_id: str, staged: StoredObject, targets: list[str], must_all: bool
    ) -> list[str]:
        staging = self.stores.get(STAGING)
        with self.db.session() as session:
            image = db.image_get(session, image_id)
        head = b"".join(staging.get(staged.url, 0, PROBE_HEAD))
        tail_start = max(0, staged.size - PROBE_TAIL)
        tail = b"".join(staging.get(staged.url, tail_start, staged.size - tail_start))
        virtual_size = self.data.check_format(
            image,
            lambda: open_stored(staging, staged.url, staged.size),
            staged.size,
            Sample(head=head, tail=tail, size=staged.size),
        )
        hashes: streams.Hashes | None = None
        written: list[tuple[Store, StoredObject]] = []
        failed: list[str] = []
        try:
            for store_id in targets:
                store = self.stores.user_store(store_id)
                stages: list[Any] = [_Progress(self, task_id, "Copied")]
                # Hash once, on the first copy that succeeds.
                attempt = None
                if hashes is None:
                    attempt = hashes_for(store, staged.size, self.conf.hashing_algorithm)
                    stages.append(attempt)
                try:
                    stored = store.add(
                        image_id,
                        streams.through(staging.get(staged.url), stages),
                        staged.size,
                        owner=image.owner,
                    )
                    if attempt is not None:
                        self._settle_or_drop(attempt, store, stored)
                except errors.IMSError as ex:
                    if must_all:
                        raise
                    LOG.warning("Import of %s to %s failed: %s", image_id, store_id, ex)
                    failed.append(store_id)
                    self._progress_props(image_id, store_id, failed)
                    continue
                hashes = hashes or attempt
                written.append((store, stored))
                self._progress_props(image_id, store_id, failed, location=(store_id, stored))
            if hashes is None:
                raise errors.Unavailable("Import failed for every store")
            with self.db.session() as session:
                db.image_update(
                    session,
                    image_id,
                    values={
                        "status": st.ACTIVE,
                        "size": staged.size,
                        "virtual_size": virtual_size,
                        "checksum": hashes.checksum,
                        "os_hash_algo": hashes.algo,
                        "os_hash_value": hashes.os_hash_value,
                    },
                    properties={LOCK: None, STAGE_HOST: None},
                    from_status=[st.IMPORTING],
                )
                # In the same transaction: whoever sees the image active sees the task done.
                db.task_update(session, task_id, **self._success(image_id, failed))
        except BaseException:
            for store, stored in written:
                self._drop(store, stored)
            raise
        return failed

    def _copy(self, task_id: str, image_id: str, targets: list[str], must_all: bool) -> list[str]:
        with self.db.session() as session:
            image = db.image_get(session, image_id)
        sources = [loc for loc in image.locations if loc.status == "active"]
        if not sources:
            raise errors.Conflict("Image has no data to copy")
        source = max(sources, key=lambda loc: self.stores.weight(loc.store))
        source_store = self.stores.get(source.store)
        failed: list[str] = []
        for store_id in targets:
            store = self.stores.user_store(store_id)
            algo = image.os_hash_algo or self.conf.hashing_algorithm
            hashes = hashes_for(store, image.size, algo)
            try:
                stored = store.add(
                    image_id,
                    streams.through(
                        source_store.get(source.url), [hashes, _Progress(self, task_id, "Copied")]
                    ),
                    image.size,
                    owner=image.owner,
                )
                self._settle_or_drop(hashes, store, stored)
                if image.checksum and hashes.checksum != image.checksum:
                    self._drop(store, stored)
                    raise errors.Invalid(f"Copy to {store_id} has a different checksum")
            except errors.IMSError as ex:
                if must_all:
                    raise
                LOG.warning("Copy of %s to %s failed: %s", image_id, store_id, ex)
                failed.append(store_id)
                self._progress_props(image_id, store_id, failed)
                continue
            self._progress_props(image_id, store_id, failed, location=(store_id, stored))
        with self.db.session() as session:
            db.image_update(session, image_id, properties={LOCK: None})
            db.task_update(session, task_id, **self._success(image_id, failed))
        return failed

    def _progress_props(
        self,
        image_id: str,
        store_id: str,
        failed: list[str],
        location: tuple[str, StoredObject] | None = None,
    ) -> None:
        with self.db.session() as session:
            image = db.image_get(session, image_id)
            remaining = [
                s for s in image.properties.get(IMPORTING_TO, "").split(",") if s and s != store_id
            ]
            if location is not None:
                db.location_add(session, image_id, location[0], location[1].url)
            db.image_update(
                session,
                image_id,
                properties={
                    IMPORTING_TO: ",".join(remaining),
                    FAILED_IMPORT: ",".join(failed),
                },
            )

    def _fail(
        self, task_id: str, image_id: str, method: str, targets: list[str], reason: str
    ) -> set[str] | None:
        """Fail the task and put the image back; return the stores whose data stays.

        None when another import holds the image now: it is left alone.
        """
        kept: set[str] | None = set()
        dropped: list[tuple[str, str]] = []
        failure = {
            "status": "failure",
            "message": reason[:1024],
            "expires_at": self._expiry(utcnow()),
        }
        try:
            with self.db.session() as session:
                image = db.image_get(session, image_id)
                if image.properties.get(LOCK) not in (task_id, None):
                    kept = None
                    raise _NotOurs
                previous = image.properties.get(FAILED_IMPORT, "")
                failed = sorted(
                    {
                        *filter(None, previous.split(",")),
                        *image.properties.get(IMPORTING_TO, "").split(","),
                    }
                    - {""}
                )
                values: dict[str, Any] = {}
                kept = {loc.store for loc in image.locations if loc.status == "active"}
                if method != "copy-image" and image.status in (st.IMPORTING, st.UPLOADING):
                    values = {"status": st.QUEUED, "size": None, "virtual_size": None}
                    for loc in image.locations:
                        db.location_delete(session, image_id, loc.url)
                        dropped.append((loc.store, loc.url))
                    kept = set()
                db.image_update(
                    session,
                    image_id,
                    values=values,
                    properties={
                        LOCK: None,
                        IMPORTING_TO: "",
                        FAILED_IMPORT: ",".join(failed or targets),
                        STAGE_HOST: None,
                    },
                )
                # In the same transaction: whoever sees the image back sees the task failed.
                db.task_update(session, task_id, **failure)
        except (errors.NotFound, _NotOurs):
            self._task(task_id, **failure)
        for store_id, url in dropped:
            self._drop(self.stores.get(store_id), StoredObject(url=url, size=0))
        return kept

    def _task(self, task_id: str, **values: Any) -> None:
        with self.db.session() as session:
            db.task_update(session, task_id, **values)

    def _set_status(
        self, image_id: str, target: str, sources: list[str], properties: dict[str, str | None]
    ) -> None:
        try:
            with self.db.session() as session:
                db.image_update(
                    session,
                    image_id,
                    values={"status": target},
                    properties=properties,
                    from_status=sources,
                )
        except (errors.NotFound, errors.Conflict):
            pass

    def _drop(self, store: Store, stored: StoredObject) -> None:
        try:
            store.delete(stored.url)
        except errors.NotFound:
            pass
        except errors.IMSError:
            LOG.exception("Could not remove %s; store cleanup will", stored.url)

    def discard_staged(self, image_id: str) -> None:
        """Remove staged data of a deleted image."""
        staging = self.stores.get(STAGING)
        try:
            staging.delete(staging.url_for(image_id))
        except errors.NotFound:
            pass


class _NotOurs(Exception):
    """The image's import lock belongs to another task."""


class _Progress:
    """Write "Copied N MiB" to the task every few seconds."""

    def __init__(self, service: ImportService, task_id: str, verb: str) -> None:
        self.service = service
        self.task_id = task_id
        self.verb = verb
        self.count = 0
        self.last = time.monotonic()

    def feed(self, chunk: bytes) -> None:
        self.count += len(chunk)
        now = time.monotonic()
        if now - self.last >= _PROGRESS_EVERY:
            self.last = now
            self.service._task(self.task_id, message=f"{self.verb} {self.count >> 20} MiB")

    def finish(self) -> None:
        pass


__all__ = ["ImportService"]
