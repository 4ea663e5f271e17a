"""Cut a stream of chunks into parts and upload them in parallel, in bounded memory.

Shared by the object-store drivers: S3 multipart uploads and Swift Static
Large Object segments are the same problem (numbered pieces of at least one
size and at most another, a cap on how many, each sent once and then
forgotten). The pipeline here has one producer (the caller's thread, reading
the input) and ``threads`` senders; admission is counted in bytes, so memory
stays within ``(threads + 2) × part size + one input chunk`` however big the
image is (``threads`` parts being sent, one being read, and that one twice
while it is joined from the input's chunks), and no queue holds data.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

MiB = 1024 * 1024
T = TypeVar("T")


class ChunkReader:
    """Re-cut an iterable of chunks into pieces of the sizes asked for.

    Whatever the input raises is kept in ``error`` (and re-raised), so a
    driver can tell the caller's own failure from a store failure even after
    an HTTP library has wrapped it.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        # PERF(ims): views of the input chunks, joined once per piece: one
        # copy per byte, none when a chunk is exactly a piece.
        self._views: collections.deque[memoryview] = collections.deque()
        self._buffered = 0
        self._eof = False
        self.error: BaseException | None = None
        #: Bytes handed out so far.
        self.consumed = 0

    def _pull(self) -> bytes | None:
        try:
            return next(self._chunks)
        except StopIteration:
            self._eof = True
            return None
        except BaseException as ex:
            self.error = ex
            raise

    def peek(self, size: int) -> int:
        """Buffer up to ``size`` bytes; return how many are buffered.

        Fewer than ``size`` means the input is exhausted.
        """
        while self._buffered < size and not self._eof:
            chunk = self._pull()
            if chunk:
                if not isinstance(chunk, bytes):
                    chunk = bytes(chunk)  # the caller may reuse a mutable buffer
                self._views.append(memoryview(chunk))
                self._buffered += len(chunk)
        return self._buffered

    def read(self, size: int) -> bytes:
        """Return the next ``size`` bytes; fewer only at the end of the input."""
        self.peek(size)
        pieces = []
        want = size
        while want and self._views:
            view = self._views.popleft()
            if len(view) > want:
                self._views.appendleft(view[want:])
                view = view[:want]
            pieces.append(view)
            want -= len(view)
        if len(pieces) == 1 and len(pieces[0]) == len(pieces[0].obj):
            out = pieces[0].obj  # a whole input chunk: no copy at all
        else:
            out = b"".join(pieces)
        self._buffered -= len(out)
        self.consumed += len(out)
        return out

    def drain(self) -> bytes:
        """Hand over everything buffered."""
        return self.read(self._buffered)

    def __iter__(self) -> Iterator[bytes]:
        """Yield the buffered bytes, then the rest of the input as it comes."""
        if self._buffered:
            yield self.drain()
        while not self._eof:
            chunk = self._pull()
            if chunk:
                self.consumed += len(chunk)
                yield chunk


@dataclasses.dataclass(frozen=True)
class PartLimits:
    """What a service accepts for one multipart object."""

    #: Smallest part but the last.
    min_size: int
    #: Largest part.
    max_size: int
    #: Most parts in one object.
    max_parts: int

    def planner(self, part_size: int, size_hint: int | None) -> Callable[[int], int]:
        """Return ``size(part_number)`` for an object of ``size_hint`` bytes.

        A known size gets equal parts, grown (in whole MiB) just enough to fit
        in ``max_parts``. An unknown size starts at ``part_size`` and doubles
        after every tenth of ``max_parts``, so the part cap is never what stops
        an upload: the object's own size limit is.
        """
        base = min(max(part_size, self.min_size), self.max_size)
        if size_hint is not None:
            need = math.ceil(size_hint / self.max_parts)
            size = min(max(base, math.ceil(need / MiB) * MiB), self.max_size)
            return lambda number: size
        step = max(1, self.max_parts // 10)
        return lambda number: min(base << ((number - 1) // step), self.max_size)


def upload_parts(
    reader: ChunkReader,
    part_size: Callable[[int], int],
    send: Callable[[int, bytes], T],
    threads: int,
    max_parts: int,
    on_too_many: Callable[[], BaseException],
) -> list[T]:
    """Read numbered parts from ``reader`` and ``send`` them, ``threads`` at once.

    ``send(number, data)`` runs in a worker thread; its results come back in
    part order. The first failure (input or send) stops reading; every part
    already started is waited for before the failure is raised, so the caller
    can clean up knowing nothing is still being written. At least one part is
    sent, even if empty.
    """
    cond = threading.Condition()
    budget = (threads + 1) * part_size(1)
    reserved = 0  # bytes being read or sent
    busy = 0  # parts being sent
    failures: list[BaseException] = []
    results: dict[int, T] = {}

    def work(number: int, data: bytes) -> None:
        nonlocal reserved, busy
        size = len(data)
        try:
            results[number] = send(number, data)
        except BaseException as ex:
            with cond:
                failures.append(ex)
        finally:
            del data
            with cond:
                reserved -= size
                busy -= 1
                cond.notify_all()

    def admit(want: int) -> bool:
        limit = max(budget, 2 * want)
        return bool(failures) or reserved == 0 or (busy < threads and reserved + want <= limit)

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ims-part") as pool:
        number = 0
        while True:
            number += 1
            want = part_size(number)
            with cond:
                cond.wait_for(lambda: admit(want))  # noqa: B023 - evaluated right here
                if failures:
                    break
                reserved += want
            try:
                data = reader.read(want)
            except BaseException:
                with cond:
                    reserved -= want
                raise
            last = len(data) < want
            with cond:
                reserved += len(data) - want
                if not data and number > 1:
                    cond.notify_all()
                    break
                if number > max_parts:
                    reserved -= len(data)
                    failures.append(on_too_many())
                    break
                busy += 1
            pool.submit(work, number, data)
            del data  # PERF(ims): the worker holds the only reference now.
            if last:
                break
    if failures:
        raise failures[0]
    return [results[number] for number in sorted(results)]
