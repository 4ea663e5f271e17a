"""VHD (Virtual PC / Hyper-V, qemu's "vpc"): fixed and dynamic disks.

Layout (big endian): a 512-byte footer at the end of the file (fixed disks
are raw data followed by it); dynamic disks also keep a copy of the footer at
offset 0, then a 1024-byte dynamic header, a block allocation table (BAT) of
u32 sector numbers, and blocks made of a sector bitmap and the block data.

Virtual size: Virtual PC sized disks by their CHS geometry, everything since
(Hyper-V, Azure, disk2vhd, Xen) by the footer's current_size. Like current
qemu, IMS uses the geometry only for the creators known to size by it
("vpc ", "qemu") unless the geometry is the maximum 65535/16/255.
"""

from __future__ import annotations

import array
import struct
import sys
import time
import uuid
from collections.abc import Iterator
from typing import BinaryIO

from ims import errors
from ims.disk.model import DiskReader, ImageInfo, Sample
from ims.drivers.formats._vmcommon import (
    MappedReader,
    MiB,
    Source,
    SpanBuckets,
    bad,
    cut_tail,
    is_seekable,
    iter_data_windows,
    parse_options,
    skip_zeros,
    unsafe,
    write_zeros,
)
from ims.drivers.formats.base import DiskFormat

FMT = "vhd"
COOKIE = b"conectix"
DYN_COOKIE = b"cxsparse"
FOOTER_SIZE = 512
DYN_HEADER_SIZE = 1024
TYPE_FIXED, TYPE_DYNAMIC, TYPE_DIFF = 2, 3, 4
UNALLOCATED = 0xFFFFFFFF
NO_OFFSET = 0xFFFFFFFFFFFFFFFF
#: qemu's VHD_MAX_SECTORS: 2040 GiB, the most any VHD tool accepts.
MAX_SIZE = 0xFF000000 * 512
MAX_GEOMETRY = (65535, 16, 255)
#: Creators that size the disk by CHS geometry (see the module docstring).
CHS_CREATORS = (b"vpc ", b"qemu")
#: Accepted block sizes; the floor bounds the BAT and the overlap check.
MIN_BLOCK, MAX_BLOCK = 512 * 1024, 256 * MiB
#: Block size of the dynamic disks IMS writes (every VHD tool's default).
WRITE_BLOCK = 2 * MiB
#: 2000-01-01T00:00:00Z, the VHD epoch.
VHD_EPOCH = 946684800
#: BAT entries read per table slice while validating.
BAT_SLICE = 65536

_FOOTER = struct.Struct(">8sIIQI4sI4sQQHBBII16sB")
_DYN = struct.Struct(">8sQQIIII16sI4x")
_LOCATOR = struct.Struct(">IIIIQ")


def _checksum(data: bytes, at: int) -> int:
    """One's complement of the byte sum, the checksum field counted as zero."""
    return ~(sum(data) - sum(data[at : at + 4])) & 0xFFFFFFFF


def chs_geometry(size: int) -> tuple[int, int, int]:
    """Return the (cylinders, heads, sectors) the VHD spec derives from ``size``.

    The spec's algorithm rounds down, so C*H*S*512 may be a little smaller
    than ``size``; current_size keeps the exact size.
    """
    total = min(size // 512, 65535 * 16 * 255)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max(4, (cth + 1023) // 1024)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total // spt
    return cth // heads, heads, spt


def _bitmap_size(block_size: int) -> int:
    return -(-(block_size // 512) // 8 // 512) * 512


class _Footer:
    def __init__(self, raw: bytes) -> None:
        (
            self.cookie,
            _features,
            self.version,
            self.data_offset,
            _timestamp,
            self.creator_app,
            _creator_ver,
            _creator_os,
            _orig_size,
            self.current_size,
            self.cyls,
            self.heads,
            self.spt,
            self.disk_type,
            self.checksum,
            self.uuid,
            _saved,
        ) = _FOOTER.unpack_from(raw)
        self.raw = raw

    def key(self) -> tuple[object, ...]:
        """The fields that change how the disk is read."""
        return (
            self.disk_type,
            self.data_offset,
            self.current_size,
            self.cyls,
            self.heads,
            self.spt,
            self.creator_app,
        )


def _parse_footer(raw: bytes, where: str) -> _Footer:
    footer = _Footer(raw)
    if footer.cookie != COOKIE:
        raise bad(FMT, f"no footer cookie at the {where}")
    if _checksum(raw, 64) != footer.checksum:
        raise bad(FMT, f"footer checksum mismatch at the {where}")
    return footer


class VhdReader(MappedReader):
    """Reads of a validated fixed or dynamic VHD."""

    def __init__(
        self,
        source: Source,
        virtual_size: int,
        block_size: int = 0,
        bat_offset: int = -1,
    ) -> None:
        super().__init__(source, virtual_size)
        self._bs = block_size
        self._bat = bat_offset
        self._bm_size = _bitmap_size(block_size) if block_size else 0
        self._bm_ones = b"\xff" * self._bm_size
        self._bm_zeros = bytes(self._bm_size)

    def _runs(self, offset: int, length: int) -> Iterator[tuple[int, int, int]]:
        if self._bat < 0:  # fixed: the disk is the file's head.
            yield offset, length, offset
            return
        bs = self._bs
        first = offset // bs
        last = (offset + length - 1) // bs
        raw = self.source.pread(self._bat + first * 4, (last - first + 1) * 4, "BAT")
        if raw == b"\xff" * len(raw):  # nothing allocated: one zero run
            yield offset, length, -1
            return
        end = offset + length
        pos = offset
        for i, entry in enumerate(struct.unpack(f">{last - first + 1}I", raw)):
            bstart = (first + i) * bs
            seg_end = min(end, bstart + bs)
            if entry == UNALLOCATED:
                yield pos, seg_end - pos, -1
            else:
                yield from self._block_runs(entry * 512, bstart, pos, seg_end)
            pos = seg_end

    def _block_runs(
        self, host: int, bstart: int, start: int, end: int
    ) -> Iterator[tuple[int, int, int]]:
        """Runs of one allocated block, honouring its sector bitmap.

        NOTE(ims): the spec says a clear bitmap bit means "no data in this
        sector": zeros in a dynamic disk. qemu ignores the bitmap and reads
        the block; for every image qemu, Hyper-V or VirtualBox writes the
        unused sectors are zero anyway, so the output is the same.
        """
        data = host + self._bm_size
        s0 = (start - bstart) // 512
        s1 = (end - bstart + 511) // 512
        bm = self.source.pread(host + s0 // 8, (s1 - 1) // 8 - s0 // 8 + 1, "sector bitmap")
        if bm == self._bm_ones[: len(bm)]:
            yield start, end - start, data + (start - bstart)
            return
        if bm == self._bm_zeros[: len(bm)]:
            yield start, end - start, -1
            return
        base = s0 - s0 % 8
        run_start = start
        run_set: bool | None = None
        for sector in range(s0, s1):
            rel = sector - base
            is_set = bool(bm[rel >> 3] & (0x80 >> (rel & 7)))
            if is_set != run_set:
                sec_off = max(start, bstart + sector * 512)
                if run_set is not None:
                    yield (
                        run_start,
                        sec_off - run_start,
                        (data + (run_start - bstart) if run_set else -1),
                    )
                run_set = is_set
                run_start = sec_off
        yield run_start, end - run_start, data + (run_start - bstart) if run_set else -1


class VhdFormat(DiskFormat):
    """VHD fixed and dynamic disks; differencing disks are refused."""

    name = FMT
    streaming_write = True

    def probe(self, sample: Sample) -> bool:
        if sample.head[:8] == COOKIE:
            return True
        tail = sample.tail
        return len(tail) >= FOOTER_SIZE and tail[-FOOTER_SIZE:][:8] == COOKIE

    def inspect(self, file: BinaryIO) -> ImageInfo:
        return self._parse(Source(file, FMT))[0]

    def open(self, file: BinaryIO) -> DiskReader:
        source = Source(file, FMT)
        info, block_size, bat = self._parse(source)
        return VhdReader(source, info.virtual_size, block_size, bat)

    # -- reading ---------------------------------------------------------

    def _parse(self, src: Source) -> tuple[ImageInfo, int, int]:
        if src.size < FOOTER_SIZE:
            raise bad(FMT, "file is shorter than a footer")
        footer = _parse_footer(src.pread(src.size - FOOTER_SIZE, FOOTER_SIZE, "footer"), "end")
        if footer.disk_type == TYPE_DIFF:
            raise unsafe(FMT, "differencing disk (type 4) needs a parent image")
        if footer.disk_type not in (TYPE_FIXED, TYPE_DYNAMIC):
            raise bad(FMT, f"unknown disk type {footer.disk_type}")
        chs_size = footer.cyls * footer.heads * footer.spt * 512
        geometry = (footer.cyls, footer.heads, footer.spt)
        if footer.creator_app in CHS_CREATORS and geometry != MAX_GEOMETRY:
            virtual_size = chs_size
        else:
            virtual_size = footer.current_size // 512 * 512
        if virtual_size > MAX_SIZE:
            raise unsafe(FMT, f"virtual size {virtual_size} exceeds 2040 GiB")
        details: dict[str, object] = {
            "creator": footer.creator_app.decode("latin-1"),
            "geometry": geometry,
            "current_size": footer.current_size,
        }
        if footer.disk_type == TYPE_FIXED:
            if virtual_size > src.size - FOOTER_SIZE:
                raise bad(FMT, f"fixed disk of {virtual_size} bytes is longer than the file")
            details["subformat"] = "fixed"
            info = ImageInfo(FMT, virtual_size, src.size, None, details)
            return info, 0, -1
        block_size, bat = self._parse_dynamic(src, footer, virtual_size)
        details["subformat"] = "dynamic"
        return ImageInfo(FMT, virtual_size, src.size, block_size, details), block_size, bat

    def _parse_dynamic(self, src: Source, footer: _Footer, virtual_size: int) -> tuple[int, int]:
        copy = _parse_footer(src.pread(0, FOOTER_SIZE, "footer copy"), "start")
        if copy.key() != footer.key():
            raise bad(FMT, "the footer copy at the start differs from the footer")
        dyn_off = footer.data_offset
        if dyn_off < FOOTER_SIZE or dyn_off % 512:
            raise bad(FMT, f"bad dynamic header offset {dyn_off}")
        src.check(dyn_off, DYN_HEADER_SIZE, "dynamic header")
        if dyn_off + DYN_HEADER_SIZE > src.size - FOOTER_SIZE:
            raise bad(FMT, "dynamic header overlaps the footer")
        dyn = src.pread(dyn_off, DYN_HEADER_SIZE, "dynamic header")
        (cookie, _data_off, bat_off, version, max_entries, block_size, checksum, _puuid, _pts) = (
            _DYN.unpack_from(dyn)
        )
        if cookie != DYN_COOKIE:
            raise bad(FMT, "no dynamic header cookie")
        if _checksum(dyn, 36) != checksum:
            raise bad(FMT, "dynamic header checksum mismatch")
        if version != 0x00010000:
            raise bad(FMT, f"unsupported dynamic header version {version:#x}")
        for i in range(8):
            code, _space, length, _res, _off = _LOCATOR.unpack_from(dyn, 576 + 24 * i)
            if code or length:
                raise unsafe(FMT, "the disk has a parent locator")
        if block_size & (block_size - 1) or not MIN_BLOCK <= block_size <= MAX_BLOCK:
            raise bad(FMT, f"unsupported block size {block_size}")
        needed = -(-virtual_size // block_size)
        if max_entries < needed:
            raise bad(FMT, f"BAT of {max_entries} entries is too small for the disk")
        data_end = src.size - FOOTER_SIZE
        if bat_off % 512 or bat_off < FOOTER_SIZE or bat_off + needed * 4 > data_end:
            raise bad(FMT, f"BAT at {bat_off} is outside the file")
        if bat_off < dyn_off + DYN_HEADER_SIZE and dyn_off < bat_off + needed * 4:
            raise bad(FMT, "BAT overlaps the dynamic header")
        self._check_bat(src, virtual_size, block_size, bat_off, needed, dyn_off)
        return block_size, bat_off

    @staticmethod
    def _check_bat(
        src: Source, virtual_size: int, block_size: int, bat_off: int, needed: int, dyn_off: int
    ) -> None:
        """Check each allocated block lies inside the data area, alone."""
        bm_size = _bitmap_size(block_size)
        span = bm_size + block_size
        data_end = src.size - FOOTER_SIZE
        meta = (
            (0, FOOTER_SIZE),
            (dyn_off, dyn_off + DYN_HEADER_SIZE),
            (bat_off, bat_off + needed * 4),
        )
        seen = SpanBuckets(src.size, span)
        for start in range(0, needed, BAT_SLICE):
            count = min(BAT_SLICE, needed - start)
            raw = src.pread(bat_off + start * 4, count * 4, "BAT")
            if raw == b"\xff" * len(raw):
                continue
            for i, entry in enumerate(struct.unpack(f">{count}I", raw)):
                if entry == UNALLOCATED:
                    continue
                host = entry * 512
                index = start + i
                end = host + bm_size + min(block_size, virtual_size - index * block_size)
                if end > data_end:
                    raise bad(FMT, f"BAT entry {index} points outside the file")
                for mstart, mend in meta:
                    if host < mend and mstart < end:
                        raise bad(FMT, f"BAT entry {index} overlaps the disk's metadata")
                if not seen.claim(host):
                    raise bad(FMT, f"BAT entry {index} overlaps another block")

    # -- writing ---------------------------------------------------------

    def can_write(self) -> bool:
        return True

    def write(
        self, reader: DiskReader, out: BinaryIO, options: dict[str, str] | None = None
    ) -> None:
        opts = parse_options(FMT, options, {"subformat": ("fixed", "dynamic")})
        size = -(-reader.virtual_size // 512) * 512
        if size > MAX_SIZE:
            raise errors.Invalid(f"A VHD holds at most 2040 GiB, not {reader.virtual_size} bytes")
        if opts.get("subformat", "dynamic") == "fixed":
            self._write_fixed(reader, out, size)
        else:
            self._write_dynamic(reader, out, size)

    @staticmethod
    def _footer(size: int, disk_type: int, data_offset: int) -> bytes:
        """Build a footer that keeps the exact size in current_size.

        NOTE(ims): qemu up to 9.x reads the size from the CHS geometry unless
        the creator app is one it knows to use current_size ("win ", "qem2",
        "d2v ", "CTXS", "tap\\0") or the geometry is 65535/16/255; newer qemu,
        Hyper-V, Azure and VirtualBox use current_size. Writing the spec's
        (rounded-down) geometry with creator "win " (Hyper-V's) makes every
        one of them see exactly ``size`` bytes.
        """
        cyls, heads, spt = chs_geometry(size)
        timestamp = (int(time.time()) - VHD_EPOCH) & 0xFFFFFFFF
        fields = [
            COOKIE, 2, 0x00010000, data_offset, timestamp, b"win ", 0x000A0000, b"Wi2k",
            size, size, cyls, heads, spt, disk_type, 0, uuid.uuid4().bytes, 0,
        ]  # fmt: skip
        raw = bytearray(FOOTER_SIZE)
        _FOOTER.pack_into(raw, 0, *fields)
        struct.pack_into(">I", raw, 64, _checksum(raw, 64))
        return bytes(raw)

    def _write_fixed(self, reader: DiskReader, out: BinaryIO, size: int) -> None:
        """Stream the raw disk then the footer; holes where the output can seek."""
        seekable = is_seekable(out) and cut_tail(out)
        pos = 0
        for offset, data in iter_data_windows(reader, 4 * MiB):
            skip_zeros(out, offset - pos, seekable)
            out.write(data)
            pos = offset + len(data)
        skip_zeros(out, size - pos, seekable)
        out.write(self._footer(size, TYPE_FIXED, NO_OFFSET))

    def _write_dynamic(self, reader: DiskReader, out: BinaryIO, size: int) -> None:
        """Write footer copy, header, BAT, blocks, footer in one forward pass.

        The BAT goes before the blocks, so it is planned from the extent map:
        every block that any data extent touches is allocated, in order.
        """
        bs = WRITE_BLOCK
        entries = -(-size // bs)
        bm_size = _bitmap_size(bs)
        bat_off = FOOTER_SIZE + DYN_HEADER_SIZE
        bat_bytes = -(-entries * 4 // 512) * 512
        first_block = bat_off + bat_bytes
        bat = array.array("I", [UNALLOCATED]) * entries
        allocated = 0
        for ext in reader.extents():
            if ext.zero or ext.length == 0:
                continue
            for index in range(ext.offset // bs, (min(ext.end, size) - 1) // bs + 1):
                if bat[index] == UNALLOCATED:
                    bat[index] = (first_block + allocated * (bm_size + bs)) // 512
                    allocated += 1
        if first_block + allocated * (bm_size + bs) >= 1 << 41:
            raise errors.Invalid("The dynamic VHD would be larger than its BAT can address")
        footer = self._footer(size, TYPE_DYNAMIC, FOOTER_SIZE)
        out.write(footer)
        dyn = bytearray(DYN_HEADER_SIZE)
        _DYN.pack_into(
            dyn, 0, DYN_COOKIE, NO_OFFSET, bat_off, 0x00010000, entries, bs, 0, bytes(16), 0
        )
        struct.pack_into(">I", dyn, 36, _checksum(dyn, 36))
        out.write(dyn)
        if sys.byteorder == "little":
            bat.byteswap()
        out.write(bat.tobytes())
        out.write(b"\xff" * (bat_bytes - entries * 4))  # padding reads as unallocated
        del bat
        bitmap = b"\xff" * bm_size
        written = 0
        for _offset, data in iter_data_windows(reader, bs):
            out.write(bitmap)
            out.write(data)
            write_zeros(out, bs - len(data))
            written += 1
        if written != allocated:
            raise errors.ImageFormatError(
                format=FMT, reason="the source's extents changed while it was written"
            )
        out.write(footer)
