"""Move a virtual disk block by block with bounded memory.

Writers use ``iter_blocks`` so that zero extents are never materialised and
data is read in large blocks, whatever the source format.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ims.disk.model import BLOCK_SIZE, DiskReader

#: Called with (bytes_done, bytes_total) as a copy advances.
Progress = Callable[[int, int], None]


def iter_blocks(
    reader: DiskReader, block_size: int = BLOCK_SIZE, progress: Progress | None = None
) -> Iterator[tuple[int, int, bytes | None]]:
    """Yield ``(offset, length, data)`` over the disk; ``data`` is None for zeros.

    Data extents are cut into pieces of at most ``block_size``; a zero extent
    comes out whole, however large.
    """
    total = reader.virtual_size
    for extent in reader.extents():
        if extent.zero:
            yield extent.offset, extent.length, None
            if progress:
                progress(extent.end, total)
            continue
        pos = extent.offset
        while pos < extent.end:
            length = min(block_size, extent.end - pos)
            yield pos, length, reader.read(pos, length)
            pos += length
            if progress:
                progress(pos, total)
