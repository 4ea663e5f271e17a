"""ZVHD2: a virtual disk as a zstd seekable-format stream with IMS metadata.

The layout is specified in docs/formats/zvhd2.md. In short: a head
skippable frame (IMS head record), one zstd frame per fixed-size block (an
all-zero block is a canonical RLE frame), a trailer skippable frame (zero
bitmap, whole-disk digest) and the seek table of the zstd seekable format,
which lists every frame. ``zstd -d`` yields the raw disk; a reader learns the
whole layout from the head plus the tail and reads any block alone.
"""

from __future__ import annotations

import array
import collections
import functools
import hashlib
import math
import os
import struct
import sys
import threading
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO

import zstandard

from ims import errors
from ims.disk.model import DiskReader, Extent, ImageInfo, Sample
from ims.drivers.formats import _zcommon as zc
from ims.drivers.formats.base import DiskFormat

NAME = "zvhd2"

ZSTD_MAGIC = 0xFD2FB528
HEAD_FRAME_MAGIC = 0x184D2A5A
TRAILER_FRAME_MAGIC = 0x184D2A5B
SEEK_TABLE_MAGIC = 0x184D2A5E
SEEKABLE_FOOTER_MAGIC = 0x8F92EAB1

HEAD_MAGIC = b"IMSZVHD2"
TRAILER_MAGIC = b"IMSZVEND"
VERSION = 1
TRAILER_FLAG_DIGEST = 0x1

#: Head record: magic, version, record size, flags, virtual size,
#: block size, reserved, block count; then 20 reserved bytes and a CRC-32.
_HEAD = struct.Struct("<8sHHIQIIQ")
HEAD_RECORD_SIZE = 64
HEAD_FRAME_SIZE = 8 + HEAD_RECORD_SIZE
#: Trailer record: magic, version, reserved, flags, virtual size, block size,
#: reserved, block count, zero-block count, digest; then bitmap and CRC-32.
_TRAILER = struct.Struct("<8sHHIQIIQQ32s")
_FRAME_HEAD = struct.Struct("<II")
_FOOTER = struct.Struct("<IBI")
SEEK_ENTRY_SIZE = 8

MAX_VIRTUAL_SIZE = 64 << 40
#: Most blocks one image may have: bounds the seek table held in memory
#: (8 bytes a block) to 32 MiB.
MAX_BLOCKS = 1 << 22
DEFAULT_BLOCK_SIZE = 1 * zc.MiB
#: Measured on the 2 GiB bench disk (1 MiB blocks, one core): level 1 with
#: MIN_HASH_LOG compresses to 640 MiB in 2.8 s, level 2 to 630 MiB in 3.3 s,
#: plain level 1 to 648 MiB in 2.7 s; qemu-img's qcow2 (zstd level 3 per
#: 64 KiB cluster) is 650 MiB in about 6.5 s.
DEFAULT_LEVEL = 1
#: Smallest hash table (log2 entries) the writer gives zstd. Level 1 uses
#: 2^14 for 1 MiB inputs; 2^15 finds enough more matches in text-like data
#: to save ~1.2% of the output for ~3% more CPU. Higher levels already use
#: more, so only level 1 changes.
MIN_HASH_LOG = 15
#: zstd's Block_Maximum_Size.
ZSTD_BLOCK_MAX = 128 * zc.KiB
#: Largest window a data frame may ask for.
MAX_WINDOW = 32 * zc.MiB


def _fail(reason: str) -> errors.ImageFormatError:
    return errors.ImageFormatError(format=NAME, reason=reason)


def max_frame_size(length: int) -> int:
    """Return the largest compressed frame allowed for a ``length``-byte block."""
    return length + length // 128 + 4096


@functools.lru_cache(maxsize=8)
def zero_frame(length: int) -> bytes:
    """Return the canonical zstd frame of ``length`` zero bytes.

    Single-segment, 4-byte content size, no checksum, then RLE blocks of
    byte 0 of at most 128 KiB each: a fixed byte string for each length,
    so a reader can tell a zero block by its size alone.
    """
    out = bytearray(struct.pack("<IBI", ZSTD_MAGIC, 0xA0, length))
    left = length
    while left:
        size = min(left, ZSTD_BLOCK_MAX)
        left -= size
        header = (size << 3) | (1 << 1) | (0 if left else 1)
        out += header.to_bytes(3, "little") + b"\0"
    return bytes(out)


def _skippable(magic: int, payload: bytes) -> bytes:
    return _FRAME_HEAD.pack(magic, len(payload)) + payload


def _check_frame(buf: bytes, expected: int) -> None:
    """Walk a data frame's header and block headers before decompressing it.

    APPSEC(ims): this pins the frame to exactly the bytes the seek table
    gives it, to the declared content size, and to no dictionary, so the
    decompressor never allocates more than one block.
    """
    if len(buf) < 9 or int.from_bytes(buf[:4], "little") != ZSTD_MAGIC:
        raise _fail("data frame does not start with the zstd magic")
    fhd = buf[4]
    fcs_flag, single = fhd >> 6, (fhd >> 5) & 1
    if fhd & 0x08 or fhd & 0x03:
        raise _fail("data frame uses a reserved bit or a dictionary")
    if not fhd & 0x04:
        raise _fail("data frame has no content checksum")
    pos = 5
    window = 0
    if not single:
        desc = buf[pos]
        base = 1 << (10 + (desc >> 3))
        window = base + (base >> 3) * (desc & 7)
        pos += 1
        if window > MAX_WINDOW:
            raise _fail(f"data frame window {window} exceeds {MAX_WINDOW}")
    fcs_len = (1 if single else 0, 2, 4, 8)[fcs_flag]
    if fcs_len == 0:
        raise _fail("data frame does not declare its content size")
    content = int.from_bytes(buf[pos : pos + fcs_len], "little") + (256 if fcs_len == 2 else 0)
    pos += fcs_len
    if content != expected:
        raise _fail(f"data frame declares {content} bytes, the seek table {expected}")
    block_max = min(content if single else window, ZSTD_BLOCK_MAX)
    end = len(buf)
    while True:
        if pos + 3 > end:
            raise _fail("data frame is truncated")
        header = int.from_bytes(buf[pos : pos + 3], "little")
        pos += 3
        btype, bsize = (header >> 1) & 3, header >> 3
        if btype == 3 or bsize > block_max:
            raise _fail("data frame holds an invalid block")
        pos += 1 if btype == 1 else bsize
        if header & 1:
            break
    pos += 4  # content checksum
    if pos != end:
        raise _fail("data frame size disagrees with the seek table")


class _Layout:
    """Head record, seek table and trailer, validated against each other."""

    def __init__(self, file: BinaryIO) -> None:
        file.seek(0, os.SEEK_END)
        size = self.file_size = file.tell()
        file.seek(0)
        head = file.read(HEAD_FRAME_SIZE)
        self._parse_head(head)
        n = self.block_count + 2  # head frame, blocks, trailer frame
        table_size = 8 + n * SEEK_ENTRY_SIZE + _FOOTER.size
        if size < HEAD_FRAME_SIZE + table_size:
            raise _fail(f"file of {size} bytes is too short for {self.block_count} blocks")
        file.seek(size - _FOOTER.size)
        frames, descriptor, magic = _FOOTER.unpack(file.read(_FOOTER.size))
        if magic != SEEKABLE_FOOTER_MAGIC:
            raise _fail("no seek table footer at the end of the file")
        if descriptor != 0:
            raise _fail(f"seek table descriptor 0x{descriptor:02x} is not 0")
        if frames != n:
            raise _fail(f"seek table lists {frames} frames, the head implies {n}")
        table_start = size - table_size
        file.seek(table_start)
        tmagic, tsize = _FRAME_HEAD.unpack(file.read(8))
        if tmagic != SEEK_TABLE_MAGIC or tsize != table_size - 8:
            raise _fail("seek table frame header is wrong")
        self._read_table(file, table_start + 8, n)
        trailer_start = self.offsets[-1]
        trailer_len = table_start - trailer_start
        if trailer_len != self._trailer_frame_size():
            raise _fail("frame sizes in the seek table do not add up to the file size")
        file.seek(trailer_start)
        self._parse_trailer(file.read(trailer_len))

    def _parse_head(self, head: bytes) -> None:
        if len(head) < HEAD_FRAME_SIZE:
            raise _fail("file is too short for a head frame")
        magic, length = _FRAME_HEAD.unpack_from(head)
        record = head[8:HEAD_FRAME_SIZE]
        if magic != HEAD_FRAME_MAGIC or length != HEAD_RECORD_SIZE or record[:8] != HEAD_MAGIC:
            raise _fail("no zvhd2 head frame")
        if zlib.crc32(record[:-4]) != int.from_bytes(record[-4:], "little"):
            raise _fail("head record checksum mismatch")
        _, version, rsize, flags, vsize, bsize, reserved, count = _HEAD.unpack_from(record)
        if version != VERSION:
            raise _fail(f"unsupported zvhd2 version {version}")
        if rsize != HEAD_RECORD_SIZE or flags or reserved or any(record[_HEAD.size : -4]):
            raise _fail("head record has unknown flags or non-zero reserved bytes")
        if vsize > MAX_VIRTUAL_SIZE:
            raise _fail(f"virtual size {vsize} exceeds {MAX_VIRTUAL_SIZE}")
        zc.check_block_size(NAME, bsize)
        if count != math.ceil(vsize / bsize):
            raise _fail(f"block count {count} does not cover virtual size {vsize}")
        if count > MAX_BLOCKS:
            raise _fail(f"{count} blocks exceed the limit of {MAX_BLOCKS}")
        self.virtual_size, self.block_size, self.block_count = vsize, bsize, count

    def _block_len(self, index: int) -> int:
        return min(self.block_size, self.virtual_size - index * self.block_size)

    def _read_table(self, file: BinaryIO, start: int, n: int) -> None:
        """Load frame offsets, checking every entry before trusting it."""
        file.seek(start)
        self.offsets = offsets = array.array("Q", [HEAD_FRAME_SIZE])
        pos = HEAD_FRAME_SIZE
        index = 0  # entry number
        step = 8192  # entries per read: bounded reads, any table size
        while index < n:
            count = min(step, n - index)
            raw = file.read(count * SEEK_ENTRY_SIZE)
            if len(raw) != count * SEEK_ENTRY_SIZE:
                raise _fail("seek table is truncated")
            words = array.array("I", raw)
            if sys.byteorder == "big":
                words.byteswap()
            for k in range(0, 2 * count, 2):
                csize, dsize = words[k], words[k + 1]
                if index == 0:
                    if (csize, dsize) != (HEAD_FRAME_SIZE, 0):
                        raise _fail("seek table entry 0 is not the head frame")
                elif index == n - 1:
                    if dsize != 0:
                        raise _fail("last seek table entry is not the trailer frame")
                else:
                    blen = self._block_len(index - 1)
                    if dsize != blen or not 9 <= csize <= max_frame_size(blen):
                        raise _fail(f"seek table entry {index} has sizes {csize}/{dsize}")
                    pos += csize
                    offsets.append(pos)
                index += 1

    def _trailer_frame_size(self) -> int:
        return 8 + _TRAILER.size + (self.block_count + 7) // 8 + 4

    def _parse_trailer(self, frame: bytes) -> None:
        magic, length = _FRAME_HEAD.unpack_from(frame)
        payload = frame[8:]
        if magic != TRAILER_FRAME_MAGIC or length != len(payload):
            raise _fail("no trailer frame before the seek table")
        if zlib.crc32(payload[:-4]) != int.from_bytes(payload[-4:], "little"):
            raise _fail("trailer record checksum mismatch")
        tmagic, version, res1, flags, vsize, bsize, res2, count, zeros_, digest = (
            _TRAILER.unpack_from(payload)
        )
        if tmagic != TRAILER_MAGIC or version != VERSION or res1 or res2:
            raise _fail("trailer record has a wrong magic, version or reserved field")
        if flags & ~TRAILER_FLAG_DIGEST:
            raise _fail(f"unknown trailer flags 0x{flags:x}")
        if (vsize, bsize, count) != (self.virtual_size, self.block_size, self.block_count):
            raise _fail("trailer record disagrees with the head record")
        bitmap = payload[_TRAILER.size : -4]
        spare = len(bitmap) * 8 - count
        if spare and bitmap[-1] >> (8 - spare):
            raise _fail("zero bitmap has bits set past the last block")
        if int.from_bytes(bitmap, "little").bit_count() != zeros_:
            raise _fail("zero bitmap disagrees with the zero-block count")
        self.bitmap = bitmap
        self.zero_blocks = zeros_
        self.digest = digest if flags & TRAILER_FLAG_DIGEST else None
        for index in range(count):
            if self.is_zero(index):
                csize = self.offsets[index + 1] - self.offsets[index]
                if csize != len(zero_frame(self._block_len(index))):
                    raise _fail(f"block {index} is marked zero but is not a zero frame")

    def is_zero(self, index: int) -> bool:
        return bool(self.bitmap[index >> 3] >> (index & 7) & 1)


class Zvhd2Reader(DiskReader):
    """Random-access reader: one seek and one frame per block read.

    Memory: the seek table (8 bytes a block) plus two cached blocks.
    """

    def __init__(self, file: BinaryIO, layout: _Layout) -> None:
        self._file = file
        self._layout = layout
        self.virtual_size = layout.virtual_size
        self._dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)
        self._cache: collections.OrderedDict[int, bytes] = collections.OrderedDict()

    def _frame(self, index: int) -> bytes:
        start, end = self._layout.offsets[index], self._layout.offsets[index + 1]
        self._file.seek(start)
        buf = self._file.read(end - start)
        if len(buf) != end - start:
            raise _fail(f"block {index} is truncated")
        return buf

    def _decode(self, index: int, buf: bytes) -> bytes:
        blen = self._layout._block_len(index)
        _check_frame(buf, blen)
        try:
            data = self._dctx.decompress(buf, max_output_size=blen)
        except zstandard.ZstdError as ex:
            raise _fail(f"block {index} does not decompress: {ex}") from None
        if len(data) != blen:
            raise _fail(f"block {index} inflates to {len(data)} bytes, not {blen}")
        return data

    def _block(self, index: int) -> bytes:
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        if self._layout.is_zero(index):
            data = zc.zeros(self._layout._block_len(index))
        else:
            data = self._decode(index, self._frame(index))
        self._cache[index] = data
        while len(self._cache) > 2:
            self._cache.popitem(last=False)
        return data

    def extents(self) -> Iterator[Extent]:
        layout = self._layout
        bsize = layout.block_size
        run_start = 0
        run_zero = None
        for index in range(layout.block_count):
            zero = layout.is_zero(index)
            if zero != run_zero:
                if run_zero is not None:
                    yield Extent(run_start, index * bsize - run_start, run_zero)
                run_start, run_zero = index * bsize, zero
        if run_zero is not None:
            yield Extent(run_start, self.virtual_size - run_start, run_zero)

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.virtual_size:
            raise errors.Invalid(f"read of {length} bytes at {offset} is outside the disk")
        bsize = self._layout.block_size
        if length == 0:
            return b""
        parts = []
        pos, end = offset, offset + length
        while pos < end:
            index = pos // bsize
            block = self._block(index)
            inner = pos - index * bsize
            take = min(len(block) - inner, end - pos)
            parts.append(block if take == len(block) else block[inner : inner + take])
            pos += take
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def verify(self) -> dict[str, Any]:
        """Read every frame, zero ones included, and check the whole-disk digest."""
        layout = self._layout
        digests = hashlib.sha256()
        for index in range(layout.block_count):
            blen = layout._block_len(index)
            buf = self._frame(index)
            if layout.is_zero(index):
                if buf != zero_frame(blen):
                    raise _fail(f"block {index} is marked zero but is not a zero frame")
                digests.update(zc.block_digest(None, blen))
            else:
                digests.update(zc.block_digest(self._decode(index, buf), blen))
        if layout.digest is not None and digests.digest() != layout.digest:
            raise _fail("whole-disk digest mismatch")
        return {
            "blocks": layout.block_count,
            "zero-blocks": layout.zero_blocks,
            "digest-checked": layout.digest is not None,
        }


class Zvhd2Format(DiskFormat):
    """The ZVHD2 format: zstd seekable with IMS metadata (docs/formats/zvhd2.md)."""

    name = NAME
    streaming_write = True

    def probe(self, sample: Sample) -> bool:
        head = sample.head
        return (
            len(head) >= 16
            and _FRAME_HEAD.unpack_from(head) == (HEAD_FRAME_MAGIC, HEAD_RECORD_SIZE)
            and head[8:16] == HEAD_MAGIC
        )

    def inspect(self, file: BinaryIO) -> ImageInfo:
        return self._info(_Layout(file))

    def _info(self, layout: _Layout) -> ImageInfo:
        return ImageInfo(
            format=NAME,
            virtual_size=layout.virtual_size,
            actual_size=layout.file_size,
            cluster_size=layout.block_size,
            details={
                "version": VERSION,
                "compression": "zstd",
                "block-size": layout.block_size,
                "blocks": layout.block_count,
                "zero-blocks": layout.zero_blocks,
                "digest": ("sha256-blocks:" + layout.digest.hex()) if layout.digest else None,
            },
        )

    def open(self, file: BinaryIO) -> Zvhd2Reader:
        return Zvhd2Reader(file, _Layout(file))

    def verify(self, file: BinaryIO) -> dict[str, Any]:
        """Read the whole image and check every frame and the digest."""
        return self.open(file).verify()

    def can_write(self) -> bool:
        return True

    def write(
        self, reader: DiskReader, out: BinaryIO, options: dict[str, str] | None = None
    ) -> None:
        """Write ``reader`` as ZVHD2 to a forward-only stream.

        Options: ``level`` (1-19, default 1), ``block_size`` (64K-16M,
        default 1M), ``threads`` (default: CPU count), ``digest`` (on/off,
        default off: the whole-disk SHA-256 costs about 15% more CPU, and
        every data frame carries its own XXH64). Memory: about
        ``(2 * threads + 2) * 2 * block_size`` plus 8 bytes a block for the
        seek table, which only the end of the stream can carry.
        """
        opts = zc.check_options(NAME, options, {"level", "block_size", "threads", "digest"})
        with_digest = zc.parse_bool_option(opts, "digest", False)
        level = zc.parse_int_option(opts, "level", DEFAULT_LEVEL, 1, 19)
        bsize = zc.parse_size_option(opts, "block_size", DEFAULT_BLOCK_SIZE)
        threads = zc.parse_int_option(opts, "threads", os.cpu_count() or 2, 1, 64)
        vsize = reader.virtual_size
        nblocks = math.ceil(vsize / bsize)
        if vsize > MAX_VIRTUAL_SIZE or nblocks > MAX_BLOCKS:
            raise errors.Invalid(
                f"a {vsize}-byte disk needs {nblocks} blocks of {bsize}; zvhd2 allows "
                f"{MAX_BLOCKS} blocks and {MAX_VIRTUAL_SIZE} bytes (raise block_size)"
            )

        base = zstandard.ZstdCompressionParameters.from_level(level, source_size=bsize)
        params = zstandard.ZstdCompressionParameters.from_level(
            level,
            source_size=bsize,
            hash_log=max(base.hash_log, MIN_HASH_LOG),
            write_checksum=1,
            write_content_size=1,
        )
        local = threading.local()

        def encode(item: tuple[int, bytes | None]) -> tuple[bytes, bytes, bool]:
            index, data = item
            if data is None:
                blen = min(bsize, vsize - index * bsize)
                return zero_frame(blen), zc.block_digest(None, blen), True
            cctx = getattr(local, "cctx", None)
            if cctx is None:
                cctx = local.cctx = zstandard.ZstdCompressor(compression_params=params)
            digest = zc.block_digest(data, len(data)) if with_digest else b""
            return cctx.compress(data), digest, False

        def shortcut(item: tuple[int, bytes | None]) -> tuple[bytes, bytes, bool] | None:
            return encode(item) if item[1] is None else None

        head = _HEAD.pack(HEAD_MAGIC, VERSION, HEAD_RECORD_SIZE, 0, vsize, bsize, 0, nblocks)
        head += bytes(HEAD_RECORD_SIZE - 4 - len(head))
        out.write(_skippable(HEAD_FRAME_MAGIC, head + zlib.crc32(head).to_bytes(4, "little")))

        sizes = array.array("I")  # compressed size per block; the seek table
        bitmap = bytearray((nblocks + 7) // 8)
        digests = hashlib.sha256()
        blocks = enumerate(zc.iter_disk_blocks(reader, bsize))
        for index, (frame, digest, zero) in enumerate(
            zc.ordered_map(encode, blocks, shortcut, threads)
        ):
            out.write(frame)
            sizes.append(len(frame))
            digests.update(digest)
            if zero:
                bitmap[index >> 3] |= 1 << (index & 7)
        zero_count = int.from_bytes(bitmap, "little").bit_count()
        record = _TRAILER.pack(
            TRAILER_MAGIC,
            VERSION,
            0,
            TRAILER_FLAG_DIGEST if with_digest else 0,
            vsize,
            bsize,
            0,
            nblocks,
            zero_count,
            digests.digest() if with_digest else bytes(32),
        ) + bytes(bitmap)
        trailer = _skippable(
            TRAILER_FRAME_MAGIC, record + zlib.crc32(record).to_bytes(4, "little")
        )
        out.write(trailer)

        n = nblocks + 2
        out.write(_FRAME_HEAD.pack(SEEK_TABLE_MAGIC, n * SEEK_ENTRY_SIZE + _FOOTER.size))
        out.write(struct.pack("<II", HEAD_FRAME_SIZE, 0))
        step = 8192
        for start in range(0, nblocks, step):
            chunk = array.array("I")
            for index in range(start, min(nblocks, start + step)):
                chunk.append(sizes[index])
                chunk.append(min(bsize, vsize - index * bsize))
            if sys.byteorder == "big":
                chunk.byteswap()
            out.write(chunk.tobytes())
        out.write(struct.pack("<II", len(trailer), 0))
        out.write(_FOOTER.pack(n, 0, SEEKABLE_FOOTER_MAGIC))
