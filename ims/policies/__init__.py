"""Policy rules in code with secure-RBAC defaults (project scope).

reader may look, member may change what its project owns, admin may do
anything, including making images public.
"""

from __future__ import annotations

from oslo_policy import policy

ADMIN = "role:admin"
READER = "role:admin or (role:reader and project_id:%(project_id)s)"
OWNER_MEMBER = "role:admin or (role:member and project_id:%(owner)s)"
MEMBER = "role:admin or (role:member and project_id:%(project_id)s)"
TARGET_MEMBER = "role:admin or (role:member and project_id:%(member_id)s)"


def _rule(
    name: str, check: str, description: str, method: str, path: str
) -> policy.DocumentedRuleDefault:
    return policy.DocumentedRuleDefault(
        name=name,
        check_str=check,
        description=description,
        operations=[{"method": method, "path": path}],
        scope_types=["project"],
    )


rules = [
    _rule("get_images", READER, "List images.", "GET", "/v2/images"),
    _rule("get_image", READER, "Show an image.", "GET", "/v2/images/{image_id}"),
    _rule("add_image", OWNER_MEMBER, "Create an image.", "POST", "/v2/images"),
    _rule("modify_image", OWNER_MEMBER, "Update an image.", "PATCH", "/v2/images/{image_id}"),
    _rule("delete_image", OWNER_MEMBER, "Delete an image.", "DELETE", "/v2/images/{image_id}"),
    _rule("publicize_image", ADMIN, "Make an image public.", "PATCH", "/v2/images/{image_id}"),
    _rule(
        "communitize_image",
        OWNER_MEMBER,
        "Make an image community-visible.",
        "PATCH",
        "/v2/images/{image_id}",
    ),
    _rule("upload_image", OWNER_MEMBER, "Upload image data.", "PUT", "/v2/images/{image_id}/file"),
    _rule("download_image", READER, "Download image data.", "GET", "/v2/images/{image_id}/file"),
    _rule(
        "deactivate",
        OWNER_MEMBER,
        "Deactivate an image.",
        "POST",
        "/v2/images/{image_id}/actions/deactivate",
    ),
    _rule(
        "reactivate",
        OWNER_MEMBER,
        "Reactivate an image.",
        "POST",
        "/v2/images/{image_id}/actions/reactivate",
    ),
    _rule("add_member", OWNER_MEMBER, "Share an image.", "POST", "/v2/images/{image_id}/members"),
    _rule(
        "delete_member",
        OWNER_MEMBER,
        "Stop sharing an image.",
        "DELETE",
        "/v2/images/{image_id}/members/{member_id}",
    ),
    _rule(
        "modify_member",
        TARGET_MEMBER,
        "Accept or reject a shared image.",
        "PUT",
        "/v2/images/{image_id}/members/{member_id}",
    ),
    _rule(
        "get_members", READER, "List an image's members.", "GET", "/v2/images/{image_id}/members"
    ),
    _rule(
        "get_member",
        READER,
        "Show an image member.",
        "GET",
        "/v2/images/{image_id}/members/{member_id}",
    ),
    _rule("stores_info_detail", ADMIN, "Show store details.", "GET", "/v2/info/stores/detail"),
    _rule(
        "copy_image",
        ADMIN,
        "Copy an image to more stores.",
        "POST",
        "/v2/images/{image_id}/import",
    ),
    _rule(
        "delete_image_location",
        ADMIN,
        "Delete an image from one store.",
        "DELETE",
        "/v2/stores/{store_id}/{image_id}",
    ),
    _rule("get_task", READER, "Show a task.", "GET", "/v2/tasks/{task_id}"),
    _rule("get_tasks", READER, "List tasks.", "GET", "/v2/tasks"),
]


def list_rules() -> list[policy.RuleDefault]:
    """Return the rules for oslopolicy tools and the enforcer."""
    return list(rules)
