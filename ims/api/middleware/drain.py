"""Read what is left of a refused request's body, up to a bound.

gunicorn keeps a connection alive after the answer even when the body was
not read, then drops it; a client reusing the connection sees "connection
aborted". Draining a small remainder keeps such connections usable; a large
remainder is left, and that connection is lost as before.
"""

from __future__ import annotations

import falcon

DRAIN_LIMIT = 4 * 1024 * 1024


class DrainUnreadBody:
    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        length = req.content_length
        if not length or length > DRAIN_LIMIT:
            return
        try:
            stream = req.bounded_stream
            while stream.read(65536):
                pass
        except Exception:  # noqa: BLE001 - the client may be gone already
            return
