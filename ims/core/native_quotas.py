"""IMS quotas: private images per project, shared images, members per image.

``check_private_images`` is what every native image creation calls before
it adds an image record (IMG.0015 when the project is full).
"""

from __future__ import annotations

from typing import Any

from oslo_config import cfg
from sqlalchemy.orm import Session

from ims import errors
from ims.context import RequestContext
from ims.db import native_api
from ims.db.session import Database
from ims.policy import Policy

PRIVATE_QUOTA = "IMG.0015"
SHARE_QUOTA = "IMG.0088"


def enforce_private_image_quota(
    conf: cfg.ConfigOpts, session: Session, owner: str | None, adding: int = 1
) -> None:
    """Raise QuotaExceeded (IMG.0015) unless ``owner`` may own ``adding`` more images.

    Call it in the session that creates the records when possible, so that
    the count and the insert share one transaction.
    """
    quota = conf.native.private_image_quota
    if quota < 0 or owner is None:
        return
    used = native_api.owned_image_count(session, owner)
    if used + adding > quota:
        raise errors.QuotaExceeded(
            f"The private image quota of project {owner} is reached ({used} of {quota}).",
            ims_code=PRIVATE_QUOTA,
        )


def member_limit(conf: cfg.ConfigOpts, whole_image: bool) -> int:
    """Projects one image may be shared with through the native API."""
    limit = conf.native.max_whole_image_members if whole_image else conf.native.max_image_members
    glance = conf.image_member_quota
    return min(limit, glance) if glance >= 0 else limit


class QuotaService:
    """GET /v1/cloudimages/quota and the checks behind it."""

    def __init__(self, conf: cfg.ConfigOpts, database: Database, policy: Policy) -> None:
        self.conf = conf
        self.db = database
        self.policy = policy

    def check_private_images(self, ctx: RequestContext, adding: int = 1) -> None:
        """Refuse (IMG.0015) an image creation that would exceed the project's quota."""
        with self.db.session() as session:
            enforce_private_image_quota(self.conf, session, ctx.project_id, adding)

    def usage(self, ctx: RequestContext) -> list[dict[str, Any]]:
        """The quota resources of the caller's project, IMS style."""
        self.policy.enforce(ctx, "get_image_quotas")
        conf = self.conf.native
        owner = ctx.project_id
        with self.db.session() as session:
            images = native_api.owned_image_count(session, owner) if owner else 0
            shared = native_api.shared_out_count(session, owner) if owner else 0
            members = native_api.largest_member_count(session, owner) if owner else 0
        quota = conf.private_image_quota
        resources = [
            {
                "type": "image",
                "used": images,
                "quota": quota,
                "min": 1,
                "max": max(conf.private_image_quota_max, quota),
            }
        ]
        if conf.shared_image_quota >= 0:
            resources.append(
                {
                    "type": "image_shared",
                    "used": shared,
                    "quota": conf.shared_image_quota,
                    "min": 1,
                    "max": max(conf.private_image_quota_max, conf.shared_image_quota),
                }
            )
        limit = member_limit(self.conf, whole_image=False)
        # NOTE(ims): image_member is a per-image limit; "used" is the most
        # members any one of the project's images has.
        resources.append(
            {"type": "image_member", "used": members, "quota": limit, "min": 1, "max": limit}
        )
        return resources
