"""IMS tag routes: /v1/cloudimages/tags and /v2/{project_id}/images/.../tags."""

from __future__ import annotations

from typing import Any

import falcon

from ims import errors
from ims.api import media
from ims.core.native_tags import NativeTagService


def ctx(req: falcon.Request) -> Any:
    return req.context.ims


class _Base:
    def __init__(self, service: NativeTagService, max_body: int) -> None:
        self.service = service
        self.max_body = max_body

    def _body(self, req: falcon.Request) -> Any:
        return media.read_json(req, self.max_body)


class V1Tags(_Base):
    """PUT (add or change one tag) and GET (tags of the filtered images)."""

    def on_put(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.service.put_v1(ctx(req), self._body(req))
        resp.status = falcon.HTTP_204

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"tags": self.service.list_v1(ctx(req), req.params)}


class ImageTags(_Base):
    """POST (upsert one) and GET /v2/{project_id}/images/{image_id}/tags."""

    def on_post(
        self, req: falcon.Request, resp: falcon.Response, project_id: str, image_id: str
    ) -> None:
        self.service.add(ctx(req), project_id, image_id, self._body(req))
        resp.status = falcon.HTTP_204

    def on_get(
        self, req: falcon.Request, resp: falcon.Response, project_id: str, image_id: str
    ) -> None:
        resp.media = {"tags": self.service.image_tags(ctx(req), project_id, image_id)}


class ImageTag(_Base):
    """DELETE .../tags/{key}; POST .../tags/action (batch) shares the template."""

    def on_delete(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        project_id: str,
        image_id: str,
        key: str,
    ) -> None:
        self.service.delete(ctx(req), project_id, image_id, key)
        resp.status = falcon.HTTP_204

    def on_post(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        project_id: str,
        image_id: str,
        key: str,
    ) -> None:
        if key != "action":
            raise errors.NotFound(f"No resource at {req.path}")
        self.service.batch(ctx(req), project_id, image_id, self._body(req))
        resp.status = falcon.HTTP_204


class ProjectTags(_Base):
    """GET /v2/{project_id}/images/tags."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, project_id: str) -> None:
        resp.media = {"tags": self.service.project_tags(ctx(req), project_id)}


class ResourceInstances(_Base):
    """POST /v2/{project_id}/images/resource_instances/action."""

    def on_post(self, req: falcon.Request, resp: falcon.Response, project_id: str) -> None:
        resp.media = self.service.resource_instances(ctx(req), project_id, self._body(req))
