"""Sharing the IMS way: batch jobs over images x projects, and member queries.

The members are the Glance members of the same images (one table), so a
share made here shows in ``/v2/images/{id}/members`` and the other way round.
Glance only lets ``visibility=shared`` images have members; IMS has no such
step, so sharing a private image here makes it ``shared`` first (its Glance
view says so too). Removing the last member leaves it ``shared``, which the
derived ``__imagetype`` shows as ``private`` again (no members).

The batch calls answer with a job id at once. The request is checked first
(shape, sizes, images the caller may see and share), so plain mistakes come
back as IMS errors; the job then treats each (image, project) pair on its
own and records ``entities.results``. A job that is resumed after its worker
died skips the pairs already recorded and accepts "already done" for the
rest, so running it again changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from oslo_config import cfg

from ims import errors
from ims.context import RequestContext
from ims.core.images import ImageService
from ims.core.jobs import JobContext, JobFailed, JobService
from ims.core.members import MemberService
from ims.core.native_quotas import SHARE_QUOTA, member_limit
from ims.db import api as db
from ims.db import native_api

ADD_JOB = "batchAddMembers"
DELETE_JOB = "batchDeleteMembers"
UPDATE_JOB = "batchUpdateMembers"
ANSWERS = ("accepted", "rejected")
MAX_ID = 255
MAX_IMAGE_ID = 36

SHARE_SELF = "IMG.0076"
NOT_SHAREABLE = "IMG.0089"
ENCRYPTED = "IMG.0098"
OWNER_ONLY = "IMG.0047"
NOT_FOUND = "IMG.0027"
UNAVAILABLE = "IMG.0046"


def _code(ex: errors.IMSError) -> str:
    """The IMS code a per-pair failure is recorded with."""
    explicit = ex.kwargs.get("ims_code")
    if explicit:
        return str(explicit)
    if isinstance(ex, JobFailed):
        return ex.code
    if isinstance(ex, errors.NotFound):
        return NOT_FOUND
    if isinstance(ex, errors.Forbidden):
        return OWNER_ONLY
    if isinstance(ex, errors.QuotaExceeded):
        return SHARE_QUOTA
    return "IMG.0001"


def _id_list(body: dict[str, Any], name: str, limit: int, max_len: int) -> list[str]:
    value = body.get(name)
    if not isinstance(value, list) or not value:
        raise errors.Invalid(f"{name} must be a non-empty list of ids")
    if len(value) > limit:
        raise errors.Invalid(f"{name} may hold at most {limit} ids")
    for item in value:
        if not isinstance(item, str) or not 1 <= len(item) <= max_len:
            raise errors.Invalid(f"Each of {name} must be an id of 1 to {max_len} characters")
    return list(dict.fromkeys(value))


def _no_unsupported(body: dict[str, Any]) -> None:
    for name in ("domains", "organizations"):
        if body.get(name):
            raise errors.Invalid(f"Sharing with {name} is not supported; give projects")


class NativeMemberService:
    """POST/PUT/DELETE /v1/cloudimages/members and the member queries."""

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        images: ImageService,
        members: MemberService,
        jobs: JobService,
    ) -> None:
        self.conf = conf
        self.images = images
        self.members = members
        self.jobs = jobs
        self.db = images.db
        self.policy = images.policy

    def register(self) -> None:
        """Give the job service the three batch handlers."""
        self.jobs.register(ADD_JOB, self.run_add)
        self.jobs.register(DELETE_JOB, self.run_delete)
        self.jobs.register(UPDATE_JOB, self.run_update)

    # -- requests -------------------------------------------------------------

    def _batch(self, body: Any) -> tuple[list[str], list[str]]:
        if not isinstance(body, dict):
            raise errors.Invalid("The body must be a JSON object", ims_code="IMG.0007")
        _no_unsupported(body)
        conf = self.conf.native
        images = _id_list(body, "images", conf.max_batch_images, MAX_IMAGE_ID)
        projects = _id_list(body, "projects", conf.max_batch_projects, MAX_ID)
        return images, projects

    def submit_add(self, ctx: RequestContext, body: Any) -> str:
        """Check a share request and start the job that shares."""
        images, projects = self._batch(body)
        with self.db.session() as session:
            for image_id in images:
                image = self.images.load_visible(ctx, session, image_id)
                self.policy.enforce(ctx, "add_member", self.images.target(image))
                self._check_shareable(ctx, image)
                for project in projects:
                    self._check_project(ctx, image, project)
        return self.jobs.submit(ctx, ADD_JOB, {"images": images, "projects": projects})

    def submit_delete(self, ctx: RequestContext, body: Any) -> str:
        """Check an unshare request and start the job that unshares."""
        images, projects = self._batch(body)
        with self.db.session() as session:
            for image_id in images:
                image = self.images.load_visible(ctx, session, image_id)
                self.policy.enforce(ctx, "delete_member", self.images.target(image))
                self._check_owner(ctx, image)
        return self.jobs.submit(ctx, DELETE_JOB, {"images": images, "projects": projects})

    def submit_update(self, ctx: RequestContext, body: Any) -> str:
        """Check a recipient's answer and start the job that records it."""
        if not isinstance(body, dict):
            raise errors.Invalid("The body must be a JSON object", ims_code="IMG.0007")
        images = _id_list(body, "images", self.conf.native.max_batch_images, MAX_IMAGE_ID)
        project = body.get("project_id")
        if not isinstance(project, str) or not 1 <= len(project) <= MAX_ID:
            raise errors.Invalid("project_id must be the id of the answering project")
        status = body.get("status")
        if status not in ANSWERS:
            raise errors.Invalid("status must be accepted or rejected")
        vault = body.get("vault_id")
        if vault is not None and (not isinstance(vault, str) or len(vault) > MAX_ID):
            raise errors.Invalid("vault_id must be a string")
        if project != ctx.project_id and not ctx.is_admin:
            raise errors.Forbidden("A project can only answer for itself.", ims_code=OWNER_ONLY)
        with self.db.session() as session:
            for image_id in images:
                self.images.load_visible(ctx, session, image_id)
        # NOTE(ims): vault_id matters only for whole images backed by CBR,
        # which this IMS does not make; it is accepted and not used.
        params = {"images": images, "project_id": project, "status": status}
        return self.jobs.submit(ctx, UPDATE_JOB, params)

    # -- rules ---------------------------------------------------------------

    def _check_owner(self, ctx: RequestContext, image: db.Image) -> None:
        if image.owner != ctx.project_id and not ctx.is_admin:
            raise errors.Forbidden(
                f"Only the owner of image {image.id} can share it.", ims_code=OWNER_ONLY
            )

    def _check_shareable(self, ctx: RequestContext, image: db.Image) -> None:
        self._check_owner(ctx, image)
        if image.visibility in ("public", "community") or image.properties.get("__productcode"):
            raise errors.Invalid(
                f"Image {image.id} is a public or market image and cannot be shared.",
                ims_code=NOT_SHAREABLE,
            )
        if image.properties.get("__system__cmkid"):
            raise errors.Invalid(
                f"Image {image.id} is encrypted and cannot be shared.", ims_code=ENCRYPTED
            )
        if image.status != "active":
            raise errors.Invalid(
                f"Image {image.id} is {image.status}; only active images can be shared.",
                ims_code=UNAVAILABLE,
            )

    def _check_project(self, ctx: RequestContext, image: db.Image, project: str) -> None:
        if project in (image.owner, ctx.project_id):
            raise errors.Invalid("An image cannot be shared with yourself.", ims_code=SHARE_SELF)

    # -- jobs ------------------------------------------------------------------

    def _run_pairs(
        self,
        jctx: JobContext,
        projects: list[str],
        act: Callable[[str, str], None],
        task: str,
    ) -> dict[str, Any]:
        images = list(jctx.params["images"])
        results: list[dict[str, Any]] = list(jctx.entities.get("results", []))
        done = {(r["image_id"], r["project_id"]) for r in results}
        total = max(1, len(images) * len(projects))
        for image_id in images:
            for project in projects:
                if (image_id, project) in done:
                    continue
                entry: dict[str, Any] = {"image_id": image_id, "project_id": project}
                try:
                    act(image_id, project)
                    entry["status"] = "success"
                except errors.IMSError as ex:
                    entry.update(status="failed", error_code=_code(ex), error_msg=ex.message)
                results.append(entry)
            jctx.entities["results"] = results
            jctx.progress(100.0 * len(results) / total, task)
        failed = [r for r in results if r["status"] != "success"]
        if failed:
            first = failed[0]
            raise JobFailed(
                f"{len(failed)} of {len(results)} image/project pairs failed; first: "
                f"{first['image_id']}/{first['project_id']}: {first['error_msg']}",
                code=first["error_code"],
            )
        return {"results": results}

    def run_add(self, jctx: JobContext) -> dict[str, Any]:
        def share(image_id: str, project: str) -> None:
            self._share(jctx.ctx, image_id, project)

        return self._run_pairs(jctx, list(jctx.params["projects"]), share, "AddMembersTask")

    def run_delete(self, jctx: JobContext) -> dict[str, Any]:
        def unshare(image_id: str, project: str) -> None:
            try:
                self.members.delete(jctx.ctx, image_id, project)
            except errors.MemberNotFound:
                if not jctx.resumed:
                    raise
                # NOTE(ims): a resumed job may have removed it before dying.

        return self._run_pairs(jctx, list(jctx.params["projects"]), unshare, "DeleteMembersTask")

    def run_update(self, jctx: JobContext) -> dict[str, Any]:
        status = jctx.params["status"]

        def answer(image_id: str, project: str) -> None:
            self.members.update(jctx.ctx, image_id, project, status)

        project = jctx.params["project_id"]
        return self._run_pairs(jctx, [project], answer, "UpdateMembersTask")

    def _share(self, ctx: RequestContext, image_id: str, project: str) -> None:
        with self.db.session() as session:
            # Lock the image row so that concurrent shares count members in turn.
            image = db.image_get(session, image_id, for_update=True)
            if not self.images.can_see(ctx, image, session):
                raise errors.ImageNotFound(image_id=image_id)
            self.policy.enforce(ctx, "add_member", self.images.target(image))
            self._check_shareable(ctx, image)
            self._check_project(ctx, image, project)
            if db.member_get(session, image_id, project) is not None:
                return  # already shared: the result is the same
            count = db.member_count(session, image_id)
            whole = image.properties.get("__whole_image", "").lower() == "true"
            limit = member_limit(self.conf, whole)
            if count >= limit:
                raise errors.QuotaExceeded(
                    f"Image {image_id} is already shared with {limit} projects.",
                    ims_code=SHARE_QUOTA,
                )
            quota = self.conf.native.shared_image_quota
            if quota >= 0 and count == 0 and image.owner:
                if native_api.shared_out_count(session, image.owner) >= quota:
                    raise errors.QuotaExceeded(
                        f"Project {image.owner} already shares {quota} images.",
                        ims_code=SHARE_QUOTA,
                    )
            if image.visibility == "private":
                db.image_update(session, image_id, values={"visibility": "shared"})
            db.member_create(session, image_id, project)

    # -- queries ----------------------------------------------------------------

    def _scope(self, ctx: RequestContext, project_id: str, image_id: str) -> None:
        # NOTE(ims): another project's path is answered like a missing image.
        if project_id != ctx.project_id and not ctx.is_admin:
            raise errors.ImageNotFound(image_id=image_id)

    def list(
        self,
        ctx: RequestContext,
        project_id: str,
        image_id: str,
        limit_param: str | None,
        marker: str | None,
    ) -> tuple[list[db.Member], bool]:
        """A page of an image's members: all for its owner, one's own otherwise."""
        self._scope(ctx, project_id, image_id)
        conf = self.conf.native
        limit = conf.list_limit_default
        if limit_param is not None:
            try:
                limit = int(limit_param)
            except ValueError:
                raise errors.Invalid("limit must be an integer") from None
            if limit < 0:
                raise errors.Invalid("limit must not be negative")
        limit = min(limit, conf.list_limit_max)
        if marker is not None and len(marker) > MAX_ID:
            raise errors.Invalid(f"Invalid marker: {marker[:MAX_ID]}...")
        with self.db.session() as session:
            image = self.images.load_visible(ctx, session, image_id)
            self.policy.enforce(ctx, "get_members", self.images.target(image))
            if ctx.is_admin or image.owner == ctx.project_id:
                try:
                    return native_api.member_page(session, image_id, limit, marker)
                except LookupError:
                    raise errors.Invalid(
                        f"Invalid marker: {marker} is not a member of image {image_id}."
                    ) from None
            mine = db.member_get(session, image_id, ctx.project_id or "")
        if marker is not None and (mine is None or marker != mine.member_id):
            raise errors.Invalid(f"Invalid marker: {marker} is not a member of image {image_id}.")
        if mine is None or marker is not None or limit == 0:
            return [], False
        return [mine], False

    def get(
        self, ctx: RequestContext, project_id: str, image_id: str, member_id: str
    ) -> db.Member:
        self._scope(ctx, project_id, image_id)
        return self.members.get(ctx, image_id, member_id)


def register_jobs(services: Any) -> None:
    """Register the batch member job handlers (called by build_services)."""
    NativeMemberService(services.conf, services.images, services.members, services.jobs).register()
