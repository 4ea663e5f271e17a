"""QED (QEMU Enhanced Disk): a safe reader.

QED is a two-level table format without compression or refcounts. Backing
files and images that need a consistency check are refused, as are unknown
feature bits; tables and data clusters must be aligned and inside the file.
"""

from __future__ import annotations

import struct

from ims import errors
from ims.disk.model import Sample
from ims.drivers.formats import _qemu

FMT = "qed"
MAGIC = b"QED\0"
_HEADER = struct.Struct("<4sIIIQQQQQII")  # 64 bytes

F_BACKING_FILE = 0x01
F_NEED_CHECK = 0x02
F_BACKING_FORMAT_NO_PROBE = 0x04
F_KNOWN = F_BACKING_FILE | F_NEED_CHECK | F_BACKING_FORMAT_NO_PROBE
#: A data entry of 1 marks a cluster that reads as zeros.
ZERO_CLUSTER = 1


def _unsafe(reason: str) -> errors.UnsafeImage:
    return errors.UnsafeImage(format=FMT, reason=reason)


def _bad(reason: str) -> errors.ImageFormatError:
    return errors.ImageFormatError(format=FMT, reason=reason)


def _pow2(value: int) -> bool:
    return value > 0 and not value & (value - 1)


class QedReader(_qemu.ClusterReader):
    """A validated QED image."""

    fmt = FMT

    def __init__(self, view: _qemu.FileView) -> None:
        if view.size < _HEADER.size:
            raise _bad("file is shorter than a QED header")
        (
            magic,
            cluster_size,
            table_size,
            header_size,
            features,
            _compat,
            _autoclear,
            l1_offset,
            image_size,
            _backing_offset,
            _backing_size,
        ) = _HEADER.unpack(view.read_exact(0, _HEADER.size, "header"))
        if magic != MAGIC:
            raise _bad("bad magic")
        if features & F_BACKING_FILE:
            raise _unsafe("image has a backing file")
        if features & F_NEED_CHECK:
            raise _unsafe("image needs a consistency check (need-check flag set)")
        if features & ~F_KNOWN:
            raise _unsafe(f"unknown feature bits {features & ~F_KNOWN:#x}")
        if not _pow2(cluster_size) or not 4096 <= cluster_size <= 64 * 1024 * 1024:
            raise _unsafe(f"cluster size {cluster_size} is invalid")
        if not _pow2(table_size) or table_size > 16:
            raise _unsafe(f"table size {table_size} is invalid")
        if header_size == 0 or header_size * cluster_size >= view.size:
            raise _bad(f"header size {header_size} clusters is invalid")
        self.table_entries = table_size * cluster_size // 8
        max_size = self.table_entries * self.table_entries * cluster_size
        if image_size % 512 or image_size > min(max_size, _qemu.MAX_VIRTUAL_SIZE):
            raise _unsafe(f"image size {image_size} is invalid")
        cluster_bits = cluster_size.bit_length() - 1
        super().__init__(view, image_size, cluster_bits)
        self.table_bytes = table_size * cluster_size
        self.table_bits = self.table_entries.bit_length() - 1
        self.data_start = header_size * cluster_size
        l1_needed = (self.n_clusters + self.table_entries - 1) >> self.table_bits
        if l1_needed * 8 > _qemu.MAX_TABLE_BYTES:
            raise _unsafe(f"L1 table too large ({l1_needed} entries)")
        self._check_table(l1_offset, "L1 table")
        self.l1_range = (l1_offset, self.table_bytes)
        raw = view.read_exact(l1_offset, l1_needed * 8, "L1 table")
        self.l1: list[int] = []
        for off in _qemu.le_u64s(raw):
            if off:
                self._check_table(off, "L2 table")
                if _qemu.overlaps(off, self.table_bytes, *self.l1_range):
                    raise _unsafe(f"L2 table at {off:#x} overlaps the L1 table")
            self.l1.append(off)

    def _check_table(self, off: int, what: str) -> None:
        if off % self.cluster_size:
            raise _bad(f"{what} offset {off:#x} is not cluster aligned")
        if off < self.data_start:
            raise _unsafe(f"{what} at {off:#x} overlaps the header")
        if off + self.table_bytes > self.view.size:
            raise _unsafe(f"{what} at {off:#x} lies outside the file")

    def _decode_page(self, page: int) -> _qemu.Page | None:
        first = page << self.page_bits
        last = min(first + _qemu.PAGE_ENTRIES, self.n_clusters)
        hosts: list[int] = []
        cs_mask = self.cluster_size - 1
        file_size = self.view.size
        data_start = self.data_start
        ci = first
        while ci < last:
            start = ci & (self.table_entries - 1)
            count = min(self.table_entries - start, last - ci)
            l2_off = self.l1[ci >> self.table_bits]
            ci += count
            if not l2_off:
                hosts.extend([0] * count)
                continue
            buf = self.view.read_exact(l2_off + start * 8, count * 8, "L2 table")
            for entry in _qemu.le_u64s(buf):
                if entry <= ZERO_CLUSTER:
                    hosts.append(0)
                    continue
                if entry & cs_mask:
                    raise _bad(f"data cluster offset {entry:#x} is not aligned")
                if entry < data_start:
                    raise _unsafe(f"data cluster at {entry:#x} overlaps the header")
                if entry >= file_size:
                    raise _unsafe(f"data cluster at {entry:#x} lies outside the file")
                hosts.append(entry)
        if not any(hosts):
            return None
        return hosts, {}


class QedFormat(_qemu.TableFormat):
    """QEMU Enhanced Disk."""

    name = FMT
    reader_class = QedReader

    def probe(self, sample: Sample) -> bool:
        return sample.head[:4] == MAGIC
