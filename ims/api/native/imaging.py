"""The IMS native imaging calls: create from files, register, export, copy.

Each answers ``200 {"job_id"}``; the rules live in ims.core.imaging, the
errors are rendered by the native error handler. The ``/v2.1/`` variants
take the same bodies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import falcon

from ims import errors
from ims.api import media
from ims.core import imaging


class _Start:
    """Read a JSON body and start a job with it."""

    def __init__(self, start: Callable[..., str], max_body: int) -> None:
        self.start = start
        self.max_body = max_body

    def _run(self, req: falcon.Request, resp: falcon.Response, *args: str) -> None:
        body = media.read_json(req, self.max_body, (media.JSON,))
        resp.media = {"job_id": self.start(req.context.ims, *args, body)}


class _Post(_Start):
    def on_post(self, req: falcon.Request, resp: falcon.Response, **params: str) -> None:
        self._run(req, resp, *params.values())


class _Put(_Start):
    """Register is the one such call IMS makes a PUT."""

    def on_put(self, req: falcon.Request, resp: falcon.Response, **params: str) -> None:
        self._run(req, resp, *params.values())


class _WholeImages:
    """Whole images are made from servers or backups, which need plugins."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise errors.Invalid(
            "Whole images are made from servers or backups, which need compute and backup "
            "plugins that this deployment does not have.",
            ims_code="IMG.0001",
        )


def add_routes(app: falcon.App, services: Any) -> None:
    """Add the imaging routes, POST and PUT only, to ``app``."""
    service = imaging.service_of(services)
    limit = services.conf.api.max_request_body_size

    def action(start: Callable[..., str]) -> _Post:
        return _Post(start, limit)

    create = action(service.create)
    data = action(service.create_data_image)
    quick = action(service.quick_import)
    export = action(service.export)
    copy = action(service.copy)
    for version in ("v2", "v2.1"):
        app.add_route(f"/{version}/cloudimages/action", create)
        app.add_route(f"/{version}/cloudimages/quickimport/action", quick)
    for version in ("v1", "v2.1"):
        app.add_route(f"/{version}/cloudimages/dataimages/action", data)
        app.add_route(f"/{version}/cloudimages/{{image_id}}/file", export)
        app.add_route(f"/{version}/cloudimages/{{image_id}}/copy", copy)
    app.add_route("/v1/cloudimages/wholeimages/action", _WholeImages())
    app.add_route("/v1/cloudimages/{image_id}/upload", _Put(service.register_file, limit))
    app.add_route(
        "/v1/cloudimages/{image_id}/cross_region_copy", action(service.cross_region_copy)
    )
