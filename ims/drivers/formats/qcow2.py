"""QCOW2 (v2 = compat 0.10, v3 = compat 1.1): safe reader and a v3 writer.

The reader follows only the active L1 table (internal snapshots are ignored)
and refuses every feature that would make qemu read outside the image or
mis-read it: backing files, external data files, encryption, dirty/corrupt
images, unknown incompatible features, tables outside the file or on top of
the header, absurd sizes, and compressed clusters that do not inflate to
exactly one cluster.

The writer appends everything after a reserved header cluster in one forward
pass (data, then each L2 table as soon as its range is done, refcount blocks
as soon as their range is full, finally L1 and refcount table) and seeks back
once to write the header. Memory: one L2 table, one refcount block, the L1
table, a few 1 MiB prefetched blocks, plus ``4 * workers`` in-flight 1 MiB
blocks when compressing.
"""

from __future__ import annotations

import array
import collections
import contextlib
import os
import struct
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from ims import errors
from ims.disk.model import DiskReader, ImageInfo, Sample
from ims.drivers.formats import _qemu
from ims.drivers.formats.base import DiskFormat

FMT = "qcow2"
MAGIC = b"QFI\xfb"
_V2 = struct.Struct(">4sIQIIQIIQQIIQ")  # 72 bytes
_V3 = struct.Struct(">QQQII")  # 32 more bytes: 104
HEADER_V3_LEN = 112

INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_DATA_FILE = 1 << 2
INCOMPAT_COMPRESSION = 1 << 3
INCOMPAT_EXTL2 = 1 << 4
INCOMPAT_KNOWN = (1 << 5) - 1
AUTOCLEAR_DATA_FILE_RAW = 1 << 1

EXT_END = 0
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_FEATURE_NAMES = 0x6803F857
EXT_BITMAPS = 0x23852875
EXT_FDE = 0x0537BE77
EXT_DATA_FILE = 0x44415441

OFFSET_MASK = 0x00FFFFFFFFFFFE00
COPIED = 1 << 63
COMPRESSED = 1 << 62
ZERO_FLAG = 1

MIN_CLUSTER_BITS = 9
MAX_CLUSTER_BITS = 21
MAX_REFTABLE_BYTES = 8 * 1024 * 1024
MAX_SNAPSHOTS = 65536
COMPRESSION_TYPES = {0: "zlib", 1: "zstd"}

_NATIVE_LE = sys.byteorder == "little"


def _unsafe(reason: str) -> errors.UnsafeImage:
    return errors.UnsafeImage(format=FMT, reason=reason)


def _bad(reason: str) -> errors.ImageFormatError:
    return errors.ImageFormatError(format=FMT, reason=reason)


class _Header:
    """The validated fields of a qcow2 header and its extensions."""

    def __init__(self, view: _qemu.FileView) -> None:
        size = view.size
        if size < _V2.size:
            raise _bad("file is shorter than a qcow2 header")
        head = view.read_exact(0, min(size, 4096), "header")
        (
            magic,
            version,
            backing_offset,
            backing_size,
            cluster_bits,
            virtual_size,
            crypt_method,
            l1_size,
            l1_offset,
            reftable_offset,
            reftable_clusters,
            nb_snapshots,
            snapshots_offset,
        ) = _V2.unpack_from(head)
        if magic != MAGIC:
            raise _bad("bad magic")
        if version not in (2, 3):
            raise _bad(f"unsupported version {version}")
        if not MIN_CLUSTER_BITS <= cluster_bits <= MAX_CLUSTER_BITS:
            raise _unsafe(f"cluster_bits {cluster_bits} outside 9..21")
        cs = 1 << cluster_bits
        self.version = version
        self.cluster_bits = cluster_bits
        self.cluster_size = cs
        incompat = compat = autoclear = 0
        refcount_order = 4
        header_length = _V2.size
        compression_type = 0
        if version == 3:
            if size < _V2.size + _V3.size:
                raise _bad("file is shorter than a qcow2 v3 header")
            incompat, compat, autoclear, refcount_order, header_length = _V3.unpack_from(
                head, _V2.size
            )
            if header_length < 104 or header_length % 8 or header_length > cs:
                raise _bad(f"invalid header_length {header_length}")
        self.header_length = header_length
        # Cluster 0 holds the header and its extensions.
        cluster0 = view.read_exact(0, min(cs, size), "header cluster")
        if header_length > len(cluster0):
            raise _bad("header runs past the end of the file")
        if header_length > 104:
            compression_type = cluster0[104]

        # APPSEC(ims): the refusals qemu's own callers need (CVE-2024-32498,
        # backing-file disclosure, keys we do not have).
        if backing_offset != 0:
            raise _unsafe("image has a backing file")
        if crypt_method != 0:
            raise _unsafe(f"image is encrypted (crypt_method {crypt_method})")
        extensions = self._extensions(cluster0, header_length, cs)
        if EXT_DATA_FILE in extensions or incompat & INCOMPAT_DATA_FILE:
            raise _unsafe("image uses an external data file")
        if autoclear & AUTOCLEAR_DATA_FILE_RAW:
            raise _unsafe("image uses an external data file (data-file-raw)")
        if EXT_FDE in extensions:
            raise _unsafe("image is encrypted (full disk encryption header)")
        unknown = incompat & ~INCOMPAT_KNOWN
        if unknown:
            names = self._feature_names(extensions.get(EXT_FEATURE_NAMES, b""), unknown)
            raise _unsafe(f"unknown incompatible feature bits {unknown:#x}{names}")
        if incompat & INCOMPAT_DIRTY:
            raise _unsafe("image is dirty (was not closed cleanly)")
        if incompat & INCOMPAT_CORRUPT:
            raise _unsafe("image is marked corrupt")
        if compression_type not in COMPRESSION_TYPES:
            raise _unsafe(f"unknown compression type {compression_type}")
        if compression_type and not incompat & INCOMPAT_COMPRESSION:
            raise _bad("compression type set without its incompatible feature bit")
        self.extended_l2 = bool(incompat & INCOMPAT_EXTL2)
        if self.extended_l2 and cluster_bits < 14:
            raise _bad("extended L2 entries need clusters of at least 16 KiB")
        if refcount_order > 6:
            raise _bad(f"refcount_order {refcount_order} is above 6")
        self.compression_type = compression_type
        self.incompat = incompat
        self.compat = compat
        self.refcount_order = refcount_order
        self.extensions = extensions

        if virtual_size > _qemu.MAX_VIRTUAL_SIZE:
            raise _unsafe(f"virtual size {virtual_size} is absurd")
        self.virtual_size = virtual_size
        self.l2_entry_size = 16 if self.extended_l2 else 8
        self.l2_entries = cs // self.l2_entry_size
        n_clusters = (virtual_size + cs - 1) >> cluster_bits
        self.l1_needed = (n_clusters + self.l2_entries - 1) // self.l2_entries

        # Active L1 table.
        if l1_size * 8 > _qemu.MAX_TABLE_BYTES:
            raise _unsafe(f"active L1 table too large ({l1_size} entries)")
        if l1_size < self.l1_needed:
            raise _bad(f"L1 table is too small ({l1_size} < {self.l1_needed} entries)")
        if l1_offset % cs:
            raise _bad(f"L1 table offset {l1_offset} is not cluster aligned")
        self.l1_offset = l1_offset
        self.l1_size = l1_size
        if self.l1_needed:
            if l1_offset == 0:
                raise _unsafe("L1 table overlaps the header")
            if l1_offset + self.l1_needed * 8 > size:
                raise _unsafe(f"L1 table at {l1_offset} lies outside the file")
        # Refcount table: not needed to read, but must be sane.
        if reftable_offset % cs or reftable_offset == 0:
            raise _unsafe(f"refcount table offset {reftable_offset} is invalid")
        if reftable_clusters * cs > MAX_REFTABLE_BYTES:
            raise _unsafe(f"refcount table too large ({reftable_clusters} clusters)")
        if reftable_offset + reftable_clusters * cs > size:
            raise _unsafe(f"refcount table at {reftable_offset} lies outside the file")
        self.reftable = (reftable_offset, reftable_clusters * cs)
        if _qemu.overlaps(l1_offset, self.l1_needed * 8, *self.reftable):
            raise _unsafe("L1 table overlaps the refcount table")
        # Snapshots are never read, only bounded.
        if nb_snapshots > MAX_SNAPSHOTS:
            raise _unsafe(f"too many snapshots ({nb_snapshots})")
        if nb_snapshots and (
            snapshots_offset % cs or snapshots_offset == 0 or snapshots_offset >= size
        ):
            raise _unsafe(f"snapshot table offset {snapshots_offset} is invalid")
        self.nb_snapshots = nb_snapshots
        self.l1_bytes = (l1_offset, self.l1_needed * 8)

    @staticmethod
    def _extensions(cluster0: bytes, start: int, cs: int) -> dict[int, bytes]:
        found: dict[int, bytes] = {}
        end = min(len(cluster0), cs)
        off = start
        for _ in range(1024):
            if off + 8 > end:
                break
            ext_type, ext_len = struct.unpack_from(">II", cluster0, off)
            if ext_type == EXT_END:
                break
            if off + 8 + ext_len > end:
                raise _bad(f"header extension {ext_type:#x} runs past the header cluster")
            found[ext_type] = cluster0[off + 8 : off + 8 + ext_len]
            off += 8 + ((ext_len + 7) & ~7)
        else:
            raise _bad("too many header extensions")
        return found

    @staticmethod
    def _feature_names(table: bytes, bits: int) -> str:
        names = []
        for pos in range(0, len(table) - 47, 48):
            kind, bit = table[pos], table[pos + 1]
            if kind == 0 and bit < 64 and bits & (1 << bit):
                names.append(table[pos + 2 : pos + 48].rstrip(b"\0").decode("ascii", "replace"))
        return f" ({', '.join(names)})" if names else ""


class Qcow2Reader(_qemu.ClusterReader):
    """The active layer of a validated qcow2 image."""

    fmt = FMT

    def __init__(self, view: _qemu.FileView, header: _Header) -> None:
        super().__init__(view, header.virtual_size, header.cluster_bits)
        self.header = header
        cs = self.cluster_size
        self.l2_entries = header.l2_entries
        self.l2_bits = header.l2_entries.bit_length() - 1
        self.esize = header.l2_entry_size
        if header.compression_type == 1:
            self._decompress = _qemu.zstd_cluster
        # Compressed descriptor layout (spec: x = 62 - (cluster_bits - 8)).
        self.c_shift = 62 - (header.cluster_bits - 8)
        self.c_off_mask = (1 << self.c_shift) - 1
        self.c_nsec_mask = (1 << (header.cluster_bits - 8)) - 1
        # Load and validate the L1 table once (bounded by MAX_TABLE_BYTES).
        self.l1: list[int] = []
        if header.l1_needed:
            raw = view.read_exact(header.l1_offset, header.l1_needed * 8, "L1 table")
            meta = [(0, cs), header.l1_bytes, header.reftable]
            for index, entry in enumerate(_qemu.be_u64s(raw)):
                off = entry & OFFSET_MASK
                if off:
                    if off % cs:
                        raise _bad(f"L2 table offset {off:#x} (L1[{index}]) is not aligned")
                    if off + cs > view.size:
                        raise _unsafe(f"L2 table at {off:#x} lies outside the file")
                    for m_off, m_len in meta:
                        if _qemu.overlaps(off, cs, m_off, m_len):
                            raise _unsafe(f"L2 table at {off:#x} overlaps the header or tables")
                self.l1.append(off)

    def _decode_page(self, page: int) -> _qemu.Page | None:
        first = page << self.page_bits
        last = min(first + _qemu.PAGE_ENTRIES, self.n_clusters)
        hosts: list[int] = []
        special: dict[int, tuple] = {}
        esize = self.esize
        ci = first
        while ci < last:
            l1_index = ci >> self.l2_bits
            start = ci & (self.l2_entries - 1)
            count = min(self.l2_entries - start, last - ci)
            l2_off = self.l1[l1_index]
            if l2_off:
                buf = self.view.read_exact(l2_off + start * esize, count * esize, "L2 table")
                if _qemu.zeros(len(buf)) != buf:
                    if esize == 8:
                        self._decode_std(_qemu.be_u64s(buf), hosts, special)
                    else:
                        self._decode_ext(_qemu.be_u64s(buf), hosts, special)
                    ci += count
                    continue
            hosts.extend([0] * count)
            ci += count
        if not special and not any(hosts):
            return None
        return hosts, special

    def _compressed(self, entry: int) -> tuple[str, int, int]:
        c_off = entry & self.c_off_mask
        nsec = ((entry >> self.c_shift) & self.c_nsec_mask) + 1
        nbytes = nsec * 512 - (c_off & 511)
        if c_off < self.cluster_size:
            raise _unsafe(f"compressed cluster at {c_off:#x} overlaps the header")
        if c_off >= self.view.size:
            raise _unsafe(f"compressed cluster at {c_off:#x} lies outside the file")
        return ("c", c_off, min(nbytes, self.view.size - c_off))

    def _decode_std(self, entries: array.array, hosts: list[int], special: dict) -> None:
        cs_mask = self.cluster_size - 1
        file_size = self.view.size
        append = hosts.append
        for entry in entries:
            if not entry:
                append(0)
            elif entry & COMPRESSED:
                special[len(hosts)] = self._compressed(entry)
                append(-1)
            elif entry & ZERO_FLAG:
                append(0)
            else:
                off = entry & OFFSET_MASK
                if off:
                    if off & cs_mask:
                        raise _bad(f"data cluster offset {off:#x} is not aligned")
                    if off >= file_size:
                        raise _unsafe(f"data cluster at {off:#x} lies outside the file")
                append(off)

    def _decode_ext(self, entries: array.array, hosts: list[int], special: dict) -> None:
        cs_mask = self.cluster_size - 1
        file_size = self.view.size
        sub = self.cluster_size // 32
        for i in range(0, len(entries), 2):
            entry, bitmap = entries[i], entries[i + 1]
            if entry & COMPRESSED:
                special[len(hosts)] = self._compressed(entry)
                hosts.append(-1)
                continue
            if entry & ZERO_FLAG:
                raise _bad("zero flag set in an extended L2 entry")
            alloc = bitmap & 0xFFFFFFFF
            zero = bitmap >> 32
            if alloc & zero:
                raise _bad("subcluster both allocated and zero")
            off = entry & OFFSET_MASK
            if not off:
                if alloc:
                    raise _bad("allocated subclusters without a host cluster")
                hosts.append(0)
                continue
            if off & cs_mask:
                raise _bad(f"data cluster offset {off:#x} is not aligned")
            if off >= file_size:
                raise _unsafe(f"data cluster at {off:#x} lies outside the file")
            if alloc == 0xFFFFFFFF:
                hosts.append(off)
            elif not alloc:
                hosts.append(0)
            else:
                runs: list[tuple[int, int]] = []
                for bit in range(32):
                    host = off + bit * sub if alloc >> bit & 1 else 0
                    if runs and (runs[-1][0] == 0) == (host == 0):
                        runs[-1] = (runs[-1][0], runs[-1][1] + sub)
                    else:
                        runs.append((host, sub))
                special[len(hosts)] = ("s", tuple(runs))
                hosts.append(-1)


# -- writer -----------------------------------------------------------------------------------


def _flag(value: object, name: str) -> bool:
    text = str(value).strip().lower()
    if text in ("on", "true", "yes", "1"):
        return True
    if text in ("off", "false", "no", "0", ""):
        return False
    raise errors.Invalid(f"qcow2 option {name} must be on or off, not {value!r}")


def _options(options: dict[str, Any] | None) -> dict[str, Any]:
    opts = dict(options or {})
    out: dict[str, Any] = {}
    compat = str(opts.pop("compat", "1.1"))
    if compat in ("1.1", "v3"):
        out["version"] = 3
    elif compat in ("0.10", "v2"):
        out["version"] = 2
    else:
        raise errors.Invalid(f"qcow2 option compat must be 0.10 or 1.1, not {compat!r}")
    try:
        cs = int(opts.pop("cluster_size", 65536))
    except (TypeError, ValueError):
        raise errors.Invalid("qcow2 option cluster_size must be an integer") from None
    if cs & (cs - 1) or not 1 << MIN_CLUSTER_BITS <= cs <= 1 << MAX_CLUSTER_BITS:
        raise errors.Invalid("qcow2 option cluster_size must be a power of two, 512..2M")
    out["cluster_bits"] = cs.bit_length() - 1
    ctype = str(opts.pop("compression_type", "zlib")).lower()
    if ctype not in ("zlib", "zstd"):
        raise errors.Invalid("qcow2 option compression_type must be zlib or zstd")
    if ctype == "zstd" and out["version"] == 2:
        raise errors.Invalid("qcow2 compression_type=zstd needs compat=1.1")
    out["compression_type"] = ctype
    out["compress"] = _flag(opts.pop("compress", "off"), "compress")
    try:
        level = opts.pop("compression_level", None)
        out["level"] = None if level is None else int(level)
    except (TypeError, ValueError):
        raise errors.Invalid("qcow2 option compression_level must be an integer") from None
    for name in ("preallocation", "lazy_refcounts", "extended_l2"):
        value = opts.pop(name, None)
        if value is not None and str(value).lower() not in ("off", "false", "no", "0"):
            raise errors.Invalid(f"qcow2 option {name}={value} is not supported")
    refcount_bits = opts.pop("refcount_bits", None)
    if refcount_bits is not None and str(refcount_bits) != "16":
        raise errors.Invalid("qcow2 option refcount_bits must be 16")
    if opts:
        raise errors.Invalid(f"unknown qcow2 options: {', '.join(sorted(opts))}")
    return out


def iter_cluster_blocks(
    reader: DiskReader,
    cluster_size: int,
    block_size: int = _qemu.COPY_BLOCK,
    reuse: bool = False,
) -> Iterator[tuple[int, int, bytes | memoryview | None]]:
    """Yield ``(first_cluster, n_clusters, data)`` covering the disk in cluster units.

    ``data`` is ``n_clusters * cluster_size`` bytes, or None for zeros; the
    cluster that straddles an extent boundary or the disk end is assembled
    and zero padded, everything else is passed through without copies. With
    ``reuse``, ``data`` may be a view of a buffer that is refilled once the
    next item is asked for.
    """
    # A block of at least one cluster, so whole clusters pass through uncopied.
    blocks = _qemu.prefetch_blocks(reader, max(block_size, cluster_size), reuse=reuse)
    try:
        yield from _cluster_blocks(blocks, cluster_size)
    finally:
        blocks.close()


def _cluster_blocks(
    blocks: Iterator[tuple[int, int, bytes | None]], cs: int
) -> Iterator[tuple[int, int, bytes | memoryview | None]]:
    """Re-cut (offset, length, data) blocks at cluster boundaries."""
    pend: bytearray | None = None
    pend_idx = 0
    pend_dirty = False
    for off, length, data in blocks:
        end = off + length
        pos = off
        if pend is not None:
            base = pend_idx * cs
            take = min(end, base + cs) - pos
            if data is not None:
                pend[pos - base : pos - base + take] = data[:take]
                pend_dirty = True
            pos += take
            if pos == base + cs:
                yield pend_idx, 1, (bytes(pend) if pend_dirty else None)
                pend = None
            if pos == end:
                continue
        full_end = end - end % cs
        if full_end > pos:
            n = (full_end - pos) // cs
            if data is None:
                yield pos // cs, n, None
            else:
                yield pos // cs, n, memoryview(data)[pos - off : full_end - off]
            pos = full_end
        if pos < end:
            pend = bytearray(cs)
            pend_idx = pos // cs
            pend_dirty = data is not None
            if data is not None:
                pend[: end - pos] = data[pos - off :]
    if pend is not None:
        yield pend_idx, 1, (bytes(pend) if pend_dirty else None)


class _Sink:
    """Positional writes to the output, through its descriptor when it has one."""

    def __init__(self, out: BinaryIO) -> None:
        seekable = getattr(out, "seekable", None)
        if not (seekable and seekable()):
            raise errors.Invalid("qcow2 output must be seekable")
        self.out = out
        self.base = out.tell()
        self.fd: int | None = None
        try:
            out.flush()
            fd = out.fileno()
            os.fstat(fd)
            self.fd = fd
        except (AttributeError, OSError, ValueError):
            self.fd = None
        # PERF(ims): one write at a time. Buffered writes to one file take
        # its inode lock, and a second writer spins in the kernel waiting for
        # it (~17% of the CPU of a two-thread copy); it sleeps here instead,
        # and the threads' reads still overlap the write.
        self.lock = threading.Lock()

    def write(self, offset: int, buffers: list) -> None:
        if self.fd is None:
            self.out.seek(self.base + offset)
            for buf in buffers:
                self.out.write(buf)
            return
        with self.lock:
            self._pwritev(self.fd, self.base + offset, buffers)

    @staticmethod
    def _pwritev(fd: int, pos: int, buffers: list) -> None:
        # IOV_MAX is 1024 on Linux; stay well below it.
        for i in range(0, len(buffers), 512):
            chunk = [memoryview(b).cast("B") for b in buffers[i : i + 512]]
            total = sum(len(b) for b in chunk)
            done = os.pwritev(fd, chunk, pos)
            while done < total:
                # Partial write: finish the rest from where it stopped.
                rest = memoryview(b"".join(chunk))[done:]
                done += os.pwrite(fd, rest, pos + done)
            pos += total

    def finish(self, end: int) -> None:
        """Cut what an older, longer file left after the image; leave the position at its end."""
        if self.out.seek(0, os.SEEK_END) > self.base + end:
            try:
                self.out.truncate(self.base + end)
            except (OSError, ValueError, AttributeError):
                pass  # NOTE(ims): leftovers past the image end are harmless to readers.
        self.out.seek(self.base + end)


class _Appender:
    """Append-only allocation of host space, with windowed refcounts.

    Refcounts live in one block-sized window; when allocation passes the
    window, its block is final and is appended right away, so memory stays
    at one refcount block whatever the image size.
    """

    #: PERF(ims): write soon after reading, while the data is cache-hot.
    MAX_BATCH = _qemu.COPY_BLOCK

    def __init__(self, sink: _Sink, cluster_bits: int) -> None:
        self.sink = sink
        self.cb = cluster_bits
        self.cs = 1 << cluster_bits
        self.entries = self.cs * 8 // 16  # refcount_bits = 16
        self.window = 0
        self.counts = array.array("H", bytes(2 * self.entries))
        self.counts[0] = 1  # the header cluster
        self.refblocks: dict[int, int] = {}
        self.pending: list[tuple[int, array.array]] = []
        self.pos = self.cs
        self.batch: list = []
        self.batch_start = self.cs
        self.batch_len = 0

    def _ref(self, first: int, last: int) -> None:
        entries = self.entries
        for cluster in range(first, last + 1):
            index = cluster - self.window * entries
            if index >= entries:
                self.pending.append((self.window, self.counts))
                self.window += 1
                self.counts = array.array("H", bytes(2 * entries))
                index -= entries
            self.counts[index] += 1

    def _emit(self, data: Any, length: int, align: bool) -> int:
        cs = self.cs
        if align and self.pos % cs:
            pad = cs - self.pos % cs
            self.batch.append(_qemu.zeros(pad))
            self.batch_len += pad
            self.pos += pad
        off = self.pos
        self.batch.append(data)
        self.batch_len += length
        self.pos += length
        self._ref(off >> self.cb, (off + length - 1) >> self.cb)
        return off

    def append(self, data: Any, length: int, align: bool = True) -> int:
        """Append ``length`` bytes (a cluster multiple when ``align``); return the offset."""
        off = self._emit(data, length, align)
        while self.pending:
            window, counts = self.pending.pop(0)
            self.refblocks[window] = self._emit(_block_bytes(counts), self.cs, True)
        if self.batch_len >= self.MAX_BATCH:
            self.flush()
        return off

    def reserve(self, length: int) -> int:
        """Allocate ``length`` bytes (whole clusters) for the caller to write; return the offset.

        What is batched so far is written first, so the batch stays one
        contiguous range after the reserved one.
        """
        if self.pos % self.cs:
            pad = self.cs - self.pos % self.cs
            self.batch.append(_qemu.zeros(pad))
            self.pos += pad
        self.flush()
        off = self.pos
        self.pos += length
        self._ref(off >> self.cb, (off + length - 1) >> self.cb)
        self.batch_start = self.pos
        while self.pending:
            window, counts = self.pending.pop(0)
            self.refblocks[window] = self._emit(_block_bytes(counts), self.cs, True)
        return off

    def flush(self) -> None:
        if self.batch:
            self.sink.write(self.batch_start, self.batch)
        self.batch = []
        self.batch_start = self.pos
        self.batch_len = 0

    def finish(self) -> tuple[int, int, int]:
        """Write the remaining refcount blocks and the refcount table.

        Returns (reftable_offset, reftable_clusters, end_of_file).
        """
        cs = self.cs
        entries = self.entries
        if self.pos % cs:
            pad = cs - self.pos % cs
            self.batch.append(_qemu.zeros(pad))
            self.pos += pad
        first_free = self.pos // cs
        window = self.window
        # Find how many blocks (k) and table clusters (t) cover themselves.
        k = t = 1
        while True:
            last_window = (first_free + k + t - 1) // entries
            k2 = last_window - window + 1
            t2 = ((last_window + 1) * 8 + cs - 1) // cs
            if (k2, t2) == (k, t):
                break
            k, t = k2, t2
        blocks = {window: self.counts}
        for extra in range(window + 1, last_window + 1):
            blocks[extra] = array.array("H", bytes(2 * entries))
        for cluster in range(first_free, first_free + k + t):
            blocks[cluster // entries][cluster % entries] += 1
        for j, w in enumerate(range(window, last_window + 1)):
            self.refblocks[w] = (first_free + j) * cs
            self.batch.append(_block_bytes(blocks[w]))
        table = array.array("Q", [self.refblocks[w] for w in range(last_window + 1)])
        if _NATIVE_LE:
            table.byteswap()
        table_bytes = table.tobytes()
        self.batch.append(table_bytes + _qemu.zeros(t * cs - len(table_bytes)))
        self.pos = (first_free + k + t) * cs
        self.flush()
        return (first_free + k) * cs, t, self.pos


def _block_bytes(counts: array.array) -> bytes:
    if _NATIVE_LE:
        swapped = array.array("H", counts)
        swapped.byteswap()
        return swapped.tobytes()
    return counts.tobytes()


_COMPRESS_LOCAL = threading.local()


def _compress_block(
    data: bytes | memoryview, n: int, cs: int, ctype: str, level: int | None
) -> list[bytes | bool | None]:
    """Compress each cluster of a block: None = zero, False = store raw."""
    zero = _qemu.zeros(cs)
    mv = memoryview(data)
    result: list[bytes | bool | None] = []
    if ctype == "zstd":
        import zstandard  # only compressed zstd images need it

        cctx = getattr(_COMPRESS_LOCAL, "zstd", None)
        if cctx is None or _COMPRESS_LOCAL.level != level:
            cctx = zstandard.ZstdCompressor(level=3 if level is None else level)
            _COMPRESS_LOCAL.zstd = cctx
            _COMPRESS_LOCAL.level = level
        compress = cctx.compress
    else:
        zlevel = 6 if level is None else level

        def compress(chunk: memoryview) -> bytes:
            # qemu reads deflate with a 4 KiB window: wbits must be -12.
            return zlib.compress(chunk, zlevel, -12)

    for i in range(n):
        chunk = mv[i * cs : (i + 1) * cs]
        if zero.startswith(chunk):
            result.append(None)
            continue
        packed = compress(chunk)
        result.append(packed if len(packed) < cs else False)
    return result


class _Writer:
    """One qcow2 v3 (or v2) image being written from a DiskReader."""

    def __init__(self, out: BinaryIO, virtual_size: int, opts: dict[str, Any]) -> None:
        self.opts = opts
        self.version = opts["version"]
        self.cb = opts["cluster_bits"]
        self.cs = 1 << self.cb
        # NOTE(ims): qemu truncates the size to whole sectors on open; round up
        # so the tail of an odd-sized disk is not lost.
        self.size = (virtual_size + 511) // 512 * 512
        self.l2_entries = self.cs // 8
        n_clusters = (self.size + self.cs - 1) >> self.cb
        self.l1_size = (n_clusters + self.l2_entries - 1) // self.l2_entries
        if self.l1_size * 8 > _qemu.MAX_TABLE_BYTES:
            raise errors.Invalid("qcow2 cluster_size too small for this disk size")
        self.l1 = array.array("Q", bytes(8 * self.l1_size))
        self.sink = _Sink(out)
        self.app = _Appender(self.sink, self.cb)
        self.l2_index = -1
        self.l2 = array.array("Q", bytes(8 * self.l2_entries))
        self.l2_used = False
        self.c_shift = 62 - (self.cb - 8)

    # L2 bookkeeping -------------------------------------------------------------------------
    def _l2_for(self, cluster: int) -> None:
        index = cluster >> (self.cb - 3)
        if index != self.l2_index:
            self._flush_l2()
            self.l2_index = index

    def _flush_l2(self) -> None:
        if self.l2_used:
            table = array.array("Q", self.l2)
            if _NATIVE_LE:
                table.byteswap()
            off = self.app.append(table.tobytes(), self.cs)
            self.l1[self.l2_index] = off | COPIED
            self.l2 = array.array("Q", bytes(8 * self.l2_entries))
            self.l2_used = False

    def _set(self, cluster: int, entry: int) -> None:
        if cluster >> (self.cb - 3) != self.l2_index:
            self._l2_for(cluster)
        self.l2[cluster & (self.l2_entries - 1)] = entry
        self.l2_used = True

    # data -----------------------------------------------------------------------------------
    def _plain(self, first: int, n: int, data: bytes | memoryview) -> None:
        cs = self.cs
        zero = _qemu.zeros(cs)
        mv = memoryview(data)
        i = 0
        while i < n:
            if zero.startswith(mv[i * cs : (i + 1) * cs]):
                i += 1
                continue
            # A run of non-zero clusters in the same L2 table: one append.
            j = i + 1
            limit = min(n, i + (self.l2_entries - ((first + i) & (self.l2_entries - 1))))
            while j < limit and not zero.startswith(mv[j * cs : (j + 1) * cs]):
                j += 1
            self._l2_for(first + i)
            off = self.app.append(mv[i * cs : j * cs], (j - i) * cs)
            for k in range(i, j):
                self._set(first + k, (off + (k - i) * cs) | COPIED)
            i = j

    def _scan(self, view: memoryview) -> list[bool]:
        """Tell which clusters of a window hold data (run outside the order lock)."""
        cs = self.cs
        zero = _qemu.zeros(cs)
        return [not zero.startswith(view[i : i + cs]) for i in range(0, len(view), cs)]

    def _plan(self, start: int, view: memoryview, used: list[bool]) -> Callable[[], None] | None:
        """Allocate a window's data clusters in disk order; return the write."""
        cs = self.cs
        first = start >> self.cb
        n = len(used)
        writes: list[tuple[int, memoryview]] = []
        i = 0
        while i < n:
            if not used[i]:
                i += 1
                continue
            # A run of data clusters in the same L2 table: one reservation.
            j = i + 1
            limit = min(n, i + (self.l2_entries - ((first + i) & (self.l2_entries - 1))))
            while j < limit and used[j]:
                j += 1
            self._l2_for(first + i)
            off = self.app.reserve((j - i) * cs)
            writes.append((off, view[i * cs : j * cs]))
            for k in range(i, j):
                self._set(first + k, (off + (k - i) * cs) | COPIED)
            i = j
        self.app.flush()  # L2 tables and refcount blocks the window completed
        if not writes:
            return None
        sink = self.sink

        def write() -> None:
            for off, data in writes:
                sink.write(off, [data])

        return write

    def _packed(self, first: int, n: int, data: Any, results: list) -> None:
        cs = self.cs
        mv = memoryview(data)
        for i, packed in enumerate(results):
            if packed is None:
                continue
            cluster = first + i
            self._l2_for(cluster)
            if packed is False:
                off = self.app.append(mv[i * cs : (i + 1) * cs], cs)
                self._set(cluster, off | COPIED)
            else:
                length = len(packed)
                off = self.app.append(packed, length, align=False)
                nsec = ((off + length - 1) >> 9) - (off >> 9)
                self._set(cluster, COMPRESSED | (nsec << self.c_shift) | off)

    def run(self, reader: DiskReader) -> None:
        packed = self.opts["compress"]
        if not packed and self.sink.fd is not None and _qemu.copies_on_threads(reader):
            # Positional writes: threads copy windows while clusters are
            # still allocated in disk order, so the layout is the serial one.
            window = max(_qemu.COPY_BLOCK, self.cs)
            threads = _qemu.workers()
            _qemu.ordered_windows(reader, window, threads, self._scan, self._plan)
            self._finish()
            return
        # Closing the stream stops the prefetch thread before we return, even
        # on error, so the caller can safely close the source file.
        # Compressed blocks wait in a thread pool, so only the plain copy may
        # let the source reuse its buffer; it writes each block out first.
        with contextlib.closing(iter_cluster_blocks(reader, self.cs, reuse=not packed)) as stream:
            if packed:
                self._run_packed(stream)
            else:
                for first, n, data in stream:
                    if data is not None:
                        self._plain(first, n, data)
                        self.app.flush()
        self._finish()

    def _run_packed(self, stream: Iterator[tuple[int, int, Any]]) -> None:
        """Compress blocks on every core, at most ``4 * workers`` in flight."""
        ctype = self.opts["compression_type"]
        level = self.opts["level"]
        inflight: collections.deque = collections.deque()
        limit = 4 * _qemu.workers()
        executor = _qemu.pool()
        try:
            for first, n, data in stream:
                if data is None:
                    continue
                future = executor.submit(_compress_block, data, n, self.cs, ctype, level)
                inflight.append((first, n, data, future))
                while len(inflight) >= limit:
                    f_first, f_n, f_data, f_future = inflight.popleft()
                    self._packed(f_first, f_n, f_data, f_future.result())
            while inflight:
                f_first, f_n, f_data, f_future = inflight.popleft()
                self._packed(f_first, f_n, f_data, f_future.result())
        finally:
            for *_, f_future in inflight:
                f_future.cancel()

    def _finish(self) -> None:
        cs = self.cs
        self._flush_l2()
        l1 = array.array("Q", self.l1)
        if _NATIVE_LE:
            l1.byteswap()
        l1_bytes = l1.tobytes()
        l1_clusters = max(1, (len(l1_bytes) + cs - 1) // cs)
        l1_off = self.app.append(
            l1_bytes + _qemu.zeros(l1_clusters * cs - len(l1_bytes)), l1_clusters * cs
        )
        reftable_off, reftable_clusters, end = self.app.finish()
        self.sink.write(0, [self._header(l1_off, reftable_off, reftable_clusters)])
        self.sink.finish(end)

    def _header(self, l1_off: int, reftable_off: int, reftable_clusters: int) -> bytes:
        zstd = self.opts["compression_type"] == "zstd" and self.version == 3
        head = _V2.pack(
            MAGIC,
            self.version,
            0,
            0,
            self.cb,
            self.size,
            0,
            self.l1_size,
            l1_off,
            reftable_off,
            reftable_clusters,
            0,
            0,
        )
        if self.version == 3:
            incompat = INCOMPAT_COMPRESSION if zstd else 0
            head += _V3.pack(incompat, 0, 0, 4, HEADER_V3_LEN)
            head += bytes([1 if zstd else 0]) + bytes(7)
        # End-of-extensions marker, then zeros to the end of the cluster.
        return head + _qemu.zeros(self.cs - len(head))


class Qcow2Format(DiskFormat):
    """QEMU copy-on-write v2/v3."""

    name = FMT
    streaming_write = False

    def probe(self, sample: Sample) -> bool:
        head = sample.head
        return (
            len(head) >= 8 and head[:4] == MAGIC and struct.unpack_from(">I", head, 4)[0] in (2, 3)
        )

    def _open(self, file: BinaryIO) -> Qcow2Reader:
        view = _qemu.FileView(file, FMT)
        header = _Header(view)
        return Qcow2Reader(view, header)

    def inspect(self, file: BinaryIO) -> ImageInfo:
        reader = self._open(file)
        counts = reader.validate_all()
        header = reader.header
        details: dict[str, Any] = {
            "compat": "1.1" if header.version == 3 else "0.10",
            "compression_type": COMPRESSION_TYPES[header.compression_type],
            "extended_l2": header.extended_l2,
            "refcount_bits": 1 << header.refcount_order,
            "lazy_refcounts": bool(header.compat & 1),
            "snapshots": header.nb_snapshots,
            "bitmaps": EXT_BITMAPS in header.extensions,
            **counts,
        }
        return ImageInfo(
            format=FMT,
            virtual_size=header.virtual_size,
            actual_size=reader.view.size,
            cluster_size=header.cluster_size,
            details=details,
        )

    def open(self, file: BinaryIO) -> DiskReader:
        reader = self._open(file)
        reader.validate_all()
        return reader

    def can_write(self) -> bool:
        return True

    def write(
        self, reader: DiskReader, out: BinaryIO, options: dict[str, str] | None = None
    ) -> None:
        """Write a qcow2 image (options: compat, cluster_size, compress, compression_type)."""
        opts = _options(options)
        _Writer(out, reader.virtual_size, opts).run(reader)
