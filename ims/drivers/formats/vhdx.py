"""VHDX (Hyper-V): fixed and dynamic disks read, dynamic disks written.

Layout (little endian, MS-VHDX): a 1 MiB header section (file identifier,
two CRC-32C protected headers, two region tables), then regions placed at
MiB boundaries: the log, the block allocation table (BAT) and the metadata
region (file parameters, virtual disk size, sector sizes). Payload blocks
are whole MiB multiples; their BAT entry holds a state and a file offset.
Without a parent, states "not present", "undefined", "zero" and "unmapped"
all read as zeros and "fully present" is data.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator
from typing import BinaryIO

import google_crc32c

from ims import errors
from ims.disk.model import BLOCK_SIZE, DiskReader, ImageInfo, Sample
from ims.drivers.formats._vmcommon import (
    MappedReader,
    MiB,
    Source,
    TiB,
    UnitMap,
    bad,
    extend_to,
    is_zero,
    iter_data_windows,
    need_seekable,
    parse_options,
    unsafe,
)
from ims.drivers.formats.base import DiskFormat

FMT = "vhdx"
FILE_SIG = b"vhdxfile"
HEADER_OFFSETS = (64 * 1024, 128 * 1024)
HEADER_SIZE = 4096
REGION_OFFSETS = (192 * 1024, 256 * 1024)
REGION_SIZE = 64 * 1024
MAX_ENTRIES = 2047
METADATA_TABLE_SIZE = 64 * 1024
MAX_SIZE = 64 * TiB
MIN_BLOCK, MAX_BLOCK = MiB, 256 * MiB
#: Block size of the disks IMS writes: small enough to keep exports sparse.
WRITE_BLOCK = 2 * MiB
BAT_SLICE = 65536


def _guid(text: str) -> bytes:
    return uuid.UUID(text).bytes_le


BAT_REGION = _guid("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA_REGION = _guid("8B7CA206-4790-4B9A-B8FE-575F050F886E")
FILE_PARAMETERS = _guid("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
VIRTUAL_DISK_SIZE = _guid("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
PAGE83 = _guid("BECA12AB-B2E6-4523-93EF-C309E000C746")
LOGICAL_SECTOR = _guid("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
PHYSICAL_SECTOR = _guid("CDA348C7-445D-4471-9CC9-E9885251C556")
PARENT_LOCATOR = _guid("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
KNOWN_ITEMS = {
    FILE_PARAMETERS: ("file parameters", 8),
    VIRTUAL_DISK_SIZE: ("virtual disk size", 8),
    PAGE83: ("page 83 data", 16),
    LOGICAL_SECTOR: ("logical sector size", 4),
    PHYSICAL_SECTOR: ("physical sector size", 4),
}

# Payload block states.
NOT_PRESENT, UNDEFINED, ZERO, UNMAPPED, UNMAPPED_V095 = 0, 1, 2, 3, 5
FULLY_PRESENT, PARTIALLY_PRESENT = 6, 7
ZERO_STATES = frozenset({NOT_PRESENT, UNDEFINED, ZERO, UNMAPPED, UNMAPPED_V095})
OFFSET_MASK = 0xFFFFFFFFFFF00000

_HEADER = struct.Struct("<4sIQ16s16s16sHHIQ")
_REGION_HEAD = struct.Struct("<4sII4x")
_REGION_ENTRY = struct.Struct("<16sQII")
_META_HEAD = struct.Struct("<8s2xH20x")
_META_ENTRY = struct.Struct("<16sIII4x")
FLAG_REQUIRED = 4
FLAG_VIRTUAL_DISK = 2


def crc32c(data: bytes | bytearray) -> int:
    """Return the CRC-32C (Castagnoli) of ``data``."""
    return google_crc32c.value(bytes(data))


def _crc_ok(block: bytes) -> bool:
    stored = struct.unpack_from("<I", block, 4)[0]
    return crc32c(block[:4] + b"\0\0\0\0" + block[8:]) == stored


class VhdxReader(MappedReader):
    """Block-mapped reads of a validated VHDX."""

    def __init__(
        self, source: Source, virtual_size: int, block_size: int, chunk_ratio: int, bat: int
    ) -> None:
        super().__init__(source, virtual_size)
        self._bs = block_size
        self._cr = chunk_ratio
        self._bat = bat
        self.extent_chunk = block_size * BAT_SLICE

    def _runs(self, offset: int, length: int) -> Iterator[tuple[int, int, int]]:
        bs, cr = self._bs, self._cr
        first = offset // bs
        last = (offset + length - 1) // bs
        i0 = first + first // cr
        i1 = last + last // cr
        raw = self.source.pread(self._bat + i0 * 8, (i1 - i0 + 1) * 8, "BAT")
        if raw == bytes(len(raw)):  # all NOT_PRESENT: one zero run
            yield offset, length, -1
            return
        entries = struct.unpack(f"<{i1 - i0 + 1}Q", raw)
        end = offset + length
        pos = offset
        for block in range(first, last + 1):
            entry = entries[block + block // cr - i0]
            bstart = block * bs
            seg_end = min(end, bstart + bs)
            if entry & 7 == FULLY_PRESENT:
                yield pos, seg_end - pos, (entry & OFFSET_MASK) + (pos - bstart)
            else:
                yield pos, seg_end - pos, -1
            pos = seg_end


class _Layout:
    """What parsing found: where things are and how big."""

    virtual_size = 0
    block_size = 0
    logical_sector = 512
    physical_sector = 512
    leave_allocated = False
    bat_offset = 0
    bat_length = 0
    chunk_ratio = 1


class VhdxFormat(DiskFormat):
    """Hyper-V VHDX without parents or pending logs."""

    name = FMT

    def probe(self, sample: Sample) -> bool:
        return sample.head[:8] == FILE_SIG

    def inspect(self, file: BinaryIO) -> ImageInfo:
        src = Source(file, FMT)
        return self._info(src, self._parse(src))

    def open(self, file: BinaryIO) -> DiskReader:
        src = Source(file, FMT)
        lay = self._parse(src)
        return VhdxReader(src, lay.virtual_size, lay.block_size, lay.chunk_ratio, lay.bat_offset)

    @staticmethod
    def _info(src: Source, lay: _Layout) -> ImageInfo:
        details = {
            "subformat": "fixed" if lay.leave_allocated else "dynamic",
            "logical_sector_size": lay.logical_sector,
            "physical_sector_size": lay.physical_sector,
        }
        return ImageInfo(FMT, lay.virtual_size, src.size, lay.block_size, details)

    # -- parsing -----------------------------------------------------------

    def _parse(self, src: Source) -> _Layout:
        if src.size < MiB:
            raise bad(FMT, "file is shorter than the 1 MiB header section")
        if src.pread(0, 8, "file identifier") != FILE_SIG:
            raise bad(FMT, "no file identifier")
        used = UnitMap(src.size, MiB)
        used.claim(0, MiB)
        self._parse_header(src, used)
        regions = self._parse_regions(src, used)
        lay = _Layout()
        meta_off, meta_len = regions[METADATA_REGION]
        self._parse_metadata(src, meta_off, meta_len, lay)
        lay.bat_offset, lay.bat_length = regions[BAT_REGION]
        lay.chunk_ratio = (1 << 23) * lay.logical_sector // lay.block_size
        blocks = -(-lay.virtual_size // lay.block_size)
        entries = blocks + (blocks - 1) // lay.chunk_ratio if blocks else 0
        if entries * 8 > lay.bat_length:
            raise bad(FMT, f"BAT region of {lay.bat_length} bytes is too small")
        self._check_bat(src, lay, blocks, used)
        return lay

    @staticmethod
    def _parse_header(src: Source, used: UnitMap) -> None:
        best: tuple[int, bytes] | None = None
        for off in HEADER_OFFSETS:
            raw = src.pread(off, HEADER_SIZE, "header")
            if raw[:4] != b"head" or not _crc_ok(raw):
                continue
            seq = struct.unpack_from("<Q", raw, 8)[0]
            if best is None or seq > best[0]:
                best = (seq, raw)
        if best is None:
            raise bad(FMT, "no valid header (signature or CRC-32C mismatch)")
        (_sig, _crc, _seq, _fw, _dw, log_guid, _log_ver, version, log_len, log_off) = (
            _HEADER.unpack_from(best[1])
        )
        if version != 1:
            raise bad(FMT, f"unsupported version {version}")
        if any(log_guid):
            raise unsafe(FMT, "the log is not empty (LogGuid set): replay it first")
        if log_len:
            if log_len % MiB or log_off % MiB or log_off < MiB:
                raise bad(FMT, "log is not MiB aligned")
            src.check(log_off, log_len, "log")
            if not used.claim(log_off, log_len):
                raise bad(FMT, "log overlaps the header section")

    @staticmethod
    def _parse_regions(src: Source, used: UnitMap) -> dict[bytes, tuple[int, int]]:
        raw = src.pread(REGION_OFFSETS[0], REGION_SIZE, "region table")
        if raw[:4] != b"regi" or not _crc_ok(raw):
            raw = src.pread(REGION_OFFSETS[1], REGION_SIZE, "region table")
            if raw[:4] != b"regi" or not _crc_ok(raw):
                raise bad(FMT, "no valid region table (signature or CRC-32C mismatch)")
        _sig, _crc, count = _REGION_HEAD.unpack_from(raw)
        if count > MAX_ENTRIES:
            raise bad(FMT, f"region table has {count} entries (max {MAX_ENTRIES})")
        regions: dict[bytes, tuple[int, int]] = {}
        for i in range(count):
            guid, off, length, required = _REGION_ENTRY.unpack_from(raw, 16 + 32 * i)
            if guid not in (BAT_REGION, METADATA_REGION):
                if required & 1:
                    raise unsafe(FMT, f"unknown required region {uuid.UUID(bytes_le=guid)}")
            if guid in regions:
                raise bad(FMT, "duplicate region")
            if off % MiB or off < MiB or length % MiB or length == 0:
                raise bad(FMT, f"region {i} is not MiB aligned")
            src.check(off, length, f"region {i}")
            if not used.claim(off, length):
                raise bad(FMT, f"region {i} overlaps another region, the log or the header")
            regions[guid] = (off, length)
        for guid, what in ((BAT_REGION, "BAT"), (METADATA_REGION, "metadata")):
            if guid not in regions:
                raise bad(FMT, f"no {what} region")
        return regions

    @staticmethod
    def _parse_metadata(src: Source, meta_off: int, meta_len: int, lay: _Layout) -> None:
        table = src.pread(meta_off, METADATA_TABLE_SIZE, "metadata table")
        sig, count = _META_HEAD.unpack_from(table)
        if sig != b"metadata":
            raise bad(FMT, "no metadata table signature")
        if count > MAX_ENTRIES:
            raise bad(FMT, f"metadata table has {count} entries (max {MAX_ENTRIES})")
        items: dict[bytes, bytes] = {}
        spans: list[tuple[int, int]] = []
        for i in range(count):
            guid, off, length, flags = _META_ENTRY.unpack_from(table, 32 + 32 * i)
            if guid == PARENT_LOCATOR:
                raise unsafe(FMT, "the disk has a parent locator (differencing disk)")
            if guid in items:
                raise bad(FMT, "duplicate metadata item")
            if length:
                if off < METADATA_TABLE_SIZE or length > MiB or off + length > meta_len:
                    raise bad(FMT, f"metadata item {i} is outside the metadata region")
                spans.append((off, off + length))
            if guid not in KNOWN_ITEMS:
                if flags & FLAG_REQUIRED:
                    raise unsafe(FMT, f"unknown required metadata {uuid.UUID(bytes_le=guid)}")
                continue
            what, size = KNOWN_ITEMS[guid]
            if length < size:
                raise bad(FMT, f"metadata item {what} is too short")
            items[guid] = src.pread(meta_off + off, size, what)
        spans.sort()
        for (_a, prev_end), (start, _b) in zip(spans, spans[1:], strict=False):
            if start < prev_end:
                raise bad(FMT, "metadata items overlap")
        for guid in (FILE_PARAMETERS, VIRTUAL_DISK_SIZE, LOGICAL_SECTOR):
            if guid not in items:
                raise bad(FMT, f"no {KNOWN_ITEMS[guid][0]} metadata")
        block_size, fp_flags = struct.unpack("<II", items[FILE_PARAMETERS])
        if fp_flags & 2:
            raise unsafe(FMT, "HasParent is set (differencing disk)")
        if block_size & (block_size - 1) or not MIN_BLOCK <= block_size <= MAX_BLOCK:
            raise bad(FMT, f"unsupported block size {block_size}")
        lss = struct.unpack("<I", items[LOGICAL_SECTOR])[0]
        if lss not in (512, 4096):
            raise bad(FMT, f"unsupported logical sector size {lss}")
        pss = 512
        if PHYSICAL_SECTOR in items:
            pss = struct.unpack("<I", items[PHYSICAL_SECTOR])[0]
            if pss not in (512, 4096):
                raise bad(FMT, f"unsupported physical sector size {pss}")
        size = struct.unpack("<Q", items[VIRTUAL_DISK_SIZE])[0]
        if size > MAX_SIZE:
            raise unsafe(FMT, f"virtual size {size} exceeds the 64 TiB limit")
        if size % lss:
            raise bad(FMT, f"virtual size {size} is not a multiple of the sector size")
        lay.virtual_size = size
        lay.block_size = block_size
        lay.logical_sector = lss
        lay.physical_sector = pss
        lay.leave_allocated = bool(fp_flags & 1)

    @staticmethod
    def _check_bat(src: Source, lay: _Layout, blocks: int, used: UnitMap) -> None:
        """Check every payload entry: known state, inside the file, alone."""
        bs, cr = lay.block_size, lay.chunk_ratio
        for first in range(0, blocks, BAT_SLICE):
            last = min(blocks, first + BAT_SLICE) - 1
            i0 = first + first // cr
            i1 = last + last // cr
            raw = src.pread(lay.bat_offset + i0 * 8, (i1 - i0 + 1) * 8, "BAT")
            if raw == bytes(len(raw)):
                continue
            entries = struct.unpack(f"<{i1 - i0 + 1}Q", raw)
            for block in range(first, last + 1):
                entry = entries[block + block // cr - i0]
                state = entry & 7
                if state in ZERO_STATES:
                    continue
                if state == PARTIALLY_PRESENT:
                    raise unsafe(FMT, f"block {block} is partially present (differencing disk)")
                if state != FULLY_PRESENT:
                    raise bad(FMT, f"block {block} has unknown state {state}")
                off = entry & OFFSET_MASK
                need = min(bs, lay.virtual_size - block * bs)
                if off < MiB:
                    raise bad(FMT, f"block {block} points into the header section")
                src.check(off, need, f"block {block}")
                if not used.claim(off, need):
                    raise bad(FMT, f"block {block} overlaps metadata or another block")

    # -- writing -------------------------------------------------------------

    def can_write(self) -> bool:
        return True

    def write(
        self, reader: DiskReader, out: BinaryIO, options: dict[str, str] | None = None
    ) -> None:
        """Write a dynamic VHDX; the output must be seekable (the BAT comes first)."""
        opts = parse_options(FMT, options, {"subformat": ("dynamic",), "block_size": None})
        bs = WRITE_BLOCK
        if "block_size" in opts:
            try:
                bs = int(opts["block_size"])
            except ValueError:
                raise errors.Invalid("vhdx block_size must be an integer") from None
            if bs & (bs - 1) or not MIN_BLOCK <= bs <= MAX_BLOCK:
                raise errors.Invalid("vhdx block_size must be a power of two, 1 to 256 MiB")
        need_seekable(out, "vhdx")
        size = -(-reader.virtual_size // 512) * 512
        if size > MAX_SIZE:
            raise errors.Invalid(f"A VHDX holds at most 64 TiB, not {reader.virtual_size} bytes")
        _Writer(out, size, bs).write(reader)


class _Writer:
    """Lay out and write one dynamic VHDX on a seekable file.

    Layout: header section, log (1 MiB, empty) at 1 MiB, metadata at 2 MiB,
    BAT at 3 MiB, then payload blocks appended as data is found. The BAT is
    filled one 1 MiB page at a time, since blocks arrive in order.
    """

    LOG_OFF = MiB
    META_OFF = 2 * MiB
    BAT_OFF = 3 * MiB
    PAGE = MiB // 8

    def __init__(self, out: BinaryIO, size: int, bs: int) -> None:
        self.out = out
        self.base = out.tell()
        self.size = size
        self.bs = bs
        self.cr = (1 << 23) * 512 // bs
        blocks = -(-size // bs)
        self.entries = blocks + (blocks - 1) // self.cr if blocks else 0
        self.bat_len = max(MiB, -(-self.entries * 8 // MiB) * MiB)
        self.data_off = self.BAT_OFF + self.bat_len
        self.next_off = self.data_off
        self.page_no = -1
        self.page = bytearray()
        self.dirty = False

    def _pwrite(self, offset: int, data: bytes | bytearray) -> None:
        self.out.seek(self.base + offset)
        self.out.write(data)

    def write(self, reader: DiskReader) -> None:
        self._write_metadata()
        window = min(self.bs, BLOCK_SIZE)
        current = -1
        block_off = 0
        for offset, data in iter_data_windows(reader, window):
            if is_zero(data):
                continue
            block = offset // self.bs
            if block != current:
                current = block
                block_off = self.next_off
                self.next_off += self.bs
                self._set_entry(block + block // self.cr, block_off | FULLY_PRESENT)
            self._pwrite(block_off + offset % self.bs, data)
        self._flush_page()
        end = self.base + self.next_off
        extend_to(self.out, end)
        self.out.seek(end)

    def _set_entry(self, index: int, value: int) -> None:
        page_no = index // self.PAGE
        if page_no != self.page_no:
            self._flush_page()
            self.page_no = page_no
            self.page = bytearray(MiB)
        struct.pack_into("<Q", self.page, (index % self.PAGE) * 8, value)
        self.dirty = True

    def _flush_page(self) -> None:
        if self.dirty:
            self._pwrite(self.BAT_OFF + self.page_no * MiB, self.page)
            self.dirty = False

    def _write_metadata(self) -> None:
        ident = bytearray(64 * 1024)
        ident[:8] = FILE_SIG
        creator = "IMS".encode("utf-16-le")
        ident[8 : 8 + len(creator)] = creator
        self._pwrite(0, ident)
        file_guid = uuid.uuid4().bytes_le
        for seq, off in enumerate(HEADER_OFFSETS, start=1):
            head = bytearray(HEADER_SIZE)
            _HEADER.pack_into(
                head, 0, b"head", 0, seq, file_guid, uuid.uuid4().bytes_le, bytes(16),
                0, 1, MiB, self.LOG_OFF,
            )  # fmt: skip
            struct.pack_into("<I", head, 4, crc32c(head))
            self._pwrite(off, head)
        regi = bytearray(REGION_SIZE)
        _REGION_HEAD.pack_into(regi, 0, b"regi", 0, 2)
        _REGION_ENTRY.pack_into(regi, 16, BAT_REGION, self.BAT_OFF, self.bat_len, 1)
        _REGION_ENTRY.pack_into(regi, 48, METADATA_REGION, self.META_OFF, MiB, 1)
        struct.pack_into("<I", regi, 4, crc32c(regi))
        for off in REGION_OFFSETS:
            self._pwrite(off, regi)
        meta = bytearray(METADATA_TABLE_SIZE + 40)
        _META_HEAD.pack_into(meta, 0, b"metadata", 5)
        items = (
            (FILE_PARAMETERS, struct.pack("<II", self.bs, 0), FLAG_REQUIRED),
            (VIRTUAL_DISK_SIZE, struct.pack("<Q", self.size), FLAG_REQUIRED | FLAG_VIRTUAL_DISK),
            (PAGE83, uuid.uuid4().bytes_le, FLAG_REQUIRED | FLAG_VIRTUAL_DISK),
            (LOGICAL_SECTOR, struct.pack("<I", 512), FLAG_REQUIRED | FLAG_VIRTUAL_DISK),
            (PHYSICAL_SECTOR, struct.pack("<I", 4096), FLAG_REQUIRED | FLAG_VIRTUAL_DISK),
        )
        pos = METADATA_TABLE_SIZE
        for i, (guid, value, flags) in enumerate(items):
            _META_ENTRY.pack_into(meta, 32 + 32 * i, guid, pos, len(value), flags)
            meta[pos : pos + len(value)] = value
            pos += len(value)
        self._pwrite(self.META_OFF, meta)
