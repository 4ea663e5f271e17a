"""Render errors of the IMS native API: ``{"error": {"code", "message"}}``.

IMS answers request errors, quota refusals included, with HTTP 400 and an
``IMG.xxxx`` code; missing things, refusals and bodies over the request limit
keep their HTTP meaning (404, 403, 409, 413) so that generic clients still
behave. The code comes from the error when it carries
one (``ims_code``), else from its class.
"""

from __future__ import annotations

import json
import logging
import re

import falcon

from ims import errors
from ims.api.glance.errors import status_for

LOG = logging.getLogger(__name__)
# The project-scoped IMS tag APIs live beside the Glance paths under /v2.
_PROJECT_SCOPED = re.compile(
    r"^/v2(\.\d+)?/[^/]+/images/(tags|resource_instances|[^/]+/tags)(/|$)"
)

# Most specific first.
CODE_BY_ERROR: list[tuple[type[errors.IMSError], str]] = [
    (errors.ImageFormatError, "IMG.0057"),
    (errors.ImageNotFound, "IMG.0027"),
    (errors.NotFound, "IMG.0027"),
    (errors.ProtectedImage, "IMG.0091"),
    (errors.Forbidden, "IMG.0047"),
    (errors.QuotaExceeded, "IMG.0015"),
    (errors.TooLarge, "IMG.0059"),
    (errors.Duplicate, "IMG.0009"),
    (errors.Conflict, "IMG.0046"),
    (errors.Invalid, "IMG.0001"),
]


def code_for(ex: errors.IMSError) -> str:
    explicit = getattr(ex, "ims_code", None) or ex.kwargs.get("ims_code")
    if explicit:
        return str(explicit)
    for cls, code in CODE_BY_ERROR:
        if isinstance(ex, cls):
            return code
    return "IMG.0001"


def render(resp: falcon.Response, status: int, code: str, message: str) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.text = json.dumps({"error": {"code": code, "message": message}})


def is_native(req: falcon.Request) -> bool:
    """Tell native requests from Glance ones by path."""
    path = req.path
    return (
        path.startswith("/v1/")
        or path.startswith("/v2/cloudimages")
        or path.startswith("/v2.1/")
        or "/jobs/" in path
        or _PROJECT_SCOPED.match(path) is not None
    )


#: Codes for the errors Falcon raises itself: no route, method not allowed.
_CODE_BY_STATUS = {403: "IMG.0047", 404: "IMG.0027", 413: "IMG.0059"}


def handle_http(req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError) -> None:
    """Falcon's own errors on a native path: same status and headers, the IMS body."""
    status = ex.status_code
    message = ex.description or f"{ex.title} ({req.method} {req.path})"
    render(resp, status, _CODE_BY_STATUS.get(status, "IMG.0001"), message)
    for name, value in (ex.headers or {}).items():
        resp.set_header(name, value)


def handle_unexpected(req: falcon.Request, resp: falcon.Response, ex: Exception) -> None:
    """A bug: logged with its traceback, answered 500 with the IMS body."""
    request_id = getattr(getattr(req.context, "ims", None), "request_id", "")
    LOG.exception("Unexpected error in %s %s (%s)", req.method, req.path, request_id)
    message = f"The server could not complete the request. Request {request_id}"
    render(resp, 500, "IMG.0001", message)


def handle(req: falcon.Request, resp: falcon.Response, ex: errors.IMSError) -> None:
    status = status_for(ex)
    if status >= 500:
        LOG.error("Request %s failed: %s", req.path, ex, exc_info=ex)
    elif status in (400, 415, 416) or isinstance(ex, errors.QuotaExceeded):
        status = 400
    render(resp, status, code_for(ex), ex.message)
