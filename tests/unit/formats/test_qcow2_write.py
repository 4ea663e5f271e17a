"""qcow2 writer: options, layout and an independent refcount consistency check."""

from __future__ import annotations

import io
import random
import struct
from collections import Counter

import pytest
from qemu_family_samples import MemDisk, get_field, pattern_disk, qcow2_image, read_all

from ims import errors
from ims.drivers.formats.qcow2 import Qcow2Format

FMT = Qcow2Format()
DISK = pattern_disk(512 * 1024, seed=11)


def check_consistency(image: bytes) -> dict[str, int]:
    """Recompute every cluster's references and compare with the refcounts.

    Written from the spec independently of the writer: what ``qemu-img
    check`` verifies (refcounts, leaks, COPIED flags, alignment).
    """
    cb = get_field(image, "cluster_bits")
    cs = 1 << cb
    assert len(image) % cs == 0, "file is not a whole number of clusters"
    refs: Counter[int] = Counter()
    refs[0] += 1  # header
    rt_off = get_field(image, "refcount_table_offset")
    rt_clusters = get_field(image, "refcount_table_clusters")
    for c in range(rt_clusters):
        refs[rt_off // cs + c] += 1
    refcount_bits = 16
    per_block = cs * 8 // refcount_bits
    stored: dict[int, int] = {}
    for i in range(rt_clusters * cs // 8):
        block = struct.unpack_from(">Q", image, rt_off + 8 * i)[0]
        if not block:
            continue
        assert block % cs == 0
        refs[block // cs] += 1
        counts = struct.unpack_from(f">{per_block}H", image, block)
        for j, count in enumerate(counts):
            if count:
                stored[i * per_block + j] = count
    l1_off = get_field(image, "l1_table_offset")
    l1_size = get_field(image, "l1_size")
    for c in range((l1_size * 8 + cs - 1) // cs):
        refs[l1_off // cs + c] += 1
    copied_checks = []
    compressed = 0
    x = 62 - (cb - 8)
    for i in range(l1_size):
        l1e = struct.unpack_from(">Q", image, l1_off + 8 * i)[0]
        l2 = l1e & 0x00FFFFFFFFFFFE00
        if not l2:
            continue
        assert l2 % cs == 0
        refs[l2 // cs] += 1
        copied_checks.append((l2 // cs, bool(l1e >> 63)))
        for e in struct.unpack_from(f">{cs // 8}Q", image, l2):
            if not e:
                continue
            if e >> 62 & 1:
                assert not e >> 63, "COPIED set on a compressed cluster"
                off = e & ((1 << x) - 1)
                nsec = ((e >> x) & ((1 << (cb - 8)) - 1)) + 1
                start = off & ~511
                for c in range(start // cs, (start + nsec * 512 - 1) // cs + 1):
                    refs[c] += 1
                compressed += 1
            else:
                off = e & 0x00FFFFFFFFFFFE00
                assert off and off % cs == 0
                refs[off // cs] += 1
                copied_checks.append((off // cs, bool(e >> 63)))
    n_clusters = len(image) // cs
    for c in range(n_clusters):
        assert stored.get(c, 0) == refs.get(c, 0), f"cluster {c}: refcount mismatch"
    assert all(c < n_clusters for c in refs), "reference past the end of the file"
    for cluster, copied in copied_checks:
        assert copied == (stored[cluster] == 1), f"COPIED flag wrong for cluster {cluster}"
    return {"clusters": n_clusters, "compressed": compressed}


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"cluster_size": "512"},
        {"cluster_size": "512", "compress": "on"},
        {"cluster_size": "4096", "compress": "on", "compression_type": "zstd"},
        {"cluster_size": "1024", "compat": "0.10", "compress": "on"},
        {"cluster_size": "2097152"},
    ],
)
def test_refcounts_consistent(options):
    image = qcow2_image(DISK, **options)
    stats = check_consistency(image)
    if options.get("compress") == "on":
        assert stats["compressed"] > 0
    with FMT.open(io.BytesIO(image)) as reader:
        assert read_all(reader) == DISK


def test_many_refcount_blocks_and_table_clusters():
    # 512-byte clusters: a refcount block covers 128 KiB and one refcount
    # table cluster 8 MiB, so a ~9 MiB image needs many of both.
    disk = random.Random(2).randbytes(9 * 1024 * 1024)
    image = qcow2_image(disk, cluster_size="512")
    assert get_field(image, "refcount_table_clusters") >= 2
    check_consistency(image)
    with FMT.open(io.BytesIO(image)) as reader:
        assert read_all(reader) == disk


def test_zero_clusters_are_not_allocated():
    image = qcow2_image(bytes(8 * 1024 * 1024))
    # header + L1 + refcount block + refcount table
    assert len(image) == 4 * 65536
    check_consistency(image)


def test_empty_disk():
    image = qcow2_image(b"")
    info = FMT.inspect(io.BytesIO(image))
    assert info.virtual_size == 0
    with FMT.open(io.BytesIO(image)) as reader:
        assert list(reader.extents()) == []


def test_odd_size_is_rounded_up_to_sectors():
    disk = pattern_disk(100_000, seed=4)
    image = qcow2_image(disk, cluster_size="4096")
    check_consistency(image)
    with FMT.open(io.BytesIO(image)) as reader:
        assert reader.virtual_size == 100_352
        assert read_all(reader) == disk + bytes(352)


def test_unaligned_source_extents():
    # Source extents that cut clusters in the middle are reassembled.
    disk = pattern_disk(300_000, seed=6)
    image = qcow2_image_from(MemDisk(disk, grain=1000), cluster_size="4096")
    with FMT.open(io.BytesIO(image)) as reader:
        assert read_all(reader)[: len(disk)] == disk


def qcow2_image_from(reader, **options: str) -> bytes:
    out = io.BytesIO()
    FMT.write(reader, out, options)
    return out.getvalue()


def test_compression_shrinks_and_zstd_sets_header():
    plain = qcow2_image(DISK)
    zlib_img = qcow2_image(DISK, compress="on")
    zstd_img = qcow2_image(DISK, compress="on", compression_type="zstd")
    assert len(zlib_img) < len(plain)
    assert len(zstd_img) < len(plain)
    assert get_field(zstd_img, "incompatible_features") == 1 << 3
    assert zstd_img[104] == 1
    assert zlib_img[104] == 0
    assert get_field(plain, "version") == 3
    assert get_field(plain, "header_length") == 112


def test_incompressible_clusters_stored_raw():
    disk = random.Random(3).randbytes(64 * 1024)
    image = qcow2_image(disk, cluster_size="4096", compress="on")
    stats = check_consistency(image)
    assert stats["compressed"] == 0
    with FMT.open(io.BytesIO(image)) as reader:
        assert read_all(reader) == disk


def test_v2_header():
    image = qcow2_image(DISK, compat="0.10")
    assert get_field(image, "version") == 2
    assert FMT.inspect(io.BytesIO(image)).details["compat"] == "0.10"


def test_written_at_offset_of_a_real_file(tmp_path):
    path = tmp_path / "out.qcow2"
    path.write_bytes(b"garbage" * 100000)  # longer than the image: must be cut
    with open(path, "r+b") as out:
        FMT.write(MemDisk(DISK), out, {"cluster_size": "4096"})
    image = path.read_bytes()
    check_consistency(image)
    with open(path, "rb") as f, FMT.open(f) as reader:
        assert read_all(reader) == DISK


@pytest.mark.parametrize(
    "options,message",
    [
        ({"bogus": "1"}, "unknown qcow2 options"),
        ({"cluster_size": "1000"}, "cluster_size"),
        ({"cluster_size": "256"}, "cluster_size"),
        ({"cluster_size": "abc"}, "cluster_size"),
        ({"compat": "2.0"}, "compat"),
        ({"compression_type": "lz4"}, "compression_type"),
        ({"compat": "0.10", "compression_type": "zstd"}, "compat=1.1"),
        ({"compress": "maybe"}, "on or off"),
        ({"preallocation": "full"}, "not supported"),
        ({"refcount_bits": "8"}, "refcount_bits"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(errors.Invalid, match=message):
        FMT.write(MemDisk(DISK), io.BytesIO(), options)


def test_needs_seekable_output():
    class Pipe:
        def write(self, data):
            return len(data)

        def seekable(self):
            return False

    assert FMT.streaming_write is False
    with pytest.raises(errors.Invalid, match="seekable"):
        FMT.write(MemDisk(DISK), Pipe(), {})


def test_checker_catches_a_wrong_refcount():
    image = bytearray(qcow2_image(DISK, cluster_size="4096"))
    rt_off = get_field(bytes(image), "refcount_table_offset")
    block = struct.unpack_from(">Q", image, rt_off)[0]
    struct.pack_into(">H", image, block + 2 * 5, 2)  # cluster 5 claims two refs
    with pytest.raises(AssertionError, match="refcount mismatch"):
        check_consistency(bytes(image))


class _Failing(MemDisk):
    """A disk whose read fails half way, like a hostile image found corrupt late."""

    def read(self, offset, length):
        if offset >= len(self.data) // 2:
            raise errors.ImageFormatError(format="test", reason="broken at half")
        return super().read(offset, length)


def _prefetch_threads():
    import threading

    return [t for t in threading.enumerate() if t.name == "ims-prefetch"]


@pytest.mark.parametrize("options", [{}, {"compress": "on"}])
def test_reader_error_propagates_and_stops_prefetch(options):
    disk = pattern_disk(6 * 1024 * 1024, seed=1, grain=65536)
    with pytest.raises(errors.ImageFormatError, match="broken at half"):
        FMT.write(_Failing(disk, grain=1024 * 1024), io.BytesIO(), options)
    assert _prefetch_threads() == []


def test_output_error_stops_prefetch():
    class Full(io.BytesIO):
        def write(self, data):
            if self.tell() > 1024 * 1024:
                raise OSError(28, "No space left on device")
            return super().write(data)

    disk = random.Random(5).randbytes(12 * 1024 * 1024)
    with pytest.raises(OSError, match="No space"):
        FMT.write(MemDisk(disk, grain=1024 * 1024), Full(), {})
    assert _prefetch_threads() == []


@pytest.mark.parametrize("parallel", [1, 2, 3])
def test_parallel_prefetch_keeps_order(parallel):
    disk = pattern_disk(3 * 1024 * 1024, seed=12)
    reader = MemDisk(disk, grain=65536)
    reader.parallel_reads = parallel
    image = qcow2_image_from(reader, cluster_size="4096")
    with FMT.open(io.BytesIO(image)) as back:
        assert read_all(back) == disk


def test_parallel_prefetch_error_propagates():
    disk = pattern_disk(6 * 1024 * 1024, seed=1, grain=65536)
    reader = _Failing(disk, grain=1024 * 1024)
    reader.parallel_reads = 2
    with pytest.raises(errors.ImageFormatError, match="broken at half"):
        FMT.write(reader, io.BytesIO(), {})
    assert _prefetch_threads() == []
    assert not [t for t in __import__("threading").enumerate() if "ims-prefetch_" in t.name]


def test_compressed_source_reads_in_parallel():
    from ims.drivers.formats.raw import RawFormat

    image = qcow2_image(DISK, cluster_size="4096", compress="on")
    with FMT.open(io.BytesIO(image)) as reader:
        assert reader.parallel_reads >= 1
        out = io.BytesIO()
        RawFormat().write(reader, out)
    assert out.getvalue() == DISK
