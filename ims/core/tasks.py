"""Tasks: the record of asynchronous work (imports) users can follow."""

from __future__ import annotations

from ims import errors
from ims.context import RequestContext
from ims.core.images import ImageService
from ims.db import api as db
from ims.db import models


class TaskService:
    def __init__(self, images: ImageService) -> None:
        self.images = images
        self.db = images.db
        self.policy = images.policy

    def _owned(self, ctx: RequestContext) -> list[object]:
        return [] if ctx.is_admin else [models.Task.owner == ctx.project_id]

    def get(self, ctx: RequestContext, task_id: str) -> db.Task:
        self.policy.enforce(ctx, "get_task")
        with self.db.session() as session:
            task = db.task_get(session, task_id)
        if not ctx.is_admin and task.owner != ctx.project_id:
            raise errors.TaskNotFound(task_id=task_id)
        return task

    def list(
        self, ctx: RequestContext, limit: int, status: str | None = None, type_: str | None = None
    ) -> list[db.Task]:
        self.policy.enforce(ctx, "get_tasks")
        where = self._owned(ctx)
        if status:
            where.append(models.Task.status == status)
        if type_:
            where.append(models.Task.type == type_)
        with self.db.session() as session:
            return db.task_list(session, where, limit)

    def for_image(self, ctx: RequestContext, image_id: str) -> list[db.Task]:
        self.images.get(ctx, image_id)
        where = [models.Task.image_id == image_id, *self._owned(ctx)]
        with self.db.session() as session:
            return db.task_list(session, where, 1000)
