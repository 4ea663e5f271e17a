"""/v2/images: create, list, show, update, delete, tags and actions."""

from __future__ import annotations

import urllib.parse
from typing import Any

import falcon

from ims import errors
from ims.api import media
from ims.api.glance.views import ImageView
from ims.core import listing
from ims.core.images import ImageService, ListQuery, PatchOp

_FILTERS = frozenset(
    {
        "name",
        "id",
        "status",
        "container_format",
        "disk_format",
        "created_at",
        "updated_at",
        "size_min",
        "size_max",
        "size",
        "virtual_size",
        "min_disk",
        "min_ram",
        "visibility",
        "member_status",
        "owner",
        "os_hidden",
        "protected",
        "checksum",
        "os_hash_value",
    }
)
_PAGING = frozenset({"limit", "marker", "sort_key", "sort_dir", "sort", "tag"})
_VISIBILITIES = ("public", "private", "shared", "community", "all")
_MEMBER_STATUSES = ("pending", "accepted", "rejected", "all")


def _refuse_empty_id(req: falcon.Request) -> None:
    """``/v2/images/`` names an image whose id is empty: 404, as in Glance.

    The app strips trailing slashes, so such a path reaches the collection;
    Tempest's null-id tests expect GET and DELETE on it to be 404.
    """
    if req.env.get("PATH_INFO", "").endswith("/"):
        raise errors.ImageNotFound(image_id="")


def ctx(req: falcon.Request) -> Any:
    return req.context.ims


def _one(value: Any, name: str) -> str:
    if isinstance(value, list):
        raise errors.Invalid(f"Parameter {name} may be given only once")
    return value


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


class Images:
    """The image collection and its items."""

    def __init__(
        self,
        service: ImageService,
        view: ImageView,
        conf: Any,
        import_methods: list[str],
        store_ids: list[str] | None,
    ) -> None:
        self.service = service
        self.view = view
        self.conf = conf
        self.import_methods = import_methods
        self.store_ids = store_ids

    # -- collection -------------------------------------------------------

    def on_post_collection(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = media.read_json(req, self.conf.api.max_request_body_size)
        image = self.service.create(ctx(req), body)
        resp.status = falcon.HTTP_201
        resp.media = self.view.image(image)
        base = (self.conf.public_endpoint or req.prefix).rstrip("/")
        resp.location = f"{base}/v2/images/{image.id}"
        resp.set_header("OpenStack-image-import-methods", ",".join(self.import_methods))
        if self.store_ids:
            resp.set_header("OpenStack-image-store-ids", ",".join(self.store_ids))

    def on_get_collection(self, req: falcon.Request, resp: falcon.Response) -> None:
        _refuse_empty_id(req)
        params = dict(req.params)
        query = self._list_query(params)
        images, more = self.service.list(ctx(req), query)
        body: dict[str, Any] = {
            "images": [self.view.image(image) for image in images],
            "schema": "/v2/schemas/images",
        }
        plain = [(k, v) for k, vals in params.items() if k != "marker" for v in _as_list(vals)]
        body["first"] = "/v2/images" + (f"?{urllib.parse.urlencode(plain)}" if plain else "")
        if more and images:
            body["next"] = "/v2/images?" + urllib.parse.urlencode(
                [*plain, ("marker", images[-1].id)]
            )
        resp.media = body

    def on_delete_collection(self, req: falcon.Request, resp: falcon.Response) -> None:
        _refuse_empty_id(req)
        raise falcon.HTTPMethodNotAllowed(["GET", "POST"])

    def _list_query(self, params: dict[str, Any]) -> ListQuery:
        if "changes-since" in params:
            raise errors.Invalid("The 'changes-since' filter is no longer available on v2.")
        limit = self.conf.api.limit_param_default
        if "limit" in params:
            raw = _one(params["limit"], "limit")
            try:
                limit = int(raw)
            except ValueError:
                raise errors.Invalid("limit param must be an integer") from None
            if limit < 0:
                raise errors.Invalid("limit param must be positive")
        limit = min(limit, self.conf.api.api_limit_max)
        marker = _one(params["marker"], "marker") if "marker" in params else None
        filters = {}
        properties = {}
        for key, value in params.items():
            if key in _PAGING:
                continue
            value = _one(value, key)
            if key in _FILTERS:
                filters[key] = value
            else:
                properties[key] = value
        if filters.get("visibility", "all") not in _VISIBILITIES:
            raise errors.Invalid(f"Invalid visibility value: {filters['visibility']}")
        if filters.get("member_status", "all") not in _MEMBER_STATUSES:
            raise errors.Invalid(f"Invalid status value: {filters['member_status']}")
        return ListQuery(
            filters=filters,
            properties=properties,
            tags=_as_list(params.get("tag")),
            sort=_sort_keys(params),
            limit=limit,
            marker=marker,
        )

    # -- item -------------------------------------------------------------

    def on_get(self, req: falcon.Request, resp: falcon.Response, image_id: str) -> None:
        resp.media = self.view.image(self.service.get(ctx(req), image_id))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, image_id: str) -> None:
        kind = media.media_type(req)
        if kind not in (media.PATCH_V21, media.PATCH_V20):
            raise falcon.HTTPUnsupportedMediaType(
                description=f"Unsupported Content-Type {kind or '(none)'}",
                headers={"Accept-Patch": f"{media.PATCH_V21}, {media.PATCH_V20}"},
            )
        body = media.read_json(req, self.conf.api.max_request_body_size, allowed=(kind,))
        ops = parse_patch(body, draft4=kind == media.PATCH_V20)
        resp.media = self.view.image(self.service.update(ctx(req), image_id, ops))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, image_id: str) -> None:
        self.service.delete(ctx(req), image_id)
        resp.status = falcon.HTTP_204


class Deactivate:
    def __init__(self, service: ImageService) -> None:
        self.service = service

    def on_post(self, req: falcon.Request, resp: falcon.Response, image_id: str) -> None:
        self.service.deactivate(ctx(req), image_id)
        resp.status = falcon.HTTP_204


class Reactivate:
    def __init__(self, service: ImageService) -> None:
        self.service = service

    def on_post(self, req: falcon.Request, resp: falcon.Response, image_id: str) -> None:
        self.service.reactivate(ctx(req), image_id)
        resp.status = falcon.HTTP_204


class Tags:
    def __init__(self, service: ImageService) -> None:
        self.service = service

    def on_put(self, req: falcon.Request, resp: falcon.Response, image_id: str, tag: str) -> None:
        self.service.add_tag(ctx(req), image_id, tag)
        resp.status = falcon.HTTP_204

    def on_delete(
        self, req: falcon.Request, resp: falcon.Response, image_id: str, tag: str
    ) -> None:
        self.service.delete_tag(ctx(req), image_id, tag)
        resp.status = falcon.HTTP_204


def _sort_keys(params: dict[str, Any]) -> list[listing.SortKey]:
    has_new = "sort" in params
    has_old = "sort_key" in params or "sort_dir" in params
    if has_new and has_old:
        raise errors.Invalid("The sort param cannot be combined with sort_key or sort_dir")
    result = []
    if has_new:
        for part in _one(params["sort"], "sort").split(","):
            key, _, direction = part.strip().partition(":")
            result.append(_sort_key(key.strip(), direction.strip() or "desc"))
        return result
    keys = _as_list(params.get("sort_key"))
    dirs = _as_list(params.get("sort_dir"))
    if not keys:
        keys = ["created_at"]
    if len(dirs) > 1 and len(dirs) != len(keys):
        raise errors.Invalid("Number of sort dirs does not match the number of sort keys")
    if len(dirs) <= 1:
        dirs = dirs * len(keys) if dirs else ["desc"] * len(keys)
    return [_sort_key(k, d) for k, d in zip(keys, dirs, strict=True)]


def _sort_key(key: str, direction: str) -> listing.SortKey:
    if key not in listing.SORT_KEYS:
        raise errors.Invalid(
            f"Invalid sort key: {key}. It should be one of the following: "
            f"{', '.join(listing.SORT_KEYS)}."
        )
    if direction not in ("asc", "desc"):
        raise errors.Invalid(f"Invalid sort direction: {direction}")
    return listing.SortKey(key, direction)


def _decode_path(path: Any) -> tuple[str, str | None]:
    """Turn a JSON pointer into (property, index) for the depths allowed."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise errors.Invalid(f"Json path should start with a '/', got {path!r}")
    tokens = path[1:].split("/")
    decoded = []
    for token in tokens:
        if not token:
            raise errors.Invalid(f"Json path should not contain empty segments: {path}")
        if "~" in token.replace("~0", "").replace("~1", ""):
            raise errors.Invalid(f"Invalid ~ escape in json path: {path}")
        decoded.append(token.replace("~1", "/").replace("~0", "~"))
    if len(decoded) == 1:
        return decoded[0], None
    if len(decoded) == 2 and decoded[0] == "locations":
        return decoded[0], decoded[1]
    raise errors.Invalid(f"Nested paths are not allowed: {path}")


def parse_patch(body: Any, draft4: bool) -> list[PatchOp]:
    """Decode either JSON-patch dialect into PatchOps."""
    if not isinstance(body, list):
        raise errors.Invalid("Request body must be a JSON array of operation objects.")
    ops = []
    for item in body:
        if not isinstance(item, dict):
            raise errors.Invalid("Operations must be JSON objects.")
        if draft4:
            names = [k for k in ("add", "replace", "remove") if k in item]
            if len(names) != 1:
                raise errors.Invalid(
                    "Operation objects must contain exactly one member "
                    'named "add", "remove", or "replace".'
                )
            op, path = names[0], item[names[0]]
        else:
            op, path = item.get("op"), item.get("path")
            if op not in ("add", "replace", "remove"):
                raise errors.Invalid(f"Invalid operation: {op!r}")
        name, index = _decode_path(path)
        if op != "remove" and "value" not in item:
            raise errors.Invalid(f'Operation "{op}" requires a member named "value".')
        ops.append(
            PatchOp(
                op=op,
                name=name,
                value=item.get("value"),
                strict_add=draft4 and op == "add",
                index=index,
            )
        )
    return ops
