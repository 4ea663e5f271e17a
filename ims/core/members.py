"""Sharing: the members of a shared image and their answers."""

from __future__ import annotations

from oslo_config import cfg

from ims import errors
from ims.context import RequestContext
from ims.core.images import ImageService
from ims.db import api as db

MEMBER_STATUSES = ("pending", "accepted", "rejected")
MAX_MEMBER_ID = 255


class MemberService:
    """Owners offer images to projects; those projects accept or reject."""

    def __init__(self, conf: cfg.ConfigOpts, images: ImageService) -> None:
        self.conf = conf
        self.images = images
        self.db = images.db
        self.policy = images.policy

    def list(self, ctx: RequestContext, image_id: str) -> list[db.Member]:
        with self.db.session() as session:
            image = self.images.load_visible(ctx, session, image_id)
            self.policy.enforce(ctx, "get_members", self.images.target(image))
            if image.visibility != "shared":
                raise errors.Forbidden("Only shared images have members.")
            members = db.member_list(session, image_id)
        if ctx.is_admin or image.owner == ctx.project_id:
            return members
        return [m for m in members if m.member_id == ctx.project_id]

    def get(self, ctx: RequestContext, image_id: str, member_id: str) -> db.Member:
        with self.db.session() as session:
            image = self.images.load_visible(ctx, session, image_id)
            self.policy.enforce(ctx, "get_member", self.images.target(image))
            member = db.member_get(session, image_id, member_id)
        # NOTE(ims): a project sees its own membership only; others get 404.
        if member is None or not (
            ctx.is_admin or image.owner == ctx.project_id or member_id == ctx.project_id
        ):
            raise errors.MemberNotFound(member_id=member_id, image_id=image_id)
        return member

    def create(self, ctx: RequestContext, image_id: str, member_id: object) -> db.Member:
        if not isinstance(member_id, str) or not member_id or len(member_id) > MAX_MEMBER_ID:
            raise errors.Invalid("member must be a project id string of 1 to 255 characters")
        with self.db.session() as session:
            image = self.images.load_visible(ctx, session, image_id)
            self.policy.enforce(ctx, "add_member", self.images.target(image))
            if image.owner != ctx.project_id and not ctx.is_admin:
                raise errors.Forbidden("Only the image owner can add members.")
            if image.visibility != "shared":
                raise errors.Forbidden("Only shared images have members.")
            if db.member_get(session, image_id, member_id) is not None:
                raise errors.Duplicate(what=f"Member {member_id} of image {image_id}")
            quota = self.conf.image_member_quota
            if quota >= 0 and db.member_count(session, image_id) >= quota:
                raise errors.QuotaExceeded(what="members per image", limit=quota)
            return db.member_create(session, image_id, member_id)

    def update(
        self, ctx: RequestContext, image_id: str, member_id: str, status: object
    ) -> db.Member:
        if status not in MEMBER_STATUSES:
            raise errors.Invalid(
                f"Invalid status: {status}; choose one of {', '.join(MEMBER_STATUSES)}"
            )
        with self.db.session() as session:
            image = self.images.load_visible(ctx, session, image_id)
            member = db.member_get(session, image_id, member_id)
            if member is None:
                raise errors.MemberNotFound(member_id=member_id, image_id=image_id)
            if member_id != ctx.project_id and not ctx.is_admin:
                if image.owner == ctx.project_id:
                    raise errors.Forbidden("Only the member can accept or reject an image.")
                raise errors.MemberNotFound(member_id=member_id, image_id=image_id)
            self.policy.enforce(
                ctx, "modify_member", {"member_id": member_id, "owner": image.owner}
            )
            return db.member_update(session, image_id, member_id, str(status))

    def delete(self, ctx: RequestContext, image_id: str, member_id: str) -> None:
        with self.db.session() as session:
            image = self.images.load_visible(ctx, session, image_id)
            member = db.member_get(session, image_id, member_id)
            if image.owner != ctx.project_id and not ctx.is_admin:
                if member is not None and member_id == ctx.project_id:
                    raise errors.Forbidden("Only the image owner can remove members.")
                raise errors.MemberNotFound(member_id=member_id, image_id=image_id)
            self.policy.enforce(ctx, "delete_member", self.images.target(image))
            if member is None:
                raise errors.MemberNotFound(member_id=member_id, image_id=image_id)
            db.member_delete(session, image_id, member_id)
