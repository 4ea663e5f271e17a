"""Batch sharing (/v1/cloudimages/members) and member queries (v1, project-scoped)."""

from __future__ import annotations

from typing import Any

import falcon

from ims.api import media
from ims.api.glance import views
from ims.core.native_members import NativeMemberService
from ims.db import api as db


def ctx(req: falcon.Request) -> Any:
    return req.context.ims


def member_view(member: db.Member) -> dict[str, Any]:
    return {**views.member(member), "member_type": "project"}


class BatchMembers:
    """POST (share), DELETE (unshare) and PUT (answer): each starts a job."""

    def __init__(self, service: NativeMemberService, max_body: int) -> None:
        self.service = service
        self.max_body = max_body

    def _body(self, req: falcon.Request) -> Any:
        return media.read_json(req, self.max_body)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"job_id": self.service.submit_add(ctx(req), self._body(req))}

    def on_delete(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"job_id": self.service.submit_delete(ctx(req), self._body(req))}

    def on_put(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"job_id": self.service.submit_update(ctx(req), self._body(req))}


class ImageMembers:
    """GET /v1/{project_id}/cloudimages/{image_id}/members[/{member_id}]."""

    def __init__(self, service: NativeMemberService) -> None:
        self.service = service

    def on_get_collection(
        self, req: falcon.Request, resp: falcon.Response, project_id: str, image_id: str
    ) -> None:
        page, more = self.service.list(
            ctx(req), project_id, image_id, req.get_param("limit"), req.get_param("marker")
        )
        page_info: dict[str, Any] = {"current_count": len(page)}
        if more and page:
            page_info["next_marker"] = page[-1].member_id
        resp.media = {
            "members": [member_view(m) for m in page],
            "schema": "/v2/schemas/members",
            "page_info": page_info,
        }

    def on_get(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        project_id: str,
        image_id: str,
        member_id: str,
    ) -> None:
        resp.media = member_view(self.service.get(ctx(req), project_id, image_id, member_id))
