"""/v2/images/{id}/members: sharing."""

from __future__ import annotations

from typing import Any

import falcon

from ims import errors
from ims.api import media
from ims.api.glance import views
from ims.api.glance.images import ctx
from ims.core.members import MemberService


class Members:
    def __init__(self, service: MemberService, max_body: int) -> None:
        self.service = service
        self.max_body = max_body

    def _body(self, req: falcon.Request, key: str) -> Any:
        body = media.read_json(req, self.max_body)
        if not isinstance(body, dict) or key not in body:
            raise errors.Invalid(f"Request body must be a JSON object with '{key}'")
        return body[key]

    def on_get_collection(self, req: falcon.Request, resp: falcon.Response, image_id: str) -> None:
        members = self.service.list(ctx(req), image_id)
        resp.media = {
            "members": [views.member(m) for m in members],
            "schema": "/v2/schemas/members",
        }

    def on_post_collection(
        self, req: falcon.Request, resp: falcon.Response, image_id: str
    ) -> None:
        member = self.service.create(ctx(req), image_id, self._body(req, "member"))
        resp.media = views.member(member)

    def on_get(
        self, req: falcon.Request, resp: falcon.Response, image_id: str, member_id: str
    ) -> None:
        resp.media = views.member(self.service.get(ctx(req), image_id, member_id))

    def on_put(
        self, req: falcon.Request, resp: falcon.Response, image_id: str, member_id: str
    ) -> None:
        status = self._body(req, "status")
        resp.media = views.member(self.service.update(ctx(req), image_id, member_id, status))

    def on_delete(
        self, req: falcon.Request, resp: falcon.Response, image_id: str, member_id: str
    ) -> None:
        self.service.delete(ctx(req), image_id, member_id)
        resp.status = falcon.HTTP_204
