"""Image records: create, show, list, update, delete, tags, (de)activation.

Every method takes the caller's context first; what the caller may not see
does not exist for it (ImageNotFound, never Forbidden).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from typing import Any

import jsonschema
from oslo_config import cfg

from ims import errors
from ims.context import RequestContext
from ims.core import listing, schemas
from ims.core import status as st
from ims.core.stores import STAGING, StoreRegistry
from ims.db import api as db
from ims.db import models
from ims.db.session import Database
from ims.policy import Policy

READ_ONLY = frozenset(
    {
        "created_at",
        "updated_at",
        "status",
        "checksum",
        "size",
        "virtual_size",
        "direct_url",
        "self",
        "file",
        "schema",
        "id",
        "os_hash_algo",
        "os_hash_value",
        "stores",
    }
)
#: IMS-native properties that are always computed from the record (never stored
#: by users), so that both APIs tell the same story about an image.
ALWAYS_DERIVED = frozenset({"__imagetype", "__isregistered", "__image_size"})
RESERVED = frozenset({"location", "deleted", "deleted_at"})
RESERVED_PREFIX = "os_glance"
BASE_COLUMNS = frozenset(
    {
        "name",
        "visibility",
        "protected",
        "os_hidden",
        "container_format",
        "disk_format",
        "min_disk",
        "min_ram",
        "owner",
    }
)
BASE_PROPERTIES = BASE_COLUMNS | READ_ONLY | {"tags", "locations"}
MAX_KEY = 255


@dataclasses.dataclass(frozen=True)
class PatchOp:
    """One change of a PATCH, already decoded from either JSON-patch dialect.

    ``strict_add`` is the draft-4 meaning of add: fail if the property exists.
    """

    op: str  # "add" | "replace" | "remove"
    name: str
    value: Any = None
    strict_add: bool = False
    index: str | None = None  # only for /locations/N


@dataclasses.dataclass(frozen=True)
class ListQuery:
    filters: dict[str, str]
    properties: dict[str, str]
    tags: list[str]
    sort: list[listing.SortKey]
    limit: int
    marker: str | None
    #: More SQL conditions, ANDed with the rest (the native API's filters).
    extra: tuple[Any, ...] = ()


def _int_quota(value: int) -> int | None:
    return None if value < 0 else value


class ImageService:
    """The rules of image records."""

    def __init__(
        self, conf: cfg.ConfigOpts, db_: Database, policy: Policy, stores: StoreRegistry
    ) -> None:
        self.conf = conf
        self.db = db_
        self.policy = policy
        self.stores = stores
        self.disk_formats = tuple(conf.image_format.disk_formats)
        self.container_formats = tuple(conf.image_format.container_formats)
        self._validator = schemas.image_validator(self.disk_formats, self.container_formats)
        self._schema = schemas.image_schema(self.disk_formats, self.container_formats)

    # -- visibility -------------------------------------------------------

    def can_see(self, ctx: RequestContext, image: db.Image, session: Any) -> bool:
        if ctx.is_admin or image.owner == ctx.project_id:
            return True
        if image.visibility in ("public", "community"):
            return True
        if image.visibility == "shared" and ctx.project_id:
            return db.member_get(session, image.id, ctx.project_id) is not None
        return False

    def load_visible(self, ctx: RequestContext, session: Any, image_id: str) -> db.Image:
        image = db.image_get(session, image_id)
        if not self.can_see(ctx, image, session):
            raise errors.ImageNotFound(image_id=image_id)
        return image

    def target(self, image: db.Image) -> dict[str, object]:
        return {"owner": image.owner, "image_id": image.id, "visibility": image.visibility}

    def get(self, ctx: RequestContext, image_id: str) -> db.Image:
        self.policy.enforce(ctx, "get_image")
        with self.db.session() as session:
            return self.load_visible(ctx, session, image_id)

    # -- create -----------------------------------------------------------

    def create(self, ctx: RequestContext, body: dict[str, Any]) -> db.Image:
        if not isinstance(body, dict):
            raise errors.Invalid("Image body must be a JSON object")
        for key in body:
            if key != "id":
                self._check_writable(key)
        owner = body.get("owner", ctx.project_id)
        if owner != ctx.project_id and not ctx.is_admin:
            raise errors.Forbidden(f"You are not permitted to create images owned by '{owner}'.")
        self.policy.enforce(ctx, "add_image", {"owner": owner})
        visibility = body.get("visibility", "shared")
        self._check_visibility_change(ctx, visibility, owner)
        self._validate(body)
        image_id = body.get("id") or str(uuid.uuid4())
        tags = body.get("tags") or []
        self._check_tags(tags)
        properties = {k: v for k, v in body.items() if k not in BASE_PROPERTIES}
        self._check_properties(properties)
        if body.get("locations"):
            raise errors.Forbidden("Setting locations is not allowed.")
        values = {
            "id": image_id,
            "name": body.get("name"),
            "status": st.QUEUED,
            "visibility": visibility,
            "protected": bool(body.get("protected", False)),
            "os_hidden": bool(body.get("os_hidden", False)),
            "container_format": body.get("container_format"),
            "disk_format": body.get("disk_format"),
            "min_disk": body.get("min_disk", 0),
            "min_ram": body.get("min_ram", 0),
            "owner": owner,
        }
        with self.db.session() as session:
            if db.image_exists_ever(session, image_id):
                raise errors.Duplicate(what=f"Image with identifier {image_id}")
            return db.image_create(session, values, properties, tags)

    def _check_writable(self, key: str) -> None:
        if key in READ_ONLY or key in ALWAYS_DERIVED:
            raise errors.ReadOnlyProperty(name=key)
        if key in RESERVED or key.startswith(RESERVED_PREFIX):
            raise errors.ReservedProperty(name=key)

    def _check_visibility_change(self, ctx: RequestContext, visibility: Any, owner: Any) -> None:
        if visibility == "public":
            self.policy.enforce(ctx, "publicize_image", {"owner": owner})
        elif visibility == "community":
            self.policy.enforce(ctx, "communitize_image", {"owner": owner})

    def _validate(self, doc: dict[str, Any]) -> None:
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(doc))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path)
            raise errors.Invalid(
                f"Provided object does not match schema 'image': "
                f"{error.message}{f' (at {where})' if where else ''}"
            )

    def _check_tags(self, tags: Iterable[str]) -> None:
        tags = set(tags)
        quota = _int_quota(self.conf.image_tag_quota)
        if quota is not None and len(tags) > quota:
            raise errors.QuotaExceeded(what="tags per image", limit=quota)
        for tag in tags:
            if not isinstance(tag, str) or not tag or len(tag) > MAX_KEY:
                raise errors.Invalid(f"Invalid tag: {tag!r}")

    def _check_properties(self, properties: dict[str, Any]) -> None:
        quota = _int_quota(self.conf.image_property_quota)
        if quota is not None and len(properties) > quota:
            raise errors.QuotaExceeded(what="properties per image", limit=quota)
        for key in properties:
            if not key or len(key) > MAX_KEY:
                raise errors.Invalid(f"Property name is empty or longer than {MAX_KEY}")

    # -- list -------------------------------------------------------------

    def list(self, ctx: RequestContext, query: ListQuery) -> tuple[list[db.Image], bool]:
        """Return a page of images and whether more may follow."""
        self.policy.enforce(ctx, "get_images")
        where = self.list_conditions(ctx, query)
        sort = listing.with_tiebreakers(query.sort)
        with self.db.session() as session:
            if query.marker:
                try:
                    marker = self.load_visible(ctx, session, query.marker)
                except errors.ImageNotFound:
                    raise errors.Invalid(
                        f"Invalid marker. Image {query.marker} could not be found."
                    ) from None
                where.append(listing.after_marker(sort, marker))
            images = db.images_query(session, where, listing.order_by(sort), query.limit)
        return images, len(images) == query.limit

    def list_conditions(self, ctx: RequestContext, query: ListQuery) -> list[Any]:
        """The SQL conditions selecting what ``ctx`` may list with ``query``.

        Paging (sort, limit, marker) is left to the caller; policy too.
        """
        f = dict(query.filters)
        visibility = f.pop("visibility", None)
        member_status = f.pop("member_status", "accepted")
        where = listing.visibility_filter(ctx.project_id, ctx.is_admin, visibility, member_status)
        where.append(models_status_not_killed())
        hidden = f.pop("os_hidden", "false")
        where.append(listing_bool_col("os_hidden", hidden))
        if "protected" in f:
            where.append(listing_bool_col("protected", f.pop("protected")))
        for key in listing._IN_FILTERS:
            if key in f:
                where.append(listing.equality_filter(key, f.pop(key)))
        for key in ("created_at", "updated_at"):
            if key in f:
                where.append(listing.time_filter(key, f.pop(key)))
        if "size_min" in f:
            where.append(column("size") >= _int_param("size_min", f.pop("size_min")))
        if "size_max" in f:
            where.append(column("size") <= _int_param("size_max", f.pop("size_max")))
        # Base columns are exact-match filters too (Glance: any image column).
        for key in ("size", "virtual_size", "min_disk", "min_ram"):
            if key in f:
                where.append(column(key) == _int_param(key, f.pop(key)))
        for key in ("owner", "checksum", "os_hash_value"):
            if key in f:
                where.append(column(key) == f.pop(key))
        for name, value in query.properties.items():
            where.append(listing.property_filter(name, value))
        for tag in query.tags:
            where.append(listing.tag_filter(tag))
        where.extend(query.extra)
        return where

    # -- update -----------------------------------------------------------

    def update(self, ctx: RequestContext, image_id: str, ops: list[PatchOp]) -> db.Image:
        with self.db.session() as session:
            image = self.load_visible(ctx, session, image_id)
            self.policy.enforce(ctx, "modify_image", self.target(image))
            doc = self._editable_doc(image)
            props_before = dict(image.properties)
            for op in ops:
                self._apply(ctx, image, doc, op)
            self._validate({k: v for k, v in doc.items() if v is not None or k in BASE_COLUMNS})
            if doc.get("visibility") != image.visibility:
                self._check_visibility_change(ctx, doc.get("visibility"), image.owner)
            if doc.get("owner") != image.owner and not ctx.is_admin:
                raise errors.Forbidden("Owner can only be changed by an admin")
            values = {k: doc[k] for k in BASE_COLUMNS if doc.get(k) != getattr(image, k)}
            for key in ("protected", "os_hidden"):
                if key in values:
                    values[key] = bool(values[key])
            new_props = {k: v for k, v in doc.items() if k not in BASE_PROPERTIES}
            self._check_properties(new_props)
            changes: dict[str, str | None] = {
                k: v for k, v in new_props.items() if props_before.get(k) != v
            }
            changes.update({k: None for k in props_before if k not in new_props})
            tags = doc["tags"]
            self._check_tags(tags)
            return db.image_update(
                session,
                image_id,
                values=values,
                properties=changes,
                tags=tags if set(tags) != set(image.tags) else None,
            )

    def _editable_doc(self, image: db.Image) -> dict[str, Any]:
        doc: dict[str, Any] = {k: getattr(image, k) for k in BASE_COLUMNS}
        doc["tags"] = list(image.tags)
        doc.update(image.properties)
        return doc

    def _apply(
        self, ctx: RequestContext, image: db.Image, doc: dict[str, Any], op: PatchOp
    ) -> None:
        name = op.name
        if name == "locations":
            raise errors.Forbidden("Changing locations is not allowed.")
        self._check_writable(name)
        if name in ("disk_format", "container_format") and image.status not in (
            st.QUEUED,
            st.IMPORTING,
        ):
            raise errors.Forbidden(f"Attribute {name} can be only replaced for a queued image.")
        is_base = name in BASE_COLUMNS or name == "tags"
        if op.op == "remove":
            if is_base:
                raise errors.Forbidden(f"Attribute {name} cannot be removed.")
            if name not in doc:
                raise errors.Conflict(f"Property {name} does not exist.")
            del doc[name]
            return
        if op.op == "replace" and not is_base and name not in doc:
            raise errors.Conflict(f"Property {name} does not exist.")
        if op.op == "add" and op.strict_add and not is_base and name in doc:
            raise errors.Conflict(f"Property {name} already present.")
        if (
            not is_base
            and not isinstance(op.value, str)
            and name not in self._schema["properties"]
        ):
            raise errors.Invalid(f"Property {name} must be a string.")
        if not is_base and len(name) > MAX_KEY:
            raise errors.Invalid(f"Property name longer than {MAX_KEY}")
        if name == "tags" and not isinstance(op.value, list):
            raise errors.Invalid("tags must be a list of strings")
        doc[name] = op.value

    # -- delete and (de)activate ------------------------------------------

    def delete(self, ctx: RequestContext, image_id: str) -> db.Image:
        with self.db.session() as session:
            image = self.load_visible(ctx, session, image_id)
            self.policy.enforce(ctx, "delete_image", self.target(image))
            if image.protected:
                raise errors.ProtectedImage(image_id=image_id)
            deleted = db.image_soft_delete(session, image_id)
        self._delete_data(image)
        return deleted

    def _delete_data(self, image: db.Image) -> None:
        staging = self.stores.get(STAGING)
        locations = [*image.locations]
        if image.status in (st.UPLOADING, st.IMPORTING):
            locations.append(db.Location(STAGING, staging.url_for(image.id), {}, "active"))
        for loc in locations:
            try:
                self.stores.get(loc.store).delete(loc.url)
            except errors.NotFound:
                pass
            except errors.IMSError:
                # NOTE(ims): the record is gone either way; the store's own
                # cleanup finds orphans later.
                pass

    def deactivate(self, ctx: RequestContext, image_id: str) -> None:
        self._flip(ctx, image_id, "deactivate", st.ACTIVE, st.DEACTIVATED)

    def reactivate(self, ctx: RequestContext, image_id: str) -> None:
        self._flip(ctx, image_id, "reactivate", st.DEACTIVATED, st.ACTIVE)

    def _flip(self, ctx: RequestContext, image_id: str, rule: str, src: str, dst: str) -> None:
        with self.db.session() as session:
            image = self.load_visible(ctx, session, image_id)
            self.policy.enforce(ctx, rule, self.target(image))
            if image.status == dst:
                return
            if image.status != src:
                raise errors.Forbidden(f"Not allowed to {rule} image in status '{image.status}'")
            db.image_update(session, image_id, values={"status": dst}, from_status=[src])

    def delete_from_store(self, ctx: RequestContext, store_id: str, image_id: str) -> None:
        """Remove an image's data from one store, keeping it in the others."""
        if not self.stores.multistore:
            raise errors.NotFound("Multi backend is not supported at this site.")
        with self.db.session() as session:
            image = self.load_visible(ctx, session, image_id)
            self.policy.enforce(ctx, "delete_image_location", self.target(image))
            try:
                self.stores.user_store(store_id)
            except errors.StoreNotFound:
                raise errors.Conflict(f"Unknown store {store_id}") from None
            if image.status != st.ACTIVE:
                raise errors.Conflict(f"Image {image_id} is {image.status}, not active")
            active = [loc for loc in image.locations if loc.status == "active"]
            here = [loc for loc in active if loc.store == store_id]
            if not here:
                raise errors.NotFound(f"Image {image_id} is not in store {store_id}")
            if len(here) == len(active):
                raise errors.Forbidden("Cannot delete the last location of an image")
            for loc in here:
                db.location_delete(session, image_id, loc.url)
        for loc in here:
            try:
                self.stores.get(store_id).delete(loc.url)
            except errors.NotFound:
                pass

    # -- tags -------------------------------------------------------------

    def add_tag(self, ctx: RequestContext, image_id: str, tag: str) -> None:
        with self.db.session() as session:
            image = self.load_visible(ctx, session, image_id)
            self.policy.enforce(ctx, "modify_image", self.target(image))
            if tag in image.tags:
                return
            tags = [*image.tags, tag]
            self._check_tags(tags)
            db.image_update(session, image_id, tags=tags)

    def delete_tag(self, ctx: RequestContext, image_id: str, tag: str) -> None:
        with self.db.session() as session:
            image = self.load_visible(ctx, session, image_id)
            self.policy.enforce(ctx, "modify_image", self.target(image))
            if tag not in image.tags:
                raise errors.TagNotFound(tag=tag, image_id=image_id)
            db.image_update(session, image_id, tags=[t for t in image.tags if t != tag])


def column(name: str) -> Any:
    return getattr(models.Image, name)


def models_status_not_killed() -> Any:
    return column("status") != st.KILLED


def listing_bool_col(name: str, raw: str) -> Any:
    value = raw.lower() if isinstance(raw, str) else raw
    if value not in ("true", "false"):
        raise errors.Invalid(f"Invalid value for {name}: {raw} (true or false)")
    return column(name).is_(value == "true")


#: Sizes are 64-bit columns; larger numbers cannot even be compared in SQL.
_MAX_BIGINT = 2**63 - 1


def _int_param(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise errors.Invalid(f"{name} must be an integer") from None
    if value < 0:
        raise errors.Invalid(f"{name} must be >= 0")
    if value > _MAX_BIGINT:
        raise errors.Invalid(f"{name} must be at most {_MAX_BIGINT}")
    return value
