"""ZVHD: a virtual disk as one gzip stream, written and read in one pass.

The layout is specified in docs/formats/zvhd.md. In short: member 1 is a
gzip member whose FEXTRA "IM" subfield carries the IMS head record (virtual
size, block size) and whose payload is the raw disk; member 2 is an empty
gzip member whose "IM" subfield carries the end record (data member length,
whole-disk digest). ``gzip -d`` therefore yields the raw disk.

The writer deflates fixed-size blocks independently on a thread pool, each
ending on a byte boundary (Z_SYNC_FLUSH), and concatenates them into one
deflate stream; the gzip CRC-32 is combined from per-block CRCs. The reader
inflates forwards with bounded output per step; reading backwards restarts.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import math
import os
import struct
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO

from ims import errors
from ims.disk.model import DiskReader, Extent, ImageInfo, Sample
from ims.drivers.formats import _zcommon as zc
from ims.drivers.formats.base import DiskFormat

NAME = "zvhd"

GZIP_ID = b"\x1f\x8b"
CM_DEFLATE = 8
FEXTRA = 0x04
OS_UNKNOWN = 255
SUBFIELD_ID = b"IM"
HEAD_MAGIC = b"ZVHD"
END_MAGIC = b"ZVHE"
VERSION = 1
END_FLAG_DIGEST = 0x0001

#: Head record: magic, version, flags, virtual size, block size, reserved.
_HEAD = struct.Struct("<4sHHQII")
#: End record: magic, version, flags, virtual size, data member length, digest.
_END = struct.Struct("<4sHHQQ32s")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")

HEAD_RECORD_SIZE = _HEAD.size + 4
END_RECORD_SIZE = _END.size + 4
#: gzip fixed header (10) + XLEN (2) + subfield header (4) + record.
HEADER_SIZE = 10 + 2 + 4 + HEAD_RECORD_SIZE
#: The end member: header + subfield + empty final deflate block + trailer.
EMPTY_DEFLATE = b"\x03\x00"
END_MEMBER_SIZE = 10 + 2 + 4 + END_RECORD_SIZE + len(EMPTY_DEFLATE) + 8

#: Largest virtual disk IMS accepts (64 TiB, the VHDX limit).
MAX_VIRTUAL_SIZE = 64 << 40
#: Deflate cannot expand more than 1032:1 (a 258-byte match in 2 bits).
MAX_DEFLATE_RATIO = 1032

DEFAULT_BLOCK_SIZE = 1 * zc.MiB
DEFAULT_LEVEL = 1
#: Independent deflate segment inside a block; see _deflate_block.
SEGMENT = 128 * zc.KiB
#: Reader unit: zero detection and the read cache work per chunk.
CHUNK = 1 * zc.MiB
#: How much compressed input one reader step takes from the file.
INPUT_STEP = 256 * zc.KiB


def _fail(reason: str) -> errors.ImageFormatError:
    return errors.ImageFormatError(format=NAME, reason=reason)


def _sealed(record: bytes) -> bytes:
    return record + _U32.pack(zlib.crc32(record))


def _unseal(record: bytes, what: str) -> bytes:
    body, (crc,) = record[:-4], _U32.unpack(record[-4:])
    if zlib.crc32(body) != crc:
        raise _fail(f"{what} record checksum mismatch")
    return body


def _gzip_header(record: bytes) -> bytes:
    xlen = 4 + len(record)
    return (
        GZIP_ID
        + bytes((CM_DEFLATE, FEXTRA))
        + b"\0\0\0\0"  # MTIME: none, so output is reproducible
        + bytes((0, OS_UNKNOWN))  # XFL, OS
        + _U16.pack(xlen)
        + SUBFIELD_ID
        + _U16.pack(len(record))
        + record
    )


def _find_subfield(head: bytes) -> tuple[bytes, int]:
    """Return (the IM subfield data, header length) of a gzip member head."""
    if len(head) < 12 or head[:2] != GZIP_ID:
        raise _fail("not a gzip stream")
    if head[2] != CM_DEFLATE:
        raise _fail(f"gzip compression method {head[2]} is not deflate")
    if not head[3] & FEXTRA:
        raise _fail("gzip stream without the IMS subfield (a plain .gz, not zvhd)")
    if head[3] != FEXTRA:
        raise _fail(f"gzip flags 0x{head[3]:02x} are not FEXTRA alone")
    (xlen,) = _U16.unpack_from(head, 10)
    end = 12 + xlen
    if len(head) < end:
        raise _fail("gzip extra field is truncated")
    found = None
    pos = 12
    while pos < end:
        if end - pos < 4:
            raise _fail("gzip extra subfield header is truncated")
        sid = head[pos : pos + 2]
        (length,) = _U16.unpack_from(head, pos + 2)
        if pos + 4 + length > end:
            raise _fail("gzip extra subfield overruns the extra field")
        if sid == SUBFIELD_ID:
            if found is not None:
                raise _fail("more than one IMS subfield")
            found = head[pos + 4 : pos + 4 + length]
        pos += 4 + length
    if found is None:
        raise _fail("gzip stream without the IMS subfield (a plain .gz, not zvhd)")
    return found, end


class _Meta:
    """What the head and end records say, after validation."""

    def __init__(self, file: BinaryIO) -> None:
        file.seek(0, os.SEEK_END)
        self.file_size = file.tell()
        file.seek(0)
        head = file.read(12 + 0xFFFF)
        record, self.header_len = _find_subfield(head)
        if len(record) != HEAD_RECORD_SIZE:
            raise _fail(f"head record is {len(record)} bytes, not {HEAD_RECORD_SIZE}")
        magic, version, flags, vsize, bsize, reserved = _HEAD.unpack(record[:-4])
        if magic != HEAD_MAGIC:
            raise _fail("IMS subfield is not a zvhd head record")
        _unseal(record, "head")
        if version != VERSION:
            raise _fail(f"unsupported zvhd version {version}")
        if flags or reserved:
            raise _fail(f"unknown head flags 0x{flags:04x} or reserved 0x{reserved:x}")
        if vsize > MAX_VIRTUAL_SIZE:
            raise _fail(f"virtual size {vsize} exceeds {MAX_VIRTUAL_SIZE}")
        self.virtual_size = vsize
        self.block_size = zc.check_block_size(NAME, bsize)

        if self.file_size < self.header_len + len(EMPTY_DEFLATE) + 8 + END_MEMBER_SIZE:
            raise _fail(f"file of {self.file_size} bytes is too short")
        file.seek(self.file_size - END_MEMBER_SIZE)
        tail = file.read(END_MEMBER_SIZE)
        if len(tail) != END_MEMBER_SIZE:
            raise _fail("could not read the end member")
        end_record, end_header_len = _find_subfield(tail)
        if len(end_record) != END_RECORD_SIZE:
            raise _fail("end member does not hold an end record")
        body = _unseal(end_record, "end")
        magic, version, flags, vsize2, data_len, digest = _END.unpack(body)
        if magic != END_MAGIC or version != VERSION:
            raise _fail("end record has a wrong magic or version")
        if flags & ~END_FLAG_DIGEST:
            raise _fail(f"unknown end flags 0x{flags:04x}")
        if vsize2 != vsize:
            raise _fail(f"end record says virtual size {vsize2}, head says {vsize}")
        if tail[end_header_len:] != EMPTY_DEFLATE + bytes(8):
            raise _fail("end member payload is not empty")
        if data_len + END_MEMBER_SIZE != self.file_size:
            raise _fail(f"data member length {data_len} does not match file size {self.file_size}")
        self.data_member_len = data_len
        self.digest = digest if flags & END_FLAG_DIGEST else None
        payload = data_len - self.header_len - 8
        if payload < len(EMPTY_DEFLATE) or vsize > MAX_DEFLATE_RATIO * (payload + 1):
            raise _fail(f"{payload} compressed bytes cannot hold a {vsize}-byte disk")


class ZvhdReader(DiskReader):
    """Forward-inflating reader; extents come from zero detection per chunk.

    Memory: two cached chunks plus one input step, whatever the disk size.
    """

    def __init__(self, file: BinaryIO, meta: _Meta) -> None:
        self._file = file
        self._meta = meta
        self.virtual_size = meta.virtual_size
        self._cache: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._dobj: Any = None
        self._in_pos = 0
        self._out_pos = 0
        self._crc = 0
        self._finished = False

    # -- the inflater ---------------------------------------------------
    def _restart(self) -> None:
        self._dobj = zlib.decompressobj(-15)
        self._in_pos = self._meta.header_len
        self._out_pos = 0
        self._crc = 0
        self._finished = False

    def _read_input(self) -> bytes:
        want = min(INPUT_STEP, self._meta.data_member_len - self._in_pos)
        if want <= 0:
            return b""
        self._file.seek(self._in_pos)
        data = self._file.read(want)
        self._in_pos += len(data)
        return data

    def _feed(self, limit: int) -> bytes:
        """Inflate at most ``limit`` bytes (> 0), reading input as needed."""
        data = self._dobj.unconsumed_tail
        if not data:
            data = self._read_input()
            if not data:
                raise _fail(f"compressed data ends at disk offset {self._out_pos}")
        try:
            return self._dobj.decompress(data, limit)
        except zlib.error as ex:
            raise _fail(f"deflate error near disk offset {self._out_pos}: {ex}") from None

    def _advance(self, length: int) -> bytes:
        """Return the next ``length`` bytes of the disk, verifying at the end."""
        parts = []
        got = 0
        while got < length:
            if self._dobj.eof:
                raise _fail(f"deflate stream ends at disk offset {self._out_pos + got}")
            piece = self._feed(length - got)
            parts.append(piece)
            got += len(piece)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self._crc = zlib.crc32(data, self._crc)
        self._out_pos += length
        if self._out_pos == self.virtual_size:
            self._finish()
        return data

    def _finish(self) -> None:
        """Check that the stream ends exactly at the virtual size, then the trailer."""
        if self._dobj is None:
            self._restart()
        while not self._dobj.eof:
            # APPSEC(ims): one byte of extra output is enough to refuse.
            if self._feed(1):
                raise _fail("deflate stream holds more than the virtual size")
        rest = self._dobj.unused_data
        left = self._meta.data_member_len - self._in_pos
        if len(rest) + left != 8:
            raise _fail("deflate stream does not end right before the gzip trailer")
        rest += self._read_input()
        crc, isize = struct.unpack("<II", rest)
        if crc != self._crc:
            raise _fail("gzip CRC-32 mismatch")
        if isize != self.virtual_size & 0xFFFFFFFF:
            raise _fail("gzip ISIZE does not match the virtual size")
        self._finished = True

    # -- the DiskReader API ---------------------------------------------
    def _chunk(self, index: int) -> bytes:
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        start = index * CHUNK
        if self._dobj is None or self._out_pos > start:
            self._restart()
        while self._out_pos < start:
            self._advance(min(CHUNK, start - self._out_pos))
        data = self._advance(min(CHUNK, self.virtual_size - start))
        self._cache[index] = data
        while len(self._cache) > 2:
            self._cache.popitem(last=False)
        return data

    def extents(self) -> Iterator[Extent]:
        """Yield zero runs merged and data chunk by chunk, inflating once."""
        zero_start: int | None = None
        for index in range(math.ceil(self.virtual_size / CHUNK)):
            start = index * CHUNK
            data = self._chunk(index)
            if zc.is_zero(data):
                if zero_start is None:
                    zero_start = start
                continue
            if zero_start is not None:
                yield Extent(zero_start, start - zero_start, True)
                zero_start = None
            yield Extent(start, len(data), False)
        if zero_start is not None:
            yield Extent(zero_start, self.virtual_size - zero_start, True)

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.virtual_size:
            raise errors.Invalid(f"read of {length} bytes at {offset} is outside the disk")
        if length == 0:
            return b""
        parts = []
        pos, end = offset, offset + length
        while pos < end:
            index = pos // CHUNK
            chunk = self._chunk(index)
            inner = pos - index * CHUNK
            take = min(len(chunk) - inner, end - pos)
            parts.append(chunk if take == len(chunk) else chunk[inner : inner + take])
            pos += take
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def verify(self) -> dict[str, Any]:
        """Inflate everything once, checking CRC-32, ISIZE, end and digest."""
        self._restart()
        self._cache.clear()
        bsize = self._meta.block_size
        digests = hashlib.sha256()
        zero_blocks = 0
        pos = 0
        while pos < self.virtual_size:
            data = self._advance(min(bsize, self.virtual_size - pos))
            pos += len(data)
            if zc.is_zero(data):
                zero_blocks += 1
            digests.update(zc.block_digest(data, len(data)))
        if not self._finished:
            self._finish()
        if self._meta.digest is not None and digests.digest() != self._meta.digest:
            raise _fail("whole-disk digest mismatch")
        blocks = math.ceil(self.virtual_size / bsize)
        return {
            "blocks": blocks,
            "zero-blocks": zero_blocks,
            "digest-checked": bool(self._meta.digest),
        }


# -- the writer ------------------------------------------------------------


def _incompressible(piece: bytes) -> bool:
    """Guess from three 4 KiB samples whether deflating ``piece`` is a waste.

    PERF(ims): deflate crawls over random data (~50 MB/s) to save nothing;
    storing such segments keeps the writer near memory speed.
    """
    size = len(piece)
    if size < 16 * 1024:
        return False
    for start in (0, size // 2, size - 4096):
        sample = piece[start : start + 4096]
        if len(zlib.compress(sample, 1)) < 4000:
            return False
    return True


_ZERO_SEGMENT = bytes(SEGMENT)


@functools.lru_cache(maxsize=10)
def _zero_segment(level: int) -> bytes:
    comp = zlib.compressobj(level, zlib.DEFLATED, -15, 9)
    return comp.compress(_ZERO_SEGMENT) + comp.flush(zlib.Z_SYNC_FLUSH)


def _deflate_block(data: bytes | memoryview, level: int, final: bool) -> bytes:
    """Deflate one block as independent segments, ending on a byte boundary.

    Each segment gets its own compressor, so no back-reference crosses a
    segment and any segment start is a clean restart point of the stream.
    """
    data = bytes(data)
    out = []
    size = len(data)
    for start in range(0, size, SEGMENT):
        # NOTE(ims): bytes slices (memcpy) compare far faster than memoryviews.
        piece = data[start : start + SEGMENT]
        last = final and start + SEGMENT >= size
        if not last and len(piece) == SEGMENT and piece == _ZERO_SEGMENT:
            # PERF(ims): partly filled blocks end in zeros; reuse their encoding.
            out.append(_zero_segment(level))
            continue
        lvl = 0 if level and _incompressible(piece) else level
        comp = zlib.compressobj(lvl, zlib.DEFLATED, -15, 9)
        out.append(comp.compress(piece))
        out.append(comp.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH))
    if size == 0 and final:
        out.append(zlib.compressobj(level, zlib.DEFLATED, -15).flush())
    return b"".join(out)


class ZvhdFormat(DiskFormat):
    """The ZVHD format: a gzip stream with IMS metadata (docs/formats/zvhd.md)."""

    name = NAME
    streaming_write = True

    def probe(self, sample: Sample) -> bool:
        head = sample.head
        if len(head) < 16 or head[:3] != GZIP_ID + bytes((CM_DEFLATE,)):
            return False
        try:
            record, _ = _find_subfield(head)
        except errors.ImageFormatError:
            return False
        return record[:4] == HEAD_MAGIC

    def inspect(self, file: BinaryIO) -> ImageInfo:
        meta = _Meta(file)
        return self._info(meta)

    def _info(self, meta: _Meta) -> ImageInfo:
        return ImageInfo(
            format=NAME,
            virtual_size=meta.virtual_size,
            actual_size=meta.file_size,
            cluster_size=meta.block_size,
            details={
                "version": VERSION,
                "compression": "deflate",
                "block-size": meta.block_size,
                "digest": ("sha256-blocks:" + meta.digest.hex()) if meta.digest else None,
            },
        )

    def open(self, file: BinaryIO) -> ZvhdReader:
        return ZvhdReader(file, _Meta(file))

    def verify(self, file: BinaryIO) -> dict[str, Any]:
        """Read the whole image and check every checksum; return a summary."""
        reader = self.open(file)
        return reader.verify()

    def can_write(self) -> bool:
        return True

    def write(
        self, reader: DiskReader, out: BinaryIO, options: dict[str, str] | None = None
    ) -> None:
        """Write ``reader`` as ZVHD to a forward-only stream.

        Options: ``level`` (0-9, default 1), ``block_size`` (64K-16M, default
        1M), ``threads`` (default: CPU count), ``digest`` (on/off, default off,
        as zvhd2: the gzip CRC-32 covers the payload). Memory: about
        ``(2 * threads + 2) * 2 * block_size``.
        """
        opts = zc.check_options(NAME, options, {"level", "block_size", "threads", "digest"})
        with_digest = zc.parse_bool_option(opts, "digest", False)
        level = zc.parse_int_option(opts, "level", DEFAULT_LEVEL, 0, 9)
        bsize = zc.parse_size_option(opts, "block_size", DEFAULT_BLOCK_SIZE)
        threads = zc.parse_int_option(opts, "threads", os.cpu_count() or 2, 1, 64)
        vsize = reader.virtual_size
        if vsize > MAX_VIRTUAL_SIZE:
            raise errors.Invalid(f"virtual size {vsize} exceeds the zvhd limit")
        nblocks = math.ceil(vsize / bsize)

        header = _gzip_header(_sealed(_HEAD.pack(HEAD_MAGIC, VERSION, 0, vsize, bsize, 0)))
        zero_full = (
            _deflate_block(zc.zeros(bsize), level, False),
            zc.zero_crc32(bsize),
            bsize,
            zc.block_digest(None, bsize),
        )

        def encode(item: tuple[int, bytes | None]) -> tuple[bytes, int, int, bytes]:
            index, data = item
            blen = min(bsize, vsize - index * bsize)
            final = index == nblocks - 1
            if data is None:
                data = zc.zeros(blen)
            return (
                _deflate_block(data, level, final),
                zlib.crc32(data),
                blen,
                zc.block_digest(data, blen) if with_digest else b"",
            )

        def shortcut(item: tuple[int, bytes | None]) -> tuple[bytes, int, int, bytes] | None:
            index, data = item
            if data is None and index < nblocks - 1:
                return zero_full
            return None

        out.write(header)
        written = len(header)
        crc = 0
        digests = hashlib.sha256()
        blocks = enumerate(zc.iter_disk_blocks(reader, bsize))
        for comp, bcrc, blen, bdigest in zc.ordered_map(encode, blocks, shortcut, threads):
            out.write(comp)
            written += len(comp)
            crc = zc.crc32_combine(crc, bcrc, blen)
            digests.update(bdigest)
        if nblocks == 0:
            out.write(EMPTY_DEFLATE)
            written += len(EMPTY_DEFLATE)
        out.write(struct.pack("<II", crc, vsize & 0xFFFFFFFF))
        written += 8
        end = _END.pack(
            END_MAGIC,
            VERSION,
            END_FLAG_DIGEST if with_digest else 0,
            vsize,
            written,
            digests.digest() if with_digest else bytes(32),
        )
        out.write(_gzip_header(_sealed(end)) + EMPTY_DEFLATE + bytes(8))
