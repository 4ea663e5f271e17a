"""Repository functions of metadata definitions: sessions in, dataclasses out.

Callers pass the namespace's row id once they have loaded it; names of
children are unique within their namespace. Uniqueness races end as
``ims.errors.Duplicate`` through the session's IntegrityError translation.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ims.db import metadef_models as m
from ims.db.models import utcnow

#: Child tables that belong to one namespace and carry a unique ``name``.
CHILD_KINDS = ("objects", "properties", "tags")
_CHILD_MODELS: dict[str, Any] = {
    "objects": m.MetadefObject,
    "properties": m.MetadefProperty,
    "tags": m.MetadefTag,
}


@dataclasses.dataclass(frozen=True)
class Namespace:
    id: int
    namespace: str
    display_name: str | None
    description: str | None
    visibility: str
    protected: bool
    owner: str | None
    created_at: datetime.datetime
    updated_at: datetime.datetime


@dataclasses.dataclass(frozen=True)
class ResourceType:
    name: str
    protected: bool
    created_at: datetime.datetime
    updated_at: datetime.datetime


@dataclasses.dataclass(frozen=True)
class Association:
    name: str
    prefix: str | None
    properties_target: str | None
    created_at: datetime.datetime
    updated_at: datetime.datetime


@dataclasses.dataclass(frozen=True)
class Object:
    name: str
    description: str | None
    required: tuple[str, ...]
    properties: dict[str, Any]
    created_at: datetime.datetime
    updated_at: datetime.datetime


@dataclasses.dataclass(frozen=True)
class Property:
    name: str
    schema: dict[str, Any]
    created_at: datetime.datetime
    updated_at: datetime.datetime


@dataclasses.dataclass(frozen=True)
class Tag:
    name: str
    created_at: datetime.datetime
    updated_at: datetime.datetime


@dataclasses.dataclass(frozen=True)
class Page:
    """One page of a listing in a total order (``sort_key`` then name)."""

    sort_key: str
    sort_dir: str  # "asc" | "desc"
    limit: int
    marker: str | None = None


NAMESPACE_SORT_KEYS = ("namespace", "display_name", "visibility", "created_at", "updated_at")
CHILD_SORT_KEYS = ("name", "created_at", "updated_at")


def _to_namespace(row: m.MetadefNamespace) -> Namespace:
    return Namespace(
        id=row.id,
        namespace=row.namespace,
        display_name=row.display_name,
        description=row.description,
        visibility=row.visibility,
        protected=row.protected,
        owner=row.owner,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _to_child(kind: str, row: Any) -> Any:
    if kind == "objects":
        return Object(
            name=row.name,
            description=row.description,
            required=tuple(row.required or ()),
            properties=dict(row.json_schema or {}),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
    if kind == "properties":
        return Property(row.name, dict(row.json_schema or {}), row.created_at, row.updated_at)
    return Tag(row.name, row.created_at, row.updated_at)


def _child_values(kind: str, values: dict[str, Any]) -> dict[str, Any]:
    """Turn a child's domain fields into column values."""
    if kind == "objects":
        return {
            "name": values["name"],
            "description": values.get("description"),
            "required": list(values.get("required") or []),
            "json_schema": dict(values.get("properties") or {}),
        }
    if kind == "properties":
        return {"name": values["name"], "json_schema": dict(values.get("schema") or {})}
    return {"name": values["name"]}


def _ordered(stmt: Any, model: Any, name_col: Any, page: Page, marker_row: Any) -> Any:
    """Order by (sort_key, name) and start after ``marker_row`` if given."""
    key = getattr(model, page.sort_key)
    if page.sort_key == "display_name":
        key = sa.func.coalesce(key, "")
    desc = page.sort_dir == "desc"
    if marker_row is not None:
        raw = getattr(marker_row, page.sort_key)
        value = "" if raw is None else raw
        name = getattr(marker_row, name_col.key)
        if key is name_col:
            stmt = stmt.where(name_col < name if desc else name_col > name)
        else:
            beyond = key < value if desc else key > value
            tie = name_col < name if desc else name_col > name
            stmt = stmt.where(sa.or_(beyond, sa.and_(key == value, tie)))
    order = [key.desc(), name_col.desc()] if desc else [key.asc(), name_col.asc()]
    if key is name_col:
        order = order[:1]
    return stmt.order_by(*order).limit(page.limit)


# -- namespaces --------------------------------------------------------------


def _namespace_row(session: Session, name: str) -> m.MetadefNamespace | None:
    stmt = sa.select(m.MetadefNamespace).where(m.MetadefNamespace.namespace == name)
    return session.scalars(stmt).one_or_none()


def namespace_get(session: Session, name: str) -> Namespace | None:
    """Return the namespace called ``name``, or None."""
    row = _namespace_row(session, name)
    return None if row is None else _to_namespace(row)


def namespace_list(
    session: Session,
    page: Page,
    see_all: bool,
    project_id: str | None,
    visibility: str | None = None,
    resource_types: Sequence[str] = (),
) -> list[Namespace]:
    """Return one page of the namespaces a caller may see.

    Without ``see_all``, that is public ones, ownerless ones and those owned
    by ``project_id``. The marker must be a namespace name (checked by the
    caller); a marker that has vanished meanwhile starts from the beginning.
    """
    ns = m.MetadefNamespace
    stmt = sa.select(ns)
    if not see_all:
        seen = [ns.visibility == "public", ns.owner.is_(None)]
        if project_id is not None:
            seen.append(ns.owner == project_id)
        stmt = stmt.where(sa.or_(*seen))
    if visibility:
        stmt = stmt.where(ns.visibility == visibility)
    if resource_types:
        linked = (
            sa.select(m.MetadefNamespaceResourceType.namespace_id)
            .join(
                m.MetadefResourceType,
                m.MetadefResourceType.id == m.MetadefNamespaceResourceType.resource_type_id,
            )
            .where(m.MetadefResourceType.name.in_(list(resource_types)))
        )
        stmt = stmt.where(ns.id.in_(linked))
    marker_row = _namespace_row(session, page.marker) if page.marker else None
    stmt = _ordered(stmt, ns, ns.namespace, page, marker_row)
    return [_to_namespace(row) for row in session.scalars(stmt)]


def namespace_create(session: Session, values: dict[str, Any]) -> Namespace:
    now = utcnow()
    row = m.MetadefNamespace(created_at=now, updated_at=now, **values)
    session.add(row)
    session.flush()
    return _to_namespace(row)


def namespace_update(session: Session, namespace_id: int, values: dict[str, Any]) -> Namespace:
    row = session.get(m.MetadefNamespace, namespace_id)
    if row is None:  # pragma: no cover - the caller holds the loaded namespace
        raise LookupError(namespace_id)
    for key, value in values.items():
        setattr(row, key, value)
    row.updated_at = utcnow()
    session.flush()
    return _to_namespace(row)


def namespace_delete(session: Session, namespace_id: int) -> None:
    """Delete a namespace and everything in it."""
    for kind in CHILD_KINDS:
        children_delete(session, kind, namespace_id)
    session.execute(
        sa.delete(m.MetadefNamespaceResourceType).where(
            m.MetadefNamespaceResourceType.namespace_id == namespace_id
        )
    )
    session.execute(sa.delete(m.MetadefNamespace).where(m.MetadefNamespace.id == namespace_id))


# -- resource types ----------------------------------------------------------


def resource_type_list(session: Session) -> list[ResourceType]:
    rows = session.scalars(sa.select(m.MetadefResourceType).order_by(m.MetadefResourceType.name))
    return [ResourceType(r.name, r.protected, r.created_at, r.updated_at) for r in rows]


def _resource_type_id(session: Session, name: str, create: bool) -> int | None:
    stmt = sa.select(m.MetadefResourceType.id).where(m.MetadefResourceType.name == name)
    found = session.scalars(stmt).one_or_none()
    if found is not None or not create:
        return found
    now = utcnow()
    row = m.MetadefResourceType(name=name, protected=False, created_at=now, updated_at=now)
    session.add(row)
    session.flush()
    return row.id


def _association_stmt() -> Any:
    link = m.MetadefNamespaceResourceType
    return sa.select(link, m.MetadefResourceType.name).join(
        m.MetadefResourceType, m.MetadefResourceType.id == link.resource_type_id
    )


def _to_association(link: m.MetadefNamespaceResourceType, name: str) -> Association:
    return Association(
        name=name,
        prefix=link.prefix,
        properties_target=link.properties_target,
        created_at=link.created_at,
        updated_at=link.updated_at,
    )


def associations(session: Session, namespace_ids: Iterable[int]) -> dict[int, list[Association]]:
    """Return the resource type associations of each namespace, by name."""
    ids = list(namespace_ids)
    out: dict[int, list[Association]] = {i: [] for i in ids}
    if not ids:
        return out
    link = m.MetadefNamespaceResourceType
    stmt = (
        _association_stmt().where(link.namespace_id.in_(ids)).order_by(m.MetadefResourceType.name)
    )
    for row, name in session.execute(stmt):
        out[row.namespace_id].append(_to_association(row, name))
    return out


def association_get(session: Session, namespace_id: int, name: str) -> Association | None:
    link = m.MetadefNamespaceResourceType
    stmt = _association_stmt().where(
        link.namespace_id == namespace_id, m.MetadefResourceType.name == name
    )
    found = session.execute(stmt).one_or_none()
    return None if found is None else _to_association(*found)


def association_create(
    session: Session,
    namespace_id: int,
    name: str,
    prefix: str | None,
    properties_target: str | None,
) -> Association:
    """Associate a resource type, creating an unknown one (as Glance does)."""
    type_id = _resource_type_id(session, name, create=True)
    now = utcnow()
    row = m.MetadefNamespaceResourceType(
        namespace_id=namespace_id,
        resource_type_id=type_id,
        prefix=prefix,
        properties_target=properties_target,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return _to_association(row, name)


def association_delete(session: Session, namespace_id: int, name: str) -> bool:
    """Remove an association; return whether there was one."""
    type_id = _resource_type_id(session, name, create=False)
    if type_id is None:
        return False
    link = m.MetadefNamespaceResourceType
    result = session.execute(
        sa.delete(link).where(link.namespace_id == namespace_id, link.resource_type_id == type_id)
    )
    return bool(result.rowcount)


# -- objects, properties, tags -----------------------------------------------


def _child_row(session: Session, kind: str, namespace_id: int, name: str) -> Any:
    model = _CHILD_MODELS[kind]
    stmt = sa.select(model).where(model.namespace_id == namespace_id, model.name == name)
    return session.scalars(stmt).one_or_none()


def child_get(session: Session, kind: str, namespace_id: int, name: str) -> Any:
    """Return the object, property or tag ``name`` of a namespace, or None."""
    row = _child_row(session, kind, namespace_id, name)
    return None if row is None else _to_child(kind, row)


def child_list(session: Session, kind: str, namespace_id: int, page: Page | None = None) -> list:
    """Return a namespace's children, by name unless ``page`` says otherwise."""
    model = _CHILD_MODELS[kind]
    stmt = sa.select(model).where(model.namespace_id == namespace_id)
    if page is None:
        stmt = stmt.order_by(model.name)
    else:
        marker = _child_row(session, kind, namespace_id, page.marker) if page.marker else None
        stmt = _ordered(stmt, model, model.name, page, marker)
    return [_to_child(kind, row) for row in session.scalars(stmt)]


def child_count(session: Session, kind: str, namespace_id: int) -> int:
    model = _CHILD_MODELS[kind]
    stmt = sa.select(sa.func.count()).where(model.namespace_id == namespace_id)
    return int(session.scalar(stmt) or 0)


def child_create(session: Session, kind: str, namespace_id: int, values: dict[str, Any]) -> Any:
    """Create a child from its domain fields (see ``_child_values``)."""
    now = utcnow()
    model = _CHILD_MODELS[kind]
    row = model(
        namespace_id=namespace_id, created_at=now, updated_at=now, **_child_values(kind, values)
    )
    session.add(row)
    session.flush()
    return _to_child(kind, row)


def child_update(
    session: Session, kind: str, namespace_id: int, name: str, values: dict[str, Any]
) -> Any:
    """Replace a child's fields (its name included); None if it is gone."""
    row = _child_row(session, kind, namespace_id, name)
    if row is None:
        return None
    for key, value in _child_values(kind, values).items():
        setattr(row, key, value)
    row.updated_at = utcnow()
    session.flush()
    return _to_child(kind, row)


def child_delete(session: Session, kind: str, namespace_id: int, name: str) -> bool:
    """Delete one child; return whether it existed."""
    model = _CHILD_MODELS[kind]
    result = session.execute(
        sa.delete(model).where(model.namespace_id == namespace_id, model.name == name)
    )
    return bool(result.rowcount)


def children_delete(session: Session, kind: str, namespace_id: int) -> None:
    """Delete every child of one kind in a namespace."""
    model = _CHILD_MODELS[kind]
    session.execute(sa.delete(model).where(model.namespace_id == namespace_id))
