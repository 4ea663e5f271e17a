"""Small QEMU-family images built in memory, for unit and fuzz tests.

qcow2 images come from IMS's own writer; qcow v1, QED and ISO images are
assembled here field by field from the specs, so tests need no qemu-img.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Iterator

from ims.disk.model import DiskReader, Extent
from ims.drivers.formats.qcow2 import Qcow2Format


class MemDisk(DiskReader):
    """A virtual disk held in memory; zero extents found per ``grain``."""

    def __init__(self, data: bytes, grain: int = 4096) -> None:
        self.data = data
        self.virtual_size = len(data)
        self.grain = grain

    def extents(self) -> Iterator[Extent]:
        pos = 0
        size = self.virtual_size
        while pos < size:
            end = min(pos + self.grain, size)
            zero = not any(self.data[pos:end])
            yield Extent(pos, end - pos, zero)
            pos = end

    def read(self, offset: int, length: int) -> bytes:
        assert 0 <= offset and offset + length <= self.virtual_size
        return self.data[offset : offset + length]


def pattern_disk(size: int, seed: int = 1, grain: int = 4096) -> bytes:
    """Zero, random and text-like grains, like a used filesystem."""
    rng = random.Random(seed)
    words = [bytes(rng.choices(b"abcdefghij", k=rng.randint(2, 8))) for _ in range(50)]
    out = bytearray(size)
    for pos in range(0, size, grain):
        roll = rng.random()
        n = min(grain, size - pos)
        if roll < 0.4:
            continue
        if roll < 0.65:
            out[pos : pos + n] = rng.randbytes(n)
        else:
            text = b" ".join(rng.choices(words, k=n // 2))[:n]
            out[pos : pos + len(text)] = text
    return bytes(out)


def read_all(reader: DiskReader) -> bytes:
    """Assemble the whole disk through extents() and read()."""
    out = bytearray()
    pos = 0
    for ext in reader.extents():
        assert ext.offset == pos, (ext, pos)
        if ext.zero:
            out += bytes(ext.length)
        else:
            out += reader.read(ext.offset, ext.length)
        pos = ext.end
    assert pos == reader.virtual_size
    return bytes(out)


def qcow2_image(disk: bytes, **options: str) -> bytes:
    """A qcow2 image of ``disk`` written by IMS's writer."""
    out = io.BytesIO()
    Qcow2Format().write(MemDisk(disk), out, options)
    return out.getvalue()


# -- qcow2 field access for crafting --------------------------------------------------------

QCOW2_FIELDS = {
    "version": (4, ">I"),
    "backing_file_offset": (8, ">Q"),
    "backing_file_size": (16, ">I"),
    "cluster_bits": (20, ">I"),
    "size": (24, ">Q"),
    "crypt_method": (32, ">I"),
    "l1_size": (36, ">I"),
    "l1_table_offset": (40, ">Q"),
    "refcount_table_offset": (48, ">Q"),
    "refcount_table_clusters": (56, ">I"),
    "nb_snapshots": (60, ">I"),
    "snapshots_offset": (64, ">Q"),
    "incompatible_features": (72, ">Q"),
    "compatible_features": (80, ">Q"),
    "autoclear_features": (88, ">Q"),
    "refcount_order": (96, ">I"),
    "header_length": (100, ">I"),
}


def get_field(image: bytes, name: str) -> int:
    off, fmt = QCOW2_FIELDS[name]
    return struct.unpack_from(fmt, image, off)[0]


def set_field(image: bytes, name: str, value: int) -> bytes:
    buf = bytearray(image)
    off, fmt = QCOW2_FIELDS[name]
    struct.pack_into(fmt, buf, off, value)
    return bytes(buf)


def add_extension(image: bytes, ext_type: int, payload: bytes) -> bytes:
    """Insert a header extension right after the (v3) header."""
    buf = bytearray(image)
    start = get_field(image, "header_length") if get_field(image, "version") == 3 else 72
    padded = payload + bytes(-len(payload) % 8)
    record = struct.pack(">II", ext_type, len(payload)) + padded
    buf[start : start + len(record) + 8] = record + bytes(8)
    return bytes(buf)


def l2_entry_offset(image: bytes, cluster: int) -> int:
    """File offset of the L2 entry of guest ``cluster`` (standard L2)."""
    cs = 1 << get_field(image, "cluster_bits")
    per_table = cs // 8
    l1 = get_field(image, "l1_table_offset")
    l2 = struct.unpack_from(">Q", image, l1 + 8 * (cluster // per_table))[0]
    l2 &= 0x00FFFFFFFFFFFE00
    assert l2, "cluster has no L2 table"
    return l2 + 8 * (cluster % per_table)


def set_l2(image: bytes, cluster: int, entry: int) -> bytes:
    buf = bytearray(image)
    struct.pack_into(">Q", buf, l2_entry_offset(image, cluster), entry)
    return bytes(buf)


def get_l2(image: bytes, cluster: int) -> int:
    return struct.unpack_from(">Q", image, l2_entry_offset(image, cluster))[0]


def qcow2_ext_l2_image() -> tuple[bytes, bytes]:
    """Hand-built v3 image with extended L2 entries; returns (image, disk)."""
    cs = 16384
    sub = cs // 32
    clusters = 4
    disk = bytearray(clusters * cs)
    image = bytearray(6 * cs)
    # cluster 0 of the disk: fully allocated at host cluster 4.
    full = bytes(random.Random(1).randbytes(cs))
    image[4 * cs : 5 * cs] = full
    disk[0:cs] = full
    # cluster 1: host cluster 5, subclusters alternate allocated / zero / unallocated.
    mixed = bytes(random.Random(2).randbytes(cs))
    image[5 * cs : 6 * cs] = mixed
    alloc = zero = 0
    for bit in range(32):
        if bit % 3 == 0:
            alloc |= 1 << bit
            disk[cs + bit * sub : cs + (bit + 1) * sub] = mixed[bit * sub : (bit + 1) * sub]
        elif bit % 3 == 1:
            zero |= 1 << bit
    entries = [
        (4 * cs) | (1 << 63),
        0xFFFFFFFF,
        (5 * cs) | (1 << 63),
        alloc | (zero << 32),
        0,
        0xFFFFFFFF << 32,  # cluster 2: all subclusters read as zero
        0,
        0,  # cluster 3: unallocated
    ]
    l2 = struct.pack(f">{len(entries)}Q", *entries)
    image[2 * cs : 2 * cs + len(l2)] = l2
    struct.pack_into(">Q", image, 1 * cs, (2 * cs) | (1 << 63))  # L1 at cluster 1
    struct.pack_into(">Q", image, 3 * cs, 0)  # empty refcount table at cluster 3
    header = struct.pack(
        ">4sIQIIQIIQQIIQQQQII",
        b"QFI\xfb",
        3,
        0,
        0,
        14,
        len(disk),
        0,
        1,
        cs,
        3 * cs,
        1,
        0,
        0,
        1 << 4,
        0,
        0,
        4,
        112,
    )
    image[0 : len(header)] = header
    return bytes(image), bytes(disk)


# -- qcow v1 ----------------------------------------------------------------------------------


def qcow1_image(
    disk: bytes, cluster_bits: int = 9, l2_bits: int = 6, compress: bool = False
) -> bytes:
    """Build a qcow v1 image: header, L1 at 48, then L2 tables and clusters."""
    cs = 1 << cluster_bits
    size = len(disk)
    l2_entries = 1 << l2_bits
    span = cs * l2_entries
    l1_entries = (size + span - 1) // span
    out = bytearray(48 + 8 * l1_entries)
    l1 = [0] * l1_entries

    def alloc(data: bytes, align: bool = True) -> int:
        if align and len(out) % cs:
            out.extend(bytes(cs - len(out) % cs))
        off = len(out)
        out.extend(data)
        return off

    for index in range(l1_entries):
        entries = [0] * l2_entries
        for j in range(l2_entries):
            pos = (index * l2_entries + j) * cs
            chunk = disk[pos : pos + cs]
            if not any(chunk):
                continue
            chunk = chunk + bytes(cs - len(chunk))
            if compress:
                packed = zlib.compress(chunk, 6, -12)
                if len(packed) < cs:
                    off = alloc(packed, align=False)
                    entries[j] = (1 << 63) | (len(packed) << (63 - cluster_bits)) | off
                    continue
            entries[j] = alloc(chunk)
        if any(entries):
            l1[index] = alloc(struct.pack(f">{l2_entries}Q", *entries))
    struct.pack_into(
        ">4sIQIIQBBHIQ", out, 0, b"QFI\xfb", 1, 0, 0, 0, size, cluster_bits, l2_bits, 0, 0, 48
    )
    struct.pack_into(f">{l1_entries}Q", out, 48, *l1)
    if len(out) % cs:
        out.extend(bytes(cs - len(out) % cs))
    return bytes(out)


# -- QED --------------------------------------------------------------------------------------


def qed_image(
    disk: bytes, cluster_size: int = 4096, table_size: int = 1, zero_entries: bool = False
) -> bytes:
    """Build a QED image: header cluster, L1 table, then L2 tables and clusters."""
    cs = cluster_size
    entries = table_size * cs // 8
    size = len(disk)
    n_clusters = (size + cs - 1) // cs
    l1_entries = (n_clusters + entries - 1) // entries
    out = bytearray(cs + table_size * cs)  # header cluster + L1
    l1 = [0] * entries
    for index in range(l1_entries):
        l2 = [0] * entries
        for j in range(entries):
            ci = index * entries + j
            if ci >= n_clusters:
                break
            chunk = disk[ci * cs : (ci + 1) * cs]
            if not any(chunk):
                if zero_entries:
                    l2[j] = 1
                continue
            l2[j] = len(out)
            out.extend(chunk + bytes(cs - len(chunk)))
        if any(l2):
            l1[index] = len(out)
            out.extend(struct.pack(f"<{entries}Q", *l2))
    struct.pack_into("<4sIIIQQQQQII", out, 0, b"QED\0", cs, table_size, 1, 0, 0, 0, cs, size, 0, 0)
    struct.pack_into(f"<{entries}Q", out, cs, *l1)
    return bytes(out)


QED_FIELDS = {
    "cluster_size": (4, "<I"),
    "table_size": (8, "<I"),
    "header_size": (12, "<I"),
    "features": (16, "<Q"),
    "l1_table_offset": (40, "<Q"),
    "image_size": (48, "<Q"),
    "backing_filename_offset": (56, "<I"),
    "backing_filename_size": (60, "<I"),
}


def set_qed(image: bytes, name: str, value: int) -> bytes:
    buf = bytearray(image)
    off, fmt = QED_FIELDS[name]
    struct.pack_into(fmt, buf, off, value)
    return bytes(buf)


# -- ISO 9660 ---------------------------------------------------------------------------------


def iso_image(blocks: int = 40, udf: bool = False, extra: int = 0) -> bytes:
    """A minimal ISO 9660 image: a PVD and a terminator (optionally a UDF VRS)."""
    out = bytearray(blocks * 2048 + extra)
    pvd = bytearray(2048)
    pvd[0:7] = b"\x01CD001\x01"
    pvd[40:72] = b"IMS_TEST".ljust(32)
    struct.pack_into("<I", pvd, 80, blocks)
    struct.pack_into(">I", pvd, 84, blocks)
    struct.pack_into("<H", pvd, 128, 2048)
    struct.pack_into(">H", pvd, 130, 2048)
    out[16 * 2048 : 17 * 2048] = pvd
    out[17 * 2048 : 17 * 2048 + 7] = b"\xffCD001\x01"
    if udf:
        for index, ident in enumerate((b"BEA01", b"NSR02", b"TEA01")):
            off = (18 + index) * 2048
            out[off : off + 7] = b"\x00" + ident + b"\x01"
    out[24 * 2048 : 24 * 2048 + 13] = b"hello, world\n"
    return bytes(out)
