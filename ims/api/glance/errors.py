"""Render every error of the Image API v2 dialect, in one place.

Glance answers with webob's error bodies: HTML, JSON or plain text, chosen
by the Accept header the way webob chooses. Core errors are mapped to statuses by type here and
nowhere else.
"""

from __future__ import annotations

import html
import http
import json
import logging

import falcon

from ims import errors

LOG = logging.getLogger(__name__)

# Most specific first: the first matching class in the MRO wins.
STATUS_BY_ERROR: list[tuple[type[errors.IMSError], int]] = [
    (errors.InvalidRange, 416),
    (errors.ImageFormatError, 415),
    (errors.UnsupportedMediaType, 415),
    (errors.NotFound, 404),
    (errors.Forbidden, 403),
    (errors.Conflict, 409),
    (errors.TooLarge, 413),
    (errors.Gone, 410),
    (errors.Unavailable, 503),
    (errors.Invalid, 400),
    (errors.ConfigError, 500),
    (errors.IMSError, 500),
]


def status_for(ex: errors.IMSError) -> int:
    for cls, code in STATUS_BY_ERROR:
        if isinstance(ex, cls):
            return code
    return 500


def _parse_accept(header: str) -> list[tuple[str, float]]:
    ranges = []
    for part in header.split(","):
        fields = [f.strip() for f in part.split(";")]
        if not fields[0]:
            continue
        quality = 1.0
        for param in fields[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ranges.append((fields[0].lower(), quality))
    return ranges


def _quality(offer: str, ranges: list[tuple[str, float]]) -> float:
    kind = offer.split("/", 1)[0]
    best, quality = -1, 0.0
    for media_range, q in ranges:
        rank = {offer: 2, f"{kind}/*": 1, "*/*": 0}.get(media_range, -1)
        if rank > best:
            best, quality = rank, q
    return quality if best >= 0 else 0.0


def error_media_type(accept: str | None) -> str:
    """Choose the error body type as webob (hence Glance) does.

    webob offers text/html, then application/json, and falls back to plain
    text: so ``*/*`` gets HTML and only a client that prefers JSON gets
    JSON. python-glanceclient relies on this: it cannot parse the JSON form.
    Without an Accept header (webob: plain text) IMS answers JSON.
    """
    if not (accept or "").strip():
        return "application/json"
    ranges = _parse_accept(accept or "")
    best, best_q = "text/plain", 0.0
    for offer in ("text/html", "application/json"):
        quality = _quality(offer, ranges)
        if quality > best_q:
            best, best_q = offer, quality
    return best


def render(req: falcon.Request, resp: falcon.Response, code: int, message: str) -> None:
    """Write a Glance-style error body for ``code``."""
    phrase = http.HTTPStatus(code).phrase
    resp.status = code
    kind = error_media_type(req.get_header("Accept"))
    if kind == "application/json":
        resp.content_type = falcon.MEDIA_JSON
        resp.text = json.dumps(
            {
                "message": f"{message}<br /><br />\n\n\n",
                "code": f"{code} {phrase}",
                "title": phrase,
            }
        )
    elif kind == "text/html":
        resp.content_type = "text/html; charset=UTF-8"
        status = f"{code} {phrase}"
        resp.text = (
            f"<html>\n <head>\n  <title>{status}</title>\n </head>\n <body>\n"
            f"  <h1>{status}</h1>\n  {html.escape(message)}<br /><br />\n\n\n\n"
            " </body>\n</html>"
        )
    else:
        resp.content_type = "text/plain; charset=UTF-8"
        resp.text = f"{code} {phrase}\n\n{message}\n\n   "


def handle_ims_error(
    req: falcon.Request, resp: falcon.Response, ex: errors.IMSError, params: dict
) -> None:
    code = status_for(ex)
    if code >= 500:
        LOG.error("Request %s failed: %s", req.path, ex, exc_info=ex)
    render(req, resp, code, ex.message)


def handle_http_error(
    req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError, params: dict
) -> None:
    message = ex.description or ex.title or ""
    render(req, resp, ex.status_code, message)
    for name, value in (ex.headers or {}).items():
        resp.set_header(name, value)


def handle_unexpected(
    req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict
) -> None:
    if isinstance(ex, falcon.HTTPError):
        handle_http_error(req, resp, ex, params)
        return
    ctx = getattr(req.context, "ims", None)
    request_id = getattr(ctx, "request_id", "")
    LOG.exception("Unexpected error in %s %s (%s)", req.method, req.path, request_id)
    render(
        req,
        resp,
        500,
        f"The server has either erred or is incapable of performing "
        f"the requested operation. Request {request_id}",
    )


def install(app: falcon.App) -> None:
    """Register the dialect's error handlers on ``app``."""
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_http_error)
    app.add_error_handler(errors.IMSError, handle_ims_error)
