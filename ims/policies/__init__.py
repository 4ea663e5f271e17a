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


_NS = "/v2/metadefs/namespaces/{namespace_name}"
# Metadata definitions: readers look (visibility is checked in the core),
# only admins change the catalogue, as in Glance's secure-RBAC defaults.
metadef_rules = [
    _rule("get_metadef_namespaces", READER, "List namespaces.", "GET", "/v2/metadefs/namespaces"),
    _rule("get_metadef_namespace", READER, "Show a namespace.", "GET", _NS),
    _rule(
        "add_metadef_namespace", ADMIN, "Create a namespace.", "POST", "/v2/metadefs/namespaces"
    ),
    _rule("modify_metadef_namespace", ADMIN, "Update a namespace.", "PUT", _NS),
    _rule("delete_metadef_namespace", ADMIN, "Delete a namespace or its contents.", "DELETE", _NS),
    _rule("get_metadef_objects", READER, "List objects.", "GET", f"{_NS}/objects"),
    _rule("get_metadef_object", READER, "Show an object.", "GET", f"{_NS}/objects/{{name}}"),
    _rule("add_metadef_object", ADMIN, "Create an object.", "POST", f"{_NS}/objects"),
    _rule("modify_metadef_object", ADMIN, "Update an object.", "PUT", f"{_NS}/objects/{{name}}"),
    _rule(
        "delete_metadef_object", ADMIN, "Delete an object.", "DELETE", f"{_NS}/objects/{{name}}"
    ),
    _rule("get_metadef_properties", READER, "List properties.", "GET", f"{_NS}/properties"),
    _rule("get_metadef_property", READER, "Show a property.", "GET", f"{_NS}/properties/{{name}}"),
    _rule("add_metadef_property", ADMIN, "Create a property.", "POST", f"{_NS}/properties"),
    _rule(
        "modify_metadef_property",
        ADMIN,
        "Update a property.",
        "PUT",
        f"{_NS}/properties/{{name}}",
    ),
    _rule(
        "remove_metadef_property",
        ADMIN,
        "Delete a property.",
        "DELETE",
        f"{_NS}/properties/{{name}}",
    ),
    _rule("get_metadef_tags", READER, "List tags.", "GET", f"{_NS}/tags"),
    _rule("get_metadef_tag", READER, "Show a tag.", "GET", f"{_NS}/tags/{{name}}"),
    _rule("add_metadef_tag", ADMIN, "Create a tag.", "POST", f"{_NS}/tags/{{name}}"),
    _rule("add_metadef_tags", ADMIN, "Create or replace tags.", "POST", f"{_NS}/tags"),
    _rule("modify_metadef_tag", ADMIN, "Rename a tag.", "PUT", f"{_NS}/tags/{{name}}"),
    _rule("delete_metadef_tag", ADMIN, "Delete a tag.", "DELETE", f"{_NS}/tags/{{name}}"),
    _rule("delete_metadef_tags", ADMIN, "Delete all tags.", "DELETE", f"{_NS}/tags"),
    _rule(
        "list_metadef_resource_types",
        READER,
        "List resource types.",
        "GET",
        "/v2/metadefs/resource_types",
    ),
    _rule(
        "get_metadef_resource_type",
        READER,
        "List a namespace's resource type associations.",
        "GET",
        f"{_NS}/resource_types",
    ),
    _rule(
        "add_metadef_resource_type_association",
        ADMIN,
        "Associate a resource type with a namespace.",
        "POST",
        f"{_NS}/resource_types",
    ),
    _rule(
        "remove_metadef_resource_type_association",
        ADMIN,
        "Dissociate a resource type from a namespace.",
        "DELETE",
        f"{_NS}/resource_types/{{name}}",
    ),
]


# The IMS native API reuses the Image API rules where the act is the same
# (add_member for a batch share, modify_image for tag writes...).
native_rules = [
    _rule(
        "get_image_quotas",
        READER,
        "Show the project's image quotas.",
        "GET",
        "/v1/cloudimages/quota",
    ),
]


def list_rules() -> list[policy.RuleDefault]:
    """Return the rules for oslopolicy tools and the enforcer."""
    return [*rules, *metadef_rules, *native_rules]
