"""qcow2 reader: round trips, cluster kinds, and every refusal reason."""

from __future__ import annotations

import io
import random
import struct
import zlib

import pytest
import zstandard
from qemu_family_samples import (
    MemDisk,
    add_extension,
    get_field,
    get_l2,
    pattern_disk,
    qcow2_ext_l2_image,
    qcow2_image,
    read_all,
    set_field,
    set_l2,
)

from ims import errors
from ims.disk.model import Sample
from ims.drivers.formats import _qemu
from ims.drivers.formats.qcow2 import Qcow2Format

FMT = Qcow2Format()
DISK = pattern_disk(256 * 1024, seed=3)


def _open(image: bytes):
    return FMT.open(io.BytesIO(image))


def _inspect(image: bytes):
    return FMT.inspect(io.BytesIO(image))


@pytest.fixture(scope="module")
def plain() -> bytes:
    return qcow2_image(DISK, cluster_size="4096")


@pytest.fixture(scope="module")
def packed() -> bytes:
    return qcow2_image(DISK, cluster_size="4096", compress="on")


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"cluster_size": "512"},
        {"cluster_size": "4096", "compat": "0.10"},
        {"cluster_size": "4096", "compress": "on"},
        {"cluster_size": "4096", "compress": "on", "compression_type": "zstd"},
        {"cluster_size": "2097152", "compress": "on", "compression_type": "zstd"},
    ],
)
def test_round_trip(options):
    image = qcow2_image(DISK, **options)
    info = _inspect(image)
    assert info.format == "qcow2"
    assert info.virtual_size == len(DISK)
    with _open(image) as reader:
        assert read_all(reader) == DISK
        # Unaligned reads across cluster boundaries.
        rng = random.Random(9)
        for _ in range(30):
            off = rng.randrange(len(DISK))
            n = rng.randrange(1, min(70000, len(DISK) - off) + 1)
            assert reader.read(off, n) == DISK[off : off + n]


def test_inspect_details(packed):
    info = _inspect(packed)
    assert info.cluster_size == 4096
    assert info.details["compat"] == "1.1"
    assert info.details["compression_type"] == "zlib"
    assert info.details["compressed_clusters"] > 0
    zstd_info = _inspect(qcow2_image(DISK, compress="on", compression_type="zstd"))
    assert zstd_info.details["compression_type"] == "zstd"


def test_probe():
    assert FMT.probe(Sample(head=b"QFI\xfb\0\0\0\x03" + bytes(100)))
    assert FMT.probe(Sample(head=b"QFI\xfb\0\0\0\x02" + bytes(100)))
    assert not FMT.probe(Sample(head=b"QFI\xfb\0\0\0\x01" + bytes(100)))
    assert not FMT.probe(Sample(head=bytes(512)))


def test_extents_skip_unallocated(plain):
    with _open(plain) as reader:
        extents = list(reader.extents())
    zero_bytes = sum(e.length for e in extents if e.zero)
    expected_zero = sum(
        4096 for pos in range(0, len(DISK), 4096) if not any(DISK[pos : pos + 4096])
    )
    assert zero_bytes == expected_zero


def test_zero_flag_cluster_reads_zero(plain):
    cluster = next(c for c in range(64) if any(DISK[c * 4096 : (c + 1) * 4096]))
    image = set_l2(plain, cluster, get_l2(plain, cluster) | 1)
    with _open(image) as reader:
        data = read_all(reader)
        assert data[cluster * 4096 : (cluster + 1) * 4096] == bytes(4096)
        assert any(e.zero and e.offset <= cluster * 4096 < e.end for e in reader.extents())


def test_data_cluster_past_eof_reads_zero_padded(plain):
    # A last data cluster that is cut short by EOF reads as zeros past EOF.
    cluster = max(c for c in range(64) if any(DISK[c * 4096 : (c + 1) * 4096]))
    image = bytearray(plain)
    host = get_l2(plain, cluster) & 0x00FFFFFFFFFFFE00
    image += bytes(4096)  # room for a new host cluster at the end
    new_host = len(image) - 4096
    image[new_host : new_host + 100] = b"x" * 100
    image = bytearray(set_l2(bytes(image), cluster, new_host | (1 << 63)))
    del image[new_host + 100 :]
    assert host != new_host
    with _open(bytes(image)) as reader:
        got = reader.read(cluster * 4096, 4096)
    assert got == b"x" * 100 + bytes(3996)


def test_extended_l2_subclusters():
    image, disk = qcow2_ext_l2_image()
    info = _inspect(image)
    assert info.details["extended_l2"] is True
    with _open(image) as reader:
        assert read_all(reader) == disk
        assert reader.read(16384 + 500, 2000) == disk[16384 + 500 : 16384 + 2500]
        kinds = [(e.offset, e.zero) for e in reader.extents()]
    assert kinds[0] == (0, False)
    assert (16384 + 512, True) in kinds


def test_extended_l2_alloc_and_zero_is_corrupt():
    image, _ = qcow2_ext_l2_image()
    buf = bytearray(image)
    struct.pack_into(">Q", buf, 2 * 16384 + 24, 0x1 | (0x1 << 32))
    with pytest.raises(errors.ImageFormatError, match="both allocated and zero"):
        _open(bytes(buf))


# -- refusals -------------------------------------------------------------------------------


def _backing(img: bytes) -> bytes:
    buf = bytearray(set_field(img, "backing_file_offset", 512))
    buf = bytearray(set_field(bytes(buf), "backing_file_size", 11))
    buf[512:523] = b"/etc/passwd"
    return bytes(buf)


def _data_file(img: bytes) -> bytes:
    img = add_extension(img, 0x44415441, b"/etc/shadow")
    return set_field(img, "incompatible_features", 1 << 2)


def _data_file_ext_only(img: bytes) -> bytes:
    return add_extension(img, 0x44415441, b"/etc/shadow")


def _data_file_bit_only(img: bytes) -> bytes:
    return set_field(img, "incompatible_features", 1 << 2)


def _l1_entry(img: bytes, value: int) -> bytes:
    buf = bytearray(img)
    struct.pack_into(">Q", buf, get_field(img, "l1_table_offset"), value)
    return bytes(buf)


REFUSALS = [
    ("backing file", _backing, "backing file"),
    ("external data file (CVE-2024-32498)", _data_file, "external data file"),
    ("data-file extension without the bit", _data_file_ext_only, "external data file"),
    ("data-file bit without extension", _data_file_bit_only, "external data file"),
    (
        "data-file-raw autoclear bit",
        lambda i: set_field(i, "autoclear_features", 2),
        "external data file",
    ),
    (
        "unknown incompatible bit",
        lambda i: set_field(i, "incompatible_features", 1 << 5),
        "unknown incompatible feature",
    ),
    (
        "high unknown incompatible bit",
        lambda i: set_field(i, "incompatible_features", 1 << 63),
        "unknown incompatible feature",
    ),
    ("AES encryption", lambda i: set_field(i, "crypt_method", 1), "encrypted"),
    ("LUKS encryption", lambda i: set_field(i, "crypt_method", 2), "encrypted"),
    ("LUKS header extension", lambda i: add_extension(i, 0x0537BE77, bytes(16)), "encrypted"),
    ("dirty", lambda i: set_field(i, "incompatible_features", 1), "dirty"),
    ("corrupt", lambda i: set_field(i, "incompatible_features", 2), "corrupt"),
    (
        "L1 outside the file",
        lambda i: set_field(i, "l1_table_offset", 1 << 40),
        "outside the file",
    ),
    ("L1 on the header", lambda i: set_field(i, "l1_table_offset", 0), "overlaps the header"),
    (
        "L1 over the refcount table",
        lambda i: set_field(i, "l1_table_offset", get_field(i, "refcount_table_offset")),
        "overlaps the refcount table",
    ),
    (
        "L2 table on the L1 table",
        lambda i: _l1_entry(i, get_field(i, "l1_table_offset")),
        "overlaps the header or tables",
    ),
    ("L2 table outside the file", lambda i: _l1_entry(i, 1 << 40), "outside the file"),
    ("absurd virtual size", lambda i: set_field(i, "size", 1 << 62), "absurd"),
    ("huge L1 table", lambda i: set_field(i, "l1_size", 1 << 24), "L1 table too large"),
    ("cluster_bits too big", lambda i: set_field(i, "cluster_bits", 30), "cluster_bits"),
    ("cluster_bits too small", lambda i: set_field(i, "cluster_bits", 8), "cluster_bits"),
    (
        "refcount table outside the file",
        lambda i: set_field(i, "refcount_table_offset", 1 << 40),
        "refcount table",
    ),
    (
        "huge refcount table",
        lambda i: set_field(i, "refcount_table_clusters", 1 << 20),
        "refcount table too large",
    ),
    ("too many snapshots", lambda i: set_field(i, "nb_snapshots", 70000), "snapshots"),
    (
        "snapshot table outside",
        lambda i: set_field(set_field(i, "nb_snapshots", 1), "snapshots_offset", 1 << 40),
        "snapshot table",
    ),
]


@pytest.mark.parametrize("reason,mutate,message", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refused(plain, reason, mutate, message):
    image = mutate(plain)
    with pytest.raises(errors.UnsafeImage, match=message):
        _inspect(image)
    with pytest.raises(errors.UnsafeImage, match=message):
        _open(image)


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda i: b"QFI\xfa" + i[4:], "bad magic"),
        (lambda i: set_field(i, "version", 4), "unsupported version"),
        (lambda i: i[:50], "shorter than a qcow2 header"),
        (lambda i: set_field(i, "l1_size", 0), "L1 table is too small"),
        (lambda i: set_field(i, "header_length", 100), "header_length"),
        (lambda i: set_field(i, "l1_table_offset", 4096 + 8), "not cluster aligned"),
        (lambda i: add_extension(i, 0x1234, b"x" * 5000), "runs past the header cluster"),
        (lambda i: set_field(i, "refcount_order", 7), "refcount_order"),
    ],
)
def test_malformed(plain, mutate, message):
    with pytest.raises(errors.ImageFormatError, match=message):
        _open(mutate(plain))


def test_unknown_incompatible_bit_is_named(plain):
    names = struct.pack(">BB46s", 0, 7, b"shiny-new-feature")
    image = add_extension(plain, 0x6803F857, names)
    image = set_field(image, "incompatible_features", 1 << 7)
    with pytest.raises(errors.UnsafeImage, match="shiny-new-feature"):
        _open(image)


def test_snapshots_are_ignored(plain):
    # A snapshot table that exists is bounded but never read.
    image = set_field(set_field(plain, "nb_snapshots", 2), "snapshots_offset", 4096)
    assert _inspect(image).details["snapshots"] == 2
    with _open(image) as reader:
        assert read_all(reader) == DISK


def _first_compressed(image: bytes) -> int:
    for cluster in range(len(DISK) // 4096):
        if get_l2(image, cluster) >> 62 & 1:
            return cluster
    raise AssertionError("no compressed cluster")


def _point_compressed(image: bytes, cluster: int, payload: bytes) -> bytes:
    """Append ``payload`` and make ``cluster`` a compressed cluster stored there."""
    buf = bytearray(image)
    buf += bytes(-len(buf) % 512)
    off = len(buf)
    buf += payload + bytes(-len(payload) % 512)
    nsec = (len(payload) + 511) // 512 - 1
    shift = 62 - (12 - 8)
    return set_l2(bytes(buf), cluster, (1 << 62) | (nsec << shift) | off)


def test_compressed_bomb_refused(packed):
    cluster = _first_compressed(packed)
    bomb = zlib.compress(bytes(4 << 20), 9, -12)  # 4 MiB of zeros in a few KiB
    image = _point_compressed(packed, cluster, bomb)
    with _open(image) as reader:
        with pytest.raises(errors.UnsafeImage, match="decompression bomb"):
            reader.read(cluster * 4096, 4096)


def test_compressed_short_cluster_refused(packed):
    cluster = _first_compressed(packed)
    image = _point_compressed(packed, cluster, zlib.compress(b"tiny", 6, -12))
    with _open(image) as reader:
        with pytest.raises(errors.ImageFormatError, match="inflates to 4 bytes"):
            reader.read(cluster * 4096, 4096)


def test_compressed_garbage_refused(packed):
    cluster = _first_compressed(packed)
    image = _point_compressed(packed, cluster, b"\xff" * 700)
    with _open(image) as reader:
        with pytest.raises(errors.ImageFormatError, match="corrupt"):
            read_all(reader)


def test_zstd_bomb_refused():
    image = qcow2_image(DISK, cluster_size="4096", compress="on", compression_type="zstd")
    cluster = _first_compressed(image)
    bomb = zstandard.ZstdCompressor().compress(bytes(8 << 20))
    assert zstandard.frame_content_size(bomb) == 8 << 20
    image = _point_compressed(image, cluster, bomb)
    with _open(image) as reader:
        with pytest.raises(errors.UnsafeImage, match="decompression bomb"):
            reader.read(cluster * 4096, 4096)


def test_zstd_frame_without_size_is_bounded():
    image = qcow2_image(DISK, cluster_size="4096", compress="on", compression_type="zstd")
    cluster = _first_compressed(image)
    cctx = zstandard.ZstdCompressor(write_content_size=False)
    image = _point_compressed(image, cluster, cctx.compress(bytes(8 << 20)))
    with _open(image) as reader:
        with pytest.raises(errors.ImageFormatError):
            reader.read(cluster * 4096, 4096)
    # The same without content size but exactly one cluster is fine.
    good = _point_compressed(image, cluster, cctx.compress(b"z" * 4096))
    with _open(good) as reader:
        assert reader.read(cluster * 4096, 4096) == b"z" * 4096


def test_zstd_multi_frame_cluster():
    image = qcow2_image(DISK, cluster_size="4096", compress="on", compression_type="zstd")
    cluster = _first_compressed(image)
    cctx = zstandard.ZstdCompressor()
    payload = cctx.compress(b"a" * 1000) + cctx.compress(b"b" * 3096)
    image = _point_compressed(image, cluster, payload)
    with _open(image) as reader:
        assert reader.read(cluster * 4096, 4096) == b"a" * 1000 + b"b" * 3096


def test_compressed_on_header_refused(packed):
    cluster = _first_compressed(packed)
    image = set_l2(packed, cluster, (1 << 62) | 100)
    with pytest.raises(errors.UnsafeImage, match="overlaps the header"):
        _open(image)


def test_data_cluster_outside_file_refused(plain):
    cluster = next(c for c in range(64) if get_l2(plain, c))
    image = set_l2(plain, cluster, (1 << 40) | (1 << 63))
    with pytest.raises(errors.UnsafeImage, match="outside the file"):
        _open(image)


def test_unaligned_data_cluster_refused(plain):
    cluster = next(c for c in range(64) if get_l2(plain, c))
    image = set_l2(plain, cluster, get_l2(plain, cluster) + 512)
    with pytest.raises(errors.ImageFormatError, match="not aligned"):
        _open(image)


def test_read_outside_disk_is_invalid(plain):
    with _open(plain) as reader:
        with pytest.raises(errors.Invalid):
            reader.read(len(DISK) - 10, 20)


def test_parallel_inflate_many_clusters():
    # A read spanning many compressed clusters goes through the thread pool.
    disk = b"".join(bytes([i % 251]) * 4096 for i in range(256))
    image = qcow2_image(disk, cluster_size="4096", compress="on")
    with _open(image) as reader:
        assert reader.read(0, len(disk)) == disk
    assert _qemu.workers() >= 1


def test_reader_on_real_file(tmp_path, packed):
    path = tmp_path / "img.qcow2"
    path.write_bytes(packed)
    with open(path, "rb") as f, FMT.open(f) as reader:
        assert read_all(reader) == DISK


def test_memdisk_helper_is_sane():
    assert read_all(MemDisk(DISK)) == DISK
