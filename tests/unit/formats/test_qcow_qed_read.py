"""qcow v1 and QED readers: round trips and every refusal reason."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from qemu_family_samples import pattern_disk, qcow1_image, qed_image, read_all, set_qed

from ims import errors
from ims.disk.model import Sample
from ims.drivers.formats.qcow import QcowFormat
from ims.drivers.formats.qed import QedFormat

QCOW = QcowFormat()
QED = QedFormat()
DISK = pattern_disk(200 * 1024, seed=8)


@pytest.mark.parametrize(
    "cluster_bits,l2_bits,compress", [(9, 6, False), (12, 9, False), (12, 9, True), (16, 13, True)]
)
def test_qcow_round_trip(cluster_bits, l2_bits, compress):
    image = qcow1_image(DISK, cluster_bits, l2_bits, compress)
    info = QCOW.inspect(io.BytesIO(image))
    assert info.virtual_size == len(DISK)
    assert info.cluster_size == 1 << cluster_bits
    assert (info.details["compressed_clusters"] > 0) == compress
    with QCOW.open(io.BytesIO(image)) as reader:
        assert read_all(reader) == DISK
        assert reader.read(1000, 70000) == DISK[1000:71000]


def test_qcow_probe():
    image = qcow1_image(DISK)
    assert QCOW.probe(Sample(head=image[:4096]))
    assert not QCOW.probe(Sample(head=b"QFI\xfb\0\0\0\x02" + bytes(64)))


def _qcow_set(image: bytes, fmt: str, off: int, value: int) -> bytes:
    buf = bytearray(image)
    struct.pack_into(fmt, buf, off, value)
    return bytes(buf)


def _qcow_first_l2_entry(image: bytes) -> int:
    l1 = struct.unpack_from(">Q", image, 48)[0]
    for j in range(64):
        if struct.unpack_from(">Q", image, l1 + 8 * j)[0]:
            return l1 + 8 * j
    raise AssertionError


QCOW_REFUSALS = [
    ("backing file", lambda i: _qcow_set(i, ">Q", 8, 1024), "backing file"),
    ("encryption", lambda i: _qcow_set(i, ">I", 36, 1), "encrypted"),
    ("cluster_bits", lambda i: _qcow_set(i, ">B", 32, 20), "cluster_bits"),
    ("l2_bits", lambda i: _qcow_set(i, ">B", 33, 2), "l2_bits"),
    ("absurd size", lambda i: _qcow_set(i, ">Q", 24, 1 << 60), "absurd"),
    ("L1 too large", lambda i: _qcow_set(i, ">Q", 24, 1 << 48), "L1 table too large"),
    ("L1 outside", lambda i: _qcow_set(i, ">Q", 40, 1 << 40), "outside the file"),
    ("L1 on header", lambda i: _qcow_set(i, ">Q", 40, 8), "overlaps the header"),
    ("L2 outside", lambda i: _qcow_set(i, ">Q", 48, 1 << 40), "outside the file"),
    ("L2 on the L1", lambda i: _qcow_set(i, ">Q", 48, 48), "overlaps the header or L1"),
    (
        "data outside",
        lambda i: _qcow_set(i, ">Q", _qcow_first_l2_entry(i), 1 << 40),
        "outside the file",
    ),
    (
        "data on header",
        lambda i: _qcow_set(i, ">Q", _qcow_first_l2_entry(i), 16),
        "overlaps the header",
    ),
]


@pytest.mark.parametrize("name,mutate,message", QCOW_REFUSALS, ids=[r[0] for r in QCOW_REFUSALS])
def test_qcow_refused(name, mutate, message):
    image = mutate(qcow1_image(DISK))
    with pytest.raises(errors.UnsafeImage, match=message):
        QCOW.inspect(io.BytesIO(image))


def test_qcow_malformed():
    image = qcow1_image(DISK)
    with pytest.raises(errors.ImageFormatError, match="magic"):
        QCOW.open(io.BytesIO(b"XXXX" + image[4:]))
    with pytest.raises(errors.ImageFormatError, match="shorter"):
        QCOW.open(io.BytesIO(image[:40]))
    with pytest.raises(errors.ImageFormatError, match="too small"):
        QCOW.open(io.BytesIO(_qcow_set(image, ">Q", 24, 1)))


def test_qcow_compressed_bomb():
    image = bytearray(qcow1_image(DISK, 12, 9, compress=True))
    entry_off = _qcow_first_l2_entry(bytes(image))
    bomb = zlib.compress(bytes(1 << 20), 9, -12)
    off = len(image)
    image += bomb
    struct.pack_into(">Q", image, entry_off, (1 << 63) | (len(bomb) << (63 - 12)) | off)
    with QCOW.open(io.BytesIO(bytes(image))) as reader:
        with pytest.raises(errors.UnsafeImage, match="decompression bomb"):
            read_all(reader)


def test_qed_round_trip():
    for zero_entries in (False, True):
        image = qed_image(DISK, zero_entries=zero_entries)
        info = QED.inspect(io.BytesIO(image))
        assert info.virtual_size == len(DISK)
        with QED.open(io.BytesIO(image)) as reader:
            assert read_all(reader) == DISK
            assert reader.read(5000, 30000) == DISK[5000:35000]


def test_qed_bigger_tables():
    disk = pattern_disk(3 * 1024 * 1024, seed=4)
    image = qed_image(disk, cluster_size=65536, table_size=4)
    with QED.open(io.BytesIO(image)) as reader:
        assert read_all(reader) == disk


def test_qed_probe():
    assert QED.probe(Sample(head=qed_image(DISK)[:4096]))
    assert not QED.probe(Sample(head=bytes(4096)))


QED_REFUSALS = [
    ("backing file", lambda i: set_qed(i, "features", 1), "backing file"),
    ("need check", lambda i: set_qed(i, "features", 2), "need-check"),
    ("unknown feature", lambda i: set_qed(i, "features", 8), "unknown feature"),
    ("cluster size", lambda i: set_qed(i, "cluster_size", 1000), "cluster size"),
    ("cluster size too big", lambda i: set_qed(i, "cluster_size", 1 << 27), "cluster size"),
    ("table size", lambda i: set_qed(i, "table_size", 32), "table size"),
    ("image size", lambda i: set_qed(i, "image_size", 1 << 55), "image size"),
    ("image size unaligned", lambda i: set_qed(i, "image_size", 1001), "image size"),
    ("L1 outside", lambda i: set_qed(i, "l1_table_offset", 1 << 40), "outside the file"),
    ("L1 on header", lambda i: set_qed(i, "l1_table_offset", 0), "overlaps the header"),
]


@pytest.mark.parametrize("name,mutate,message", QED_REFUSALS, ids=[r[0] for r in QED_REFUSALS])
def test_qed_refused(name, mutate, message):
    image = mutate(qed_image(DISK))
    with pytest.raises(errors.UnsafeImage, match=message):
        QED.inspect(io.BytesIO(image))


def _qed_l1_entry_set(image: bytes, value: int) -> bytes:
    buf = bytearray(image)
    struct.pack_into("<Q", buf, 4096, value)
    return bytes(buf)


def _qed_first_l2(image: bytes) -> int:
    return struct.unpack_from("<Q", image, 4096)[0]


def test_qed_tables_checked():
    image = qed_image(DISK)
    with pytest.raises(errors.UnsafeImage, match="outside the file"):
        QED.open(io.BytesIO(_qed_l1_entry_set(image, 1 << 40)))
    with pytest.raises(errors.UnsafeImage, match="overlaps the L1"):
        QED.open(io.BytesIO(_qed_l1_entry_set(image, 4096)))
    with pytest.raises(errors.ImageFormatError, match="not cluster aligned"):
        QED.open(io.BytesIO(_qed_l1_entry_set(image, 4096 * 3 + 8)))
    l2 = _qed_first_l2(image)
    j = next(j for j in range(512) if struct.unpack_from("<Q", image, l2 + 8 * j)[0] > 1)
    for value, message in ((1 << 40, "outside the file"), (8192 + 16, "not aligned")):
        buf = bytearray(image)
        struct.pack_into("<Q", buf, l2 + 8 * j, value)
        with pytest.raises(errors.ImageFormatError, match=message):
            QED.open(io.BytesIO(bytes(buf)))


def test_qed_malformed():
    image = qed_image(DISK)
    with pytest.raises(errors.ImageFormatError, match="magic"):
        QED.open(io.BytesIO(b"QEX\0" + image[4:]))
    with pytest.raises(errors.ImageFormatError, match="header size"):
        QED.open(io.BytesIO(set_qed(image, "header_size", 0)))
