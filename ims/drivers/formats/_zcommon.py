"""Plumbing shared by the IMS compressed formats (zvhd, zvhd2).

Both writers cut the virtual disk into fixed-size blocks, encode the blocks
on a small thread pool (zlib and zstd release the GIL while they work) and
write the results in order, so memory holds only a bounded number of blocks
whatever the disk size. Both formats also carry the same whole-disk digest.
"""

from __future__ import annotations

import functools
import hashlib
import os
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from ims import errors
from ims.disk.copy import Progress, iter_blocks
from ims.disk.model import DiskReader

T = TypeVar("T")
R = TypeVar("R")

KiB = 1024
MiB = 1024 * KiB

#: Smallest and largest block size the IMS compressed formats allow.
MIN_BLOCK_SIZE = 64 * KiB
MAX_BLOCK_SIZE = 16 * MiB


@functools.lru_cache(maxsize=4)
def zeros(length: int) -> bytes:
    """Return ``length`` zero bytes, shared so hot loops do not reallocate."""
    return bytes(length)


def is_zero(data: bytes) -> bool:
    """Tell whether ``data`` is all zero bytes (a memcmp, not a Python loop)."""
    # NOTE(ims): a calloc'd buffer maps the shared zero page, so comparing
    # against a fresh one of odd length costs no resident memory.
    return data == zeros(len(data))


def block_digest(data: bytes | None, length: int) -> bytes:
    """Return the SHA-256 of one block; ``None`` stands for ``length`` zeros."""
    if data is None:
        return _zero_block_digest(length)
    return hashlib.sha256(data).digest()


@functools.lru_cache(maxsize=8)
def _zero_block_digest(length: int) -> bytes:
    return hashlib.sha256(zeros(length)).digest()


def check_block_size(fmt: str, value: int) -> int:
    """Refuse a block size that is not a power of two within the limits."""
    if value < MIN_BLOCK_SIZE or value > MAX_BLOCK_SIZE or value & (value - 1):
        raise errors.ImageFormatError(
            format=fmt,
            reason=f"block size {value} is not a power of two in "
            f"[{MIN_BLOCK_SIZE}, {MAX_BLOCK_SIZE}]",
        )
    return value


def parse_int_option(options: dict[str, str], key: str, default: int, low: int, high: int) -> int:
    """Read an integer writer option, refusing junk with ``Invalid``."""
    raw = options.get(key)
    if raw is None:
        return default
    try:
        value = int(str(raw), 0)
    except ValueError:
        raise errors.Invalid(f"option {key}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise errors.Invalid(f"option {key}={value} is outside [{low}, {high}]")
    return value


def parse_bool_option(options: dict[str, str], key: str, default: bool) -> bool:
    """Read an on/off writer option."""
    raw = options.get(key)
    if raw is None:
        return default
    text = str(raw).strip().lower()
    if text in ("on", "true", "yes", "1"):
        return True
    if text in ("off", "false", "no", "0"):
        return False
    raise errors.Invalid(f"option {key}={raw!r} is not on or off")


def parse_size_option(options: dict[str, str], key: str, default: int) -> int:
    """Read a block-size option that may carry a K/M suffix (``4M``)."""
    raw = options.get(key)
    if raw is None:
        return default
    text = str(raw).strip().upper().removesuffix("B").removesuffix("I")
    scale = 1
    if text[-1:] in ("K", "M"):
        scale = KiB if text[-1] == "K" else MiB
        text = text[:-1]
    try:
        value = int(text) * scale
    except ValueError:
        raise errors.Invalid(f"option {key}={raw!r} is not a size") from None
    if value < MIN_BLOCK_SIZE or value > MAX_BLOCK_SIZE or value & (value - 1):
        raise errors.Invalid(f"option {key}={raw} must be a power of two between 64K and 16M")
    return value


def check_options(fmt: str, options: dict[str, str] | None, known: set[str]) -> dict[str, str]:
    """Return the options, refusing unknown keys with ``Invalid``."""
    options = dict(options or {})
    unknown = sorted(set(options) - known)
    if unknown:
        raise errors.Invalid(
            f"unknown {fmt} option(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    return options


def iter_disk_blocks(
    reader: DiskReader, block_size: int, progress: Progress | None = None
) -> Iterator[bytes | None]:
    """Yield the disk as consecutive blocks of ``block_size`` bytes.

    The last block may be shorter. A block that is all zeros comes out as
    None, whether the source reported it as a zero extent or as data that
    happens to be zero, so a zero run is never materialised here.
    """
    total = reader.virtual_size
    pos = 0  # next virtual offset this generator expects
    buf: bytearray | None = None  # the block being assembled from pieces
    for offset, length, data in iter_blocks(reader, block_size):
        if length == 0:
            continue
        if offset != pos or length < 0 or offset + length > total:
            raise errors.ImageFormatError(
                format="source", reason=f"extents are not contiguous at offset {pos}"
            )
        if data is not None and len(data) != length:
            raise errors.ImageFormatError(format="source", reason=f"short read at offset {offset}")
        end = offset + length
        while pos < end:
            start = pos - pos % block_size
            blen = min(block_size, total - start)
            inner = pos - start
            take = min(end - pos, blen - inner)
            if inner == 0 and take == blen:
                # PERF(ims): the common case, a whole block in one piece: no copy.
                if data is None:
                    yield None
                elif take == len(data):
                    yield None if is_zero(data) else data
                else:
                    piece = data[pos - offset : pos - offset + take]
                    yield None if is_zero(piece) else piece
            else:
                if buf is None:
                    buf = bytearray(blen)
                if data is not None:
                    buf[inner : inner + take] = data[pos - offset : pos - offset + take]
                if inner + take == blen:
                    block = bytes(buf)
                    buf = None
                    yield None if is_zero(block) else block
            pos += take
            if progress and (pos % block_size == 0 or pos == total):
                progress(pos, total)
    if pos != total:
        raise errors.ImageFormatError(
            format="source", reason=f"extents end at {pos}, not at {total}"
        )


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    shortcut: Callable[[T], Any] | None = None,
    workers: int | None = None,
    inflight: int | None = None,
) -> Iterator[R]:
    """Apply ``fn`` to ``items`` on a thread pool, yielding results in order.

    At most ``inflight`` items are queued or running at once, which bounds
    memory. ``shortcut(item)`` may return a ready result (not None) to skip
    the pool, which keeps cheap items such as zero blocks off the queue.
    """
    workers = workers or max(1, min(os.cpu_count() or 2, 8))
    inflight = inflight or 2 * workers + 2
    pending: deque[Future[R] | tuple[R]] = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ims-zenc")
    try:
        for item in items:
            ready = shortcut(item) if shortcut else None
            pending.append((ready,) if ready is not None else pool.submit(fn, item))
            while len(pending) >= inflight:
                yield _result(pending.popleft())
        while pending:
            yield _result(pending.popleft())
    finally:
        for left in pending:
            if isinstance(left, Future):
                left.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _result(entry: Future[R] | tuple[R]) -> R:
    return entry.result() if isinstance(entry, Future) else entry[0]


# CRC-32 combination ------------------------------------------------------
#
# gzip wants one CRC-32 over the whole payload, but the blocks are hashed in
# parallel. CRC-32 is linear over GF(2): crc(A || B) = shift(crc(A), |B|) ^
# crc(B), where shift feeds |B| zero bytes through the raw register. The
# shift for a fixed length is a 32x32 bit matrix, which we turn into four
# byte-indexed tables so that applying it costs four lookups.

_CRC_POLY = 0xEDB88320  # CRC-32 (IEEE), reflected


def _mat_apply(mat: list[int], vec: int) -> int:
    out = 0
    i = 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec >>= 1
        i += 1
    return out


def _mat_mul(a: list[int], b: list[int]) -> list[int]:
    """Return the matrix of applying ``b`` then ``a``."""
    return [_mat_apply(a, col) for col in b]


@functools.lru_cache(maxsize=16)
def _shift_tables(nbytes: int) -> tuple[tuple[int, ...], ...]:
    # One zero bit: the register shifts right, folding the polynomial in.
    bit = [_CRC_POLY] + [1 << (i - 1) for i in range(1, 32)]
    byte = bit
    for _ in range(3):
        byte = _mat_mul(byte, byte)  # 2, 4, 8 zero bits
    result = [1 << i for i in range(32)]  # identity
    power = byte
    n = nbytes
    while n:
        if n & 1:
            result = _mat_mul(power, result)
        n >>= 1
        if n:
            power = _mat_mul(power, power)
    return tuple(
        tuple(_mat_apply(result, value << (8 * lane)) for value in range(256)) for lane in range(4)
    )


def crc32_combine(crc_a: int, crc_b: int, len_b: int) -> int:
    """Return the CRC-32 of A||B from crc(A), crc(B) and len(B)."""
    if len_b == 0:
        return crc_a
    t0, t1, t2, t3 = _shift_tables(len_b)
    shifted = t0[crc_a & 255] ^ t1[(crc_a >> 8) & 255] ^ t2[(crc_a >> 16) & 255]
    return shifted ^ t3[crc_a >> 24] ^ crc_b


@functools.lru_cache(maxsize=8)
def zero_crc32(length: int) -> int:
    """Return the CRC-32 of ``length`` zero bytes."""
    return zlib.crc32(zeros(length))
