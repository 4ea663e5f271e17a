"""QCOW version 1 (legacy): a safe reader, compressed clusters included.

No writer: qcow v1 is only ever imported. Backing files and encryption are
refused; every table is checked against the file before it is read.
"""

from __future__ import annotations

import struct

from ims import errors
from ims.disk.model import Sample
from ims.drivers.formats import _qemu

FMT = "qcow"
MAGIC = b"QFI\xfb"
_HEADER = struct.Struct(">4sIQIIQBBHIQ")  # 48 bytes
COMPRESSED = 1 << 63


def _unsafe(reason: str) -> errors.UnsafeImage:
    return errors.UnsafeImage(format=FMT, reason=reason)


def _bad(reason: str) -> errors.ImageFormatError:
    return errors.ImageFormatError(format=FMT, reason=reason)


class QcowReader(_qemu.ClusterReader):
    """A validated qcow v1 image."""

    fmt = FMT

    def __init__(self, view: _qemu.FileView) -> None:
        if view.size < _HEADER.size:
            raise _bad("file is shorter than a qcow header")
        (
            magic,
            version,
            backing_offset,
            _backing_size,
            _mtime,
            size,
            cluster_bits,
            l2_bits,
            _pad,
            crypt_method,
            l1_offset,
        ) = _HEADER.unpack(view.read_exact(0, _HEADER.size, "header"))
        if magic != MAGIC or version != 1:
            raise _bad("bad magic or version")
        if backing_offset != 0:
            raise _unsafe("image has a backing file")
        if crypt_method != 0:
            raise _unsafe(f"image is encrypted (crypt_method {crypt_method})")
        if not 9 <= cluster_bits <= 16:
            raise _unsafe(f"cluster_bits {cluster_bits} outside 9..16")
        if not 6 <= l2_bits <= 13:
            raise _unsafe(f"l2_bits {l2_bits} outside 6..13")
        if size > _qemu.MAX_VIRTUAL_SIZE:
            raise _unsafe(f"virtual size {size} is absurd")
        if size <= 1:
            raise _bad(f"virtual size {size} is too small")
        super().__init__(view, size, cluster_bits)
        self.l2_bits = l2_bits
        self.l2_entries = 1 << l2_bits
        self.l2_bytes = self.l2_entries * 8
        l1_entries = (size + (1 << (cluster_bits + l2_bits)) - 1) >> (cluster_bits + l2_bits)
        if l1_entries * 8 > _qemu.MAX_TABLE_BYTES:
            raise _unsafe(f"L1 table too large ({l1_entries} entries)")
        if l1_offset < _HEADER.size:
            raise _unsafe("L1 table overlaps the header")
        if l1_offset + l1_entries * 8 > view.size:
            raise _unsafe(f"L1 table at {l1_offset} lies outside the file")
        raw = view.read_exact(l1_offset, l1_entries * 8, "L1 table")
        self.l1: list[int] = []
        for index, off in enumerate(_qemu.be_u64s(raw)):
            if off:
                if off < _HEADER.size or _qemu.overlaps(
                    off, self.l2_bytes, l1_offset, l1_entries * 8
                ):
                    raise _unsafe(f"L2 table at {off:#x} overlaps the header or L1 table")
                if off + self.l2_bytes > view.size:
                    raise _unsafe(f"L2 table at {off:#x} (L1[{index}]) lies outside the file")
            self.l1.append(off)
        self.c_shift = 63 - cluster_bits
        self.c_off_mask = (1 << self.c_shift) - 1

    def _decode_page(self, page: int) -> _qemu.Page | None:
        first = page << self.page_bits
        last = min(first + _qemu.PAGE_ENTRIES, self.n_clusters)
        hosts: list[int] = []
        special: dict[int, tuple] = {}
        file_size = self.view.size
        cs = self.cluster_size
        ci = first
        while ci < last:
            start = ci & (self.l2_entries - 1)
            count = min(self.l2_entries - start, last - ci)
            l2_off = self.l1[ci >> self.l2_bits]
            ci += count
            if not l2_off:
                hosts.extend([0] * count)
                continue
            buf = self.view.read_exact(l2_off + start * 8, count * 8, "L2 table")
            for entry in _qemu.be_u64s(buf):
                if not entry:
                    hosts.append(0)
                    continue
                if entry & COMPRESSED:
                    c_len = (entry >> self.c_shift) & (cs - 1)
                    c_off = entry & self.c_off_mask
                    if c_off < _HEADER.size or c_off >= file_size or c_len == 0:
                        raise _unsafe(f"compressed cluster at {c_off:#x} is outside the data")
                    special[len(hosts)] = ("c", c_off, min(c_len, file_size - c_off))
                    hosts.append(-1)
                    continue
                if entry < _HEADER.size:
                    raise _unsafe(f"data cluster at {entry:#x} overlaps the header")
                if entry >= file_size:
                    raise _unsafe(f"data cluster at {entry:#x} lies outside the file")
                hosts.append(entry)
        if not special and not any(hosts):
            return None
        return hosts, special


class QcowFormat(_qemu.TableFormat):
    """QEMU copy-on-write version 1."""

    name = FMT
    reader_class = QcowReader

    def probe(self, sample: Sample) -> bool:
        head = sample.head
        return len(head) >= 8 and head[:4] == MAGIC and struct.unpack_from(">I", head, 4)[0] == 1
