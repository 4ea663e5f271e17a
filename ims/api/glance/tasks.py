"""/v2/tasks and /v2/images/{id}/tasks."""

from __future__ import annotations

import falcon

from ims import errors
from ims.api.glance import views
from ims.api.glance.images import ctx
from ims.core.tasks import TaskService


class Tasks:
    def __init__(self, service: TaskService, default_limit: int, max_limit: int) -> None:
        self.service = service
        self.default_limit = default_limit
        self.max_limit = max_limit

    def on_get_collection(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            limit = min(
                req.get_param_as_int("limit", min_value=0) or self.default_limit, self.max_limit
            )
        except falcon.HTTPBadRequest:
            raise errors.Invalid("limit param must be a non-negative integer") from None
        tasks = self.service.list(ctx(req), limit, req.get_param("status"), req.get_param("type"))
        resp.media = {
            "tasks": [views.task(t, full=False) for t in tasks],
            "schema": "/v2/schemas/tasks",
            "first": "/v2/tasks",
        }

    def on_get(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        resp.media = views.task(self.service.get(ctx(req), task_id))

    def on_post_collection(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise errors.Invalid(
            "Creating tasks directly is not supported; use the image "
            "import API (POST /v2/images/{image_id}/import)."
        )


class ImageTasks:
    def __init__(self, service: TaskService) -> None:
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response, image_id: str) -> None:
        resp.media = {"tasks": [views.task(t) for t in self.service.for_image(ctx(req), image_id)]}
