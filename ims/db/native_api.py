"""Repository functions the IMS native API needs beyond ims.db.api.

Same contract: an explicit session in, plain values or dataclasses out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ims.db import api as db
from ims.db import models

_BATCH = 500


def images_with_members(session: Session, image_ids: Sequence[str]) -> set[str]:
    """Return which of ``image_ids`` have at least one member (any status)."""
    found: set[str] = set()
    member = models.ImageMember
    for start in range(0, len(image_ids), _BATCH):
        batch = list(image_ids[start : start + _BATCH])
        found.update(
            session.scalars(
                sa.select(member.image_id).where(member.image_id.in_(batch)).distinct()
            )
        )
    return found


def _owned(owner: str) -> list[Any]:
    return [models.Image.owner == owner, models.Image.deleted.is_(False)]


def owned_image_count(session: Session, owner: str) -> int:
    """Count the non-deleted images ``owner`` owns."""
    return session.scalar(sa.select(sa.func.count()).where(*_owned(owner))) or 0


def shared_out_count(session: Session, owner: str) -> int:
    """Count the non-deleted images of ``owner`` that have members."""
    member = models.ImageMember
    stmt = sa.select(sa.func.count()).where(
        *_owned(owner), sa.exists().where(member.image_id == models.Image.id)
    )
    return session.scalar(stmt) or 0


def largest_member_count(session: Session, owner: str) -> int:
    """The most members any one non-deleted image of ``owner`` has."""
    member = models.ImageMember
    counts = (
        sa.select(sa.func.count().label("n"))
        .select_from(member)
        .join(models.Image, models.Image.id == member.image_id)
        .where(*_owned(owner))
        .group_by(member.image_id)
        .subquery()
    )
    return session.scalar(sa.select(sa.func.coalesce(sa.func.max(counts.c.n), 0))) or 0


def member_page(
    session: Session, image_id: str, limit: int, marker: str | None
) -> tuple[list[db.Member], bool]:
    """Members of an image in creation order after member ``marker``.

    Returns the page and whether more follow. An unknown marker is a
    LookupError so the caller can phrase the refusal.
    """
    member = models.ImageMember
    where = [member.image_id == image_id]
    if marker is not None:
        row = session.scalars(
            sa.select(member).where(member.image_id == image_id, member.member == marker)
        ).one_or_none()
        if row is None:
            raise LookupError(marker)
        where.append(
            sa.or_(
                member.created_at > row.created_at,
                sa.and_(member.created_at == row.created_at, member.id > row.id),
            )
        )
    rows = list(
        session.scalars(
            sa.select(member).where(*where).order_by(member.created_at, member.id).limit(limit + 1)
        )
    )
    page = [db.Member(r.image_id, r.member, r.status, r.created_at, r.updated_at) for r in rows]
    return page[:limit], len(page) > limit


def distinct_tags(session: Session, where: list[Any], offset: int, limit: int) -> list[str]:
    """Distinct tags of the non-deleted images matching ``where``, sorted."""
    tag = models.ImageTag
    ids = sa.select(models.Image.id).where(models.Image.deleted.is_(False), *where)
    stmt = (
        sa.select(tag.value)
        .where(tag.image_id.in_(ids))
        .distinct()
        .order_by(tag.value)
        .offset(offset)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def count_images(session: Session, where: list[Any]) -> int:
    stmt = sa.select(sa.func.count()).where(models.Image.deleted.is_(False), *where)
    return session.scalar(stmt) or 0


def images_page(
    session: Session, where: list[Any], order_by: list[Any], offset: int, limit: int
) -> list[db.Image]:
    """Full records of a page of images chosen by offset (not by marker)."""
    ids = list(
        session.scalars(
            sa.select(models.Image.id)
            .where(models.Image.deleted.is_(False), *where)
            .order_by(*order_by)
            .offset(offset)
            .limit(limit)
        )
    )
    if not ids:
        return []
    found = {i.id: i for i in db.images_query(session, [models.Image.id.in_(ids)], [], len(ids))}
    return [found[i] for i in ids if i in found]
