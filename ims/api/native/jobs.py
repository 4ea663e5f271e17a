"""Job queries: GET /v1/{project_id}/jobs/{job_id} and /v1/cloudimages/job/{job_id}."""

from __future__ import annotations

from typing import Any

import falcon

from ims import errors
from ims.api.glance.views import timestamp
from ims.core.jobs import JobRecord, JobService


def job_view(job: JobRecord) -> dict[str, Any]:
    entities = {k: v for k, v in job.entities.items() if not k.startswith("_")}
    entities["process_percent"] = job.process_percent
    if job.current_task:
        entities["current_task"] = job.current_task
    return {
        "job_id": job.id,
        "job_type": job.job_type,
        "status": job.status,
        "begin_time": timestamp(job.begin_time or job.created_at),
        "end_time": timestamp(job.end_time) or "",
        "error_code": job.error_code,
        "fail_reason": job.fail_reason,
        "entities": entities,
    }


class Jobs:
    def __init__(self, service: JobService) -> None:
        self.service = service

    def on_get(
        self, req: falcon.Request, resp: falcon.Response, project_id: str, job_id: str
    ) -> None:
        ctx = req.context.ims
        if project_id != ctx.project_id and not ctx.is_admin:
            raise errors.NotFound(f"Job {job_id} not found")
        resp.media = job_view(self.service.get(ctx, job_id))

    def on_get_progress(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        resp.media = job_view(self.service.get(req.context.ims, job_id))
