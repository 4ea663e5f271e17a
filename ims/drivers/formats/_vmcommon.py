"""Helpers shared by the VM-hypervisor formats (vmdk, vhd, vhdx, vdi).

Private to those modules: a bounds-checked positional reader over the image
file, a generic reader for formats that map fixed-size guest blocks to host
offsets, overlap bookkeeping for table validation, and the block iteration
their writers use.
"""

from __future__ import annotations

import abc
import functools
import io
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

from ims import errors
from ims.disk.copy import data_windows
from ims.disk.model import BLOCK_SIZE, DiskReader, Extent
from ims.drivers.formats._qemu import fill_zero

MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40

#: One zero block, shared: zero data is compared against it and streamed from it.
ZERO_BLOCK = bytes(BLOCK_SIZE)
_ZERO_VIEW = memoryview(ZERO_BLOCK)


def bad(fmt: str, reason: str) -> errors.ImageFormatError:
    """Build the error for content that does not parse as ``fmt``."""
    return errors.ImageFormatError(format=fmt, reason=reason)


def unsafe(fmt: str, reason: str) -> errors.UnsafeImage:
    """Build the error for a feature of ``fmt`` that IMS refuses."""
    return errors.UnsafeImage(format=fmt, reason=reason)


class Source:
    """Positional, bounds-checked reads of one image file.

    Uses ``os.pread`` on the file descriptor when there is one (no shared file
    position, so readers are thread safe and cheap); falls back to
    seek+read under a lock for in-memory files.
    """

    def __init__(self, file: BinaryIO, fmt: str) -> None:
        self.fmt = fmt
        self._file = file
        self._lock = threading.Lock()
        self._fd: int | None = None
        try:
            fd = file.fileno()
            os.fstat(fd)
            self._fd = fd
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            self._fd = None
        try:
            if self._fd is not None:
                self.size = os.fstat(self._fd).st_size
            else:
                self.size = file.seek(0, os.SEEK_END)
        except OSError as ex:
            raise bad(fmt, f"cannot size the file: {ex}") from ex

    def check(self, offset: int, length: int, what: str) -> None:
        """Raise unless [offset, offset+length) lies inside the file."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise bad(
                self.fmt,
                f"{what} at offset {offset} (+{length}) is outside the file of {self.size} bytes",
            )

    def pread(self, offset: int, length: int, what: str = "data") -> bytes:
        """Return exactly ``length`` bytes at ``offset`` or raise."""
        self.check(offset, length, what)
        if self._fd is not None:
            data = os.pread(self._fd, length, offset)
            if len(data) < length:  # a short read on a regular file: go on.
                parts = [data]
                got = len(data)
                while got < length:
                    more = os.pread(self._fd, length - got, offset + got)
                    if not more:
                        raise bad(self.fmt, f"{what} truncated at offset {offset + got}")
                    parts.append(more)
                    got += len(more)
                data = b"".join(parts)
            return data
        with self._lock:
            self._file.seek(offset)
            data = self._file.read(length)
        if len(data) != length:
            raise bad(self.fmt, f"{what} truncated at offset {offset}")
        return data

    def readinto(self, view: memoryview, offset: int, what: str = "data") -> None:
        """Fill ``view`` from ``offset`` or raise."""
        length = len(view)
        self.check(offset, length, what)
        if self._fd is not None:
            got = 0
            while got < length:
                n = os.preadv(self._fd, [view[got:]], offset + got)
                if n <= 0:
                    raise bad(self.fmt, f"{what} truncated at offset {offset + got}")
                got += n
            return
        view[:] = self.pread(offset, length, what)


class MappedReader(DiskReader):
    """A disk whose guest ranges map to host ranges of one file, or to zeros.

    Subclasses implement ``_runs``; extents and reads follow from it. Reads
    coalesce host-contiguous runs into one positional read each.
    """

    #: Guest bytes looked at per ``_runs`` call while listing extents; bounds
    #: the table slice a subclass reads at once.
    extent_chunk = 64 * GiB

    def __init__(self, source: Source, virtual_size: int) -> None:
        self.source = source
        self.virtual_size = virtual_size

    @abc.abstractmethod
    def _runs(self, offset: int, length: int) -> Iterator[tuple[int, int, int]]:
        """Yield ``(guest_offset, length, host_offset)`` covering the range in order.

        ``host_offset`` is -1 where the disk reads as zeros.
        """

    #: Whether data extents end where the host offsets jump. Each extent is
    #: then one positional read, whatever block size the copy engine uses.
    split_at_host_gaps = True

    def extents(self) -> Iterator[Extent]:
        start = 0
        cur_zero: bool | None = None
        cur_start = 0
        host_next = -1
        pos = 0
        split = self.split_at_host_gaps
        while start < self.virtual_size:
            length = min(self.extent_chunk, self.virtual_size - start)
            for goff, glen, host in self._runs(start, length):
                zero = host < 0
                if zero != cur_zero or (split and not zero and host != host_next):
                    if cur_zero is not None:
                        yield Extent(cur_start, goff - cur_start, cur_zero)
                    cur_zero = zero
                    cur_start = goff
                host_next = host + glen
                pos = goff + glen
            start += length
        if cur_zero is not None:
            yield Extent(cur_start, pos - cur_start, cur_zero)

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.virtual_size:
            raise ValueError(
                f"read of {length} bytes at {offset} is outside the disk of "
                f"{self.virtual_size} bytes"
            )

    def read(self, offset: int, length: int) -> bytes:
        self._check_range(offset, length)
        if length == 0:
            return b""
        # PERF(ims): one pread per host-contiguous run, then one join. Filling
        # a fresh bytearray costs page faults on every call (calloc'd memory
        # comes straight from mmap); bytes from pread and join do not.
        parts: list[bytes | memoryview] = []
        for _goff, glen, host in _coalesce(self._runs(offset, length)):
            if host >= 0:
                parts.append(self.source.pread(host, glen))
            else:
                parts.extend(zero_pieces(glen))
        if len(parts) == 1:
            return parts[0] if isinstance(parts[0], bytes) else bytes(parts[0])
        return b"".join(parts)

    #: Positional reads of the file only (compressed VMDK reads already
    #: run on several threads, see prefetch_blocks).
    concurrent_reads = True

    @property
    def direct_readinto(self) -> bool:  # type: ignore[override]
        # A subclass with a read of its own (compressed VMDK grains) keeps
        # the copying default: the runs alone do not describe its data.
        return type(self).read is MappedReader.read

    def readinto(self, offset: int, buf: memoryview) -> None:
        if not self.direct_readinto:
            super().readinto(offset, buf)
            return
        length = len(buf)
        self._check_range(offset, length)
        pos = 0
        for _goff, glen, host in _coalesce(self._runs(offset, length)):
            piece = buf[pos : pos + glen]
            if host >= 0:
                self.source.readinto(piece, host)
            else:
                fill_zero(piece)
            pos += glen


def zero_pieces(length: int) -> Iterator[memoryview]:
    """Yield views of the shared zero block adding up to ``length`` bytes."""
    while length > 0:
        n = min(length, BLOCK_SIZE)
        yield _ZERO_VIEW[:n]
        length -= n


def _coalesce(runs: Iterator[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Merge neighbouring runs that are contiguous on the host (or both zero)."""
    out: list[tuple[int, int, int]] = []
    for goff, glen, host in runs:
        if out:
            pgoff, pglen, phost = out[-1]
            if (phost < 0 and host < 0) or (phost >= 0 and host >= 0 and phost + pglen == host):
                out[-1] = (pgoff, pglen + glen, phost)
                continue
        out.append((goff, glen, host))
    return out


class UnitMap:
    """Which fixed-size units of a file are taken, one bit each.

    Lets table validation find two table entries (or an entry and metadata)
    claiming the same part of the file with memory of one bit per unit.
    """

    def __init__(self, file_size: int, unit: int) -> None:
        self.unit = unit
        self.bits = bytearray(file_size // unit // 8 + 2)

    def claim(self, offset: int, length: int) -> bool:
        """Mark [offset, offset+length) taken; False if any unit was already."""
        first = offset // self.unit
        last = (offset + length - 1) // self.unit
        bits = self.bits
        for unit in range(first, last + 1):
            mask = 1 << (unit & 7)
            if bits[unit >> 3] & mask:
                return False
            bits[unit >> 3] |= mask
        return True


class SpanBuckets:
    """Exact overlap check of equal-length ranges at arbitrary offsets.

    A file cut into buckets of the range length holds at most one range start
    per bucket when ranges do not overlap, so one slot per bucket and a look
    at the neighbours is enough (4 bytes per ``span`` bytes of file).
    """

    def __init__(self, file_size: int, span: int) -> None:
        import array

        self.span = span
        self.slots = array.array("q", [-1]) * (file_size // span + 2)

    def claim(self, offset: int) -> bool:
        """Record a range at ``offset``; False if it overlaps a recorded one."""
        span = self.span
        bucket = offset // span
        slots = self.slots
        if slots[bucket] >= 0:
            return False
        for near in (bucket - 1, bucket + 1):
            if 0 <= near < len(slots):
                other = slots[near]
                if other >= 0 and abs(other - offset) < span:
                    return False
        slots[bucket] = offset
        return True


def iter_data_windows(reader: DiskReader, window: int) -> Iterator[tuple[int, bytes]]:
    """Yield ``(offset, data)`` for each ``window``-aligned window holding data.

    Windows without any data extent are skipped; parts of a window that are
    zero extents come out as zeros. The last window may be short.
    """
    for start, length, ranges in data_windows(reader, window):
        if ranges == [(start, length)]:
            yield start, reader.read(start, length)
            continue
        # One join rather than filling a fresh bytearray (see MappedReader.read).
        parts: list[bytes | memoryview] = []
        pos = start
        for offset, size in ranges:
            parts.extend(zero_pieces(offset - pos))
            parts.append(reader.read(offset, size))
            pos = offset + size
        parts.extend(zero_pieces(start + length - pos))
        yield start, b"".join(parts)


@functools.lru_cache(maxsize=16)
def zeros(length: int) -> bytes:
    """Return ``length`` zero bytes, cached for the few sizes writers use."""
    return bytes(length)


def is_zero(data: bytes | bytearray) -> bool:
    """Tell whether ``data`` is all zero bytes (memcmp against a cached block)."""
    return data == zeros(len(data))


def parse_options(
    fmt: str, options: dict[str, str] | None, allowed: dict[str, tuple[str, ...] | None]
) -> dict[str, str]:
    """Check writer options against ``allowed`` (name → choices or None)."""
    options = dict(options or {})
    for key, value in options.items():
        if key not in allowed:
            raise errors.Invalid(f"Unknown {fmt} option '{key}'")
        choices = allowed[key]
        if choices is not None and value not in choices:
            raise errors.Invalid(
                f"Invalid {fmt} option {key}={value!r}; expected one of {', '.join(choices)}"
            )
    return options


def write_zeros(out: BinaryIO, length: int) -> None:
    """Write ``length`` zero bytes from the shared zero block."""
    while length > 0:
        n = min(length, BLOCK_SIZE)
        out.write(ZERO_BLOCK[:n] if n != BLOCK_SIZE else ZERO_BLOCK)
        length -= n


def skip_zeros(out: BinaryIO, length: int, seekable: bool) -> None:
    """Advance ``out`` by ``length`` zero bytes: a hole if seekable, else zeros."""
    if seekable:
        out.seek(length, os.SEEK_CUR)
    else:
        write_zeros(out, length)


def extend_to(out: BinaryIO, size: int) -> None:
    """Make a seekable ``out`` at least ``size`` bytes long, zero filled.

    ``truncate`` extends real files (as a hole) but not every file-like
    object (BytesIO), so fall back to writing the last byte.
    """
    end = out.seek(0, os.SEEK_END)
    if end >= size:
        return
    try:
        out.truncate(size)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass
    if out.seek(0, os.SEEK_END) < size:
        out.seek(size - 1)
        out.write(b"\0")


def cut_tail(out: BinaryIO) -> bool:
    """Drop whatever ``out`` holds past its position, so holes read as zeros.

    Returns False when ``out`` cannot be truncated.
    """
    try:
        out.truncate()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False
    return True


def need_seekable(out: BinaryIO, what: str) -> None:
    """Raise Invalid unless ``out`` can seek and be truncated."""
    if not is_seekable(out) or not cut_tail(out):
        raise errors.Invalid(f"Writing {what} needs a seekable output")


def is_seekable(out: BinaryIO) -> bool:
    """Tell whether ``out`` can seek (and be truncated for holes)."""
    try:
        return bool(out.seekable())
    except (AttributeError, ValueError, OSError):
        return False


#: Threads of the shared pool: one per core, at most 8 (bounds queued memory).
POOL_WORKERS = min(8, max(2, os.cpu_count() or 2))
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def pool() -> ThreadPoolExecutor:
    """Return the shared (de)compression pool, one thread per core.

    zlib releases the GIL, so these threads use every core. Callers bound how
    much work they keep queued; tasks never submit tasks.
    """
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=POOL_WORKERS, thread_name_prefix="ims-vmfmt")
        return _POOL
