"""Turn a format writer (it pushes into a file) into chunks a store pulls.

Format writers write to a file object; stores consume an iterator of
chunks. ``written_chunks`` runs the writer in a thread whose ``write``
calls fill a bounded queue, and yields what it wrote in chunks of at least
``chunk_size`` (at most one write more): memory stays within ``depth + 2``
chunks whatever the image size. A writer error is raised in the
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
        self._pieces: list[bytes] = []
        self._held = 0
        self._pos = 0
        #: Some writers name inner files after it (VMDK descriptors).
        self.name = name

    def write(self, data: Any) -> int:
        # PERF(ims): keep what was written and join it once per chunk: one
        # copy per byte. Only bytes are immutable; anything else the writer
        # may reuse, so it is copied now.
        piece = data if isinstance(data, bytes) else bytes(memoryview(data).cast("B"))
        size = len(piece)
        if not size:
            return 0
        self._pieces.append(piece)
        self._held += size
        self._pos += size
        if self._held >= self._chunk:
            self._flush_pieces()
        return size

    def _flush_pieces(self) -> None:
        pieces, self._pieces, self._held = self._pieces, [], 0
        self._put(pieces[0] if len(pieces) == 1 else b"".join(pieces))

    def flush(self) -> None:
        pass

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def _close(self) -> None:
        if self._pieces:
            self._flush_pieces()


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
