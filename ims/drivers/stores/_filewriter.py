"""Write a stream of chunks into a new file, with direct I/O where the filesystem allows it.

Why direct I/O: a buffered write copies every byte into the page cache, which
costs about as much CPU as hashing it and fills the cache with images nobody
reads soon. With O_DIRECT the disk takes the data from an aligned buffer, the
call releases the GIL while it waits, and the closing fsync has little left.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
from collections.abc import Iterable

#: Alignment that satisfies O_DIRECT on every common block device (512 or 4096).
ALIGN = 4096
BUFFER_SIZE = 4 * 1024 * 1024
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
_O_DIRECT = getattr(os, "O_DIRECT", 0)


def write_new_file(
    path: str, chunks: Iterable[bytes], direct: bool = True, buffer_size: int = BUFFER_SIZE
) -> int:
    """Create ``path`` (it must not exist), write every chunk, fsync; return the size.

    The caller removes ``path`` when this raises.
    """
    fd = _open_new(path, direct)
    try:
        if _O_DIRECT and fcntl.fcntl(fd, fcntl.F_GETFL) & _O_DIRECT:
            size = _write_direct(fd, chunks, buffer_size)
        else:
            size = _write_buffered(fd, chunks)
        os.fsync(fd)
    finally:
        os.close(fd)
    return size


def _open_new(path: str, direct: bool) -> int:
    if direct and _O_DIRECT:
        try:
            return os.open(path, _FLAGS | _O_DIRECT, 0o640)
        except OSError as ex:
            if ex.errno != errno.EINVAL:
                raise
            # tmpfs and a few others refuse O_DIRECT (after creating the file).
            _unlink_quietly(path)
    return os.open(path, _FLAGS, 0o640)


def _write_buffered(fd: int, chunks: Iterable[bytes]) -> int:
    size = 0
    for chunk in chunks:
        _write_all(fd, memoryview(chunk))
        size += len(chunk)
    return size


def _write_direct(fd: int, chunks: Iterable[bytes], buffer_size: int) -> int:
    buffer_size = max(ALIGN, buffer_size - buffer_size % ALIGN)
    buf = mmap.mmap(-1, buffer_size)  # anonymous maps are page aligned
    view = memoryview(buf)
    try:
        filled = 0
        size = 0
        for chunk in chunks:
            data = memoryview(chunk).cast("B")
            size += len(data)
            while data:
                take = min(len(data), buffer_size - filled)
                view[filled : filled + take] = data[:take]
                filled += take
                data = data[take:]
                if filled == buffer_size:
                    _write_block(fd, view)
                    filled = 0
        if filled:
            # Direct writes are whole blocks: pad the tail, then cut the file back.
            padded = -(-filled // ALIGN) * ALIGN
            view[filled:padded] = bytes(padded - filled)
            _write_block(fd, view[:padded])
            os.ftruncate(fd, size)
        return size
    finally:
        view.release()
        buf.close()


def _write_block(fd: int, view: memoryview) -> None:
    try:
        _write_all(fd, view)
    except OSError as ex:
        if ex.errno != errno.EINVAL:
            raise
        # The filesystem took O_DIRECT at open but not these writes: go buffered.
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~_O_DIRECT)
        _write_all(fd, view)


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
