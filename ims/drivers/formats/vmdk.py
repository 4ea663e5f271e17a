"""VMDK (VMware): monolithicSparse and streamOptimized, read and written.

A hosted sparse extent (little endian) starts with a 512-byte ``KDMV``
header, an embedded text descriptor, a grain directory (GD) of u32 sector
offsets of grain tables (GT), GTs of 512 u32 grain sector offsets, and the
grains. streamOptimized files compress every grain with zlib behind a
12-byte grain marker (lba, size) and usually keep GTs and GD after the
grains, with the real header in a footer 1 KiB before the end
(gdOffset = GD_AT_END).

Only single-file disks are accepted: any descriptor that names other files
(monolithicFlat, twoGbMaxExtent*, vmfs*, custom, extent paths) is refused,
since qemu opens whatever path an extent line names (CVE-2022-47951).
"""

from __future__ import annotations

import array
import collections
import os
import re
import secrets
import struct
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import BinaryIO

from ims import errors
from ims.disk.model import BLOCK_SIZE, DiskReader, ImageInfo, Sample
from ims.drivers.formats._vmcommon import (
    POOL_WORKERS,
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
    pool,
    unsafe,
    zero_pieces,
    zeros,
)
from ims.drivers.formats.base import DiskFormat

try:  # PERF(ims): zlib-ng, when installed, inflates ~1.5x and deflates ~1.2x faster.
    from zlib_ng import zlib_ng as zlib
except ImportError:  # pragma: no cover - the standard library makes the same streams
    import zlib

FMT = "vmdk"
MAGIC = b"KDMV"
COWD_MAGIC = b"COWD"
SECTOR = 512
GD_AT_END = 0xFFFFFFFFFFFFFFFF
GTES = 512
GT_BYTES = GTES * 4
NL_CHECK = b"\n \r\n"
FLAG_NL_TEST = 1
FLAG_RGD = 2
FLAG_ZERO_GRAIN = 4
FLAG_COMPRESSED = 1 << 16
FLAG_MARKERS = 1 << 17
GTE_ZEROED = 1
MARKER_EOS, MARKER_GT, MARKER_GD, MARKER_FOOTER = 0, 1, 2, 3
#: qemu reads descriptors with a 1 MiB - 1 cap; so do we.
MAX_DESCRIPTOR = MiB - 1
#: Grain bounds in sectors: VMware and qemu always write 128 (64 KiB); the
#: cap bounds what one compressed grain may make us allocate.
MIN_GRAIN, MAX_GRAIN = 8, 2048
MAX_CAPACITY = 64 * TiB
#: GD entries at most: 64 TiB at 64 KiB grains.
MAX_GD = 1 << 21
#: Compressed grains loaded per pool task.
LOAD_CHUNK = 16
#: Most grains inflated ahead of a sequential reader (8 MiB at 64 KiB).
AHEAD_GRAINS = 128
#: How far (in grains) read-ahead looks for the next stored grains.
AHEAD_SCAN = 8 * 512
#: Grain size IMS writes (sectors), as VMware and qemu do.
WRITE_GRAIN = 128
#: Default zlib level of streamOptimized grains. PERF(ims): on the 2 GiB
#: bench disk with zlib-ng, level 2 (its fast strategy) writes 667.5 MiB in
#: 7.9 s of CPU, level 3 (medium) 666 MiB in 9.5 s; qemu-img's level 6
#: writes 667.7 MiB in about 28 s. Option ``compression_level`` (1-9)
#: picks another.
COMPRESS_LEVEL = 2
LEVELS = tuple(str(level) for level in range(1, 10))
SUBFORMATS = ("monolithicSparse", "streamOptimized")
ADAPTERS = ("ide", "buslogic", "lsilogic", "legacyESX")

_HEADER = struct.Struct("<4sIIQQQQIQQQB4sH")
_MARKER = struct.Struct("<QII")
_GRAIN_MARKER = struct.Struct("<QI")
_EXTENT_RE = re.compile(
    r'^(RW|RDONLY|NOACCESS)\s+(\d{1,20})\s+(\S+)(?:\s+"([^"]*)"(?:\s+(\d{1,20}))?)?\s*$',
    re.IGNORECASE,
)
_ACCESS_RE = re.compile(r"^(RW|RDONLY|NOACCESS)\b", re.IGNORECASE)
_VERSION_RE = re.compile(r"^version\s*=\s*\d+\s*$", re.IGNORECASE)


class _Header:
    def __init__(self, raw: bytes) -> None:
        (
            self.magic,
            self.version,
            self.flags,
            self.capacity,
            self.grain,
            self.desc_off,
            self.desc_size,
            self.num_gtes,
            self.rgd_off,
            self.gd_off,
            self.overhead,
            self.unclean,
            self.nl,
            self.algo,
        ) = _HEADER.unpack_from(raw)


class _Descriptor:
    """What the text descriptor says, parsed without trusting it."""

    def __init__(self, text: str) -> None:
        self.keys: dict[str, str] = {}
        self.extents: list[tuple[str, int, str, str | None, int | None]] = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if _ACCESS_RE.match(line):
                match = _EXTENT_RE.match(line) if len(line) <= 4096 else None
                if not match:
                    raise bad(FMT, f"malformed extent line {line[:80]!r}")
                access, sectors, kind, name, offset = match.groups()
                self.extents.append(
                    (
                        access.upper(),
                        int(sectors),
                        kind.upper(),
                        name,
                        int(offset) if offset else None,
                    )
                )
                continue
            key, sep, value = line.partition("=")
            if sep:
                self.keys[key.strip().lower()] = value.strip().strip('"')

    def refusals(self) -> list[str]:
        """Return every reason this descriptor needs files other than its own."""
        reasons = []
        for _access, _sectors, _kind, name, _off in self.extents:
            if name is not None and ("/" in name or "\\" in name):
                reasons.append(
                    f"extent file {name[:200]!r} is a path to another file (CVE-2022-47951)"
                )
        create = self.keys.get("createtype")
        if create is not None and create.lower() not in {s.lower() for s in SUBFORMATS}:
            reasons.append(f"createType {create[:60]!r} stores the disk in other files")
        if len(self.extents) > 1:
            reasons.append(f"{len(self.extents)} extents: the disk spans other files")
        if self.keys.get("parentcid", "ffffffff").lower() != "ffffffff":
            reasons.append("parentCID is set: delta disk with a parent")
        if "parentfilenamehint" in self.keys:
            reasons.append("parentFileNameHint names a parent disk")
        for access, _sectors, kind, _name, _off in self.extents:
            if access != "RW" or kind != "SPARSE":
                reasons.append(f"extent is {access} {kind}, not a plain RW SPARSE extent")
        return reasons


def _looks_like_descriptor(head: bytes) -> bool:
    """Tell whether ``head`` starts like a text descriptor (qemu probes these)."""
    for count, line in enumerate(head[:4096].split(b"\n")):
        line = line.strip()
        if not line or line.startswith(b"#"):
            if count > 64:
                return False
            continue
        return bool(_VERSION_RE.match(line.decode("latin-1")))
    return False


_GT_STEP = GT_BYTES // SECTOR
_NO_GTS = array.array("I", bytes(4 * GTES))


def _gt_runs(gd: array.array) -> Iterator[tuple[int, int]]:
    """Yield ``(index, count)`` for runs of GTs stored one after the other.

    PERF(ims): every known writer lays GTs out contiguously, so whole runs
    (up to 512 GTs, 1 MiB) are read at once; array compares keep the scan
    of a large GD in C.
    """
    n = len(gd)
    i = 0
    while i < n:
        m = min(GTES, n - i)
        first = gd[i]
        if first == 0:
            if gd[i : i + m] == _NO_GTS[:m]:
                i += m
            else:
                i += 1
            continue
        if first + _GT_STEP * m < 1 << 32 and gd[i : i + m] == array.array(
            "I", range(first, first + _GT_STEP * m, _GT_STEP)
        ):
            yield i, m
            i += m
            continue
        run = 1
        while run < m and gd[i + run] == gd[i + run - 1] + _GT_STEP:
            run += 1
        yield i, run
        i += run


def _inflate(data: bytes | memoryview, want: int, grain_bytes: int) -> bytes:
    """Decompress one grain, refusing anything but one complete zlib stream."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, grain_bytes)
        if not inflater.eof:
            if inflater.decompress(inflater.unconsumed_tail, 1):
                raise bad(FMT, "a compressed grain inflates past the grain size")
    except zlib.error as ex:
        raise bad(FMT, f"corrupt compressed grain: {ex}") from None
    if not inflater.eof:
        raise bad(FMT, "a compressed grain is truncated")
    if len(out) < want:
        raise bad(FMT, f"a compressed grain inflates to {len(out)} bytes, not {want}")
    return out


class VmdkReader(MappedReader):
    """Reads of a validated hosted sparse or streamOptimized extent."""

    def __init__(self, source: Source, hdr: _Header, gd_off: int, ngd: int) -> None:
        super().__init__(source, hdr.capacity * SECTOR)
        self._grain = hdr.grain * SECTOR
        self._gd = gd_off
        self._ngd = ngd
        self._zero_grain = bool(hdr.flags & FLAG_ZERO_GRAIN)
        self._compressed = hdr.algo == 1
        self._lock = threading.Lock()
        #: Grains being loaded for the next reads: grain → (future, index).
        self._ahead: dict[int, tuple[Future, int]] = {}
        self._next = 0
        # Compressed grains are read by grain, not by host range.
        self.split_at_host_gaps = not self._compressed
        #: A hint for copy engines: reads of compressed grains may run in
        #: parallel (they inflate in the pool); plain reads are just preads.
        self.parallel_reads = POOL_WORKERS if self._compressed else 1
        self.extent_chunk = self._grain * GTES * 4096

    def _gtes(
        self, first: int, last: int, whole_absent: bool = False
    ) -> Iterator[tuple[int, int]]:
        """Yield ``(grain, gte)`` for grains first..last; 0 means unallocated.

        With ``whole_absent``, a range without a grain table comes out as one
        ``(first grain, -count)`` pair instead of ``count`` pairs.
        """
        g0, g1 = first // GTES, last // GTES
        gd = array.array("I", self.source.pread(self._gd + g0 * 4, (g1 - g0 + 1) * 4, "GD"))
        if sys.byteorder != "little":
            gd.byteswap()
        pos = first  # next grain to report
        for index, count in _gt_runs(gd):
            gt_first = g0 + index
            if pos < gt_first * GTES:  # GTs absent before this run
                yield from self._absent(pos, gt_first * GTES - 1, whole_absent)
            lo = max(first, gt_first * GTES)
            hi = min(last, (gt_first + count) * GTES - 1)
            blob = self.source.pread(
                gd[index] * SECTOR + (lo - gt_first * GTES) * 4, (hi - lo + 1) * 4, "grain table"
            )
            if whole_absent and blob == bytes(len(blob)):
                yield lo, -(hi - lo + 1)
            else:
                gtes = array.array("I", blob)
                if sys.byteorder != "little":
                    gtes.byteswap()
                yield from zip(range(lo, hi + 1), gtes, strict=True)
            pos = hi + 1
        if pos <= last:
            yield from self._absent(pos, last, whole_absent)

    @staticmethod
    def _absent(lo: int, hi: int, whole: bool) -> Iterator[tuple[int, int]]:
        if whole:
            yield lo, -(hi - lo + 1)
        else:
            for grain in range(lo, hi + 1):
                yield grain, 0

    def _runs(self, offset: int, length: int) -> Iterator[tuple[int, int, int]]:
        gb = self._grain
        end = offset + length
        pos = offset
        for grain, gte in self._gtes(offset // gb, (end - 1) // gb, whole_absent=True):
            if gte < 0:  # -gte grains without a grain table: one zero run
                seg_end = min(end, (grain - gte) * gb)
                yield pos, seg_end - pos, -1
                pos = seg_end
                continue
            gstart = grain * gb
            seg_end = min(end, gstart + gb)
            if gte == 0 or (gte == GTE_ZEROED and self._zero_grain):
                yield pos, seg_end - pos, -1
            elif self._compressed:
                # Extents only need "data"; read() handles compressed grains.
                yield pos, seg_end - pos, gte * SECTOR
            else:
                yield pos, seg_end - pos, gte * SECTOR + (pos - gstart)
            pos = seg_end

    def read(self, offset: int, length: int) -> bytes:
        if not self._compressed:
            return super().read(offset, length)
        self._check_range(offset, length)
        if length == 0:
            return b""
        gb = self._grain
        end = offset + length
        grains = [
            (grain, gte)
            for grain, gte in self._gtes(offset // gb, (end - 1) // gb)
            if gte and not (gte == GTE_ZEROED and self._zero_grain)
        ]
        with self._lock:
            # Forward reads, even a little out of order (a copy engine with
            # parallel readers), keep the read-ahead going.
            forward = offset >= self._next - AHEAD_GRAINS * gb
            if forward:
                first = offset // gb - AHEAD_GRAINS
                for stale in [g for g in self._ahead if g < first]:
                    del self._ahead[stale]
            self._submit([g for g in grains if g[0] not in self._ahead])
            wanted = [self._ahead.pop(grain) for grain, _gte in grains]
            self._next = max(self._next, end) if forward else end
            if forward and self._next < self.virtual_size:
                self._read_ahead(-(-self._next // gb), AHEAD_GRAINS)
        # Stitch grains and the zeros between them; one join, no bytearray
        # (see MappedReader.read).
        parts: list[bytes | memoryview] = []
        pos = offset
        for (grain, _gte), (future, index) in zip(grains, wanted, strict=True):
            data = future.result()[index]
            if isinstance(data, errors.ImageFormatError):
                raise data
            gstart = grain * gb
            lo = max(offset, gstart)
            if lo > pos:
                parts.extend(zero_pieces(lo - pos))
            hi = min(end, gstart + gb)
            parts.append(data if (lo, hi) == (gstart, gstart + len(data)) else
                         memoryview(data)[lo - gstart : hi - gstart])  # fmt: skip
            pos = hi
        if pos < end:
            parts.extend(zero_pieces(end - pos))
        return b"".join(parts)

    def _submit(self, grains: list[tuple[int, int]]) -> None:
        """Queue the loading of ``grains`` in the pool, LOAD_CHUNK per task."""
        for i in range(0, len(grains), LOAD_CHUNK):
            chunk = grains[i : i + LOAD_CHUNK]
            future = pool().submit(self._load, chunk)
            for index, (grain, _gte) in enumerate(chunk):
                self._ahead[grain] = (future, index)

    def _read_ahead(self, grain: int, count: int) -> None:
        """Start loading the next ``count`` stored grains from ``grain`` on.

        PERF(ims): a sequential reader (the copy engine) then finds them
        inflated while it was writing the previous block, on the other cores.
        """
        count = min(count, AHEAD_GRAINS)
        if len(self._ahead) >= 2 * AHEAD_GRAINS:
            return
        last = min(grain + AHEAD_SCAN, -(-self.virtual_size // self._grain)) - 1
        found: list[tuple[int, int]] = []
        known = 0
        if grain <= last:
            for index, gte in self._gtes(grain, last):
                if not gte or (gte == GTE_ZEROED and self._zero_grain):
                    continue
                if index in self._ahead:
                    known += 1
                else:
                    found.append((index, gte))
                if len(found) + known >= count:
                    break
        self._submit(found)

    def _load(self, grains: list[tuple[int, int]]) -> list[bytes | errors.ImageFormatError]:
        """Read and inflate grains (a pool task: zlib releases the GIL).

        A bad grain yields its error in its own slot, so that reading its
        neighbours still works and reading it raises.
        """
        try:
            return list(self._inflate_all(self._fetch(grains)))
        except errors.ImageFormatError:
            out: list[bytes | errors.ImageFormatError] = []
            for grain in grains:
                try:
                    out.extend(self._inflate_all(self._fetch([grain])))
                except errors.ImageFormatError as ex:
                    out.append(ex)
            return out

    def _fetch(self, grains: list[tuple[int, int]]) -> list[tuple[int, memoryview]]:
        """Read the compressed payload of each grain, in as few reads as possible."""
        gb = self._grain
        limit = 2 * gb  # qemu's bound on marker + compressed data
        size = self.source.size
        work: list[tuple[int, memoryview]] = []
        i = 0
        while i < len(grains):
            # A run of grains stored close together in the file: one read.
            j = i
            start = grains[i][1] * SECTOR
            while (
                j + 1 < len(grains)
                and 0 < grains[j + 1][1] * SECTOR - grains[j][1] * SECTOR <= limit
                and grains[j + 1][1] * SECTOR - start < 16 * MiB
            ):
                j += 1
            span_end = min(size, grains[j][1] * SECTOR + limit)
            if start + _GRAIN_MARKER.size > size:
                raise bad(FMT, f"grain {grains[i][0]} points past the end of the file")
            blob = memoryview(self.source.pread(start, span_end - start, "grain"))
            for grain, gte in grains[i : j + 1]:
                rel = gte * SECTOR - start
                if rel + _GRAIN_MARKER.size > len(blob):
                    raise bad(FMT, f"grain {grain} marker is truncated")
                lba, csize = _GRAIN_MARKER.unpack_from(blob, rel)
                if lba != grain * (gb // SECTOR):
                    raise bad(FMT, f"grain {grain} marker names sector {lba}")
                if csize == 0 or csize > limit - _GRAIN_MARKER.size:
                    raise bad(FMT, f"grain {grain} has a bad compressed size {csize}")
                data_start = rel + _GRAIN_MARKER.size
                if data_start + csize > len(blob):
                    raise bad(FMT, f"grain {grain} is truncated")
                work.append((grain, blob[data_start : data_start + csize]))
            i = j + 1
        return work

    def _inflate_all(self, work: list[tuple[int, memoryview]]) -> list[bytes]:
        """Inflate grains (in a pool thread: zlib releases the GIL)."""
        gb = self._grain
        size = self.virtual_size
        out = []
        for grain, data in work:
            plain = _inflate(data, min(gb, size - grain * gb), gb)
            # A short last grain (or a longer stream) is cut to the disk's end.
            out.append(plain[: size - grain * gb] if len(plain) > size - grain * gb else plain)
        return out


class VmdkFormat(DiskFormat):
    """Single-file VMDK: monolithicSparse and streamOptimized."""

    name = FMT
    streaming_write = True

    def probe(self, sample: Sample) -> bool:
        head = sample.head
        return head[:4] in (MAGIC, COWD_MAGIC) or _looks_like_descriptor(head)

    def inspect(self, file: BinaryIO) -> ImageInfo:
        src = Source(file, FMT)
        return self._parse(src)[0]

    def open(self, file: BinaryIO) -> DiskReader:
        src = Source(file, FMT)
        _info, hdr, gd_off, ngd = self._parse(src)
        return VmdkReader(src, hdr, gd_off, ngd)

    # -- parsing -----------------------------------------------------------

    def _parse(self, src: Source) -> tuple[ImageInfo, _Header, int, int]:
        if src.size < SECTOR:
            head = src.pread(0, src.size, "header")
        else:
            head = src.pread(0, SECTOR, "header")
        if head[:4] == COWD_MAGIC:
            raise unsafe(FMT, "ESX vmfsSparse (COWD) extents are not supported")
        if head[:4] != MAGIC:
            self._refuse_descriptor_file(src)
        if len(head) < SECTOR:
            raise bad(FMT, "file is shorter than the header")
        hdr = _Header(head)
        if hdr.gd_off == GD_AT_END:
            hdr = self._read_footer(src, hdr)
        self._check_header(src, hdr)
        desc = self._read_descriptor(src, hdr)
        grain_bytes = hdr.grain * SECTOR
        ngd = -(-hdr.capacity // (GTES * hdr.grain))
        if ngd > MAX_GD:
            raise unsafe(FMT, f"grain directory of {ngd} entries is too large")
        if hdr.gd_off == 0 or hdr.gd_off * SECTOR + ngd * 4 > src.size:
            raise bad(FMT, f"grain directory at sector {hdr.gd_off} is outside the file")
        gd_off = hdr.gd_off * SECTOR
        self._check_tables(src, hdr, gd_off, ngd)
        compressed = hdr.algo == 1
        details: dict[str, object] = {
            "subformat": "streamOptimized" if compressed else "monolithicSparse",
            "version": hdr.version,
            "create_type": desc.keys.get("createtype") if desc else None,
        }
        if desc and "cid" in desc.keys:
            details["cid"] = desc.keys["cid"][:8]
        info = ImageInfo(FMT, hdr.capacity * SECTOR, src.size, grain_bytes, details)
        return info, hdr, gd_off, ngd

    @staticmethod
    def _refuse_descriptor_file(src: Source) -> None:
        """Explain why a descriptor-only (multi-file) VMDK is refused."""
        if src.size > MAX_DESCRIPTOR:
            raise bad(FMT, "not a VMDK: no KDMV header and too large for a descriptor")
        text = src.pread(0, src.size, "descriptor").split(b"\0", 1)[0]
        if not _looks_like_descriptor(text):
            raise bad(FMT, "no KDMV header and no descriptor")
        desc = _Descriptor(text.decode("utf-8", "replace"))
        reasons = desc.refusals() or ["a descriptor file always names other files"]
        raise unsafe(FMT, "descriptor-only VMDK: " + "; ".join(reasons))

    @staticmethod
    def _read_footer(src: Source, hdr: _Header) -> _Header:
        """Return the footer header of a GD_AT_END file, checking its markers."""
        end = src.size // SECTOR * SECTOR
        if end < 4 * SECTOR:
            raise bad(FMT, "GD_AT_END but the file is too short for a footer")
        tail = src.pread(end - 3 * SECTOR, 3 * SECTOR, "footer")
        _n, size, kind = _MARKER.unpack_from(tail, 0)
        eos_n, eos_size, eos_kind = _MARKER.unpack_from(tail, 2 * SECTOR)
        if size != 0 or kind != MARKER_FOOTER:
            raise bad(FMT, "GD_AT_END but no footer marker")
        if eos_n != 0 or eos_size != 0 or eos_kind != MARKER_EOS:
            raise bad(FMT, "GD_AT_END but no end-of-stream marker")
        footer = _Header(tail[SECTOR : 2 * SECTOR])
        if footer.magic != MAGIC:
            raise bad(FMT, "footer has no KDMV magic")
        if footer.gd_off == GD_AT_END:
            raise bad(FMT, "footer has no grain directory offset")
        if (footer.capacity, footer.grain, footer.desc_off, footer.desc_size) != (
            hdr.capacity,
            hdr.grain,
            hdr.desc_off,
            hdr.desc_size,
        ):
            raise bad(FMT, "footer and header disagree")
        return footer

    @staticmethod
    def _check_header(src: Source, hdr: _Header) -> None:
        if not 1 <= hdr.version <= 3:
            raise bad(FMT, f"unsupported version {hdr.version}")
        if hdr.capacity == 0 and hdr.desc_off:
            raise unsafe(
                FMT, "capacity 0 with a descriptor: qemu would open it as a descriptor file"
            )
        if hdr.flags & FLAG_NL_TEST and hdr.nl != NL_CHECK:
            raise bad(FMT, "newline check bytes are damaged (text-mode transfer?)")
        if hdr.unclean:
            raise unsafe(FMT, "unclean shutdown flag is set: metadata may be inconsistent")
        if hdr.algo not in (0, 1):
            raise bad(FMT, f"unknown compression algorithm {hdr.algo}")
        if (hdr.algo == 1) != bool(hdr.flags & FLAG_MARKERS):
            raise bad(FMT, "compressed grains without markers (or the reverse) are unsupported")
        if hdr.grain & (hdr.grain - 1) or not MIN_GRAIN <= hdr.grain <= MAX_GRAIN:
            raise unsafe(FMT, f"grain size of {hdr.grain} sectors is out of bounds")
        if hdr.num_gtes != GTES:
            raise unsafe(FMT, f"{hdr.num_gtes} entries per grain table, not {GTES}")
        if hdr.capacity * SECTOR > MAX_CAPACITY:
            raise unsafe(FMT, f"capacity of {hdr.capacity} sectors exceeds 64 TiB")
        if hdr.overhead * SECTOR > src.size:
            raise bad(FMT, f"file truncated: expected at least {hdr.overhead} sectors")

    @staticmethod
    def _read_descriptor(src: Source, hdr: _Header) -> _Descriptor | None:
        if hdr.desc_off == 0:
            return None
        if hdr.desc_size * SECTOR > MAX_DESCRIPTOR:
            raise unsafe(FMT, f"embedded descriptor of {hdr.desc_size} sectors exceeds 1 MiB")
        if hdr.desc_off * SECTOR + hdr.desc_size * SECTOR > src.size:
            raise bad(FMT, "embedded descriptor is outside the file")
        raw = src.pread(hdr.desc_off * SECTOR, hdr.desc_size * SECTOR, "descriptor")
        desc = _Descriptor(raw.split(b"\0", 1)[0].decode("utf-8", "replace"))
        reasons = desc.refusals()
        if reasons:
            raise unsafe(FMT, "; ".join(reasons))
        if desc.extents:
            _access, sectors, _kind, name, ext_off = desc.extents[0]
            if sectors != hdr.capacity:
                raise bad(FMT, f"extent of {sectors} sectors, header says {hdr.capacity}")
            if not name or ext_off:
                raise unsafe(FMT, "the extent is not this file")
        return desc

    @staticmethod
    def _check_tables(src: Source, hdr: _Header, gd_off: int, ngd: int) -> None:
        """Check every GT and grain offset against the file before trusting them."""
        grain_bytes = hdr.grain * SECTOR
        compressed = hdr.algo == 1
        zero_grain = bool(hdr.flags & FLAG_ZERO_GRAIN)
        gd = array.array("I", src.pread(gd_off, ngd * 4, "grain directory"))
        if sys.byteorder != "little":
            gd.byteswap()
        if (ngd - gd.count(0)) * GT_BYTES > src.size:
            raise bad(FMT, "more grain tables than the file can hold")
        # NOTE(ims): grains of every known writer sit on grain boundaries; the
        # overlap check covers those (one bit per grain of file) and bounds
        # the rest by position only.
        used = UnitMap(src.size, grain_bytes) if not compressed else None
        capacity_bytes = hdr.capacity * SECTOR
        min_sector = max(hdr.overhead, 1)
        empty_gt = bytes(GT_BYTES)
        for index, run in _gt_runs(gd):
            last_gt = gd[index + run - 1]
            if last_gt * SECTOR + GT_BYTES > src.size:
                raise bad(FMT, f"grain table {index + run - 1} is outside the file")
            blob = src.pread(gd[index] * SECTOR, run * GT_BYTES, "grain table")
            if blob == bytes(len(blob)):
                continue
            for k in range(run):
                raw = blob[k * GT_BYTES : (k + 1) * GT_BYTES]
                if raw == empty_gt:
                    continue
                table = array.array("I", raw)
                if sys.byteorder != "little":
                    table.byteswap()
                for i, gte in enumerate(table):
                    if gte == 0 or (gte == GTE_ZEROED and zero_grain):
                        continue
                    grain = (index + k) * GTES + i
                    gstart = grain * grain_bytes
                    if gstart >= capacity_bytes:
                        raise bad(FMT, f"grain {grain} is past the end of the disk")
                    host = gte * SECTOR
                    if gte < min_sector:
                        raise bad(FMT, f"grain {grain} points into the metadata")
                    if compressed:
                        if host + _GRAIN_MARKER.size > src.size:
                            raise bad(FMT, f"grain {grain} points past the end of the file")
                        continue
                    need = min(grain_bytes, capacity_bytes - gstart)
                    if host + need > src.size:
                        raise bad(FMT, f"grain {grain} points past the end of the file")
                    if used is not None and host % grain_bytes == 0 and not used.claim(host, 1):
                        raise bad(FMT, f"grain {grain} shares its data with another grain")

    # -- writing -------------------------------------------------------------

    def can_write(self) -> bool:
        return True

    def write(
        self, reader: DiskReader, out: BinaryIO, options: dict[str, str] | None = None
    ) -> None:
        """Write monolithicSparse (seekable output) or streamOptimized (any output)."""
        opts = parse_options(
            FMT,
            options,
            {"subformat": SUBFORMATS, "adapter_type": ADAPTERS, "compression_level": LEVELS},
        )
        subformat = opts.get("subformat", "monolithicSparse")
        capacity = -(-reader.virtual_size // SECTOR)
        if capacity * SECTOR > MAX_CAPACITY:
            raise errors.Invalid(f"A VMDK holds at most 64 TiB, not {reader.virtual_size} bytes")
        name = os.path.basename(str(getattr(out, "name", "") or ""))
        if not name or not re.fullmatch(r"[A-Za-z0-9._+-]{1,200}", name):
            name = "disk.vmdk"
        adapter = opts.get("adapter_type", "ide")
        if subformat == "streamOptimized":
            level = int(opts.get("compression_level", COMPRESS_LEVEL))
            _StreamWriter(out, capacity, name, adapter, level).write(reader)
        else:
            if "compression_level" in opts:
                raise errors.Invalid("compression_level applies to streamOptimized only")
            need_seekable(out, "a monolithicSparse VMDK")
            _SparseWriter(out, capacity, name, adapter).write(reader)


def _descriptor(capacity: int, create_type: str, name: str, adapter: str) -> bytes:
    heads = 16 if adapter == "ide" else 255
    lines = [
        "# Disk DescriptorFile",
        "version=1",
        f"CID={secrets.randbits(32):08x}",
        "parentCID=ffffffff",
        f'createType="{create_type}"',
        "",
        "# Extent description",
        f'RW {capacity} SPARSE "{name}"',
        "",
        "# The Disk Data Base",
        "#DDB",
        "",
        'ddb.virtualHWVersion = "4"',
        f'ddb.geometry.cylinders = "{capacity // (63 * heads)}"',
        f'ddb.geometry.heads = "{heads}"',
        'ddb.geometry.sectors = "63"',
        f'ddb.adapterType = "{adapter}"',
        'ddb.toolsVersion = "2147483647"',
        "",
    ]
    return "\n".join(lines).encode("ascii")


def _header(
    version: int,
    flags: int,
    capacity: int,
    desc_size: int,
    rgd: int,
    gd: int,
    overhead: int,
    algo: int,
) -> bytes:
    raw = bytearray(SECTOR)
    _HEADER.pack_into(
        raw, 0, MAGIC, version, flags, capacity, WRITE_GRAIN, 1, desc_size, GTES,
        rgd, gd, overhead, 0, NL_CHECK, algo,
    )  # fmt: skip
    return bytes(raw)


def _pad(length: int) -> bytes:
    return bytes(-length % SECTOR)


def _incompressible(piece: bytes | memoryview) -> bool:
    """Guess from five 512-byte samples whether deflate would gain nothing.

    PERF(ims): deflate spends as long on random data (encrypted or already
    compressed files) as on text and gains nothing; a 2.5 KiB trial at level
    1 spots it for a few percent of that cost. A grain is only stored when
    every sample, start to end, is incompressible.
    """
    size = len(piece)
    if size < 16 * 1024:
        return False
    step = size // 4
    sample = b"".join(piece[i * step : i * step + 512] for i in range(4)) + piece[-512:]
    return len(zlib.compress(sample, 1)) >= len(sample) * 0.97


def _deflate(piece: bytes | memoryview, level: int = COMPRESS_LEVEL) -> bytes:
    """zlib-wrap one grain; incompressible grains as stored blocks (level 0)."""
    return zlib.compress(piece, 0 if _incompressible(piece) else level)


def _compress_window(offset: int, data: bytes | bytearray, level: int) -> list[tuple[int, bytes]]:
    """Compress the non-zero grains of one window (runs in the pool)."""
    gb = WRITE_GRAIN * SECTOR
    zero = zeros(gb)
    out = []
    first = offset // gb
    view = memoryview(data)
    for rel in range(0, len(data), gb):
        # PERF(ims): views, not bytes slices: no copy per grain.
        piece: bytes | memoryview = view[rel : rel + gb]
        if not zero.startswith(piece):
            if len(piece) < gb:
                # The disk's last grain is stored whole: qemu refuses to
                # read sectors past the end of a short grain.
                piece = bytes(piece).ljust(gb, b"\0")
            out.append((first + rel // gb, _deflate(piece, level)))
    return out


class _StreamWriter:
    """streamOptimized in VMware's forward-only layout.

    header (gdOffset = GD_AT_END) · descriptor · per 512 grains: the grains,
    each behind a grain marker, then a GT marker and the GT · GD marker and
    GD · footer marker and footer header · end-of-stream marker. Grains are
    compressed in the shared pool and written in order.

    Memory: at most ``POOL_WORKERS + 2`` windows are queued or compressing,
    each a 4 MiB window plus its compressed grains (at most 4 MiB + 1 KiB),
    plus the one being read: about (POOL_WORKERS + 3) * 8 MiB, i.e. 40 MiB on
    2 cores and 88 MiB at the 8-worker cap; the GD adds 4 bytes per 32 MiB.
    """

    def __init__(self, out: BinaryIO, capacity: int, name: str, adapter: str, level: int) -> None:
        self.out = out
        self.capacity = capacity
        self.level = level
        self.desc = _descriptor(capacity, "streamOptimized", name, adapter)
        self.desc_sectors = -(-len(self.desc) // SECTOR)
        self.ngd = -(-capacity // (GTES * WRITE_GRAIN))
        self.sector = 0
        self.flags = FLAG_NL_TEST | FLAG_COMPRESSED | FLAG_MARKERS

    def _emit(self, *parts: bytes) -> None:
        total = 0
        for part in parts:
            self.out.write(part)
            total += len(part)
        if total % SECTOR:
            self.out.write(_pad(total))
            total += -total % SECTOR
        self.sector += total // SECTOR

    def write(self, reader: DiskReader) -> None:
        overhead = 1 + self.desc_sectors
        self._emit(_header(3, self.flags, self.capacity, self.desc_sectors, 0, GD_AT_END,
                           overhead, 1))  # fmt: skip
        self._emit(self.desc)
        gd = array.array("I", [0]) * self.ngd
        gt = array.array("I", [0]) * GTES
        current = -1
        pending: collections.deque = collections.deque()

        def drain_one() -> None:
            nonlocal current, gt
            # PERF(ims): one write per window, not three per grain.
            batch: list[bytes] = []
            for grain, blob in pending.popleft().result():
                gt_index = grain // GTES
                if gt_index != current:
                    self._write_batch(batch)
                    self._flush_gt(gd, current, gt)
                    current = gt_index
                    gt = array.array("I", [0]) * GTES
                if self.sector >= 1 << 32:
                    raise errors.Invalid("The VMDK would be larger than 2 TiB of grains")
                gt[grain % GTES] = self.sector
                length = _GRAIN_MARKER.size + len(blob)
                batch += (_GRAIN_MARKER.pack(grain * WRITE_GRAIN, len(blob)), blob, _pad(length))
                self.sector += -(-length // SECTOR)
            self._write_batch(batch)

        for offset, data in iter_data_windows(reader, BLOCK_SIZE):
            pending.append(pool().submit(_compress_window, offset, data, self.level))
            if len(pending) >= POOL_WORKERS + 2:
                drain_one()
        while pending:
            drain_one()
        self._flush_gt(gd, current, gt)
        gd_sectors = -(-self.ngd * 4 // SECTOR)
        self._emit(_MARKER.pack(gd_sectors, 0, MARKER_GD))
        gd_sector = self.sector
        if sys.byteorder != "little":
            gd.byteswap()
        self._emit(gd.tobytes())
        self._emit(_MARKER.pack(1, 0, MARKER_FOOTER))
        self._emit(_header(3, self.flags, self.capacity, self.desc_sectors, 0, gd_sector,
                           overhead, 1))  # fmt: skip
        self._emit(_MARKER.pack(0, 0, MARKER_EOS))

    def _write_batch(self, batch: list[bytes]) -> None:
        """Write grains already counted in ``self.sector``."""
        if batch:
            self.out.write(b"".join(batch))
            batch.clear()

    def _flush_gt(self, gd: array.array, index: int, gt: array.array) -> None:
        if index < 0:
            return
        self._emit(_MARKER.pack(GT_BYTES // SECTOR, 0, MARKER_GT))
        gd[index] = self.sector
        if sys.byteorder != "little":
            gt.byteswap()
        self._emit(gt.tobytes())


class _SparseWriter:
    """monolithicSparse in qemu's layout, on a seekable output.

    header · descriptor · redundant GD · redundant GTs · GD · GTs (all
    preallocated, so the GD is known up front) · grains appended in disk
    order. Each GT is written (twice) when the copy moves past it.
    """

    def __init__(self, out: BinaryIO, capacity: int, name: str, adapter: str) -> None:
        self.out = out
        self.base = out.tell()
        self.capacity = capacity
        self.desc = _descriptor(capacity, "monolithicSparse", name, adapter)
        self.desc_sectors = max(20, -(-len(self.desc) // SECTOR))
        self.ngd = -(-capacity // (GTES * WRITE_GRAIN))
        gd_sectors = -(-self.ngd * 4 // SECTOR)
        gt_sectors = self.ngd * GT_BYTES // SECTOR
        self.rgd = 1 + self.desc_sectors
        self.gd = self.rgd + gd_sectors + gt_sectors
        end = self.gd + gd_sectors + gt_sectors
        self.overhead = -(-end // WRITE_GRAIN) * WRITE_GRAIN
        self.rgt0 = self.rgd + gd_sectors
        self.gt0 = self.gd + gd_sectors

    def _pwrite(self, sector: int, data: bytes | bytearray) -> None:
        self.out.seek(self.base + sector * SECTOR)
        self.out.write(data)

    def write(self, reader: DiskReader) -> None:
        out = self.out
        flags = FLAG_NL_TEST | FLAG_RGD
        self._pwrite(0, _header(1, flags, self.capacity, self.desc_sectors, self.rgd, self.gd,
                                self.overhead, 0))  # fmt: skip
        self._pwrite(1, self.desc)
        for gd_sector, gt0 in ((self.rgd, self.rgt0), (self.gd, self.gt0)):
            gd = array.array("I", range(gt0, gt0 + self.ngd * 4, 4))
            if sys.byteorder != "little":
                gd.byteswap()
            self._pwrite(gd_sector, gd.tobytes())
        extend_to(out, self.base + self.overhead * SECTOR)
        gb = WRITE_GRAIN * SECTOR
        next_sector = self.overhead
        current = -1
        gt = array.array("I", [0]) * GTES
        for offset, data in iter_data_windows(reader, BLOCK_SIZE):
            first = offset // gb
            for rel in range(0, len(data), gb):
                piece = data[rel : rel + gb]
                if is_zero(piece):
                    continue
                grain = first + rel // gb
                if grain // GTES != current:
                    self._flush_gt(current, gt)
                    current = grain // GTES
                    gt = array.array("I", [0]) * GTES
                if next_sector >= 1 << 32:
                    raise errors.Invalid("The VMDK would be larger than 2 TiB of grains")
                gt[grain % GTES] = next_sector
                self._pwrite(next_sector, piece)
                if len(piece) < gb:
                    out.write(bytes(gb - len(piece)))
                next_sector += WRITE_GRAIN
        self._flush_gt(current, gt)
        out.seek(self.base + next_sector * SECTOR)

    def _flush_gt(self, index: int, gt: array.array) -> None:
        if index < 0:
            return
        if sys.byteorder != "little":
            gt.byteswap()
        raw = gt.tobytes()
        self._pwrite(self.rgt0 + index * 4, raw)
        self._pwrite(self.gt0 + index * 4, raw)
