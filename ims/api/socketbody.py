"""Read a large request body straight from the client socket under gunicorn.

Why: gunicorn's body reader passes every byte through several in-memory
buffers (five to seven copies per chunk, all under the GIL). For image
uploads those copies cost as much CPU as one of the two hashes, on the very
thread that feeds the pipeline. Here each chunk is one ``recv_into`` into a
fresh buffer.

Only a body of known length is taken over, and only when gunicorn's objects
look as expected; otherwise the caller keeps the ordinary WSGI stream. The
reader keeps gunicorn's own count of the body up to date, so gunicorn still
knows where the next request on the connection starts.
"""

from __future__ import annotations

import io
import socket
from typing import Any

#: Largest single recv_into (the socket rarely holds more at once).
_RECV_STEP = 1024 * 1024


class SocketBody:
    """``read(n)`` over the rest of a Content-Length body, from the socket."""

    def __init__(self, sock: socket.socket, reader: Any, prefix: bytes) -> None:
        self._sock = sock
        self._reader = reader  # gunicorn's LengthReader: its .length is what is left
        self._prefix = memoryview(prefix)

    def read(self, size: int = -1) -> bytes | bytearray:
        left = len(self._prefix) + self._reader.length
        if size is None or size < 0 or size > left:
            size = left
        if size == 0:
            return b""
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        if self._prefix:
            take = min(size, len(self._prefix))
            view[:take] = self._prefix[:take]
            self._prefix = self._prefix[take:]
            got = take
        while got < size:
            n = self._sock.recv_into(view[got:], min(size - got, _RECV_STEP))
            if n == 0:  # the client went away: a short body, as gunicorn would give
                self._reader.length = 0
                break
            self._reader.length -= n
            got += n
        view.release()
        if got < size:
            del buf[got:]
        return buf


def socket_body(env: dict[str, Any]) -> SocketBody | None:
    """The fast reader for this request, or None when it does not apply."""
    sock = env.get("gunicorn.socket")
    body = env.get("wsgi.input")
    reader = getattr(body, "reader", None)
    unreader = getattr(reader, "unreader", None)
    if (
        sock is None
        or type(reader).__name__ != "LengthReader"
        or not isinstance(getattr(body, "buf", None), io.BytesIO)
        or not isinstance(getattr(reader, "length", None), int)
        or not callable(getattr(unreader, "take_buffered", None))
        or not callable(getattr(unreader, "unread", None))
    ):
        return None
    # What gunicorn already pulled off the socket comes first: the body
    # object's buffer, then the unreader's (which may run into a pipelined
    # next request: that part goes back).
    prefix = body.buf.getvalue()
    body.buf = io.BytesIO()
    buffered = unreader.take_buffered()
    mine = buffered[: reader.length]
    if len(buffered) > len(mine):
        unreader.unread(buffered[len(mine) :])
    reader.length -= len(mine)
    return SocketBody(sock, reader, prefix + mine)
