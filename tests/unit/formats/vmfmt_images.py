"""Small valid VM-format images built in memory, for the vmdk/vhd/vhdx/vdi tests."""

from __future__ import annotations

import io
import random
import struct

import google_crc32c

from ims.disk.model import DiskReader, Extent
from ims.drivers.formats.vhd import VhdFormat
from ims.drivers.formats.vhdx import VhdxFormat
from ims.drivers.formats.vmdk import VmdkFormat

KiB = 1024
MiB = 1024 * KiB


class MemReader(DiskReader):
    """A disk in memory; zero runs of ``step`` bytes are reported as zero extents."""

    def __init__(self, data: bytes, step: int = 64 * KiB) -> None:
        self.data = data
        self.virtual_size = len(data)
        self.step = step

    def extents(self):
        cur = None
        start = 0
        for pos in range(0, len(self.data), self.step):
            piece = self.data[pos : pos + self.step]
            zero = piece == bytes(len(piece))
            if zero != cur:
                if cur is not None:
                    yield Extent(start, pos - start, cur)
                cur, start = zero, pos
        if cur is not None:
            yield Extent(start, len(self.data) - start, cur)

    def read(self, offset: int, length: int) -> bytes:
        assert 0 <= offset and offset + length <= len(self.data)
        return self.data[offset : offset + length]


class ForwardOnly(io.RawIOBase):
    """A write-only, non-seekable sink (a pipe or an object-store upload)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data) -> int:
        self.buf += data
        return len(data)


def pattern(size: int, seed: int = 1) -> bytes:
    """A disk with zero, random and text-like 64 KiB pieces, some partly filled."""
    rng = random.Random(seed)
    out = bytearray(size)
    for pos in range(0, size, 64 * KiB):
        kind = rng.random()
        fill = min(64 * KiB, size - pos)
        if rng.random() < 0.3:
            fill = rng.randrange(512, fill + 1, 512) if fill > 512 else fill
        if kind < 0.4:
            continue
        if kind < 0.7:
            out[pos : pos + fill] = rng.randbytes(fill)
        else:
            words = b"lorem ipsum dolor sit amet disk image block "
            out[pos : pos + fill] = (words * (fill // len(words) + 1))[:fill]
    return bytes(out)


def write_image(fmt, data: bytes, **options: str) -> bytes:
    """Write ``data`` as an image of ``fmt`` into memory and return its bytes."""
    out = io.BytesIO()
    fmt.write(MemReader(data), out, options)
    return out.getvalue()


def vmdk_image(data: bytes, subformat: str = "monolithicSparse") -> bytes:
    return write_image(VmdkFormat(), data, subformat=subformat)


def vhd_image(data: bytes, subformat: str = "dynamic") -> bytes:
    return write_image(VhdFormat(), data, subformat=subformat)


def vhdx_image(data: bytes) -> bytes:
    return write_image(VhdxFormat(), data)


def vdi_image(data: bytes, static: bool = False) -> bytes:
    """Build a VDI 1.1 the way qemu lays it out (header, map, 1 MiB blocks)."""
    blocks = -(-len(data) // MiB)
    bmap_off = 512
    data_off = bmap_off + -(-blocks * 4 // 512) * 512
    entries = []
    payload = bytearray()
    for i in range(blocks):
        chunk = data[i * MiB : (i + 1) * MiB].ljust(MiB, b"\0")
        if static or chunk != bytes(MiB):
            entries.append(len(payload) // MiB)
            payload += chunk
        else:
            entries.append(0xFFFFFFFF)
    head = bytearray(512)
    head[:40] = b"<<< QEMU VM Virtual Disk Image >>>\n".ljust(40, b"\0")
    struct.pack_into("<IIIII", head, 0x40, 0xBEDA107F, 0x00010001, 0x180, 2 if static else 1, 0)
    struct.pack_into("<II", head, 0x154, bmap_off, data_off)
    struct.pack_into("<IIII", head, 0x15C, 0, 0, 0, 512)
    struct.pack_into("<QIIII", head, 0x170, len(data), MiB, 0, blocks, len(entries))
    head[0x188:0x198] = bytes(range(1, 17))
    table = struct.pack(f"<{blocks}I", *entries).ljust(data_off - bmap_off, b"\0")
    return bytes(head) + table + bytes(payload)


def crc32c_fix(buf: bytearray, start: int, length: int) -> None:
    """Recompute a VHDX CRC-32C field (at start+4) over ``length`` bytes."""
    struct.pack_into("<I", buf, start + 4, 0)
    crc = google_crc32c.value(bytes(buf[start : start + length]))
    struct.pack_into("<I", buf, start + 4, crc)


def vhd_checksum_fix(buf: bytearray, start: int, length: int, field: int) -> None:
    """Recompute a VHD one's-complement checksum at start+field."""
    struct.pack_into(">I", buf, start + field, 0)
    total = sum(buf[start : start + length])
    struct.pack_into(">I", buf, start + field, ~total & 0xFFFFFFFF)
