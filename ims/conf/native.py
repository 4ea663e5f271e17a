"""[native]: limits and quotas of the IMS native (cloudimages) API."""

from __future__ import annotations

from oslo_config import cfg

GROUP = "native"

opts = [
    cfg.IntOpt(
        "list_limit_default",
        default=500,
        min=1,
        help="Page size of GET /v2/cloudimages (and of member listings) when the request "
        "gives no limit. IMS documents 500. Related options: list_limit_max.",
    ),
    cfg.IntOpt(
        "list_limit_max",
        default=1000,
        min=1,
        help="Largest page size of the native listings; larger limits are clipped to it.",
    ),
    cfg.IntOpt(
        "private_image_quota",
        default=50,
        min=-1,
        help="Images one project may own (IMS calls them private images; images it "
        "shares out count too). Creating more through the native API fails with "
        "IMG.0015. -1 means unlimited. Reported by GET /v1/cloudimages/quota as type "
        "'image'. Related options: private_image_quota_max.",
    ),
    cfg.IntOpt(
        "private_image_quota_max",
        default=1000,
        min=1,
        help="The highest value private_image_quota may be raised to for a project; "
        "reported as 'max' by GET /v1/cloudimages/quota.",
    ),
    cfg.IntOpt(
        "max_image_members",
        default=128,
        min=1,
        help="Projects one system or data image may be shared with through the native "
        "API (IMS: 128; some IMS regions 256). Sharing beyond it fails with IMG.0088. "
        "[DEFAULT] image_member_quota also applies when it is lower. "
        "Related options: max_whole_image_members.",
    ),
    cfg.IntOpt(
        "max_whole_image_members",
        default=10,
        min=1,
        help="Projects one whole-ECS image (__whole_image=true) may be shared with.",
    ),
    cfg.IntOpt(
        "shared_image_quota",
        default=-1,
        min=-1,
        help="Images one project may share out (images with at least one member). "
        "Sharing one more fails with IMG.0088. -1 means unlimited; when set it is "
        "reported by GET /v1/cloudimages/quota as type 'image_shared'.",
    ),
    cfg.IntOpt(
        "max_batch_images",
        default=100,
        min=1,
        help="Image ids one batch member request (POST/PUT/DELETE "
        "/v1/cloudimages/members) may name.",
    ),
    cfg.IntOpt(
        "max_batch_projects",
        default=100,
        min=1,
        help="Project ids one batch member request may name (the IMS console takes 100).",
    ),
    cfg.IntOpt(
        "max_image_tags",
        default=10,
        min=1,
        help="Key/value tags one image may carry through the native tag APIs (IMS: 10). "
        "Every Glance tag of the image counts. More fail with IMG.0116.",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(opts, group=GROUP)
