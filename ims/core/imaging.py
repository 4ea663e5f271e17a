"""Images from files, register, quick import, export and copy: the IMS native jobs.

Requests are checked here, synchronously (bad input is an IMS error code,
never a job that fails later for a reason known up front); the work runs as
persistent jobs (ims.core.jobs). Every handler is idempotent: a job whose
worker died runs again from the start, first removing what the dead attempt
left (stored data named by the image id, temporary files named by the job
id, an export target it had started).

Create (from a file, data image, quick import) makes the image records
``queued`` in the request, so the job id and ``entities.image_id`` are known
at once. The job moves each image to ``saving``, inspects the file with the
format engine (hostile files are refused with the reason: IMG.0057, unknown
formats IMG.0072), converts it to ``[imaging] internal_format`` (zvhd2) or,
for quick import and ISO files, copies it as is, hashes what it stores and
activates the image with size, virtual size, checksum, os_hash and the IMS
properties. A job that fails for good leaves its images ``killed`` (register:
``queued`` again) and their partial data removed. Data images of a create
are processed after the system image, each with its own record in
``entities.sub_jobs_result`` (the job envelope: status, sub-job id, type,
begin and end time, error) and its id in ``entities.sub_jobs_list``. The
reference does not make sub-job ids queryable on their own; they are not.

Export streams the stored image through the format reader and writer into
the target bucket (qcow2 through a temporary file in the tasks store,
bounded by the image's size). Copy streams the stored data into a new
private image of the caller, in the default store or, across regions, in
the store ``[imaging] regions`` maps the region to.

Sources that need other services (servers, volumes, backups, whole images,
encryption keys) are refused with an IMS error naming the missing plugin.

Memory per job, whatever the image size: the source's read-ahead
(objectstore.RangedFile, 3 × 32 MiB), the format writer's own bound (zvhd2:
about 4 × threads MiB), the pipe between writer and store (3 × 4 MiB) and
the store driver's part buffers (its documented bound). Disk: qcow2 output
goes through one temporary file in the tasks store, as large as that output.
"""

from __future__ import annotations

import contextlib
import datetime
import glob
import io
import logging
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, BinaryIO

import sqlalchemy as sa
from oslo_config import cfg

from ims import errors
from ims.context import RequestContext
from ims.core import native_quotas, objectstore, pipe, streams
from ims.core import status as st
from ims.core.image_data import hashes_for, parse_size, settle_md5
from ims.core.images import ImageService
from ims.core.jobs import INIT, RUNNING, JobContext, JobFailed, JobService
from ims.core.objectstore import ObjectRef, ObjectStorage, RangedFile
from ims.core.stores import TASKS, StoreRegistry
from ims.db import api as db
from ims.db.job_models import Job
from ims.disk import registry
from ims.disk.copy import ProgressReader
from ims.disk.model import DiskReader
from ims.drivers.stores.base import ObjectBucket, Store

LOG = logging.getLogger(__name__)

GiB = 1024**3
BAD_URL_CODE = objectstore.BAD_URL

JOB_CREATE = "createImageByFile"
JOB_DATA = "createDataImageByFile"
JOB_QUICK = "quickImportImageByFile"
JOB_REGISTER = "registerImageByFile"
JOB_EXPORT = "exportImage"
JOB_COPY = "imsCopyImageInRegionJob"
JOB_CROSS = "imsCopyImageCrossRegionJob"
JOB_TYPES = (JOB_CREATE, JOB_DATA, JOB_QUICK, JOB_REGISTER, JOB_EXPORT, JOB_COPY, JOB_CROSS)

#: Formats a file may be in for create, data image and register (IMS's list).
IMPORT_FORMATS = frozenset(
    {"vmdk", "vhd", "qcow2", "raw", "vhdx", "qed", "vdi", "qcow", "zvhd2", "zvhd", "iso"}
)
QUICK_FORMATS = frozenset({"raw", "zvhd2"})
EXPORT_FORMATS = ("qcow2", "vhd", "zvhd", "vmdk")
#: Writer options that make each format streamable where it can be.
WRITE_OPTIONS = {"vmdk": {"subformat": "streamOptimized"}, "vhd": {"subformat": "dynamic"}}
#: Stored formats any block of which can be read alone (lazy loading).
LAZY_FORMATS = frozenset({"zvhd2", "raw"})

OS_TYPES = ("Linux", "Windows", "Other")
SYSTEM_TYPES = {
    "ECS": "FusionCompute",
    "FusionCompute": "FusionCompute",
    "BMS": "Ironic",
    "Ironic": "Ironic",
    "IsoImage": "IsoImage",
}
DATA_ENV = "DataImage"
MAX_DATA_IMAGES = 3
MAX_TAGS = 10
MAX_OS_VERSION = 255
_NAME = re.compile(r"^[0-9A-Za-z\u4e00-\u9fff\u3400-\u4dbf_. -]+$")
_TAG_KEY = re.compile(r"^[A-Za-z0-9_\-\u4e00-\u9fff\u3400-\u4dbf]{1,36}$")
_TAG_VALUE = re.compile(r"^[A-Za-z0-9_.\-\u4e00-\u9fff\u3400-\u4dbf]{0,43}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")
#: Seconds between progress writes to the job row.
_PROGRESS_EVERY = 1.0
#: Properties a copy does not inherit (derived, per-image or Glance-internal).
_NOT_COPIED = frozenset({"__originalimagename", "__data_origin", "__isregistered", "__imagetype"})

_SOURCES = {
    "instance_id": (
        "IMG.0005",
        "Creating images from servers needs a compute plugin, which this deployment "
        "does not have; create the image from a file in object storage (image_url).",
    ),
    "volume_id": (
        "IMG.0001",
        "Creating images from volumes needs a volume plugin, which this deployment "
        "does not have; create the image from a file in object storage (image_url).",
    ),
    "backup_id": (
        "IMG.0020",
        "Creating images from backups needs a backup plugin, which this deployment "
        "does not have; create the image from a file in object storage (image_url).",
    ),
}


def _bad(message: str, code: str = "IMG.0001") -> errors.Invalid:
    return errors.Invalid(message, ims_code=code)


# -- body checks (private until ims.core.cloudimages offers the same) --------


def _check_name(value: Any) -> str:
    if value is None or value == "":
        raise _bad("The image name is missing.", "IMG.0013")
    if not isinstance(value, str):
        raise _bad("The image name must be a string.", "IMG.0003")
    if len(value) > 128:
        raise _bad("The image name is longer than 128 characters.", "IMG.0002")
    if not _NAME.match(value) or value != value.strip():
        raise _bad(
            "The image name may hold letters, digits, Chinese characters, '-', '.', '_' "
            "and inner spaces only.",
            "IMG.0003",
        )
    return value


def _check_description(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 1024:
        raise _bad("The description must be a string of at most 1024 characters.", "IMG.0004")
    if any(c in value for c in "\r<>"):
        raise _bad("The description may not contain carriage returns, '<' or '>'.", "IMG.0004")
    return value


def _check_bool(body: dict[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise _bad(f"{key} must be true or false.")
    return value


def _check_int(body: dict[str, Any], key: str, low: int, high: int, required: bool) -> int | None:
    value = body.get(key)
    if value is None:
        if required:
            raise _bad(f"{key} is required.", "IMG.0055")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(f"{key} must be an integer from {low} to {high}.", "IMG.0055")
    return value


def _check_choice(value: Any, key: str, choices: Any, code: str) -> str:
    if value not in choices:
        raise _bad(f"{key} must be one of {', '.join(choices)}.", code)
    return value


def _check_os_version(value: Any, required: bool, why: str) -> str | None:
    if value is None or value == "":
        if required:
            raise _bad(f"os_version is required {why}.", "IMG.0159")
        return None
    if not isinstance(value, str) or len(value) > MAX_OS_VERSION or value != value.strip():
        raise _bad(f"os_version must be a string of at most {MAX_OS_VERSION} characters.")
    return value


def _check_tags(body: dict[str, Any]) -> list[str]:
    """IMS tags as the Glance tags "key=value" (the layout ims.core.kvtags uses)."""
    tags, image_tags = body.get("tags"), body.get("image_tags")
    if tags is not None and image_tags is not None:
        raise _bad("Give tags or image_tags, not both.", "IMG.0115")
    pairs: list[tuple[Any, Any]] = []
    if tags is not None:
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise _bad("tags must be a list of 'key.value' strings.", "IMG.0115")
        pairs = [tuple(t.partition(".")[::2]) for t in tags]
    elif image_tags is not None:
        if not isinstance(image_tags, list) or not all(isinstance(t, dict) for t in image_tags):
            raise _bad("image_tags must be a list of {key, value} objects.", "IMG.0115")
        pairs = [(t.get("key"), t.get("value", "")) for t in image_tags]
    if len(pairs) > MAX_TAGS:
        raise _bad(f"An image may have at most {MAX_TAGS} tags.", "IMG.0116")
    found = []
    for key, value in pairs:
        value = "" if value is None else value
        if not isinstance(key, str) or not _TAG_KEY.match(key):
            raise _bad(f"Invalid tag key {key!r}.", "IMG.0115")
        if not isinstance(value, str) or not _TAG_VALUE.match(value):
            raise _bad(f"Invalid tag value {value!r}.", "IMG.0115")
        found.append(f"{key}={value}")
    return sorted(set(found))


def _check_enterprise_project(body: dict[str, Any]) -> str | None:
    value = body.get("enterprise_project_id")
    if value is None:
        return None
    if not isinstance(value, str) or not (value == "0" or _UUID.match(value)):
        raise _bad("enterprise_project_id must be '0' or a UUID.")
    return value


def _refuse_cmk(body: dict[str, Any]) -> None:
    if body.get("cmk_id"):
        raise _bad(
            "Encrypted images (cmk_id) need a key manager, which this deployment does not "
            "have yet; leave cmk_id out.",
            "IMG.0095",
        )


# -- the pieces of a conversion ------------------------------------------------


class _Progress:
    """Report a share of a job's progress, at most once a second."""

    def __init__(self, jctx: JobContext, low: float, high: float, task: str) -> None:
        self.jctx = jctx
        self.low = low
        self.high = high
        self.task = task
        self.last = 0.0
        self._lock = threading.Lock()  # writers may read from several threads

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < _PROGRESS_EVERY and done < total:
            return
        if not self._lock.acquire(blocking=False):
            return
        try:
            self.last = now
            share = done / total if total else 1.0
            self.jctx.progress(self.low + (self.high - self.low) * min(1.0, share), self.task)
        finally:
            self._lock.release()


class _CountBytes:
    """A stream stage that reports bytes passed through to a _Progress."""

    def __init__(self, progress: _Progress, total: int) -> None:
        self.progress = progress
        self.total = total
        self.count = 0

    def feed(self, chunk: bytes) -> None:
        self.count += len(chunk)
        self.progress(self.count, self.total)

    def finish(self) -> None:
        pass


def _code_for(ex: errors.IMSError, default: str = "IMG.0001") -> str:
    explicit = ex.kwargs.get("ims_code")
    if explicit:
        return str(explicit)
    if isinstance(ex, errors.ImageNotFound):
        return "IMG.0027"
    if isinstance(ex, errors.ImageFormatError | errors.DataNotFound):
        return "IMG.0057"
    if isinstance(ex, errors.TooLarge):
        return "IMG.0059"
    return default


@contextlib.contextmanager
def _job_errors(default: str = "IMG.0001") -> Iterator[None]:
    """Turn IMS errors into JobFailed with the IMS code that fits."""
    try:
        yield
    except JobFailed:
        raise
    except errors.IMSError as ex:
        raise JobFailed(str(ex), _code_for(ex, default)) from ex


class ImagingService:
    """Checks the native imaging requests and runs their jobs."""

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        images: ImageService,
        jobs: JobService,
        stores: StoreRegistry,
        objects: ObjectStorage | None = None,
    ) -> None:
        self.conf = conf
        self.opts = conf.imaging
        self.images = images
        self.jobs = jobs
        self.db = images.db
        self.stores = stores
        self.objects = objects or ObjectStorage(conf, stores)
        self.internal = self.opts.internal_format
        self.internal_options = {
            **WRITE_OPTIONS.get(self.internal, {}),
            **dict(self.opts.internal_format_options),
        }
        self.size_cap = parse_size(conf.image_size_cap)
        self.regions: dict[str, str] = {}
        for entry in self.opts.regions:
            region, sep, store_id = entry.partition(":")
            if not sep or not region.strip() or not store_id.strip():
                raise errors.ConfigError(
                    reason=f"[imaging] regions entry {entry!r} is not region:store_id"
                )
            stores.user_store(store_id.strip())  # an unknown store stops start-up
            self.regions[region.strip()] = store_id.strip()

    def register(self, jobs: JobService) -> None:
        """Register the job handlers with the job service."""
        for job_type in (JOB_CREATE, JOB_DATA, JOB_QUICK):
            jobs.register(job_type, self._run_create, self._cleanup_images)
        jobs.register(JOB_REGISTER, self._run_create, self._cleanup_images)
        jobs.register(JOB_EXPORT, self._run_export, self._cleanup_export)
        jobs.register(JOB_COPY, self._run_copy, self._cleanup_images)
        jobs.register(JOB_CROSS, self._run_copy, self._cleanup_images)

    # -- requests: create ------------------------------------------------

    def create(self, ctx: RequestContext, body: Any) -> str:
        """POST /v2/cloudimages/action: a system image from a file (+ data images)."""
        body = self._body(body)
        for key, (code, message) in _SOURCES.items():
            if body.get(key):
                raise _bad(message, code)
        data_images = body.get("data_images")
        for item in data_images if isinstance(data_images, list) else []:
            if isinstance(item, dict) and item.get("volume_id"):
                raise _bad(_SOURCES["volume_id"][1], _SOURCES["volume_id"][0])
        if body.get("image_url") is None:
            raise _bad("image_url is required (or instance_id or volume_id).", BAD_URL_CODE)
        quick = _check_bool(body, "is_quick_import")
        kind = _check_choice(body.get("type", "ECS"), "type", tuple(SYSTEM_TYPES), "IMG.0024")
        env = SYSTEM_TYPES[kind]
        os_version = _check_os_version(
            body.get("os_version"),
            quick or env == "IsoImage",
            "for ISO files and quick import",
        )
        main = self._spec(ctx, body, env, min_disk=(40, 1024), quick=quick)
        if os_version:
            main["properties"]["__os_version"] = os_version
        if quick and env == "IsoImage":
            raise _bad("ISO files cannot be quick-imported.", "IMG.0158")
        specs = [main]
        if data_images is not None:
            if not isinstance(data_images, list) or len(data_images) > MAX_DATA_IMAGES:
                raise _bad(f"data_images must be a list of at most {MAX_DATA_IMAGES} entries.")
            if env == "IsoImage" and data_images:
                raise _bad("An ISO image has no data disks.", "IMG.0166")
            for item in data_images:
                if not isinstance(item, dict):
                    raise _bad("Each data_images entry must be an object.")
                item_quick = _check_bool(item, "is_quick_import")
                specs.append(self._spec(ctx, item, DATA_ENV, min_disk=(1, 2048), quick=item_quick))
        job_type = JOB_QUICK if quick else JOB_CREATE
        return self._start_create(ctx, job_type, specs)

    def create_data_image(self, ctx: RequestContext, body: Any) -> str:
        """POST /v1/cloudimages/dataimages/action: a data image from a file."""
        body = self._body(body)
        if body.get("image_url") is None:
            raise _bad("image_url is required.", BAD_URL_CODE)
        spec = self._spec(ctx, body, DATA_ENV, min_disk=(40, 2048), quick=False)
        return self._start_create(ctx, JOB_DATA, [spec])

    def quick_import(self, ctx: RequestContext, body: Any) -> str:
        """POST /v2/cloudimages/quickimport/action: a RAW or ZVHD2 file as is."""
        body = self._body(body)
        if body.get("image_url") is None:
            raise _bad("image_url is required.", BAD_URL_CODE)
        kind = body.get("type")
        if kind == DATA_ENV:
            env = DATA_ENV
            os_version = _check_os_version(body.get("os_version"), False, "")
        else:
            kind = "ECS" if kind is None else kind
            kind = _check_choice(kind, "type", ("ECS", "BMS", DATA_ENV), "IMG.0024")
            env = SYSTEM_TYPES[kind]
            os_version = _check_os_version(
                body.get("os_version"), True, "for system images imported quickly"
            )
        spec = self._spec(ctx, body, env, min_disk=(1, 1024), quick=True)
        if os_version:
            spec["properties"]["__os_version"] = os_version
        return self._start_create(ctx, JOB_QUICK, [spec])

    def register_file(self, ctx: RequestContext, image_id: str, body: Any) -> str:
        """PUT /v1/cloudimages/{id}/upload: a file into a queued image from POST /v2/images."""
        body = self._body(body)
        ref = objectstore.parse_ref(body.get("image_url"))
        with self.db.session() as session:
            image = self.images.load_visible(ctx, session, image_id)
            self.images.policy.enforce(ctx, "upload_image", self.images.target(image))
            if image.owner != ctx.project_id:
                raise _bad("Only the image's owner may register a file into it.", "IMG.0047")
            if image.status != st.QUEUED:
                raise _bad(
                    f"Image {image_id} is {image.status}; only a queued image made with "
                    "POST /v2/images can take a file.",
                    "IMG.0046",
                )
        self._check_source(ctx, ref, quick=False)
        self._check_flow(ctx, JOB_TYPES, self.opts.max_running_jobs, "IMG.0060")
        try:
            self._claim(image_id, {}, from_status=st.QUEUED)
        except errors.Conflict:
            raise _bad(f"Image {image_id} is no longer queued.", "IMG.0046") from None
        spec = {
            "image_id": image_id,
            "ref": str(ref),
            "quick": False,
            "env": image.properties.get("virtual_env_type") or "FusionCompute",
            "min_disk": image.min_disk,
        }
        try:
            return self.jobs.submit(
                ctx,
                JOB_REGISTER,
                {"images": [spec], "register": True},
                entities={"image_id": image_id, "image_name": image.name or ""},
            )
        except BaseException:
            self._abandon(spec, register=True)
            raise

    def _claim(
        self, image_id: str, properties: dict[str, str], from_status: str | None = None
    ) -> None:
        """Move a new (or registering) image to saving: nothing else may write its data.

        Glance uploads need a queued image, so only this job fills it.
        """
        with self.db.session() as session:
            db.image_update(
                session,
                image_id,
                values={"status": st.SAVING},
                properties=properties,
                from_status=[from_status or st.QUEUED],
            )

    def _body(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _bad("The request body must be a JSON object.")
        if not body:
            raise _bad("The request body is empty.", "IMG.0007")
        return body

    def _spec(
        self,
        ctx: RequestContext,
        body: dict[str, Any],
        env: str,
        min_disk: tuple[int, int],
        quick: bool,
    ) -> dict[str, Any]:
        """Check one image of a create request; return what its job needs."""
        _refuse_cmk(body)
        name = _check_name(body.get("name"))
        description = _check_description(body.get("description"))
        ref = objectstore.parse_ref(body.get("image_url"))
        disk = _check_int(body, "min_disk", *min_disk, required=True)
        ram = _check_int(body, "min_ram", 0, 1024 * 1024, required=False) or 0
        tags = _check_tags(body)
        properties: dict[str, str] = {"virtual_env_type": env, "__root_origin": "file"}
        os_type = body.get("os_type")
        if os_type is not None:
            choices = OS_TYPES if env != DATA_ENV else ("Linux", "Windows")
            properties["__os_type"] = _check_choice(os_type, "os_type", choices, "IMG.0056")
        elif env == DATA_ENV:
            properties["__os_type"] = "Linux"
        if description:
            properties["__description"] = description
        arch = body.get("architecture")
        firmware = body.get("hw_firmware_type")
        if firmware is not None:
            properties["hw_firmware_type"] = _check_choice(
                firmware, "hw_firmware_type", ("bios", "uefi"), "IMG.0141"
            )
        if arch is not None:
            _check_choice(arch, "architecture", ("x86", "arm"), "IMG.0212")
            properties["architecture"] = "aarch64" if arch == "arm" else "x86_64"
            if arch == "arm":
                properties["hw_firmware_type"] = "uefi"  # arm boots with UEFI only
                properties["__support_arm"] = "true"
        for flag, prop in (("is_config_init", "__is_config_init"),):
            if flag in body:
                properties[prop] = "true" if _check_bool(body, flag) else "false"
        _check_bool(body, "is_config")  # accepted; nothing to configure in the guest
        project = _check_enterprise_project(body)
        if project is not None:
            properties["enterprise_project_id"] = project
        self._check_source(ctx, ref, quick)
        return {
            "name": name,
            "ref": str(ref),
            "quick": quick,
            "env": env,
            "min_disk": disk,
            "min_ram": ram,
            "tags": tags,
            "properties": properties,
        }

    def _check_source(self, ctx: RequestContext, ref: ObjectRef, quick: bool) -> None:
        """Refuse at once a file that is not there, not the caller's, or too big."""
        bucket = self.objects.bucket(ctx, ref)
        try:
            size = bucket.size(ref.name)
        except errors.DataNotFound:
            raise _bad(f"The file {ref} does not exist.", "IMG.0057") from None
        except errors.IMSError as ex:
            raise _bad(f"The file {ref} cannot be read: {ex}", "IMG.0069") from None
        if size == 0:
            raise _bad(f"The file {ref} is empty.", "IMG.0057")
        limit = self._file_limit(quick)
        if size > limit:
            raise _bad(f"The file {ref} is larger than {limit // GiB} GiB.", "IMG.0059")

    def _file_limit(self, quick: bool) -> int:
        gib = self.opts.max_quick_import_size_gb if quick else self.opts.max_file_size_gb
        return gib * GiB

    def _check_private_quota(self, ctx: RequestContext, adding: int) -> None:
        # The owner's private-image quota (IMG.0015) counts every record made.
        with self.db.session() as session:
            native_quotas.enforce_private_image_quota(self.conf, session, ctx.project_id, adding)

    def _start_create(self, ctx: RequestContext, job_type: str, specs: list[dict]) -> str:
        self._check_flow(ctx, JOB_TYPES, self.opts.max_running_jobs, "IMG.0060")
        made: list[dict[str, Any]] = []
        with self._undo_on_failure(made):
            return self._create_records(ctx, job_type, specs, made)

    def _create_records(
        self, ctx: RequestContext, job_type: str, specs: list[dict], made: list[dict]
    ) -> str:
        self._check_private_quota(ctx, len(specs))
        for spec in specs:
            image = self.images.create(
                ctx,
                {
                    "name": spec["name"],
                    "disk_format": self.internal,
                    "container_format": "bare",
                    "visibility": "private",
                    "min_disk": spec["min_disk"],
                    "min_ram": spec["min_ram"],
                    "tags": spec["tags"],
                },
            )
            made.append(
                {
                    "image_id": image.id,
                    "name": spec["name"],
                    "ref": spec["ref"],
                    "quick": spec["quick"],
                    "env": spec["env"],
                    "min_disk": spec["min_disk"],
                    "sub_job_id": uuid.uuid4().hex,
                }
            )
            self._claim(image.id, spec["properties"])
        entities: dict[str, Any] = {"image_id": made[0]["image_id"], "image_name": made[0]["name"]}
        if len(made) > 1:
            entities["sub_jobs_result"] = [_sub_result(item, INIT) for item in made[1:]]
            entities["sub_jobs_list"] = [item["sub_job_id"] for item in made[1:]]
        return self.jobs.submit(ctx, job_type, {"images": made}, entities=entities)

    @contextlib.contextmanager
    def _undo_on_failure(self, made: list[dict[str, Any]]) -> Iterator[None]:
        """Delete the records a request made when it fails before its job exists."""
        try:
            yield
        except BaseException:
            for item in made:
                with contextlib.suppress(errors.NotFound), self.db.session() as session:
                    db.image_soft_delete(session, item["image_id"])
            raise

    def _check_flow(
        self, ctx: RequestContext, job_types: tuple[str, ...], limit: int, code: str
    ) -> None:
        with self.db.session() as session:
            running = session.scalar(
                sa.select(sa.func.count())
                .select_from(Job)
                .where(
                    Job.project_id == ctx.project_id,
                    Job.status.in_((INIT, RUNNING)),
                    Job.job_type.in_(job_types),
                )
            )
        if running >= limit:
            raise _bad(
                f"Too many image jobs are running for this project (limit {limit}); "
                "try again when some have finished.",
                code,
            )

    # -- requests: export and copy ---------------------------------------

    def export(self, ctx: RequestContext, image_id: str, body: Any) -> str:
        """POST /v1/cloudimages/{id}/file: the image into a file of a bucket."""
        body = self._body(body)
        ref = objectstore.parse_ref(body.get("bucket_url"), "bucket_url")
        quick = _check_bool(body, "is_quick_export")
        fmt = body.get("file_format")
        if quick:
            if fmt is not None:
                raise _bad("file_format must not be given with is_quick_export.", "IMG.0072")
            fmt = "zvhd2"
        elif fmt is None:
            raise _bad("file_format is required unless is_quick_export is true.", "IMG.0072")
        else:
            _check_choice(fmt, "file_format", EXPORT_FORMATS, "IMG.0072")
        image = self.images.get(ctx, image_id)
        self.images.policy.enforce(ctx, "download_image", self.images.target(image))
        self._check_exportable(ctx, image, quick)
        bucket = self.objects.bucket(ctx, ref)
        if _exists(bucket, ref.name):
            raise _bad(f"The file {ref} already exists.", "IMG.0070")
        with self.db.session() as session:
            for job in self._active_jobs(session, ctx, (JOB_EXPORT,)):
                if job.params.get("image_id") == image_id:
                    raise _bad(f"Image {image_id} is being exported.", "IMG.0148")
        self._check_flow(ctx, JOB_TYPES, self.opts.max_running_jobs, "IMG.0060")
        return self.jobs.submit(
            ctx,
            JOB_EXPORT,
            {"image_id": image_id, "ref": str(ref), "format": fmt, "quick": quick},
            entities={"image_id": image_id, "image_name": image.name or ""},
        )

    def _check_exportable(self, ctx: RequestContext, image: db.Image, quick: bool) -> None:
        props = image.properties
        if image.visibility in ("public", "community"):
            raise _bad("Public images cannot be exported.", "IMG.0077")
        if image.owner != ctx.project_id:
            raise _bad("Only the image's owner may export it.", "IMG.0047")
        if image.status != st.ACTIVE or not image.locations:
            raise _bad(f"Image {image.id} is {image.status}, not active.", "IMG.0046")
        if props.get("__whole_image", "").lower() == "true":
            raise _bad("Whole images cannot be exported.", "IMG.0128")
        if image.disk_format == "iso" or props.get("virtual_env_type") == "IsoImage":
            raise _bad("ISO images cannot be exported.", "IMG.0071")
        if props.get("__productcode") or props.get("__account_code"):
            raise _bad("Images made from charged or market images cannot be exported.", "IMG.0079")
        if props.get("__backup_id"):
            raise _bad("Images made from backups cannot be exported.", "IMG.0080")
        if quick and props.get("__system__cmkid"):
            raise _bad("Encrypted images cannot be quick-exported.", "IMG.0071")
        virtual = image.virtual_size or image.size or 0
        if quick and virtual > self.opts.max_quick_export_size_gb * GiB:
            raise _bad("The image is too large to export.", "IMG.0071")
        if not quick and virtual > self.opts.max_export_size_gb * GiB:
            raise _bad(
                f"Only images up to {self.opts.max_export_size_gb} GiB can be exported with "
                "a file_format; use is_quick_export.",
                "IMG.0160",
            )

    def copy(self, ctx: RequestContext, image_id: str, body: Any) -> str:
        """POST /v1/cloudimages/{id}/copy: a private copy in this region."""
        body = self._body(body)
        spec = self._copy_spec(body)
        source = self._copy_source(ctx, image_id)
        self._check_flow(ctx, JOB_TYPES, self.opts.max_running_jobs, "IMG.0060")
        return self._start_copy(ctx, JOB_COPY, source, spec, self.stores.default_id)

    def cross_region_copy(self, ctx: RequestContext, image_id: str, body: Any) -> str:
        """POST /v1/cloudimages/{id}/cross_region_copy: a copy into another region's store."""
        body = self._body(body)
        spec = self._copy_spec(body)
        region = body.get("region")
        if not isinstance(region, str) or not region:
            raise _bad("region is required.")
        for key in ("project_name", "agency_name"):
            if not isinstance(body.get(key), str) or not body[key]:
                raise _bad(f"{key} is required.")
        if region == self.opts.region_name:
            raise _bad("The target region is this region; use copy instead.", "IMG.0142")
        if region not in self.regions:
            known = ", ".join(sorted(self.regions)) or "none"
            raise _bad(f"Unknown region {region!r}; images can be copied to: {known}.")
        source = self._copy_source(ctx, image_id)
        if source.owner != ctx.project_id or source.visibility == "public":
            raise _bad("Only private images of your own can be copied across regions.", "IMG.0047")
        if source.properties.get("__system__cmkid"):
            raise _bad("Encrypted images cannot be copied across regions.", "IMG.0143")
        virtual = source.virtual_size or source.size or 0
        if virtual > self.opts.max_cross_region_copy_size_gb * GiB:
            raise _bad(
                f"Only images up to {self.opts.max_cross_region_copy_size_gb} GiB can be "
                "copied across regions.",
                "IMG.0146",
            )
        self._check_flow(ctx, (JOB_CROSS,), self.opts.max_cross_region_copies, "IMG.0149")
        self._check_flow(ctx, JOB_TYPES, self.opts.max_running_jobs, "IMG.0060")
        spec["properties"]["__data_origin"] = f"image,{self.opts.region_name},{source.id}"
        return self._start_copy(ctx, JOB_CROSS, source, spec, self.regions[region])

    def _copy_spec(self, body: dict[str, Any]) -> dict[str, Any]:
        _refuse_cmk(body)
        properties: dict[str, str] = {}
        description = _check_description(body.get("description"))
        if description:
            properties["__description"] = description
        project = _check_enterprise_project(body)
        if project is not None:
            properties["enterprise_project_id"] = project
        return {"name": _check_name(body.get("name")), "properties": properties}

    def _copy_source(self, ctx: RequestContext, image_id: str) -> db.Image:
        with self.db.session() as session:
            image = self.images.load_visible(ctx, session, image_id)
            member = db.member_get(session, image_id, ctx.project_id) if ctx.project_id else None
        if image.owner != ctx.project_id:
            if member is None:
                raise _bad("Only your own or shared images can be copied.", "IMG.0047")
            if member.status != "accepted":
                raise _bad("Accept the shared image before copying it.", "IMG.0196")
        if image.status != st.ACTIVE or not image.locations:
            raise _bad(f"Image {image_id} is {image.status}, not active.", "IMG.0046")
        if image.properties.get("__whole_image", "").lower() == "true":
            raise _bad("Whole images cannot be copied.", "IMG.0130")
        if image.disk_format == "iso" or image.properties.get("virtual_env_type") == "IsoImage":
            raise _bad("ISO images cannot be copied.", "IMG.0166")
        return image

    def _start_copy(
        self, ctx: RequestContext, job_type: str, source: db.Image, spec: dict, store_id: str
    ) -> str:
        properties = {
            k: v
            for k, v in source.properties.items()
            if not k.startswith("os_glance") and k not in _NOT_COPIED
        }
        properties.update(spec["properties"])
        properties["__originalimagename"] = source.id
        self._check_private_quota(ctx, 1)
        image = self.images.create(
            ctx,
            {
                "name": spec["name"],
                "disk_format": source.disk_format,
                "container_format": source.container_format,
                "visibility": "private",
                "min_disk": source.min_disk,
                "min_ram": source.min_ram,
            },
        )
        item = {"image_id": image.id, "name": spec["name"], "store": store_id}
        with self._undo_on_failure([item]):
            self._claim(image.id, properties)
            return self.jobs.submit(
                ctx,
                job_type,
                {"source_id": source.id, "images": [item]},
                entities={"image_id": image.id, "image_name": spec["name"]},
            )

    def _active_jobs(
        self, session: Any, ctx: RequestContext, job_types: tuple[str, ...]
    ) -> list[Job]:
        return list(
            session.scalars(
                sa.select(Job).where(
                    Job.project_id == ctx.project_id,
                    Job.status.in_((INIT, RUNNING)),
                    Job.job_type.in_(job_types),
                )
            )
        )

    # -- jobs: create, register, quick import ----------------------------

    def _run_create(self, jctx: JobContext) -> dict[str, Any]:
        items = jctx.params["images"]
        register = bool(jctx.params.get("register"))
        failures: list[tuple[int, JobFailed]] = []
        for index, item in enumerate(items):
            share = (index / len(items) * 100, (index + 1) / len(items) * 100)
            if index == 0:
                # The system image: its failure fails the job at once.
                self._import_file(jctx, item, share, register)
                continue
            results = jctx.entities.setdefault("sub_jobs_result", [])
            previous = results[index - 1]
            if previous["status"] == "FAIL":
                # Failed before the worker died: keep its own reason, not "killed".
                failures.append(
                    (index, JobFailed(previous["fail_reason"], previous["error_code"]))
                )
                continue
            if previous["status"] == "SUCCESS":
                continue
            begin = previous.get("begin_time") or _now()
            results[index - 1] = _sub_result(item, RUNNING, begin=begin)
            jctx.progress(share[0], "CreateDataImageTask")
            try:
                self._import_file(jctx, item, share, register)
            except JobFailed as ex:
                failures.append((index, ex))
                results[index - 1] = _sub_result(item, "FAIL", ex, begin, _now())
                self._abandon(item, register)
            else:
                results[index - 1] = _sub_result(item, "SUCCESS", begin=begin, end=_now())
            jctx.progress(share[1], "CreateDataImageTask")
        if failures:
            index, first = failures[0]
            raise JobFailed(
                f"{len(failures)} of {len(items) - 1} data images failed; data image "
                f"{index} ({items[index]['name']}): {first}",
                first.code,
            )
        return {}

    def _import_file(
        self, jctx: JobContext, item: dict[str, Any], share: tuple[float, float], register: bool
    ) -> None:
        """Bring one image from its file to active (or raise JobFailed)."""
        image_id = item["image_id"]
        store = self.stores.user_store(None)
        with _job_errors():
            image = self._begin_saving(image_id)
            if image is None:
                return  # a previous attempt finished this image
            owner = image.owner
            _discard(store, image_id, owner)
            ref = objectstore.parse_ref(item["ref"])
            bucket = self.objects.bucket(jctx.ctx, ref)
        with _job_errors("IMG.0057"):
            try:
                size = bucket.size(ref.name)
            except errors.DataNotFound:
                raise JobFailed(f"The file {ref} does not exist.", "IMG.0057") from None
            if size == 0:
                raise JobFailed(f"The file {ref} is empty.", "IMG.0057")
            if size > self._file_limit(item["quick"]):
                raise JobFailed(f"The file {ref} is too large.", "IMG.0059")
        with RangedFile(lambda off, n: bucket.get(ref.name, off, n), size) as source:
            self._store_file(jctx, item, share, (store, owner), bucket, ref, source, size)

    def _store_file(
        self,
        jctx: JobContext,
        item: dict[str, Any],
        share: tuple[float, float],
        destination: tuple[Store, str | None],
        bucket: ObjectBucket,
        ref: ObjectRef,
        source: RangedFile,
        size: int,
    ) -> None:
        """Inspect the file, store it (converted or as is) for its owner, activate the image."""
        image_id = item["image_id"]
        store, owner = destination
        low, high = share
        with _job_errors("IMG.0057"):
            fmt = registry.detect(source)
            self._check_source_format(fmt, item)
            info = registry.get(fmt).inspect(source)
        if item["min_disk"] and info.virtual_size > item["min_disk"] * GiB:
            raise JobFailed(
                f"The disk in {ref} is {info.virtual_size} bytes, more than min_disk "
                f"({item['min_disk']} GiB).",
                "IMG.0055",
            )
        jctx.progress(low + (high - low) * 0.02, "CheckImageFileTask")
        progress = _Progress(jctx, low + (high - low) * 0.02, high - (high - low) * 0.02, "")
        as_is = fmt == "iso" or item["quick"]
        target = fmt if as_is else self.internal
        with _job_errors(), self._temp_dir(jctx) as tmpdir:
            if as_is:
                # Quick import and ISO: the bytes as they are, fetched in one stream.
                progress.task = "UploadImageFileTask"
                hashes = hashes_for(store, size, self.conf.hashing_algorithm)
                stages = [streams.SizeLimit(None, size), hashes, _CountBytes(progress, size)]
                with contextlib.closing(bucket.get(ref.name)) as data:
                    stored = store.add(
                        image_id, streams.through(data, stages), size_hint=size, owner=owner
                    )
            else:
                progress.task = "ConvertImageFileTask"
                with ProgressReader(registry.get(fmt).open(source), progress) as reader:
                    data, hint = self._converted(reader, target, self.internal_options, tmpdir)
                    hashes = hashes_for(store, hint, self.conf.hashing_algorithm)
                    stages = [streams.SizeLimit(self.size_cap), hashes]
                    with contextlib.closing(data):
                        stored = store.add(
                            image_id, streams.through(data, stages), hint, owner=owner
                        )
        properties = {
            "__root_origin": "file",
            "__isregistered": "true",
            "__lazyloading": "true" if target in LAZY_FORMATS else "false",
            "virtual_env_type": "IsoImage" if fmt == "iso" else item["env"],
        }
        self._activate(
            jctx, image_id, store, stored, target, info.virtual_size, hashes, properties
        )
        jctx.progress(high, "ActivateImageTask")

    def _check_source_format(self, fmt: str, item: dict[str, Any]) -> None:
        if item["quick"]:
            if fmt not in QUICK_FORMATS:
                raise JobFailed(
                    f"Quick import takes RAW or ZVHD2 files; this file is {fmt}.", "IMG.0158"
                )
            return
        if fmt not in IMPORT_FORMATS:
            raise JobFailed(f"The file format {fmt} is not supported.", "IMG.0072")
        if fmt == "iso" and item["env"] not in ("IsoImage",):
            raise JobFailed("An ISO file makes an ISO image: give type IsoImage.", "IMG.0166")
        if fmt != "iso" and item["env"] == "IsoImage":
            raise JobFailed(f"type IsoImage needs an ISO file; this file is {fmt}.", "IMG.0167")

    def _converted(
        self, reader: DiskReader, fmt: str, options: dict[str, str], tmpdir: str, name: str = ""
    ) -> tuple[Iterator[bytes], int | None]:
        """Return the chunks of ``reader`` written as ``fmt``, and their size if known.

        Streaming writers feed the store through a pipe; the others write a
        temporary file in ``tmpdir`` first (as large as the output).
        """
        writer = registry.get(fmt)
        if writer.streaming_write:

            def write(out: Any) -> None:
                writer.write(reader, out, options)

            return pipe.written_chunks(write, name=name), None
        fd, path = tempfile.mkstemp(dir=tmpdir, prefix="convert-")
        out = os.fdopen(fd, "w+b")
        try:
            writer.write(reader, out, options)
            out.flush()
            size = out.seek(0, os.SEEK_END)
            out.seek(0)
        except BaseException:
            out.close()
            os.unlink(path)
            raise
        return _file_chunks(out, path), size

    @contextlib.contextmanager
    def _temp_dir(self, jctx: JobContext) -> Iterator[str]:
        """A directory in the tasks store, named by the job so a rerun can clear it."""
        path = _job_temp(self.stores, jctx.job.id)
        _remove_tree(path)
        os.makedirs(path)
        try:
            yield path
        finally:
            _remove_tree(path)

    def _begin_saving(self, image_id: str) -> db.Image | None:
        """Check the image is still the job's; None when an earlier attempt activated it."""
        with self.db.session() as session:
            image = db.image_get(session, image_id)
        if image.status == st.ACTIVE:
            return None
        if image.status != st.SAVING:
            raise JobFailed(
                f"Image {image_id} is {image.status}; it was deleted or failed.", "IMG.0027"
            )
        return image

    def _activate(
        self,
        jctx: JobContext,
        image_id: str,
        store: Store,
        stored: Any,
        disk_format: str,
        virtual_size: int,
        hashes: streams.Hashes,
        properties: dict[str, str],
    ) -> None:
        try:
            settle_md5(hashes, store, stored)
            with self.db.session() as session:
                db.location_add(session, image_id, store.store_id, stored.url)
                db.image_update(
                    session,
                    image_id,
                    values={
                        "status": st.ACTIVE,
                        "disk_format": disk_format,
                        "container_format": "bare",
                        "size": stored.size,
                        "virtual_size": virtual_size,
                        "checksum": hashes.checksum,
                        "os_hash_algo": hashes.algo,
                        "os_hash_value": hashes.os_hash_value,
                    },
                    properties=properties,
                    from_status=[st.SAVING],
                )
        except (errors.NotFound, errors.Conflict):
            _drop(store, stored.url)
            raise JobFailed(
                f"Image {image_id} was deleted while it was made.", "IMG.0027"
            ) from None
        except BaseException:
            _drop(store, stored.url)
            raise

    # -- jobs: export ------------------------------------------------------

    def _run_export(self, jctx: JobContext) -> dict[str, Any]:
        params = jctx.params
        image_id = params["image_id"]
        ref = objectstore.parse_ref(params["ref"])
        fmt = params["format"]
        with _job_errors():
            image = self.images.get(jctx.ctx, image_id)
            self._check_exportable(jctx.ctx, image, params["quick"])
            bucket = self.objects.bucket(jctx.ctx, ref)
            if jctx.entities.get("_started"):
                # Ours from the attempt that died: write it again.
                _discard_object(bucket, ref.name)
            elif _exists(bucket, ref.name):
                raise JobFailed(f"The file {ref} already exists.", "IMG.0070")
            jctx.entities["_started"] = True
            jctx.progress(1, "ExportImageTask")
            loc = max(
                (loc for loc in image.locations if loc.status == "active"),
                key=lambda loc: self.stores.weight(loc.store),
            )
            store = self.stores.get(loc.store)
            size = image.size if image.size is not None else store.get_size(loc.url)
            progress = _Progress(jctx, 2, 98, "ExportImageTask")
            if image.disk_format == fmt:
                with contextlib.closing(store.get(loc.url)) as data:
                    chunks = streams.through(data, [_CountBytes(progress, size)])
                    bucket.put(ref.name, chunks, size_hint=size)
            else:
                with (
                    _open_stored(store, loc.url, size) as file,
                    self._temp_dir(jctx) as tmpdir,
                    ProgressReader(registry.get(image.disk_format).open(file), progress) as rd,
                ):
                    options = dict(WRITE_OPTIONS.get(fmt, {}))
                    name = ref.name.rsplit("/", 1)[-1]
                    data, hint = self._converted(rd, fmt, options, tmpdir, name)
                    with contextlib.closing(data):
                        bucket.put(ref.name, data, size_hint=hint)
        return {"image_id": image_id, "image_name": image.name or ""}

    def _cleanup_export(self, jctx: JobContext, reason: str) -> None:
        _remove_tree(_job_temp(self.stores, jctx.job.id))
        if not jctx.entities.get("_started"):
            return
        ref = objectstore.parse_ref(jctx.params["ref"])
        try:
            _discard_object(self.objects.bucket(jctx.ctx, ref), ref.name)
        except errors.IMSError as ex:
            LOG.warning("Could not remove the partial export %s: %s", ref, ex)

    # -- jobs: copy --------------------------------------------------------

    def _run_copy(self, jctx: JobContext) -> dict[str, Any]:
        item = jctx.params["images"][0]
        image_id = item["image_id"]
        with _job_errors():
            target = self.stores.user_store(item["store"])
            image = self._begin_saving(image_id)
            if image is None:
                return {}
            _discard(target, image_id, image.owner)
            source = self._copy_source(jctx.ctx, jctx.params["source_id"])
            loc = max(
                (loc for loc in source.locations if loc.status == "active"),
                key=lambda loc: self.stores.weight(loc.store),
            )
            store = self.stores.get(loc.store)
            size = source.size if source.size is not None else store.get_size(loc.url)
            hashes = hashes_for(target, size, source.os_hash_algo or self.conf.hashing_algorithm)
            progress = _Progress(jctx, 1, 98, "CopyImageTask")
            with contextlib.closing(store.get(loc.url)) as data:
                chunks = streams.through(
                    data, [streams.SizeLimit(None, size), hashes, _CountBytes(progress, size)]
                )
                stored = target.add(image_id, chunks, size_hint=size, owner=image.owner)
            try:
                settle_md5(hashes, target, stored)
            except BaseException:
                _drop(target, stored.url)
                raise
            if source.checksum and hashes.checksum != source.checksum:
                _drop(target, stored.url)
                raise JobFailed("The copy's checksum differs from the source's.", "IMG.0001")
            self._activate(
                jctx,
                image_id,
                target,
                stored,
                source.disk_format or "raw",
                source.virtual_size or size,
                hashes,
                {"__isregistered": "true"},
            )
        return {}

    # -- failure -----------------------------------------------------------

    def _cleanup_images(self, jctx: JobContext, reason: str) -> None:
        """Leave every image the job had not finished not active, without data."""
        _remove_tree(_job_temp(self.stores, jctx.job.id))
        register = bool(jctx.params.get("register"))
        for item in jctx.params.get("images", []):
            self._abandon(item, register)

    def _abandon(self, item: dict[str, Any], register: bool) -> None:
        image_id = item["image_id"]
        store = self.stores.user_store(item.get("store"))
        owner = None
        try:
            with self.db.session() as session:
                image = db.image_get(session, image_id, for_update=True)
                owner = image.owner
                if image.status == st.SAVING:
                    target = st.QUEUED if register else st.KILLED
                    db.image_update(
                        session,
                        image_id,
                        values={"status": target, "size": None, "virtual_size": None},
                        from_status=[st.SAVING],
                    )
                elif image.status == st.QUEUED and not register:
                    db.image_soft_delete(session, image_id)
                else:
                    return
        except errors.NotFound:
            pass
        _discard(store, image_id, owner)


# -- small helpers ---------------------------------------------------------------


def _sub_result(
    item: dict[str, Any],
    status: str,
    ex: JobFailed | None = None,
    begin: str = "",
    end: str = "",
) -> dict:
    """One data image's record in ``entities.sub_jobs_result`` (the job envelope)."""
    return {
        "status": status,
        "job_id": item.get("sub_job_id", ""),
        "job_type": JOB_DATA,
        "begin_time": begin,
        "end_time": end,
        "error_code": ex.code if ex else None,
        "fail_reason": str(ex) if ex else None,
        "entities": {"image_id": item["image_id"], "image_name": item["name"]},
    }


def _now() -> str:
    """Now, in the job envelope's time format."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _exists(bucket: ObjectBucket, name: str) -> bool:
    try:
        bucket.size(name)
    except errors.DataNotFound:
        return False
    return True


def _discard_object(bucket: ObjectBucket, name: str) -> None:
    with contextlib.suppress(errors.DataNotFound):
        bucket.delete(name)


def _discard(store: Store, image_id: str, owner: str | None) -> None:
    """Remove data a failed attempt stored under the image id, if any.

    A worker killed mid-write leaves no object but its unfinished upload
    (segments, multipart parts, a partial file): the job owns the image id,
    so those are its own and go too, before the next attempt writes.
    """
    try:
        store.delete(store.url_for(image_id, owner))
    except errors.DataNotFound:
        pass
    except errors.IMSError as ex:
        LOG.warning("Could not remove data of image %s: %s", image_id, ex)
    try:
        store.discard_partial(image_id, owner)
    except errors.IMSError as ex:
        LOG.warning("Could not remove unfinished uploads of image %s: %s", image_id, ex)


def _drop(store: Store, url: str) -> None:
    try:
        store.delete(url)
    except errors.IMSError as ex:
        LOG.warning("Could not remove %s (store cleanup will): %s", url, ex)


def _job_temp(stores: StoreRegistry, job_id: str) -> str:
    tasks = stores.get(TASKS)
    return os.path.join(tasks.datadir, f".imaging-{job_id}")  # type: ignore[attr-defined]


def _remove_tree(path: str) -> None:
    for name in glob.glob(os.path.join(glob.escape(path), "*")):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(path)


def _file_chunks(file: BinaryIO, path: str) -> Iterator[bytes]:
    """Yield a temporary file's content, then remove it."""
    try:
        yield from streams.read_chunks(file)
    finally:
        file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@contextlib.contextmanager
def _open_stored(store: Store, url: str, size: int) -> Iterator[BinaryIO]:
    """Stored data for random reads: the real file, or ranged gets with read-ahead."""
    opener = getattr(store, "open_file", None)
    if opener is not None:
        file: BinaryIO = io.FileIO(opener(url), "rb", closefd=True)
    else:
        file = RangedFile(lambda off, n: store.get(url, off, n), size)  # type: ignore[assignment]
    with file:
        yield file


def register_jobs(services: Any) -> ImagingService:
    """Build the imaging service for ``services`` and register its job handlers.

    app.py's Services has no field for it; the one instance rides along on
    the Services object, where ``service_of`` finds it.
    """
    service = ImagingService(services.conf, services.images, services.jobs, services.stores)
    service.register(services.jobs)
    services.__dict__["imaging"] = service
    return service


def service_of(services: Any) -> ImagingService:
    """Return the imaging service registered for ``services``."""
    found = services.__dict__.get("imaging")
    return found if found is not None else register_jobs(services)


__all__ = ["ImagingService", "register_jobs", "service_of"]
