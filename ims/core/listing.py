"""Turn listing parameters into SQL conditions, order and marker predicates."""

from __future__ import annotations

import csv
import dataclasses
import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import aliased

from ims import errors
from ims.db import models

SORT_KEYS = (
    "name",
    "status",
    "container_format",
    "disk_format",
    "size",
    "id",
    "created_at",
    "updated_at",
    "virtual_size",
    "min_disk",
    "min_ram",
    "owner",
    "visibility",
)
_INT_KEYS = {"size", "virtual_size", "min_disk", "min_ram"}
_IN_FILTERS = ("name", "id", "status", "container_format", "disk_format")
_DATE_OPS = {
    "gt": lambda col, v: col > v,
    "gte": lambda col, v: col >= v,
    "lt": lambda col, v: col < v,
    "lte": lambda col, v: col <= v,
    "eq": lambda col, v: col == v,
    "neq": lambda col, v: col != v,
}


@dataclasses.dataclass(frozen=True)
class SortKey:
    key: str
    direction: str  # "asc" | "desc"


def sort_expr(key: str) -> Any:
    """The column expression a key sorts by, NULLs folded to a sentinel."""
    col = getattr(models.Image, key)
    if key in _INT_KEYS:
        return sa.func.coalesce(col, -1)
    if key in ("name", "owner", "container_format", "disk_format"):
        return sa.func.coalesce(col, "")
    return col


def sort_value(image: Any, key: str) -> Any:
    value = getattr(image, key)
    if value is None:
        return -1 if key in _INT_KEYS else ""
    return value


def order_by(sort: list[SortKey]) -> list[Any]:
    return [
        sort_expr(s.key).asc() if s.direction == "asc" else sort_expr(s.key).desc() for s in sort
    ]


def with_tiebreakers(sort: list[SortKey]) -> list[SortKey]:
    """Append created_at and id so that every order is total and stable."""
    keys = {s.key for s in sort}
    direction = sort[-1].direction if sort else "desc"
    out = list(sort)
    for key in ("created_at", "id"):
        if key not in keys:
            out.append(SortKey(key, direction))
    return out


def after_marker(sort: list[SortKey], marker: Any) -> Any:
    """Rows strictly after ``marker`` in the compound order (lexicographic)."""
    clauses = []
    for i, s in enumerate(sort):
        equal = [sort_expr(p.key) == sort_value(marker, p.key) for p in sort[:i]]
        expr = sort_expr(s.key)
        value = sort_value(marker, s.key)
        beyond = expr > value if s.direction == "asc" else expr < value
        clauses.append(sa.and_(*equal, beyond))
    return sa.or_(*clauses)


def split_in_values(raw: str) -> list[str]:
    """Split ``a,b,"c,d"`` into values; bad quoting is an error."""
    try:
        rows = list(csv.reader([raw], delimiter=",", quotechar='"', strict=True))
    except csv.Error as ex:
        raise errors.Invalid(f"Invalid filter value {raw}: {ex}") from None
    return rows[0] if rows else [""]


def equality_filter(key: str, raw: str) -> Any:
    """An ``eq:``/``in:`` filter on a plain column."""
    col = getattr(models.Image, key)
    if raw.startswith("in:"):
        return col.in_(split_in_values(raw[3:]))
    op, sep, rest = raw.partition(":")
    if not sep:
        return col == raw
    # As Glance: text before the first ':' is an operator, so a value that
    # holds a colon is written eq:<value>.
    if op != "eq":
        raise errors.Invalid(f"Unable to filter {key} on the unknown operator {op!r}")
    return col == rest


def parse_time(raw: str) -> datetime.datetime:
    try:
        value = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise errors.Invalid(f"Invalid date-time value: {raw}") from None
    if value.tzinfo is not None:
        try:
            value = value.astimezone(datetime.UTC).replace(tzinfo=None)
        except OverflowError:
            # Year 1 or 9999 with an offset lands outside what datetime holds.
            raise errors.Invalid(f"Date-time value out of range: {raw}") from None
    return value


def time_filter(key: str, raw: str) -> Any:
    col = getattr(models.Image, key)
    op, sep, rest = raw.partition(":")
    if sep and op in _DATE_OPS:
        return _DATE_OPS[op](col, parse_time(rest))
    return col == parse_time(raw)


def property_filter(name: str, value: str) -> Any:
    prop = aliased(models.ImageProperty)
    return sa.exists().where(
        prop.image_id == models.Image.id, prop.name == name, prop.value == value
    )


def tag_filter(tag: str) -> Any:
    return sa.exists().where(
        models.ImageTag.image_id == models.Image.id, models.ImageTag.value == tag
    )


def member_exists(project_id: str, status: str | None) -> Any:
    clauses = [
        models.ImageMember.image_id == models.Image.id,
        models.ImageMember.member == project_id,
    ]
    if status is not None:
        clauses.append(models.ImageMember.status == status)
    return sa.exists().where(*clauses)


def visibility_filter(
    project_id: str | None, is_admin: bool, visibility: str | None, member_status: str
) -> list[Any]:
    """The rows a caller may list, per Glance's default-visibility rules."""
    img = models.Image
    status = None if member_status == "all" else member_status
    if visibility not in (None, "all"):
        where = [img.visibility == visibility]
        if is_admin:
            return where
        if visibility == "private":
            where.append(img.owner == project_id)
        elif visibility == "shared":
            where.append(sa.or_(img.owner == project_id, member_exists(project_id, status)))
        return where
    if is_admin:
        return []
    allowed = [
        img.visibility == "public",
        img.owner == project_id,
        sa.and_(img.visibility == "shared", member_exists(project_id, status)),
    ]
    if visibility == "all":
        allowed.append(img.visibility == "community")
    return [sa.or_(*allowed)]
