"""Reading request bodies: bounded JSON and the two JSON-patch dialects."""

from __future__ import annotations

import json
import math
from typing import Any

import falcon

from ims import errors
from ims.api import socketbody

JSON = "application/json"
PATCH_V21 = "application/openstack-images-v2.1-json-patch"
PATCH_V20 = "application/openstack-images-v2.0-json-patch"


def media_type(req: falcon.Request) -> str:
    return (req.content_type or "").split(";", 1)[0].strip().lower()


def body_stream(req: falcon.Request) -> Any:
    """Return the request body as a file that ends where the body ends.

    Falcon's bounded_stream reads nothing without Content-Length, which a
    chunked body (Tempest's uploads) never has; the WSGI server de-chunks
    and marks wsgi.input as terminated, so that stream can be read to EOF.
    """
    if req.content_length is None and req.env.get("wsgi.input_terminated"):
        return req.stream
    return req.bounded_stream


def data_stream(req: falcon.Request) -> Any:
    """The body of an image-data request (upload, stage), read as cheaply as the server allows."""
    if req.content_length:
        fast = socketbody.socket_body(req.env)
        if fast is not None:
            return fast
    return body_stream(req)


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


def _finite(text: str) -> float:
    # Python reads 1e400 as infinity; JSON has no such number, and int() of it raises.
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:32]} is out of range")
    return value


def read_json(req: falcon.Request, max_size: int, allowed: tuple[str, ...] = (JSON,)) -> Any:
    """Read and parse a JSON body of at most ``max_size`` bytes."""
    kind = media_type(req)
    if kind and kind not in allowed:
        raise errors.UnsupportedMediaType(content_type=kind)
    length = req.content_length
    if length is not None and length > max_size:
        raise errors.TooLarge(f"Request body exceeds {max_size} bytes")
    raw = body_stream(req).read(max_size + 1)
    if len(raw) > max_size:
        raise errors.TooLarge(f"Request body exceeds {max_size} bytes")
    if not raw.strip():
        raise errors.Invalid("Malformed JSON in request body: the body is empty.")
    try:
        return json.loads(raw, parse_constant=_not_json, parse_float=_finite)
    except (ValueError, UnicodeDecodeError) as ex:
        raise errors.Invalid(f"Malformed JSON in request body: {ex}") from None
    except RecursionError:
        raise errors.Invalid("Malformed JSON in request body: nested too deeply.") from None
