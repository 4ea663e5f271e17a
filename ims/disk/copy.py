"""Move a virtual disk block by block with bounded memory.

Writers use ``iter_blocks`` so that zero extents are never materialised and
data is read in large blocks, whatever the source format.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ims.disk.model import BLOCK_SIZE, DiskReader, Extent

#: Called with (bytes_done, bytes_total) as a copy advances.
Progress = Callable[[int, int], None]


class ProgressReader(DiskReader):
    """A pass-through reader that reports how far into the disk a writer has read.

    It keeps what the inner reader offers a copy (direct and concurrent
    reads, parallel decompression), so watching a copy never slows it down.
    Reads from several threads may finish out of order: the highest offset
    reached is what is reported.
    """

    def __init__(self, inner: DiskReader, progress: Progress) -> None:
        self.inner = inner
        self.progress = progress
        self.virtual_size = inner.virtual_size
        self.parallel_reads = getattr(inner, "parallel_reads", 1)
        self._done = 0

    def _reached(self, end: int) -> None:
        if end > self._done:
            self._done = end
            self.progress(end, self.virtual_size)

    def extents(self) -> Iterator[Extent]:
        for extent in self.inner.extents():
            yield extent
            if extent.zero:
                self._reached(extent.end)

    def read(self, offset: int, length: int) -> bytes:
        data = self.inner.read(offset, length)
        self._reached(offset + length)
        return data

    @property
    def direct_readinto(self) -> bool:  # type: ignore[override]
        return self.inner.direct_readinto

    @property
    def concurrent_reads(self) -> bool:  # type: ignore[override]
        return self.inner.concurrent_reads

    def readinto(self, offset: int, buf: memoryview) -> None:
        self.inner.readinto(offset, buf)
        self._reached(offset + len(buf))

    def close(self) -> None:
        self.inner.close()


def iter_blocks(
    reader: DiskReader,
    block_size: int = BLOCK_SIZE,
    progress: Progress | None = None,
    reuse: bool = False,
) -> Iterator[tuple[int, int, bytes | memoryview | None]]:
    """Yield ``(offset, length, data)`` over the disk; ``data`` is None for zeros.

    Data extents are cut into pieces of at most ``block_size``; a zero extent
    comes out whole, however large.

    With ``reuse``, a reader that fills buffers directly (``direct_readinto``)
    reads every block into the same buffer, and ``data`` is only valid until
    the next block is asked for. PERF(ims): a fresh 1 MiB ``bytes`` per
    block costs page faults each time the allocator hands memory back to
    the kernel and takes it again (30% of a raw->qcow2 copy's CPU), and a
    reused buffer stays in the CPU cache.
    """
    total = reader.virtual_size
    view = None
    if reuse and reader.direct_readinto:
        view = memoryview(bytearray(block_size))
    for extent in reader.extents():
        if extent.zero:
            yield extent.offset, extent.length, None
            if progress:
                progress(extent.end, total)
            continue
        pos = extent.offset
        while pos < extent.end:
            length = min(block_size, extent.end - pos)
            if view is None:
                yield pos, length, reader.read(pos, length)
            else:
                piece = view[:length]
                reader.readinto(pos, piece)
                yield pos, length, piece
            pos += length
            if progress:
                progress(pos, total)


def data_windows(
    reader: DiskReader, window: int
) -> Iterator[tuple[int, int, list[tuple[int, int]]]]:
    """Yield ``(start, length, ranges)`` for each ``window``-aligned window holding data.

    ``ranges`` are the ``(offset, length)`` data parts inside the window, in
    order; the rest of the window reads as zeros. Windows without data are
    skipped. The last window may be short.
    """
    size = reader.virtual_size
    current = -1
    ranges: list[tuple[int, int]] = []
    for extent in reader.extents():
        if extent.zero or extent.length == 0:
            continue
        pos = extent.offset
        end = min(extent.end, size)
        while pos < end:
            start = pos - pos % window
            stop = min(end, start + window)
            if start != current:
                if ranges:
                    yield current, min(window, size - current), ranges
                current, ranges = start, []
            ranges.append((pos, stop - pos))
            pos = stop
    if ranges:
        yield current, min(window, size - current), ranges
