"""IMS image tags, both generations, over the Glance tags (see ims.core.kvtags).

- v1: ``PUT /v1/cloudimages/tags`` (``"k.v"`` or ``{key, value}``) and
  ``GET /v1/cloudimages/tags`` (the raw tags of the images a list filter finds);
- v2 (project-scoped): upsert one, batch create/delete, delete a key, show an
  image's tags, all tags of a project, and the tag queries of
  ``resources_instances/action``.

Writes need ``modify_image`` on the image (its owner); reads need only that
the caller can see it. Every write keeps one tag per key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from oslo_config import cfg

from ims import errors
from ims.context import RequestContext
from ims.core import cloudimages, kvtags
from ims.core.images import ImageService, ListQuery
from ims.db import api as db
from ims.db import models, native_api

#: Most distinct tags GET /v2/{project_id}/images/tags reads.
MAX_PROJECT_TAGS = 10000
MAX_QUERY_ENTRIES = 10
MAX_QUERY_VALUES = 10
MAX_MATCHES = 10
INSTANCE_LIMIT_DEFAULT = 10
INSTANCE_LIMIT_MAX = 1000
_MAX_OFFSET = 2**31 - 1


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise errors.Invalid("The body must be a JSON object", ims_code="IMG.0007")
    return body


def _kv(item: Any) -> tuple[Any, Any]:
    if not isinstance(item, dict):
        raise errors.Invalid("A tag must be an object with key and value", ims_code=kvtags.BAD_TAG)
    return item.get("key"), item.get("value", "")


def _count(name: str, raw: Any, default: int, low: int, high: int) -> int:
    """A number that IMS sends as a string (limit, offset, page)."""
    if raw is None:
        return default
    try:
        value = int(raw) if not isinstance(raw, bool) else None
    except (TypeError, ValueError):
        value = None
    if value is None or not low <= value <= high:
        raise errors.Invalid(f"{name} must be an integer from {low} to {high}")
    return value


class NativeTagService:
    """The IMS tag APIs."""

    def __init__(self, conf: cfg.ConfigOpts, images: ImageService) -> None:
        self.conf = conf
        self.images = images
        self.db = images.db
        self.policy = images.policy

    # -- writes ---------------------------------------------------------------

    def _change(
        self, ctx: RequestContext, image_id: str, mutate: Callable[[list[str]], list[str]]
    ) -> None:
        with self.db.session() as session:
            # Lock the row: two upserts of one image must not lose a tag.
            image = db.image_get(session, image_id, for_update=True)
            if not self.images.can_see(ctx, image, session):
                raise errors.ImageNotFound(image_id=image_id)
            self.policy.enforce(ctx, "modify_image", self.images.target(image))
            before = list(image.tags)
            after = list(dict.fromkeys(mutate(before)))
            if set(after) == set(before):
                return
            limit = self.conf.native.max_image_tags
            glance = self.conf.image_tag_quota
            if glance >= 0:
                limit = min(limit, glance)
            if len(after) > limit and len(after) > len(before):
                raise errors.QuotaExceeded(
                    f"An image can have at most {limit} tags.", ims_code=kvtags.TAG_QUOTA
                )
            db.image_update(session, image_id, tags=after)

    @staticmethod
    def _upsert(pairs: list[tuple[str, str]]) -> Callable[[list[str]], list[str]]:
        keys = {key for key, _ in pairs}

        def mutate(tags: list[str]) -> list[str]:
            kept = [t for t in tags if kvtags.parse(t)[0] not in keys]
            return kept + [kvtags.to_glance(k, v) for k, v in pairs]

        return mutate

    def put_v1(self, ctx: RequestContext, body: Any) -> None:
        """PUT /v1/cloudimages/tags: add or change one tag of an image."""
        body = _object(body)
        image_id = body.get("image_id")
        if not isinstance(image_id, str) or not 1 <= len(image_id) <= 36:
            raise errors.Invalid("image_id is missing or invalid", ims_code="IMG.0066")
        if ("tag" in body) == ("image_tag" in body):
            raise errors.Invalid("Give exactly one of tag and image_tag", ims_code=kvtags.BAD_TAG)
        if "tag" in body:
            if not isinstance(body["tag"], str):
                raise errors.Invalid("tag must be a 'key.value' string", ims_code=kvtags.BAD_TAG)
            key, value = kvtags.legacy(body["tag"])
        else:
            key, value = _kv(body["image_tag"])
        pair = kvtags.validate(key, value)
        self._change(ctx, image_id, self._upsert([pair]))

    def _scope(self, ctx: RequestContext, project_id: str, image_id: str | None = None) -> None:
        # NOTE(ims): another project's path is answered like a missing image.
        if project_id != ctx.project_id and not ctx.is_admin:
            if image_id is None:
                raise errors.NotFound(f"Project {project_id} not found")
            raise errors.ImageNotFound(image_id=image_id)

    def add(self, ctx: RequestContext, project_id: str, image_id: str, body: Any) -> None:
        """POST /v2/{project_id}/images/{image_id}/tags: upsert one tag."""
        self._scope(ctx, project_id, image_id)
        body = _object(body)
        if "tag" not in body:
            raise errors.Invalid("tag is missing", ims_code=kvtags.BAD_TAG)
        pair = kvtags.validate(*_kv(body["tag"]))
        self._change(ctx, image_id, self._upsert([pair]))

    def batch(self, ctx: RequestContext, project_id: str, image_id: str, body: Any) -> None:
        """POST .../tags/action: create or delete several tags at once."""
        self._scope(ctx, project_id, image_id)
        body = _object(body)
        action = body.get("action")
        if action not in ("create", "delete"):
            raise errors.Invalid("action must be create or delete")
        items = body.get("tags")
        if not isinstance(items, list) or not items:
            raise errors.Invalid("tags must be a non-empty list", ims_code=kvtags.BAD_TAG)
        if len(items) > max(self.conf.native.max_image_tags, MAX_QUERY_ENTRIES):
            raise errors.QuotaExceeded("Too many tags in one request", ims_code=kvtags.TAG_QUOTA)
        raw = [_kv(item) for item in items]
        keys = [key for key, _ in raw]
        if len(set(map(str, keys))) != len(keys):
            raise errors.Invalid("Tag keys in one request must be unique", ims_code=kvtags.BAD_TAG)
        if action == "create":
            pairs = [kvtags.validate(key, value) for key, value in raw]
            self._change(ctx, image_id, self._upsert(pairs))
            return
        wanted = []
        for key, value in raw:
            if not isinstance(key, str) or not 1 <= len(key) <= kvtags.QUERY_KEY_MAX:
                raise errors.Invalid("Invalid tag key", ims_code=kvtags.BAD_TAG)
            if not isinstance(value, str | None) or len(value or "") > kvtags.QUERY_VALUE_MAX:
                raise errors.Invalid("Invalid tag value", ims_code=kvtags.BAD_TAG)
            wanted.append((key, value or None))

        def drop(tags: list[str]) -> list[str]:
            # A value narrows the deletion to that value; no value: the key.
            def doomed(tag: str) -> bool:
                key, value = kvtags.parse(tag)
                return any(key == k and (v is None or value == v) for k, v in wanted)

            return [t for t in tags if not doomed(t)]

        self._change(ctx, image_id, drop)

    def delete(self, ctx: RequestContext, project_id: str, image_id: str, key: str) -> None:
        """DELETE .../tags/{key}: 404 when the image has no tag with that key."""
        self._scope(ctx, project_id, image_id)
        found = [t for t in self._image(ctx, image_id).tags if kvtags.parse(t)[0] == key]
        if not found:
            raise errors.TagNotFound(tag=key, image_id=image_id)
        self._change(ctx, image_id, lambda tags: [t for t in tags if kvtags.parse(t)[0] != key])

    # -- reads ------------------------------------------------------------------

    def _image(self, ctx: RequestContext, image_id: str) -> db.Image:
        return self.images.get(ctx, image_id)

    def image_tags(
        self, ctx: RequestContext, project_id: str, image_id: str
    ) -> list[dict[str, str]]:
        """GET /v2/{project_id}/images/{image_id}/tags."""
        self._scope(ctx, project_id, image_id)
        return [self._pair(t) for t in self._image(ctx, image_id).tags]

    @staticmethod
    def _pair(tag: str) -> dict[str, str]:
        key, value = kvtags.parse(tag)
        return {"key": key, "value": value}

    def project_tags(self, ctx: RequestContext, project_id: str) -> list[dict[str, Any]]:
        """GET /v2/{project_id}/images/tags: every key of the project's images."""
        self._scope(ctx, project_id)
        self.policy.enforce(ctx, "get_images")
        with self.db.session() as session:
            tags = native_api.distinct_tags(
                session, [models.Image.owner == project_id], 0, MAX_PROJECT_TAGS
            )
        grouped: dict[str, list[str]] = {}
        for tag in tags:
            key, value = kvtags.parse(tag)
            values = grouped.setdefault(key, [])
            if value not in values:
                values.append(value)
        return [{"key": key, "values": values} for key, values in grouped.items()]

    def list_v1(self, ctx: RequestContext, params: Mapping[str, Any]) -> list[str]:
        """GET /v1/cloudimages/tags: tags of the images the list filters find."""
        self.policy.enforce(ctx, "get_images")
        conf = self.conf.native
        limit = min(
            conf.list_limit_max,
            _count("limit", params.get("limit"), conf.list_limit_default, 1, _MAX_OFFSET),
        )
        page = _count("page", params.get("page"), 1, 1, _MAX_OFFSET // max(limit, 1))
        filters, extra = cloudimages.list_conditions(params)
        query = ListQuery(filters, {}, [], [], limit, None, tuple(extra))
        where = self.images.list_conditions(ctx, query)
        with self.db.session() as session:
            return native_api.distinct_tags(session, where, (page - 1) * limit, limit)

    # -- resource_instances/action ---------------------------------------------

    def resource_instances(
        self, ctx: RequestContext, project_id: str, body: Any
    ) -> dict[str, Any]:
        """Filter or count the project's images by tags (the TMS query model)."""
        self._scope(ctx, project_id)
        self.policy.enforce(ctx, "get_images")
        body = _object(body)
        action = body.get("action")
        if action not in ("filter", "count"):
            raise errors.Invalid("action must be filter or count")
        where: list[Any] = [models.Image.owner == project_id]
        without = body.get("without_any_tag", False)
        if not isinstance(without, bool):
            raise errors.Invalid("without_any_tag must be true or false")
        groups = {
            name: self._tag_conditions(body.get(name), name)
            for name in ("tags", "tags_any", "not_tags", "not_tags_any")
        }
        if without:
            where.append(~kvtags.has_any_tag())
        else:
            if groups["tags"]:
                where.append(sa.and_(*groups["tags"]))
            if groups["tags_any"]:
                where.append(sa.or_(*groups["tags_any"]))
            if groups["not_tags"]:
                where.append(~sa.and_(*groups["not_tags"]))
            if groups["not_tags_any"]:
                where.append(~sa.or_(*groups["not_tags_any"]))
        where.extend(self._matches(body.get("matches")))
        with self.db.session() as session:
            total = native_api.count_images(session, where)
            if action == "count":
                return {"total_count": total}
            limit = _count("limit", body.get("limit"), INSTANCE_LIMIT_DEFAULT, 1, 1000)
            offset = _count("offset", body.get("offset"), 0, 0, _MAX_OFFSET)
            order = [models.Image.created_at.desc(), models.Image.id.desc()]
            found = native_api.images_page(session, where, order, offset, limit)
        return {
            "total_count": total,
            "resources": [
                {
                    "resource_id": image.id,
                    "resource_name": image.name or "",
                    "resource_detail": {"status": image.status},
                    "tags": [self._pair(t) for t in image.tags],
                }
                for image in found
            ],
        }

    @staticmethod
    def _tag_conditions(entries: Any, name: str) -> list[Any]:
        if entries is None:
            return []
        if not isinstance(entries, list) or len(entries) > MAX_QUERY_ENTRIES:
            raise errors.Invalid(f"{name} must be a list of at most {MAX_QUERY_ENTRIES} tags")
        conditions = []
        seen = set()
        for entry in entries:
            if not isinstance(entry, dict):
                raise errors.Invalid(f"Each of {name} must be an object with key and values")
            key, values = entry.get("key"), entry.get("values", [])
            if not isinstance(key, str) or not 1 <= len(key) <= kvtags.QUERY_KEY_MAX:
                raise errors.Invalid(f"Invalid key in {name}", ims_code=kvtags.BAD_TAG)
            if key in seen:
                raise errors.Invalid(f"Duplicate key {key} in {name}", ims_code=kvtags.BAD_TAG)
            seen.add(key)
            if not isinstance(values, list) or len(values) > MAX_QUERY_VALUES:
                raise errors.Invalid(
                    f"values in {name} must be a list of at most {MAX_QUERY_VALUES}"
                )
            for value in values:
                if not isinstance(value, str) or len(value) > kvtags.QUERY_VALUE_MAX:
                    raise errors.Invalid(f"Invalid value in {name}", ims_code=kvtags.BAD_TAG)
            if values:
                conditions.append(sa.or_(*(kvtags.has_pair(key, v) for v in values)))
            else:
                conditions.append(kvtags.has_key(key))
        return conditions

    @staticmethod
    def _matches(entries: Any) -> list[Any]:
        if entries is None:
            return []
        if not isinstance(entries, list) or len(entries) > MAX_MATCHES:
            raise errors.Invalid(f"matches must be a list of at most {MAX_MATCHES} objects")
        found = []
        for entry in entries:
            if not isinstance(entry, dict):
                raise errors.Invalid("Each match must be an object with key and value")
            key, value = entry.get("key"), entry.get("value")
            if not isinstance(value, str) or len(value) > kvtags.QUERY_VALUE_MAX:
                raise errors.Invalid("A match value must be a string of at most 255 characters")
            if key == "resource_name":
                if value:
                    found.append(models.Image.name.contains(value, autoescape=True))
            elif key == "resource_id":
                found.append(models.Image.id == value)
            else:
                raise errors.Invalid("A match key must be resource_name or resource_id")
        return found
