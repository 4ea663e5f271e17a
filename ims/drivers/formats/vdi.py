"""VDI (VirtualBox) images: static and dynamic, read only.

Layout (little endian): a 512-byte header whose signature sits at 0x40, a
block map of u32 entries (one per 1 MiB block) and the data blocks. A map
entry is the index of the block in the data area; 0xFFFFFFFF (never
allocated) and 0xFFFFFFFE (discarded) read as zeros, since IMS accepts no
parent image.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

from ims.disk.model import DiskReader, ImageInfo, Sample
from ims.drivers.formats._vmcommon import MappedReader, MiB, Source, TiB, bad, unsafe
from ims.drivers.formats.base import DiskFormat

FMT = "vdi"
SIGNATURE = 0xBEDA107F
VERSION_1_1 = 0x00010001
HEADER_SIZE = 512
BLOCK = MiB
UNALLOCATED = 0xFFFFFFFF
DISCARDED = 0xFFFFFFFE
TYPE_DYNAMIC, TYPE_STATIC, TYPE_UNDO, TYPE_DIFF = 1, 2, 3, 4
#: Largest disk accepted. VirtualBox itself stops at 2 TiB per image; the cap
#: bounds the block map and the one-bit-per-block duplicate check.
MAX_SIZE = 64 * TiB
#: Map entries read per table slice while validating or listing extents.
MAP_SLICE = 65536

_HEADER = struct.Struct("<IIIII256sII4I4xQIIII16s16s16s16s")


class VdiReader(MappedReader):
    """Block-mapped reads of a validated VDI."""

    def __init__(self, source: Source, virtual_size: int, bmap_off: int, data_off: int) -> None:
        super().__init__(source, virtual_size)
        self._bmap_off = bmap_off
        self._data_off = data_off

    def _runs(self, offset: int, length: int) -> Iterator[tuple[int, int, int]]:
        first = offset // BLOCK
        last = (offset + length - 1) // BLOCK
        raw = self.source.pread(self._bmap_off + first * 4, (last - first + 1) * 4, "block map")
        if raw == b"\xff" * len(raw):  # nothing allocated: one zero run
            yield offset, length, -1
            return
        end = offset + length
        pos = offset
        for i, entry in enumerate(struct.unpack(f"<{last - first + 1}I", raw)):
            block_start = (first + i) * BLOCK
            seg_end = min(end, block_start + BLOCK)
            if entry >= DISCARDED:
                yield pos, seg_end - pos, -1
            else:
                yield pos, seg_end - pos, self._data_off + entry * BLOCK + (pos - block_start)
            pos = seg_end


class VdiFormat(DiskFormat):
    """VirtualBox VDI, version 1.1, static or dynamic, without parents."""

    name = FMT

    def probe(self, sample: Sample) -> bool:
        head = sample.head
        return len(head) >= 0x48 and struct.unpack_from("<I", head, 0x40)[0] == SIGNATURE

    def inspect(self, file: BinaryIO) -> ImageInfo:
        return self._parse(Source(file, FMT))[0]

    def open(self, file: BinaryIO) -> DiskReader:
        source = Source(file, FMT)
        info, bmap_off, data_off = self._parse(source)
        return VdiReader(source, info.virtual_size, bmap_off, data_off)

    def _parse(self, src: Source) -> tuple[ImageInfo, int, int]:
        if src.size < HEADER_SIZE:
            raise bad(FMT, "file is shorter than the header")
        head = src.pread(0, HEADER_SIZE, "header")
        (
            signature,
            version,
            header_size,
            image_type,
            _flags,
            _desc,
            bmap_off,
            data_off,
            _cyl,
            _heads,
            _secs,
            sector_size,
            disk_size,
            block_size,
            block_extra,
            blocks,
            _allocated,
            _uuid_image,
            _uuid_snap,
            uuid_link,
            uuid_parent,
        ) = _HEADER.unpack_from(head, 0x40)
        if signature != SIGNATURE:
            raise bad(FMT, "bad signature")
        if version != VERSION_1_1:
            raise bad(FMT, f"unsupported version {version >> 16}.{version & 0xFFFF}")
        if header_size < 0x180 or header_size > HEADER_SIZE - 0x40:
            raise bad(FMT, f"unsupported header size {header_size}")
        if image_type in (TYPE_UNDO, TYPE_DIFF):
            kind = "undo" if image_type == TYPE_UNDO else "differencing"
            raise unsafe(FMT, f"{kind} images need a parent image")
        if image_type not in (TYPE_DYNAMIC, TYPE_STATIC):
            raise bad(FMT, f"unknown image type {image_type}")
        if any(uuid_parent) or any(uuid_link):
            raise unsafe(FMT, "a parent (link/parent UUID) is set")
        if block_extra != 0:
            raise unsafe(FMT, f"block_extra is {block_extra}, not 0")
        if block_size != BLOCK:
            raise unsafe(FMT, f"block size {block_size} is not 1 MiB")
        if sector_size != 512:
            raise bad(FMT, f"sector size {sector_size} is not 512")
        if bmap_off % 512 or data_off % 512:
            raise bad(FMT, "block map or data offset is not 512-byte aligned")
        # NOTE(ims): VBoxManage can write odd disk sizes; qemu rounds up to a
        # sector, and so do we so that both present the same disk.
        virtual_size = -(-disk_size // 512) * 512
        if virtual_size > MAX_SIZE:
            raise unsafe(FMT, f"disk size {disk_size} exceeds the {MAX_SIZE >> 40} TiB limit")
        if virtual_size > blocks * BLOCK:
            raise bad(FMT, f"disk size {disk_size} does not fit in {blocks} blocks")
        if bmap_off < HEADER_SIZE:
            raise bad(FMT, "block map overlaps the header")
        src.check(bmap_off, blocks * 4, "block map")
        if data_off < bmap_off + blocks * 4:
            raise bad(FMT, "data area overlaps the block map")
        self._check_map(src, virtual_size, blocks, bmap_off, data_off)
        info = ImageInfo(
            format=FMT,
            virtual_size=virtual_size,
            actual_size=src.size,
            cluster_size=BLOCK,
            details={"subformat": "static" if image_type == TYPE_STATIC else "dynamic"},
        )
        return info, bmap_off, data_off

    @staticmethod
    def _check_map(
        src: Source, virtual_size: int, blocks: int, bmap_off: int, data_off: int
    ) -> None:
        """Check every used map entry: in range, inside the file, used once."""
        used = bytearray(blocks // 8 + 1)
        needed = -(-virtual_size // BLOCK)
        for start in range(0, needed, MAP_SLICE):
            count = min(MAP_SLICE, needed - start)
            raw = src.pread(bmap_off + start * 4, count * 4, "block map")
            if raw == b"\xff" * len(raw):
                continue
            for i, entry in enumerate(struct.unpack(f"<{count}I", raw)):
                if entry >= DISCARDED:
                    continue
                if entry >= blocks:
                    raise bad(FMT, f"block {start + i} maps to index {entry} >= {blocks}")
                if used[entry >> 3] & (1 << (entry & 7)):
                    raise bad(FMT, f"block index {entry} is used twice")
                used[entry >> 3] |= 1 << (entry & 7)
                guest = (start + i) * BLOCK
                src.check(data_off + entry * BLOCK, min(BLOCK, virtual_size - guest), "block")
