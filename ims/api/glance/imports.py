"""/v2/images/{id}/stage, /v2/images/{id}/import and /v2/stores/{store}/{id}."""

from __future__ import annotations

import falcon

from ims import errors
from ims.api import media
from ims.api.glance.image_data import OCTET, _declared_size
from ims.api.glance.images import ctx
from ims.core.images import ImageService
from ims.core.imports import ImportService


class Stage:
    def __init__(self, service: ImportService) -> None:
        self.service = service

    def on_put(self, req: falcon.Request, resp: falcon.Response, image_id: str) -> None:
        if media.media_type(req) != OCTET:
            raise errors.UnsupportedMediaType(content_type=req.content_type or "(none)")
        self.service.stage(ctx(req), image_id, media.data_stream(req), _declared_size(req))
        resp.status = falcon.HTTP_204


class Import:
    def __init__(self, service: ImportService, max_body: int, multistore: bool) -> None:
        self.service = service
        self.max_body = max_body
        self.multistore = multistore

    def on_post(self, req: falcon.Request, resp: falcon.Response, image_id: str) -> None:
        body = media.read_json(req, self.max_body)
        header_store = req.get_header("X-Image-Meta-Store") if self.multistore else None
        self.service.start(ctx(req), image_id, body, header_store)
        resp.status = falcon.HTTP_202


class StoreImage:
    def __init__(self, service: ImageService) -> None:
        self.service = service

    def on_delete(
        self, req: falcon.Request, resp: falcon.Response, store_id: str, image_id: str
    ) -> None:
        self.service.delete_from_store(ctx(req), store_id, image_id)
        resp.status = falcon.HTTP_204
