"""Turn a format writer (it pushes into a file) into chunks a store pulls.

Format writers write to a file object; stores consume an iterator of
chunks. ``written_chunks`` runs the writer in a thread whose ``write``
calls fill a bounded queue, and yields what it wrote: memory stays within
``depth + 1`` chunks whatever the image size. A writer error is raised in the
consumer; a consumer that stops (the store failed) stops the writer at its
next write.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ims.disk.model import BLOCK_SIZE

_END = object()


class _Stopped(BaseException):
    """Raised inside the writer when nobody reads any more (not an error)."""


class _Failure:
    def __init__(self, ex: BaseException) -> None:
        self.ex = ex


class PipeWriter:
    """The forward-only file the writer thread sees."""

    def __init__(self, put: Callable[[Any], None], chunk_size: int, name: str) -> None:
        self._put = put
        self._chunk = chunk_size
        self._buf = bytearray()
        self._pos = 0
        #: Some writers name inner files after it (VMDK descriptors).
        self.name = name

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        self._buf += view
        self._pos += size
        while len(self._buf) >= self._chunk:
            self._put(bytes(self._buf[: self._chunk]))
            del self._buf[: self._chunk]
        return size

    def flush(self) -> None:
        pass

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def _close(self) -> None:
        if self._buf:
            self._put(bytes(self._buf))
            self._buf = bytearray()


def written_chunks(
    write: Callable[[PipeWriter], None],
    name: str = "",
    chunk_size: int = BLOCK_SIZE,
    depth: int = 2,
) -> Iterator[bytes]:
    """Yield what ``write(out)`` writes to ``out``, run in a thread."""
    items: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> None:
        while True:
            if stop.is_set():
                raise _Stopped
            try:
                items.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def run() -> None:
        out = PipeWriter(put, chunk_size, name)
        try:
            write(out)
            out._close()
            put(_END)
        except _Stopped:
            return
        except BaseException as ex:  # handed to the consumer, re-raised there
            try:
                put(_Failure(ex))
            except _Stopped:
                return

    thread = threading.Thread(target=run, name="ims-pipe", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.ex
            yield item
    finally:
        stop.set()
        thread.join()
