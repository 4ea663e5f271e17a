"""Metadata definitions: namespaces and their objects, properties, tags and
resource type associations (the Glance ``metadefs`` catalogue).

Visibility follows Glance: admins see every namespace; others see public
ones, ownerless ones and their own project's. What a caller may not see does
not exist for it (NotFound). Changes need the policy rule and, for a
non-admin, ownership of the namespace. Nothing inside a protected namespace
may be deleted, nor the namespace itself.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any

import jsonschema
from oslo_config import cfg

from ims import errors
from ims.context import RequestContext
from ims.core import metadef_schemas as ms
from ims.db import metadef_api as db
from ims.db.session import Database
from ims.policy import Policy

#: Keys a client may never send; Glance answers 403 for them.
READ_ONLY = ("self", "schema", "created_at", "updated_at")
#: Most objects, properties or tags one namespace may hold (each kind).
MAX_PER_NAMESPACE = 1000
#: Most resource types one namespace may be associated with.
MAX_ASSOCIATIONS = 100
#: Deepest nesting of a request body (a property's ``default`` or ``enum``).
MAX_DEPTH = 32

_OBJECTS, _PROPERTIES, _TAGS = db.CHILD_KINDS
_WHAT = {_OBJECTS: "object", _PROPERTIES: "property", _TAGS: "tag"}
_RULES = {
    _OBJECTS: {
        "get": "get_metadef_object",
        "list": "get_metadef_objects",
        "add": "add_metadef_object",
        "modify": "modify_metadef_object",
        "delete": "delete_metadef_object",
        "delete_all": "delete_metadef_namespace",
    },
    _PROPERTIES: {
        "get": "get_metadef_property",
        "list": "get_metadef_properties",
        "add": "add_metadef_property",
        "modify": "modify_metadef_property",
        "delete": "remove_metadef_property",
        "delete_all": "delete_metadef_namespace",
    },
    _TAGS: {
        "get": "get_metadef_tag",
        "list": "get_metadef_tags",
        "add": "add_metadef_tag",
        "modify": "modify_metadef_tag",
        "delete": "delete_metadef_tag",
        "delete_all": "delete_metadef_tags",
    },
}


@dataclasses.dataclass(frozen=True)
class NamespaceDetail:
    """A namespace with whatever of its contents the caller asked for."""

    namespace: db.Namespace
    associations: tuple[db.Association, ...] = ()
    properties: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    objects: tuple[db.Object, ...] = ()
    tags: tuple[db.Tag, ...] = ()


@dataclasses.dataclass(frozen=True)
class ListParams:
    """Listing parameters as the client sent them (strings, except limit)."""

    limit: int | None = None
    marker: str | None = None
    sort_key: str | None = None
    sort_dir: str | None = None
    visibility: str | None = None
    resource_types: tuple[str, ...] = ()


def _check_values(body: Any) -> None:
    """Refuse what would not survive storage and a strict JSON reader.

    NaN and infinities are not JSON (PostgreSQL refuses them), and property
    definitions are kept nested shallowly enough to serialize anywhere.
    """
    pending = [(body, 0)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise errors.Invalid(f"Values may be nested at most {MAX_DEPTH} levels deep.")
        if isinstance(value, float) and not math.isfinite(value):
            raise errors.Invalid("Numbers must be finite.")
        if isinstance(value, dict):
            pending.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            pending.extend((v, depth + 1) for v in value)


def _validate(validator: jsonschema.Draft4Validator, what: str, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise errors.Invalid(f"The {what} must be a JSON object.")
    for key in READ_ONLY:
        if key in body:
            raise errors.ReadOnlyProperty(name=key)
    _check_values(body)
    problem = ms.validate(validator, what, body)
    if problem:
        raise errors.Invalid(problem)
    return body


def _name(value: Any, what: str, limit: int) -> str:
    """Check a name that becomes part of a URL path."""
    if not isinstance(value, str) or not value.strip():
        raise errors.Invalid(f"The {what} name must be a non-empty string.")
    if len(value) > limit:
        raise errors.Invalid(f"The {what} name is longer than {limit} characters.")
    # NOTE(ims): a name with a slash could be stored but never addressed.
    if "/" in value or any(ord(c) < 32 for c in value):
        raise errors.Invalid(f"The {what} name may not contain '/' or control characters.")
    return value


def _unique(names: Iterable[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise errors.Duplicate(what=f"The {what} {name} (given twice)")
        seen.add(name)


def _property_defs(value: Any) -> dict[str, dict[str, Any]]:
    """Turn a validated ``properties`` mapping into stored definitions."""
    out = {}
    for name, definition in (value or {}).items():
        _name(name, "property", ms.MAX_PROPERTY_NAME)
        out[name] = {k: v for k, v in definition.items() if k != "name"}
    return out


def _object_values(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": _name(doc.get("name"), "object", ms.MAX_OBJECT_NAME),
        "description": doc.get("description"),
        "required": list(doc.get("required") or []),
        "properties": _property_defs(doc.get("properties")),
    }


def _association_values(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": _name(doc.get("name"), "resource type", ms.MAX_RESOURCE_TYPE),
        "prefix": doc.get("prefix"),
        "properties_target": doc.get("properties_target"),
    }


def _prefixed(detail: NamespaceDetail, resource_type: str) -> NamespaceDetail:
    """Show property names as they apply to ``resource_type``."""
    prefix = next((a.prefix for a in detail.associations if a.name == resource_type), None)
    if not prefix:
        return detail
    objects = tuple(
        dataclasses.replace(o, properties={prefix + k: v for k, v in o.properties.items()})
        for o in detail.objects
    )
    properties = {prefix + k: v for k, v in detail.properties.items()}
    return dataclasses.replace(detail, properties=properties, objects=objects)


class MetadefService:
    """The rules of metadata definitions."""

    def __init__(self, conf: cfg.ConfigOpts, db_: Database, policy: Policy) -> None:
        self.conf = conf
        self.db = db_
        self.policy = policy

    # -- visibility and rights --------------------------------------------

    def can_see(self, ctx: RequestContext, ns: db.Namespace) -> bool:
        if ctx.is_admin or ns.owner is None or ns.visibility == "public":
            return True
        return ctx.project_id is not None and ns.owner == ctx.project_id

    def _load(self, ctx: RequestContext, session: Any, name: str) -> db.Namespace:
        ns = db.namespace_get(session, name)
        if ns is None or not self.can_see(ctx, ns):
            raise errors.NotFound(f"Metadata definition namespace={name} was not found.")
        return ns

    def _target(self, ns: db.Namespace) -> dict[str, object]:
        return {"owner": ns.owner, "namespace": ns.namespace, "visibility": ns.visibility}

    def _writable(self, ctx: RequestContext, session: Any, name: str, rule: str) -> db.Namespace:
        """Load a namespace the caller is about to change."""
        ns = self._load(ctx, session, name)
        self.policy.enforce(ctx, rule, self._target(ns))
        if not ctx.is_admin and (ctx.project_id is None or ns.owner != ctx.project_id):
            raise errors.Forbidden(f"Forbidden to modify namespace {name} owned by another.")
        return ns

    def _deletable(self, ctx: RequestContext, session: Any, name: str, rule: str) -> db.Namespace:
        ns = self._writable(ctx, session, name, rule)
        if ns.protected:
            raise errors.Forbidden(
                f"Metadata definition namespace {name} is protected; "
                "neither it nor anything in it can be deleted."
            )
        return ns

    def _check_owner(self, ctx: RequestContext, owner: Any) -> None:
        if owner != ctx.project_id and not ctx.is_admin:
            raise errors.Forbidden(f"You are not permitted to set the owner to '{owner}'.")

    def _room(self, session: Any, kind: str, ns: db.Namespace, adding: int) -> None:
        if db.child_count(session, kind, ns.id) + adding > MAX_PER_NAMESPACE:
            raise errors.QuotaExceeded(
                what=f"metadata definition {kind} per namespace", limit=MAX_PER_NAMESPACE
            )

    def _page(
        self, params: ListParams, sort_keys: tuple[str, ...], default_limit: int | None = None
    ) -> db.Page:
        sort_key = params.sort_key or "created_at"
        if sort_key not in sort_keys:
            raise errors.Invalid(
                f"Invalid sort key: {sort_key}. It should be one of: {', '.join(sort_keys)}."
            )
        sort_dir = params.sort_dir or "desc"
        if sort_dir not in ("asc", "desc"):
            raise errors.Invalid(f"Invalid sort direction: {sort_dir}")
        if params.limit is not None and params.limit < 0:
            raise errors.Invalid("limit param must be positive")
        if params.limit:
            limit = min(params.limit, self.conf.api.api_limit_max)
        else:
            limit = default_limit or self.conf.api.limit_param_default
        # NOTE(ims): one row more than asked tells whether a next page exists.
        return db.Page(sort_key, sort_dir, limit + 1, params.marker)

    # -- namespaces -------------------------------------------------------

    def list_namespaces(
        self, ctx: RequestContext, params: ListParams
    ) -> tuple[list[NamespaceDetail], str | None]:
        """Return a page of namespaces and the marker of the next one, if any."""
        self.policy.enforce(ctx, "get_metadef_namespaces")
        if params.visibility is not None and params.visibility not in ms.VISIBILITIES:
            raise errors.Invalid(f"Invalid visibility value: {params.visibility}")
        page = self._page(params, db.NAMESPACE_SORT_KEYS)
        with self.db.session() as session:
            if page.marker is not None:
                marker = db.namespace_get(session, page.marker)
                if marker is None or not self.can_see(ctx, marker):
                    raise errors.Invalid(
                        f"Invalid marker. Namespace {page.marker} could not be found."
                    )
            found = db.namespace_list(
                session,
                page,
                see_all=ctx.is_admin,
                project_id=ctx.project_id,
                visibility=params.visibility,
                resource_types=params.resource_types,
            )
            shown = found[: page.limit - 1]
            links = db.associations(session, [ns.id for ns in shown])
        details = [NamespaceDetail(ns, tuple(links[ns.id])) for ns in shown]
        more = len(found) > len(shown)
        return details, (shown[-1].namespace if more and shown else None)

    def get_namespace(
        self, ctx: RequestContext, name: str, resource_type: str | None = None
    ) -> NamespaceDetail:
        """Return a namespace with all it contains."""
        self.policy.enforce(ctx, "get_metadef_namespace")
        with self.db.session() as session:
            ns = self._load(ctx, session, name)
            detail = NamespaceDetail(
                ns,
                associations=tuple(db.associations(session, [ns.id])[ns.id]),
                properties={p.name: p.schema for p in db.child_list(session, _PROPERTIES, ns.id)},
                objects=tuple(db.child_list(session, _OBJECTS, ns.id)),
                tags=tuple(db.child_list(session, _TAGS, ns.id)),
            )
        return _prefixed(detail, resource_type) if resource_type else detail

    def create_namespace(self, ctx: RequestContext, body: Any) -> NamespaceDetail:
        """Create a namespace, with its contents when the body has them."""
        self.policy.enforce(ctx, "add_metadef_namespace")
        doc = _validate(ms.NAMESPACE, "namespace", body)
        name = _name(doc["namespace"], "namespace", ms.MAX_NAMESPACE)
        owner = doc.get("owner", ctx.project_id)
        self._check_owner(ctx, owner)
        links = [_association_values(a) for a in doc.get("resource_type_associations", [])]
        properties = _property_defs(doc.get("properties"))
        objects = [_object_values(o) for o in doc.get("objects", [])]
        tags = [_name(t.get("name"), "tag", ms.MAX_TAG_NAME) for t in doc.get("tags", [])]
        _unique((a["name"] for a in links), "resource type association")
        _unique((o["name"] for o in objects), "object")
        _unique(tags, "tag")
        if len(links) > MAX_ASSOCIATIONS:
            raise errors.QuotaExceeded(
                what="resource type associations per namespace", limit=MAX_ASSOCIATIONS
            )
        for count in (len(properties), len(objects), len(tags)):
            if count > MAX_PER_NAMESPACE:
                raise errors.QuotaExceeded(
                    what="metadata definitions per namespace", limit=MAX_PER_NAMESPACE
                )
        values = {
            "namespace": name,
            "display_name": doc.get("display_name"),
            "description": doc.get("description"),
            "visibility": doc.get("visibility", "private"),
            "protected": doc.get("protected", False),
            "owner": owner,
        }
        with self.db.session() as session:
            if db.namespace_get(session, name) is not None:
                raise errors.Duplicate(what=f"Metadata definition namespace {name}")
            ns = db.namespace_create(session, values)
            return NamespaceDetail(
                ns,
                associations=tuple(
                    db.association_create(
                        session, ns.id, a["name"], a["prefix"], a["properties_target"]
                    )
                    for a in links
                ),
                properties={
                    p.name: p.schema
                    for p in (
                        db.child_create(session, _PROPERTIES, ns.id, {"name": k, "schema": v})
                        for k, v in properties.items()
                    )
                },
                objects=tuple(db.child_create(session, _OBJECTS, ns.id, o) for o in objects),
                tags=tuple(db.child_create(session, _TAGS, ns.id, {"name": t}) for t in tags),
            )

    def update_namespace(self, ctx: RequestContext, name: str, body: Any) -> NamespaceDetail:
        """Change a namespace's own fields (and name); fields not given stay.

        Contents sent along (glanceclient sends back what it read) are ignored,
        as Glance ignores them.
        """
        doc = _validate(ms.NAMESPACE, "namespace", body)
        new_name = _name(doc["namespace"], "namespace", ms.MAX_NAMESPACE)
        values = {
            key: doc[key]
            for key in ("display_name", "description", "visibility", "protected", "owner")
            if key in doc
        }
        with self.db.session() as session:
            ns = self._writable(ctx, session, name, "modify_metadef_namespace")
            if "owner" in values and values["owner"] != ns.owner:
                self._check_owner(ctx, values["owner"])
            if new_name != ns.namespace:
                if db.namespace_get(session, new_name) is not None:
                    raise errors.Duplicate(what=f"Metadata definition namespace {new_name}")
                values["namespace"] = new_name
            updated = db.namespace_update(session, ns.id, values)
            links = db.associations(session, [ns.id])[ns.id]
        return NamespaceDetail(updated, tuple(links))

    def delete_namespace(self, ctx: RequestContext, name: str) -> None:
        with self.db.session() as session:
            ns = self._deletable(ctx, session, name, "delete_metadef_namespace")
            db.namespace_delete(session, ns.id)

    # -- resource types ---------------------------------------------------

    def list_resource_types(self, ctx: RequestContext) -> list[db.ResourceType]:
        self.policy.enforce(ctx, "list_metadef_resource_types")
        with self.db.session() as session:
            return db.resource_type_list(session)

    def list_associations(self, ctx: RequestContext, namespace: str) -> list[db.Association]:
        self.policy.enforce(ctx, "get_metadef_resource_type")
        with self.db.session() as session:
            ns = self._load(ctx, session, namespace)
            return db.associations(session, [ns.id])[ns.id]

    def associate(self, ctx: RequestContext, namespace: str, body: Any) -> db.Association:
        doc = _validate(ms.RESOURCE_TYPE_ASSOCIATION, "resource_type_association", body)
        values = _association_values(doc)
        with self.db.session() as session:
            ns = self._writable(ctx, session, namespace, "add_metadef_resource_type_association")
            if db.association_get(session, ns.id, values["name"]) is not None:
                raise errors.Duplicate(
                    what=f"Resource type {values['name']} association with namespace {namespace}"
                )
            if len(db.associations(session, [ns.id])[ns.id]) >= MAX_ASSOCIATIONS:
                raise errors.QuotaExceeded(
                    what="resource type associations per namespace", limit=MAX_ASSOCIATIONS
                )
            return db.association_create(
                session, ns.id, values["name"], values["prefix"], values["properties_target"]
            )

    def dissociate(self, ctx: RequestContext, namespace: str, resource_type: str) -> None:
        with self.db.session() as session:
            ns = self._deletable(
                ctx, session, namespace, "remove_metadef_resource_type_association"
            )
            if not db.association_delete(session, ns.id, resource_type):
                raise errors.NotFound(
                    f"Resource type {resource_type} is not associated with namespace {namespace}."
                )

    # -- objects, properties, tags: shared --------------------------------

    def _not_found(self, kind: str, name: str, namespace: str) -> errors.NotFound:
        return errors.NotFound(
            f"Metadata definition {_WHAT[kind]} {name} was not found in namespace {namespace}."
        )

    def _duplicate(self, kind: str, name: str, namespace: str) -> errors.Duplicate:
        return errors.Duplicate(
            what=f"Metadata definition {_WHAT[kind]} {name} in namespace {namespace}"
        )

    def list_children(
        self, ctx: RequestContext, kind: str, namespace: str, params: ListParams | None = None
    ) -> tuple[list[Any], str | None]:
        """Return objects or tags (paged) or properties (all) of a namespace."""
        self.policy.enforce(ctx, _RULES[kind]["list"])
        # NOTE(ims): glanceclient and openstacksdk read one page of objects
        # and tags, so without a limit the answer holds them all (bounded).
        page = None
        if params is not None:
            page = self._page(params, db.CHILD_SORT_KEYS, default_limit=MAX_PER_NAMESPACE)
        with self.db.session() as session:
            ns = self._load(ctx, session, namespace)
            if page is not None and page.marker is not None:
                if db.child_get(session, kind, ns.id, page.marker) is None:
                    raise errors.Invalid(f"Invalid marker. {page.marker} could not be found.")
            found = db.child_list(session, kind, ns.id, page)
        if page is None:
            return found, None
        shown = found[: page.limit - 1]
        return shown, (shown[-1].name if len(found) > len(shown) and shown else None)

    def get_child(self, ctx: RequestContext, kind: str, namespace: str, name: str) -> Any:
        self.policy.enforce(ctx, _RULES[kind]["get"])
        with self.db.session() as session:
            ns = self._load(ctx, session, namespace)
            found = db.child_get(session, kind, ns.id, name)
        if found is None:
            raise self._not_found(kind, name, namespace)
        return found

    def _create(self, ctx: RequestContext, kind: str, namespace: str, values: dict) -> Any:
        with self.db.session() as session:
            ns = self._writable(ctx, session, namespace, _RULES[kind]["add"])
            if db.child_get(session, kind, ns.id, values["name"]) is not None:
                raise self._duplicate(kind, values["name"], namespace)
            self._room(session, kind, ns, 1)
            return db.child_create(session, kind, ns.id, values)

    def _update(
        self,
        ctx: RequestContext,
        kind: str,
        namespace: str,
        name: str,
        change: Callable[[Any], dict[str, Any]],
    ) -> Any:
        """Apply ``change(current) -> new values`` to one child."""
        with self.db.session() as session:
            ns = self._writable(ctx, session, namespace, _RULES[kind]["modify"])
            current = db.child_get(session, kind, ns.id, name)
            if current is None:
                raise self._not_found(kind, name, namespace)
            values = change(current)
            if values["name"] != name and db.child_get(session, kind, ns.id, values["name"]):
                raise self._duplicate(kind, values["name"], namespace)
            return db.child_update(session, kind, ns.id, name, values)

    def delete_child(self, ctx: RequestContext, kind: str, namespace: str, name: str) -> None:
        with self.db.session() as session:
            ns = self._deletable(ctx, session, namespace, _RULES[kind]["delete"])
            if not db.child_delete(session, kind, ns.id, name):
                raise self._not_found(kind, name, namespace)

    def delete_children(self, ctx: RequestContext, kind: str, namespace: str) -> None:
        with self.db.session() as session:
            ns = self._deletable(ctx, session, namespace, _RULES[kind]["delete_all"])
            db.children_delete(session, kind, ns.id)

    # -- objects ----------------------------------------------------------

    def create_object(self, ctx: RequestContext, namespace: str, body: Any) -> db.Object:
        values = _object_values(_validate(ms.OBJECT, "object", body))
        return self._create(ctx, _OBJECTS, namespace, values)

    def update_object(
        self, ctx: RequestContext, namespace: str, name: str, body: Any
    ) -> db.Object:
        """Change an object; fields not given stay as they are."""
        doc = _validate(ms.OBJECT, "object", body)
        new_name = _name(doc["name"], "object", ms.MAX_OBJECT_NAME)
        properties = _property_defs(doc["properties"]) if "properties" in doc else None

        def change(current: db.Object) -> dict[str, Any]:
            return {
                "name": new_name,
                "description": doc.get("description", current.description),
                "required": list(doc.get("required", current.required)),
                "properties": current.properties if properties is None else properties,
            }

        return self._update(ctx, _OBJECTS, namespace, name, change)

    # -- properties -------------------------------------------------------

    def _property_values(self, body: Any) -> dict[str, Any]:
        doc = _validate(ms.PROPERTY, "property", body)
        name = _name(doc["name"], "property", ms.MAX_PROPERTY_NAME)
        return {"name": name, "schema": {k: v for k, v in doc.items() if k != "name"}}

    def get_property(
        self, ctx: RequestContext, namespace: str, name: str, resource_type: str | None = None
    ) -> db.Property:
        """Return a property; with ``resource_type``, ``name`` carries its prefix."""
        if not resource_type:
            return self.get_child(ctx, _PROPERTIES, namespace, name)
        self.policy.enforce(ctx, "get_metadef_property")
        with self.db.session() as session:
            ns = self._load(ctx, session, namespace)
            link = db.association_get(session, ns.id, resource_type)
            if link is None:
                raise errors.NotFound(
                    f"Resource type {resource_type} is not associated with namespace {namespace}."
                )
            prefix = link.prefix or ""
            if not name.startswith(prefix):
                raise errors.NotFound(
                    f"Property {name} does not start with the expected resource type "
                    f"association prefix of '{prefix}'."
                )
            found = db.child_get(session, _PROPERTIES, ns.id, name[len(prefix) :])
        if found is None:
            raise self._not_found(_PROPERTIES, name, namespace)
        return dataclasses.replace(found, name=name)

    def create_property(self, ctx: RequestContext, namespace: str, body: Any) -> db.Property:
        return self._create(ctx, _PROPERTIES, namespace, self._property_values(body))

    def update_property(
        self, ctx: RequestContext, namespace: str, name: str, body: Any
    ) -> db.Property:
        """Replace a property definition (as Glance does: the body is all of it)."""
        values = self._property_values(body)
        return self._update(ctx, _PROPERTIES, namespace, name, lambda _current: values)

    # -- tags -------------------------------------------------------------

    def _tag_name(self, body: Any) -> str:
        doc = _validate(ms.TAG, "tag", body)
        return _name(doc["name"], "tag", ms.MAX_TAG_NAME)

    def create_tag(self, ctx: RequestContext, namespace: str, name: str) -> db.Tag:
        _name(name, "tag", ms.MAX_TAG_NAME)
        return self._create(ctx, _TAGS, namespace, {"name": name})

    def create_tags(
        self, ctx: RequestContext, namespace: str, body: Any, append: bool
    ) -> list[db.Tag]:
        """Set a namespace's tags, or add to them when ``append``."""
        if not isinstance(body, dict) or not isinstance(body.get("tags"), list):
            raise errors.Invalid("The body must be a JSON object with a 'tags' array.")
        if set(body) - {"tags"}:
            raise errors.Invalid(f"Unexpected keys: {', '.join(sorted(set(body) - {'tags'}))}")
        names = [self._tag_name(item) for item in body["tags"]]
        _unique(names, "tag")
        if len(names) > MAX_PER_NAMESPACE:
            raise errors.QuotaExceeded(what="tags per namespace", limit=MAX_PER_NAMESPACE)
        with self.db.session() as session:
            ns = self._writable(ctx, session, namespace, "add_metadef_tags")
            if append:
                for name in names:
                    if db.child_get(session, _TAGS, ns.id, name) is not None:
                        raise self._duplicate(_TAGS, name, namespace)
                self._room(session, _TAGS, ns, len(names))
            else:
                db.children_delete(session, _TAGS, ns.id)
            return [db.child_create(session, _TAGS, ns.id, {"name": n}) for n in names]

    def update_tag(self, ctx: RequestContext, namespace: str, name: str, body: Any) -> db.Tag:
        values = {"name": self._tag_name(body)}
        return self._update(ctx, _TAGS, namespace, name, lambda _current: values)
