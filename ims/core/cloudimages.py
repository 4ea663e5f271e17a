"""The IMS native image view: GET and PATCH /v2/cloudimages.

IMS images are the Glance images; nothing is stored twice. What IMS adds
is either stored as ordinary image properties (``__os_version``,
``__description``, ``__support_kvm``...) or *derived* from the Glance record
every time it is shown or filtered, with one rule used for both:

- ``__imagetype``: ``gold`` for public images without ``__productcode``,
  ``market`` for public images with one, ``shared`` for ``visibility=shared``
  images that have at least one member (both the owner and the recipients
  see ``shared``), ``private`` for the rest (private, community, and shared
  images nobody was offered).
- ``__isregistered``: ``"true"`` once the image has data (active or
  deactivated).
- ``__os_type``, ``__platform``, ``__os_bit``: from ``__os_version`` through
  the OS table (ims.core.os_versions); for a version the table does not know,
  whatever is stored as a property shows (and filters) instead.
- ``__image_size``: the Glance ``size`` as a string ("0" without data).

A stored property with a derived name is shadowed by the derived value.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from oslo_config import cfg
from sqlalchemy.orm import aliased

from ims import errors
from ims.context import RequestContext
from ims.core import kvtags, listing, os_versions
from ims.core import status as st
from ims.core.images import (
    BASE_COLUMNS,
    READ_ONLY,
    RESERVED,
    RESERVED_PREFIX,
    ImageService,
    ListQuery,
    PatchOp,
)
from ims.db import api as db
from ims.db import models, native_api

IMAGE_TYPES = ("gold", "private", "shared", "market")
REGISTERED = (st.ACTIVE, st.DEACTIVATED)
DERIVED = frozenset(
    {"__imagetype", "__isregistered", "__os_type", "__platform", "__os_bit", "__image_size"}
)
OS_DERIVED = ("__os_type", "__platform", "__os_bit")
#: Sort keys IMS documents (the Glance ones are accepted too).
SORT_KEYS = ("name", "container_format", "disk_format", "status", "id", "size", "created_at")
MAX_PARAM = 255
MAX_TAG_PARAMS = 10
#: Architecture names Glance images commonly carry, by IMS architecture.
ARCHITECTURES = {
    "x86": ("x86", "x86_64", "i386", "i686", "amd64"),
    "arm": ("arm", "aarch64", "arm64", "armv7l"),
}
_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
)
_INT_MAX = 2**31 - 1
_TIME_OPS = ("gt", "gte", "lt", "lte", "eq", "neq")


@dataclasses.dataclass(frozen=True)
class CloudImage:
    """An image record with the values IMS derives from it."""

    image: db.Image
    derived: dict[str, str]


# -- derivation -----------------------------------------------------------


def image_type(image: db.Image, has_members: bool) -> str:
    """The ``__imagetype`` of an image (see the module docstring)."""
    if image.visibility == "public":
        return "market" if image.properties.get("__productcode") else "gold"
    if image.visibility == "shared" and has_members:
        return "shared"
    return "private"


def derive(image: db.Image, has_members: bool) -> dict[str, str]:
    """Every derived ``__`` value of an image."""
    found = {
        "__imagetype": image_type(image, has_members),
        "__isregistered": "true" if image.status in REGISTERED else "false",
        "__image_size": str(image.size or 0),
    }
    found.update(os_versions.derived(image.properties.get("__os_version")))
    return found


# -- SQL twins of the derivation -------------------------------------------


def _prop(name: str, *conds: Any) -> Any:
    prop = aliased(models.ImageProperty)
    return sa.exists().where(
        prop.image_id == models.Image.id, prop.name == name, *(c(prop.value) for c in conds)
    )


def _has_members() -> Any:
    member = models.ImageMember
    return sa.exists().where(member.image_id == models.Image.id)


def image_type_filter(kind: str) -> Any:
    img = models.Image
    product = _prop("__productcode", lambda v: v != "")
    if kind == "gold":
        return sa.and_(img.visibility == "public", ~product)
    if kind == "market":
        return sa.and_(img.visibility == "public", product)
    if kind == "shared":
        return sa.and_(img.visibility == "shared", _has_members())
    return sa.or_(
        img.visibility.in_(("private", "community")),
        sa.and_(img.visibility == "shared", ~_has_members()),
    )


def os_filter(field: str, value: str) -> Any:
    """Match the derived OS field, or the stored one for unknown versions."""
    known = [entry.os_version for entry in os_versions.all_versions()]
    matching = os_versions.versions_where(field, value)
    return sa.or_(
        _prop("__os_version", lambda v: v.in_(matching)) if matching else sa.false(),
        sa.and_(
            ~_prop("__os_version", lambda v: v.in_(known)), _prop(field, lambda v: v == value)
        ),
    )


# -- list -------------------------------------------------------------------


def _bool(name: str, raw: str) -> bool:
    if raw.lower() not in ("true", "false"):
        raise errors.Invalid(f"Invalid value for {name}: {raw} (true or false)")
    return raw.lower() == "true"


def _int(name: str, raw: Any, code: str) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise errors.Invalid(f"{name} must be an integer", ims_code=code) from None
    if isinstance(raw, bool) or not 0 <= value <= _INT_MAX:
        raise errors.Invalid(f"{name} must be between 0 and {_INT_MAX}", ims_code=code)
    return value


def _single(params: Mapping[str, Any], name: str) -> str:
    value = params[name]
    if isinstance(value, list):
        raise errors.Invalid(f"Parameter {name} may be given only once")
    if len(value) > MAX_PARAM:
        raise errors.Invalid(f"Parameter {name} is longer than {MAX_PARAM} characters")
    return value


def _time(name: str, raw: str) -> Any:
    op, sep, _rest = raw.partition(":")
    if not sep or op not in _TIME_OPS:
        raise errors.Invalid(
            f"{name} must look like op:time with op one of {'|'.join(_TIME_OPS)}, "
            "e.g. lt:2018-10-28T10:00:00Z"
        )
    return listing.time_filter(name, raw)


def _enterprise_project(raw: str) -> Any:
    if raw == "all_granted_eps":
        return None
    if raw == "0":
        return ~_prop("enterprise_project_id", lambda v: v != "0")
    if not _UUID.match(raw):
        raise errors.Invalid("enterprise_project_id must be 0, a UUID or all_granted_eps")
    return listing.property_filter("enterprise_project_id", raw)


def _tag(raw: str) -> Any:
    if len(raw) > MAX_PARAM:
        raise errors.Invalid(f"tag is longer than {MAX_PARAM} characters")
    if "=" in raw:
        key, _, value = raw.partition("=")
        return kvtags.has_pair(key, value)
    return listing.tag_filter(raw)


def list_conditions(params: Mapping[str, Any]) -> tuple[dict[str, str], list[Any]]:
    """Split IMS list filters into ImageService filters and extra SQL.

    Paging parameters are ignored here. Unknown parameters filter on the
    image property of that name, as in the Image API.
    """
    filters: dict[str, str] = {}
    extra: list[Any] = []
    img = models.Image
    for name in params:
        if name in ("limit", "marker", "sort_key", "sort_dir", "page", "tag"):
            continue
        if len(name) > MAX_PARAM:
            raise errors.Invalid(f"Unknown parameter longer than {MAX_PARAM} characters")
        raw = _single(params, name)
        if name == "__imagetype":
            if raw not in IMAGE_TYPES:
                raise errors.Invalid("The imagetype is invalid.", ims_code="IMG.0024")
            extra.append(image_type_filter(raw))
        elif name == "__isregistered":
            registered = img.status.in_(REGISTERED)
            extra.append(registered if _bool(name, raw) else ~registered)
        elif name == "__whole_image":
            whole = _prop("__whole_image", lambda v: sa.func.lower(v) == "true")
            extra.append(whole if _bool(name, raw) else ~whole)
        elif name == "__os_type":
            if raw not in os_versions.OS_TYPES:
                raise errors.Invalid(
                    f"__os_type must be one of {', '.join(os_versions.OS_TYPES)}",
                    ims_code="IMG.0056",
                )
            extra.append(os_filter(name, raw))
        elif name == "__os_bit":
            if raw not in ("32", "64"):
                raise errors.Invalid("__os_bit must be 32 or 64")
            extra.append(os_filter(name, raw))
        elif name == "__platform":
            extra.append(os_filter(name, raw))
        elif name in ("__image_size",):
            extra.append(sa.func.coalesce(img.size, 0) == _int(name, raw, "IMG.0001"))
        elif name == "visibility":
            if raw not in ("public", "private", "shared"):
                raise errors.Invalid("visibility must be public, private or shared")
            filters[name] = raw
        elif name == "member_status":
            if raw not in ("pending", "accepted", "rejected", "all"):
                raise errors.Invalid("member_status must be pending, accepted or rejected")
            filters[name] = raw
        elif name == "protected":
            _bool(name, raw)
            filters[name] = raw
        elif name == "owner":
            filters[name] = raw
        elif name in ("id", "name", "status", "container_format", "disk_format"):
            extra.append(getattr(img, name) == raw)
        elif name in ("min_ram", "min_disk"):
            extra.append(getattr(img, name) == _int(name, raw, "IMG.0055"))
        elif name in ("created_at", "updated_at"):
            extra.append(_time(name, raw))
        elif name == "architecture":
            if raw not in ARCHITECTURES:
                raise errors.Invalid("architecture must be x86 or arm", ims_code="IMG.0212")
            names = ARCHITECTURES[raw]
            extra.append(_prop("architecture", lambda v, names=names: v.in_(names)))
        elif name == "enterprise_project_id":
            cond = _enterprise_project(raw)
            if cond is not None:
                extra.append(cond)
        elif name == "flavor_id":
            # NOTE(ims): IMS matches images to one ECS flavour's hardware; IMS
            # here has no flavour catalogue, so the filter is accepted and
            # does not narrow the list.
            continue
        else:
            # __system__cmkid, __support_*, virtual_env_type, any property.
            extra.append(listing.property_filter(name, raw))
    tags = params.get("tag")
    tag_list = tags if isinstance(tags, list) else ([tags] if tags is not None else [])
    if len(tag_list) > MAX_TAG_PARAMS:
        raise errors.Invalid(f"At most {MAX_TAG_PARAMS} tag filters are allowed")
    extra.extend(_tag(t) for t in tag_list)
    return filters, extra


def _sort(params: Mapping[str, Any]) -> list[listing.SortKey]:
    key = _single(params, "sort_key") if "sort_key" in params else "created_at"
    direction = _single(params, "sort_dir") if "sort_dir" in params else "desc"
    if key not in SORT_KEYS and key not in listing.SORT_KEYS:
        raise errors.Invalid(f"Invalid sort_key {key}; choose one of {', '.join(SORT_KEYS)}")
    if direction not in ("asc", "desc"):
        raise errors.Invalid(f"Invalid sort_dir {direction}; choose asc or desc")
    return [listing.SortKey(key, direction)]


# -- update -----------------------------------------------------------------

#: Paths PATCH /v2/cloudimages/{id} may change (ims-api.md §1.3), besides
#: user-defined properties.
PATCHABLE = frozenset(
    {
        "name",
        "__description",
        "__support_kvm",
        "__support_xen",
        "__support_diskintensive",
        "__support_highperformance",
        "__support_xen_gpu_type",
        "__support_kvm_gpu_type",
        "__is_config_init",
        "enterprise_project_id",
        "min_ram",
        "max_ram",
        "hw_vif_multiqueue_enabled",
        "hw_firmware_type",
    }
)
DATA_IMAGE_PATHS = frozenset({"name", "__description"})
_BOOL_PATHS = frozenset(
    {
        "__support_kvm",
        "__support_xen",
        "__support_diskintensive",
        "__support_highperformance",
        "__is_config_init",
        "hw_vif_multiqueue_enabled",
    }
)
XEN_GPU_TYPES = ("M60_vGPU",)
KVM_GPU_TYPES = ("P4", "M60", "V100_vGPU", "P2V_V100", "P100", "V100")
#: Attributes IMS manages itself; no PATCH may touch them.
SYSTEM = frozenset({"virtual_env_type", "tags", "locations"})
MAX_OPS = 128
_NAME = re.compile(r"^[0-9A-Za-z\u3400-\u4dbf\u4e00-\u9fff\-._ ]+$")


def _patch_path(path: Any) -> str:
    if not isinstance(path, str) or not path.startswith("/") or len(path) > MAX_PARAM + 1:
        raise errors.Invalid(f"Invalid path {path!r}: give /<attribute>")
    name = path[1:]
    if not name or "/" in name:
        raise errors.Invalid(f"Invalid path {path!r}: give /<attribute>")
    return name.replace("~1", "/").replace("~0", "~")


def _string(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise errors.Invalid(f"The value of {name} must be a string")
    if len(value) > MAX_PARAM:
        raise errors.Invalid(f"The value of {name} is longer than {MAX_PARAM} characters")
    return value


def check_name(value: Any) -> str:
    """An IMS image name: 1-128 letters, digits, CJK, '-', '.', '_', spaces."""
    if not isinstance(value, str) or not value:
        raise errors.Invalid("The image name is missing.", ims_code="IMG.0013")
    if len(value) > 128:
        raise errors.Invalid("The image name is longer than 128 characters.", ims_code="IMG.0002")
    if not _NAME.match(value) or value != value.strip():
        raise errors.Invalid(
            "The image name may hold letters, digits, Chinese characters, '-', '.', '_' and "
            "inner spaces only.",
            ims_code="IMG.0003",
        )
    return value


def check_description(value: Any) -> str:
    if not isinstance(value, str):
        raise errors.Invalid("The description must be a string.", ims_code="IMG.0004")
    if len(value) > 1024:
        raise errors.Invalid(
            "The description is longer than 1024 characters.", ims_code="IMG.0004"
        )
    if any(c in value for c in "\r<>"):
        raise errors.Invalid("The description may not contain carriage returns, '<' or '>'.")
    return value


def _value(name: str, value: Any) -> Any:
    """Check and normalise the value of one patchable attribute."""
    if name == "name":
        return check_name(value)
    if name == "__description":
        return check_description(value)
    if name in ("min_ram", "max_ram"):
        number = _int(name, value, "IMG.0055")
        return number if name == "min_ram" else str(number)
    if name == "hw_firmware_type":
        if value not in ("bios", "uefi"):
            raise errors.Invalid("hw_firmware_type must be bios or uefi", ims_code="IMG.0141")
        return value
    if name in _BOOL_PATHS:
        text = _string(name, value).lower()
        if text not in ("true", "false"):
            raise errors.Invalid(f"{name} must be true or false")
        return text
    if name == "__support_xen_gpu_type" and value not in XEN_GPU_TYPES:
        raise errors.Invalid(f"__support_xen_gpu_type must be one of {', '.join(XEN_GPU_TYPES)}")
    if name == "__support_kvm_gpu_type" and value not in KVM_GPU_TYPES:
        raise errors.Invalid(f"__support_kvm_gpu_type must be one of {', '.join(KVM_GPU_TYPES)}")
    if name == "enterprise_project_id":
        text = _string(name, value)
        if text != "0" and not _UUID.match(text):
            raise errors.Invalid("enterprise_project_id must be 0 or a UUID")
        return text
    return _string(name, value)


def _check_patchable(image: db.Image, name: str) -> None:
    if len(name) > MAX_PARAM:
        raise errors.Invalid(f"Attribute names are at most {MAX_PARAM} characters")
    if image.properties.get("virtual_env_type") == "DataImage" and name not in DATA_IMAGE_PATHS:
        raise errors.Invalid("A data disk image may change only its name and description.")
    if name in PATCHABLE:
        return
    user_defined = not (
        name.startswith("__")
        or name in DERIVED
        or name in SYSTEM
        or name in BASE_COLUMNS
        or name in READ_ONLY
        or name in RESERVED
        or name.startswith(RESERVED_PREFIX)
    )
    if not user_defined:
        raise errors.Invalid(f"The attribute {name} cannot be changed.")


def _check_result(doc: dict[str, Any]) -> None:
    """Rules that concern several attributes at once."""

    def on(key: str) -> bool:
        return str(doc.get(key, "")).lower() == "true"

    if doc.get("__support_xen_gpu_type") and (on("__support_xen") or on("__support_kvm")):
        raise errors.Invalid("__support_xen_gpu_type excludes __support_xen and __support_kvm")
    if doc.get("__support_kvm_gpu_type") and (on("__support_xen") or on("__support_kvm")):
        raise errors.Invalid("__support_kvm_gpu_type excludes __support_xen and __support_kvm")
    try:
        max_ram = int(doc.get("max_ram") or 0)
        min_ram = int(doc.get("min_ram") or 0)
    except (TypeError, ValueError):
        return  # a value stored through the Image API; not ours to judge
    if max_ram and max_ram < min_ram:
        raise errors.Invalid("max_ram is smaller than min_ram", ims_code="IMG.0055")


def patch_ops(image: db.Image, body: Any) -> list[PatchOp]:
    """Turn an IMS PATCH body into Image API PatchOps for ImageService.update."""
    if not isinstance(body, list) or not body:
        raise errors.Invalid("The body must be a non-empty JSON array of operations")
    if len(body) > MAX_OPS:
        raise errors.Invalid(f"At most {MAX_OPS} operations are allowed")
    doc: dict[str, Any] = {**image.properties, "name": image.name, "min_ram": image.min_ram}
    ops: list[PatchOp] = []
    for item in body:
        if not isinstance(item, dict) or item.get("op") not in ("add", "replace", "remove"):
            raise errors.Invalid("Each operation needs op add, replace or remove")
        name = _patch_path(item.get("path"))
        _check_patchable(image, name)
        if item["op"] == "remove":
            if name in ("name", "min_ram"):
                raise errors.Invalid(f"The attribute {name} cannot be removed.")
            if name in doc:
                del doc[name]
                ops.append(PatchOp(op="remove", name=name))
            continue
        if "value" not in item:
            raise errors.Invalid(f"Operation {item['op']} needs a value")
        value = _value(name, item["value"])
        doc[name] = value
        base = name in ("name", "min_ram")
        # NOTE(ims): IMS's add and replace both set the attribute; a plain
        # add is what ImageService treats as "set, created if missing".
        ops.append(PatchOp(op="replace" if base else "add", name=name, value=value))
    _check_result(doc)
    return ops


# -- the service --------------------------------------------------------------


class CloudImageService:
    """List and update images the IMS way, on top of ImageService."""

    def __init__(self, conf: cfg.ConfigOpts, images: ImageService) -> None:
        self.conf = conf
        self.images = images
        self.db = images.db

    def annotate(self, images: list[db.Image]) -> list[CloudImage]:
        """Attach the derived values to records (one query for the page)."""
        if not images:
            return []
        with self.db.session() as session:
            shared = native_api.images_with_members(session, [i.id for i in images])
        return [CloudImage(i, derive(i, i.id in shared)) for i in images]

    def query(self, ctx: RequestContext, params: Mapping[str, Any]) -> ListQuery:
        """Build the ListQuery of GET /v2/cloudimages from its parameters."""
        conf = self.conf.native
        limit = conf.list_limit_default
        if "limit" in params:
            limit = _int("limit", _single(params, "limit"), "IMG.0001")
        limit = min(limit, conf.list_limit_max)
        marker = _single(params, "marker") if "marker" in params else None
        if marker is not None:
            try:
                self.images.get(ctx, marker)
            except errors.ImageNotFound:
                raise errors.Invalid(
                    f"Invalid marker: image {marker} could not be found.", ims_code="IMG.0027"
                ) from None
        filters, extra = list_conditions(params)
        return ListQuery(
            filters=filters,
            properties={},
            tags=[],
            sort=_sort(params),
            limit=limit,
            marker=marker,
            extra=tuple(extra),
        )

    def list(self, ctx: RequestContext, params: Mapping[str, Any]) -> list[CloudImage]:
        """GET /v2/cloudimages: one page of images with their derived values."""
        found, _more = self.images.list(ctx, self.query(ctx, params))
        return self.annotate(found)

    def get(self, ctx: RequestContext, image_id: str) -> CloudImage:
        return self.annotate([self.images.get(ctx, image_id)])[0]

    def update(self, ctx: RequestContext, image_id: str, body: Any) -> CloudImage:
        """PATCH /v2/cloudimages/{id}: only active images, IMS's attributes."""
        image = self.images.get(ctx, image_id)
        if image.status != st.ACTIVE:
            raise errors.Invalid(
                f"Image {image_id} is {image.status}; only active images can be updated.",
                ims_code="IMG.0046",
            )
        ops = patch_ops(image, body)
        if ops:
            self.images.update(ctx, image_id, ops)
        return self.get(ctx, image_id)
