"""Raw disk images: the file is the disk.

Raw is never probed; it is what a file is when no other format claims it.
The reader asks the filesystem where the holes are (SEEK_DATA/SEEK_HOLE) so
sparse files are copied without reading their holes; the writer leaves holes
where the disk is zero when the output can seek, and writes zeros otherwise.
"""

from __future__ import annotations

import errno
import functools
import io
import os
import threading
from collections.abc import Iterator
from typing import Any, BinaryIO

from ims import errors
from ims.disk.model import BLOCK_SIZE, DiskReader, Extent, ImageInfo, Sample
from ims.drivers.formats import _qemu
from ims.drivers.formats.base import DiskFormat

FMT = "raw"

_SEEK_DATA = getattr(os, "SEEK_DATA", None)
_SEEK_HOLE = getattr(os, "SEEK_HOLE", None)


class RawReader(DiskReader):
    """The bytes of a file, with its holes reported as zero extents."""

    fmt = FMT

    def __init__(self, view: _qemu.FileView, virtual_size: int | None = None) -> None:
        self.view = view
        self.virtual_size = view.size if virtual_size is None else virtual_size

    def extents(self) -> Iterator[Extent]:
        size = self.virtual_size
        fd = self.view.fd
        if size == 0:
            return
        if fd is None or _SEEK_DATA is None or _SEEK_HOLE is None:
            yield Extent(0, size, False)
            return
        pos = 0
        while pos < size:
            found = self._next_data(fd, pos, size)
            if found is None:
                # The filesystem cannot tell: report everything left as data.
                yield Extent(pos, size - pos, False)
                return
            data, hole = found
            if data > pos:
                yield Extent(pos, data - pos, True)
            if hole > data:
                yield Extent(data, hole - data, False)
            pos = hole

    @staticmethod
    def _next_data(fd: int, pos: int, size: int) -> tuple[int, int] | None:
        """Return the next (data start, hole start) at or after ``pos``, within size.

        The descriptor's offset is put back, so the caller's file object does
        not see its position move.
        """
        saved = os.lseek(fd, 0, os.SEEK_CUR)
        try:
            try:
                data = os.lseek(fd, pos, _SEEK_DATA)
            except OSError as ex:
                if ex.errno == errno.ENXIO:
                    return size, size  # no data past pos: the rest is a hole
                return None
            data = min(data, size)
            if data >= size:
                return size, size
            try:
                hole = os.lseek(fd, data, _SEEK_HOLE)
            except OSError:
                hole = size
            return data, min(max(hole, data + 1), size)
        finally:
            os.lseek(fd, saved, os.SEEK_SET)

    direct_readinto = True
    concurrent_reads = True

    def readinto(self, offset: int, buf: memoryview) -> None:
        length = len(buf)
        if offset < 0 or offset + length > self.virtual_size:
            raise errors.Invalid(f"read of {length} bytes at {offset} is outside the disk")
        got = self.view.readinto(offset, buf)
        if got != length:
            if offset + length > self.view.size:
                _qemu.fill_zero(buf[got:])
            else:
                raise errors.ImageFormatError(format=self.fmt, reason="file shrank while reading")

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.virtual_size:
            raise errors.Invalid(f"read of {length} bytes at {offset} is outside the disk")
        data = self.view.pread(offset, length)
        if len(data) != length:
            if offset + length > self.view.size:
                # A disk larger than its file (ISO volume rounding): zeros past EOF.
                return data + _qemu.zeros(length - len(data))
            raise errors.ImageFormatError(format=self.fmt, reason="file shrank while reading")
        return data


class RawFormat(DiskFormat):
    """A plain disk image; the fallback format."""

    name = FMT
    streaming_write = True
    detectable = False

    def probe(self, sample: Sample) -> bool:
        return False

    def inspect(self, file: BinaryIO) -> ImageInfo:
        view = _qemu.FileView(file, FMT)
        return ImageInfo(format=FMT, virtual_size=view.size, actual_size=view.size)

    def open(self, file: BinaryIO) -> DiskReader:
        return RawReader(_qemu.FileView(file, FMT))

    def can_write(self) -> bool:
        return True

    def write(
        self, reader: DiskReader, out: BinaryIO, options: dict[str, Any] | None = None
    ) -> None:
        """Write the disk's bytes; zeros become holes when ``out`` can seek.

        Zero extents are skipped, and so are all-zero blocks and the zero
        tail (whole 4 KiB pages) of data blocks, as qemu-img's ``-S 4k``.
        """
        if options:
            raise errors.Invalid(f"unknown raw options: {', '.join(sorted(options))}")
        seekable = getattr(out, "seekable", None)
        sparse = bool(seekable and _call_quietly(seekable))
        start = out.tell() if sparse else 0
        if sparse:
            # Whatever the output held past our start must read back as zeros.
            # PERF(ims): only truncate when there is something to cut: on ext4
            # a truncate to zero arms auto_da_alloc, which flushes the whole
            # file to disk on close.
            if out.seek(0, os.SEEK_END) > start:
                sparse = _truncate(out, start)
            out.seek(start)
        fd = _fileno(out) if sparse else None
        if fd is not None:
            out.flush()
        size = reader.virtual_size
        if fd is not None and _qemu.copies_on_threads(reader):
            # Positional writes: every thread copies its own pieces.
            _qemu.copy_pieces(
                reader,
                functools.partial(_write_piece, fd, start, threading.Lock()),
                _qemu.workers(),
            )
            _finish_sparse(out, start, size)
            return
        # Each block is written before the next is read: one reused buffer.
        blocks = _qemu.prefetch_blocks(reader, reuse=True)
        try:
            for offset, length, data in blocks:
                if data is None:
                    if not sparse:
                        _write_zeros(out, length)
                    continue
                if sparse:
                    # Zeros inside data extents (an allocated but unused
                    # VHDX block, a half-filled cluster) become holes too.
                    end = _qemu.nonzero_end(data)
                    if end == 0:
                        continue
                    if end < length:
                        data = memoryview(data)[:end]
                if fd is not None:
                    _pwrite_all(fd, data, start + offset)
                else:
                    if sparse:
                        out.seek(start + offset)
                    out.write(data)
        finally:
            # Stop the prefetch thread before the caller may close the source.
            blocks.close()
        if sparse:
            _finish_sparse(out, start, size)


def _write_piece(fd: int, start: int, lock: threading.Lock, offset: int, data: memoryview) -> None:
    # Zeros inside data extents (an allocated but unused VHDX block, a
    # half-filled cluster) become holes too.
    end = _qemu.nonzero_end(data)
    if end:
        # One write at a time: a second writer would spin in the kernel on
        # the file's inode lock (see qcow2._Sink); reads still overlap.
        with lock:
            _pwrite_all(fd, data[:end], start + offset)


def _finish_sparse(out: BinaryIO, start: int, size: int) -> None:
    """Give the output its full size, the zero tail as a hole."""
    _truncate(out, start + size)
    # Some outputs (BytesIO) cannot grow by truncating: write the last byte.
    if size and out.seek(0, os.SEEK_END) < start + size:
        out.seek(start + size - 1)
        out.write(b"\0")
    out.seek(start + size)


def _call_quietly(func: Any) -> bool:
    try:
        return bool(func())
    except (OSError, ValueError):
        return False


def _fileno(out: BinaryIO) -> int | None:
    try:
        fd = out.fileno()
        os.fstat(fd)
        return fd
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


def _truncate(out: BinaryIO, size: int) -> bool:
    try:
        out.truncate(size)
        return True
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


def _write_zeros(out: BinaryIO, length: int) -> None:
    zero = memoryview(_qemu.zeros(min(length, BLOCK_SIZE)))
    while length > 0:
        n = min(length, len(zero))
        out.write(zero[:n])
        length -= n
