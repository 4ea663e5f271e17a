"""Cut a stream of chunks into parts and upload them in parallel, in bounded memory.

Shared by the object-store drivers: S3 multipart uploads and Swift Static
Large Object segments are the same problem (numbered pieces of at least one
size and at most another, a cap on how many, each sent once and then
forgotten). Two ways to send them:

- ``upload_parts`` copies each part into a buffer and sends it whole, so a
  failed request can be retried (S3, where a part must also be hashed before
  it is sent). One producer (the caller's thread, reading the input) and
  ``threads`` senders; admission is counted in bytes and buffers are reused,
  so memory stays within ``(threads + 1) × part size + one input chunk``
  however big the image is, and no queue holds data.
- ``stream_parts`` streams each part while it is read, so memory is a few
  input chunks whatever the part size, at the price of retries (Swift).

``read_ranges`` is the way back: long reads as ranges fetched several at a
time, in order, within ``(threads + 1) × range size``.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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

    def take(self, size: int) -> Iterator[bytes | memoryview]:
        """Yield the next ``size`` bytes (fewer only at the end) as they come, unjoined.

        Whole input chunks come out as they went in; pieces of one are views.
        """
        left = size
        while left > 0 and self.peek(1):
            view = self._views.popleft()
            if len(view) > left:
                self._views.appendleft(view[left:])
                view = view[:left]
            self._buffered -= len(view)
            self.consumed += len(view)
            left -= len(view)
            yield view.obj if len(view) == len(view.obj) else view  # type: ignore[misc]
            del view

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """Fill ``buffer`` from the input; return how many bytes (fewer only at the end)."""
        target = memoryview(buffer)
        got = 0
        for piece in self.take(len(target)):
            target[got : got + len(piece)] = piece
            got += len(piece)
        return got

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
    send: Callable[[int, bytearray], T],
    threads: int,
    max_parts: int,
    on_too_many: Callable[[], BaseException],
) -> list[T]:
    """Read numbered parts from ``reader`` and ``send`` them, ``threads`` at once.

    ``send(number, data)`` runs in a worker thread; its results come back in
    part order. ``data`` is a buffer that the next parts reuse once ``send``
    returns (no allocation per part, so memory goes back to where it was
    taken): ``send`` must not keep it. The first failure (input or send)
    stops reading; every part already started is waited for before the
    failure is raised, so the caller can clean up knowing nothing is still
    being written. At least one part is sent, even if empty.
    """
    cond = threading.Condition()
    budget = (threads + 1) * part_size(1)
    reserved = 0  # bytes of the buffers being filled or sent
    busy = 0  # parts being sent
    free: list[bytearray] = []  # buffers of parts already sent
    failures: list[BaseException] = []
    results: dict[int, T] = {}

    def work(number: int, data: bytearray, size: int) -> None:
        nonlocal reserved, busy
        try:
            results[number] = send(number, data)
        except BaseException as ex:
            with cond:
                failures.append(ex)
        finally:
            with cond:
                free.append(data)
                reserved -= size
                busy -= 1
                cond.notify_all()

    def admit(want: int) -> bool:
        limit = max(budget, 2 * want)
        return bool(failures) or reserved == 0 or (busy < threads and reserved + want <= limit)

    def buffer(want: int) -> bytearray:
        while free:
            data = free.pop()
            if len(data) == want:
                return data
            # Parts grew (unknown size): the old buffers go.
        return bytearray(want)

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
                data = buffer(want)
            try:
                got = reader.readinto(data)
            except BaseException:
                with cond:
                    reserved -= want
                raise
            with cond:
                if not got and number > 1:
                    reserved -= want
                    cond.notify_all()
                    break
                if number > max_parts:
                    reserved -= want
                    failures.append(on_too_many())
                    break
                busy += 1
            if got < want:
                del data[got:]  # the last part: shrink in place, nothing copied
            pool.submit(work, number, data, want)
            del data  # PERF(ims): the worker holds the only reference now.
            if got < want:
                break
    if failures:
        raise failures[0]
    return [results[number] for number in sorted(results)]


class PartAborted(Exception):
    """The input failed or ended early while a part was being streamed: drop that request."""


class _Feed:
    """Pieces of one part, handed from the reading thread to its sending thread.

    One piece waits at most, so a streamed part holds a few input chunks
    however long it is.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._piece: bytes | memoryview | None = None
        self._closed: bool | None = None  # None: open; True: complete; False: aborted
        self._abandoned = False
        #: The sender read every piece to the end of a complete part.
        self.drained = False

    def put(self, piece: bytes | memoryview) -> bool:
        """Hand over a piece; False when the sender has given up."""
        with self._cond:
            self._cond.wait_for(lambda: self._piece is None or self._abandoned)
            if self._abandoned:
                return False
            self._piece = piece
            self._cond.notify_all()
            return True

    def close(self, complete: bool) -> None:
        """No more pieces; an incomplete part makes its sender's iterator raise."""
        with self._cond:
            self._closed = complete
            self._cond.notify_all()

    def abandon(self) -> None:
        with self._cond:
            self._abandoned = True
            self._piece = None
            self._cond.notify_all()

    def __iter__(self) -> Iterator[bytes | memoryview]:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._piece is not None or self._closed is not None)
                piece, self._piece = self._piece, None
                self._cond.notify_all()
            if piece is None:
                if not self._closed:
                    raise PartAborted("the input of this part failed")
                self.drained = True
                return
            yield piece
            del piece


def stream_parts(
    reader: ChunkReader,
    part_size: Callable[[int], int],
    send: Callable[[int, Iterable[bytes | memoryview]], T],
    threads: int,
    max_parts: int,
    on_too_many: Callable[[], BaseException],
) -> list[T]:
    """Stream numbered parts from ``reader`` to ``send``, ``threads`` requests at once.

    Unlike ``upload_parts`` nothing is held for retries: ``send(number,
    pieces)`` runs in a worker thread and iterates the part's pieces while
    they are read, so memory stays at a few input chunks whatever the part
    size. The input is one stream, so one part receives data at a time; the
    others in flight are finishing (a store syncs and records each part
    before it answers), which is the latency the threads hide. If the input
    fails, the part being streamed makes its ``pieces`` raise PartAborted (so
    no truncated part is ever completed), every started part is waited for,
    and the input's error is raised. At least one part is sent.
    """
    cond = threading.Condition()
    busy = 0
    failures: list[BaseException] = []
    results: dict[int, T] = {}

    def work(number: int, feed: _Feed) -> None:
        nonlocal busy
        try:
            results[number] = send(number, feed)
            if not feed.drained:
                raise RuntimeError(f"part {number} was not read to its end")
        except BaseException as ex:
            with cond:
                failures.append(ex)
        finally:
            feed.abandon()  # a reader still waiting to hand a piece over stops
            with cond:
                busy -= 1
                cond.notify_all()

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ims-part") as pool:
        number = 0
        while number == 0 or reader.peek(1):
            number += 1
            with cond:
                cond.wait_for(lambda: bool(failures) or busy < threads)  # noqa: B023
                if failures:
                    break
                if number > max_parts:
                    failures.append(on_too_many())
                    break
                busy += 1
            want = part_size(number)
            feed = _Feed()
            pool.submit(work, number, feed)
            taken = 0
            try:
                for piece in reader.take(want):
                    taken += len(piece)
                    if not feed.put(piece):
                        break
                    del piece
            finally:
                feed.close(complete=not failures and reader.error is None)
            if taken < want:
                break
    if failures:
        raise failures[0]
    return [results[number] for number in sorted(results)]


def read_ranges(
    fetch: Callable[[int, int], bytes],
    start: int,
    stop: int,
    range_size: int,
    threads: int,
    short: Callable[[int, int], BaseException],
) -> Iterator[bytes]:
    """Yield bytes ``start`` to ``stop`` of an object, fetched as ranges ``threads`` at a time.

    ``fetch(first, end)`` returns bytes ``first`` to ``end`` (exclusive) in one
    request, in a worker thread. A range that comes back short (a large
    object whose segment vanished ends early) raises ``short(got, wanted)``.
    Ranges come back in order; while the caller handles one, the next
    ``threads`` are on their way, so memory stays within ``(threads + 1) ×
    range_size``. Leaving the iterator early cancels what has not started and
    waits for what has.
    """
    offsets = iter(range(start, stop, range_size))
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ims-range")
    pending: collections.deque[Future[bytes]] = collections.deque()

    def checked(first: int, end: int) -> bytes:
        data = fetch(first, end)
        if len(data) != end - first:
            raise short(len(data), end - first)
        return data

    def submit() -> None:
        first = next(offsets, None)
        if first is not None:
            pending.append(pool.submit(checked, first, min(first + range_size, stop)))

    try:
        for _ in range(threads):
            submit()
        while pending:
            data = pending.popleft().result()
            submit()
            yield data
            del data  # PERF(ims): the caller holds the only reference now.
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)
