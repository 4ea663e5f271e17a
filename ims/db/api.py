"""Repository functions: explicit sessions in, plain dataclasses out."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from ims import errors
from ims.db import models
from ims.db.models import utcnow

IMAGE_COLUMNS = (
    "id",
    "name",
    "disk_format",
    "container_format",
    "size",
    "virtual_size",
    "status",
    "visibility",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "min_disk",
    "min_ram",
    "owner",
    "protected",
    "os_hidden",
    "created_at",
    "updated_at",
)


@dataclasses.dataclass(frozen=True)
class Location:
    store: str
    url: str
    metadata: dict[str, Any]
    status: str


@dataclasses.dataclass(frozen=True)
class Image:
    id: str
    name: str | None
    disk_format: str | None
    container_format: str | None
    size: int | None
    virtual_size: int | None
    status: str
    visibility: str
    checksum: str | None
    os_hash_algo: str | None
    os_hash_value: str | None
    min_disk: int
    min_ram: int
    owner: str | None
    protected: bool
    os_hidden: bool
    created_at: datetime.datetime
    updated_at: datetime.datetime
    properties: dict[str, str]
    tags: tuple[str, ...]
    locations: tuple[Location, ...]


@dataclasses.dataclass(frozen=True)
class Member:
    image_id: str
    member_id: str
    status: str
    created_at: datetime.datetime
    updated_at: datetime.datetime


@dataclasses.dataclass(frozen=True)
class Task:
    id: str
    type: str
    status: str
    owner: str | None
    image_id: str | None
    user_id: str | None
    request_id: str | None
    input: dict[str, Any]
    result: dict[str, Any] | None
    message: str
    expires_at: datetime.datetime | None
    created_at: datetime.datetime
    updated_at: datetime.datetime


def _to_image(row: models.Image) -> Image:
    return Image(
        **{col: getattr(row, col) for col in IMAGE_COLUMNS},
        properties={prop.name: prop.value for prop in row.properties},
        tags=tuple(sorted(tag.value for tag in row.tags)),
        locations=tuple(
            Location(loc.store, loc.url, dict(loc.meta_data or {}), loc.status)
            for loc in sorted(row.locations, key=lambda loc: loc.id)
        ),
    )


def _load_options() -> list[Any]:
    return [
        selectinload(models.Image.properties),
        selectinload(models.Image.tags),
        selectinload(models.Image.locations),
    ]


def _row(session: Session, image_id: str, for_update: bool = False) -> models.Image:
    stmt = (
        sa.select(models.Image)
        .where(models.Image.id == image_id, models.Image.deleted.is_(False))
        .options(*_load_options())
    )
    if for_update:
        stmt = stmt.with_for_update()
    row = session.scalars(stmt).one_or_none()
    if row is None:
        raise errors.ImageNotFound(image_id=image_id)
    return row


def image_exists_ever(session: Session, image_id: str) -> bool:
    """Tell whether the id was ever used, deleted images included."""
    return session.get(models.Image, image_id) is not None


def image_create(
    session: Session, values: dict[str, Any], properties: dict[str, str], tags: Iterable[str]
) -> Image:
    now = utcnow()
    row = models.Image(created_at=now, updated_at=now, deleted=False, **values)
    row.properties = [models.ImageProperty(name=k, value=v) for k, v in properties.items()]
    row.tags = [models.ImageTag(value=t) for t in sorted(set(tags))]
    row.locations = []
    session.add(row)
    session.flush()
    return _to_image(row)


def image_get(session: Session, image_id: str, for_update: bool = False) -> Image:
    return _to_image(_row(session, image_id, for_update))


def image_update(
    session: Session,
    image_id: str,
    values: dict[str, Any] | None = None,
    properties: dict[str, str | None] | None = None,
    tags: Iterable[str] | None = None,
    from_status: Sequence[str] | None = None,
) -> Image:
    """Change columns, set (or with None remove) properties, replace tags.

    With ``from_status`` the update only happens if the image is still in one
    of those states; otherwise Conflict is raised (optimistic save).
    """
    row = _row(session, image_id, for_update=True)
    if from_status is not None and row.status not in from_status:
        raise errors.Conflict(f"Image {image_id} is {row.status}, not {' or '.join(from_status)}")
    for key, value in (values or {}).items():
        setattr(row, key, value)
    if properties:
        existing = {prop.name: prop for prop in row.properties}
        for name, value in properties.items():
            if value is None:
                if name in existing:
                    row.properties.remove(existing[name])
            elif name in existing:
                existing[name].value = value
            else:
                row.properties.append(models.ImageProperty(name=name, value=value))
    if tags is not None:
        wanted = set(tags)
        for tag in list(row.tags):
            if tag.value not in wanted:
                row.tags.remove(tag)
        have = {tag.value for tag in row.tags}
        for value in sorted(wanted - have):
            row.tags.append(models.ImageTag(value=value))
    row.updated_at = utcnow()
    session.flush()
    return _to_image(row)


def image_soft_delete(session: Session, image_id: str) -> Image:
    row = _row(session, image_id, for_update=True)
    now = utcnow()
    row.status = "deleted"
    row.deleted = True
    row.deleted_at = now
    row.updated_at = now
    for loc in row.locations:
        loc.status = "deleted"
    session.flush()
    return _to_image(row)


def location_add(
    session: Session, image_id: str, store: str, url: str, metadata: dict[str, Any] | None = None
) -> None:
    session.add(
        models.ImageLocation(
            image_id=image_id, store=store, url=url, meta_data=metadata or {}, status="active"
        )
    )
    session.flush()


def location_delete(session: Session, image_id: str, url: str) -> None:
    session.execute(
        sa.delete(models.ImageLocation).where(
            models.ImageLocation.image_id == image_id, models.ImageLocation.url == url
        )
    )


def images_query(
    session: Session,
    where: list[Any],
    order_by: list[Any],
    limit: int,
) -> list[Image]:
    """Run a listing query built by the core and return full records.

    PERF(ims): listings read plain rows (no ORM objects) in four queries:
    the page, then its properties, tags and locations by image id.
    """
    images = models.Image.__table__
    stmt = (
        sa.select(*(images.c[col] for col in IMAGE_COLUMNS))
        .where(images.c.deleted.is_(False), *where)
        .order_by(*order_by)
        .limit(limit)
    )
    rows = session.execute(stmt).all()
    if not rows:
        return []
    ids = [row.id for row in rows]
    props: dict[str, dict[str, str]] = {image_id: {} for image_id in ids}
    tags: dict[str, list[str]] = {image_id: [] for image_id in ids}
    locs: dict[str, list[Location]] = {image_id: [] for image_id in ids}
    for start in range(0, len(ids), 500):
        batch = ids[start : start + 500]
        prop_t = models.ImageProperty.__table__
        for image_id, name, value in session.execute(
            sa.select(prop_t.c.image_id, prop_t.c.name, prop_t.c.value).where(
                prop_t.c.image_id.in_(batch)
            )
        ):
            props[image_id][name] = value
        tag_t = models.ImageTag.__table__
        for image_id, value in session.execute(
            sa.select(tag_t.c.image_id, tag_t.c.value).where(tag_t.c.image_id.in_(batch))
        ):
            tags[image_id].append(value)
        loc_t = models.ImageLocation.__table__
        for image_id, store, url, meta, status in session.execute(
            sa.select(
                loc_t.c.image_id, loc_t.c.store, loc_t.c.url, loc_t.c.meta_data, loc_t.c.status
            )
            .where(loc_t.c.image_id.in_(batch))
            .order_by(loc_t.c.id)
        ):
            locs[image_id].append(Location(store, url, dict(meta or {}), status))
    return [
        Image(
            **row._asdict(),
            properties=props[row.id],
            tags=tuple(sorted(tags[row.id])),
            locations=tuple(locs[row.id]),
        )
        for row in rows
    ]


def project_usage(session: Session, owner: str) -> tuple[int, int]:
    """Return (bytes stored, image count) of the non-deleted images of a project."""
    total, count = session.execute(
        sa.select(sa.func.coalesce(sa.func.sum(models.Image.size), 0), sa.func.count()).where(
            models.Image.owner == owner, models.Image.deleted.is_(False)
        )
    ).one()
    return int(total), int(count)


def member_list(session: Session, image_id: str) -> list[Member]:
    rows = session.scalars(
        sa.select(models.ImageMember)
        .where(models.ImageMember.image_id == image_id)
        .order_by(models.ImageMember.created_at, models.ImageMember.id)
    )
    return [_to_member(row) for row in rows]


def member_get(session: Session, image_id: str, member_id: str) -> Member | None:
    row = session.scalars(
        sa.select(models.ImageMember).where(
            models.ImageMember.image_id == image_id, models.ImageMember.member == member_id
        )
    ).one_or_none()
    return _to_member(row) if row else None


def member_create(session: Session, image_id: str, member_id: str) -> Member:
    now = utcnow()
    row = models.ImageMember(
        image_id=image_id, member=member_id, status="pending", created_at=now, updated_at=now
    )
    session.add(row)
    session.flush()
    return _to_member(row)


def member_update(session: Session, image_id: str, member_id: str, status: str) -> Member:
    row = session.scalars(
        sa.select(models.ImageMember).where(
            models.ImageMember.image_id == image_id, models.ImageMember.member == member_id
        )
    ).one()
    row.status = status
    row.updated_at = utcnow()
    session.flush()
    return _to_member(row)


def member_delete(session: Session, image_id: str, member_id: str) -> None:
    session.execute(
        sa.delete(models.ImageMember).where(
            models.ImageMember.image_id == image_id, models.ImageMember.member == member_id
        )
    )


def member_count(session: Session, image_id: str) -> int:
    return (
        session.scalar(sa.select(sa.func.count()).where(models.ImageMember.image_id == image_id))
        or 0
    )


def _to_member(row: models.ImageMember) -> Member:
    return Member(row.image_id, row.member, row.status, row.created_at, row.updated_at)


def task_create(session: Session, values: dict[str, Any]) -> Task:
    now = utcnow()
    row = models.Task(created_at=now, updated_at=now, **values)
    session.add(row)
    session.flush()
    return _to_task(row)


def task_update(session: Session, task_id: str, **values: Any) -> Task:
    row = session.get(models.Task, task_id)
    if row is None:
        raise errors.TaskNotFound(task_id=task_id)
    for key, value in values.items():
        setattr(row, key, value)
    row.updated_at = utcnow()
    session.flush()
    return _to_task(row)


def task_get(session: Session, task_id: str) -> Task:
    row = session.get(models.Task, task_id)
    if row is None:
        raise errors.TaskNotFound(task_id=task_id)
    return _to_task(row)


def task_list(session: Session, where: list[Any], limit: int) -> list[Task]:
    rows = session.scalars(
        sa.select(models.Task).where(*where).order_by(models.Task.created_at.desc()).limit(limit)
    )
    return [_to_task(row) for row in rows]


def _to_task(row: models.Task) -> Task:
    return Task(
        row.id,
        row.type,
        row.status,
        row.owner,
        row.image_id,
        row.user_id,
        row.request_id,
        dict(row.input or {}),
        row.result,
        row.message,
        row.expires_at,
        row.created_at,
        row.updated_at,
    )
