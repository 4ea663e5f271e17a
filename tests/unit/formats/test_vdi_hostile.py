"""VDI: reading crafted images, and refusing hostile ones for their own reason."""

from __future__ import annotations

import io
import struct

import pytest
from vmfmt_images import MiB, pattern, vdi_image

from ims import errors
from ims.disk.model import Sample
from ims.drivers.formats.vdi import VdiFormat

FMT = VdiFormat()
DATA = pattern(3 * MiB + 512, seed=11)
TYPE, BMAP, DATA_OFF, SECTOR_SIZE = 0x4C, 0x154, 0x158, 0x168
DISK_SIZE, BLOCK_SIZE, BLOCK_EXTRA, BLOCKS = 0x170, 0x178, 0x17C, 0x180
UUID_LINK, UUID_PARENT = 0x1A8, 0x1B8


def _image(static: bool = False) -> bytearray:
    return bytearray(vdi_image(DATA, static=static))


def _refused(img: bytes, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        FMT.inspect(io.BytesIO(bytes(img)))
    with pytest.raises(exc, match=match):
        FMT.open(io.BytesIO(bytes(img)))


@pytest.mark.parametrize("static", [False, True])
def test_reads_static_and_dynamic(static):
    img = bytes(_image(static))
    assert FMT.probe(Sample(head=img[:4096]))
    info = FMT.inspect(io.BytesIO(img))
    assert info.virtual_size == len(DATA)
    assert info.details["subformat"] == ("static" if static else "dynamic")
    reader = FMT.open(io.BytesIO(img))
    assert reader.read(0, len(DATA)) == DATA
    got = bytearray(len(DATA))
    for ext in reader.extents():
        if not ext.zero:
            got[ext.offset : ext.end] = reader.read(ext.offset, ext.length)
    assert bytes(got) == DATA


def test_discarded_blocks_read_as_zeros():
    img = _image()
    struct.pack_into("<I", img, 512, 0xFFFFFFFE)
    reader = FMT.open(io.BytesIO(bytes(img)))
    assert reader.read(0, MiB) == bytes(MiB)


@pytest.mark.parametrize("kind, name", [(3, "undo"), (4, "differencing")])
def test_undo_and_differencing_refused(kind, name):
    img = _image()
    struct.pack_into("<I", img, TYPE, kind)
    _refused(img, errors.UnsafeImage, name)


@pytest.mark.parametrize("field", [UUID_LINK, UUID_PARENT])
def test_parent_uuid_refused(field):
    img = _image()
    img[field : field + 16] = bytes(range(16, 32))
    _refused(img, errors.UnsafeImage, r"parent")


def test_block_extra_refused():
    img = _image()
    struct.pack_into("<I", img, BLOCK_EXTRA, 512)
    _refused(img, errors.UnsafeImage, r"block_extra")


def test_block_size_other_than_1mib_refused():
    img = _image()
    struct.pack_into("<I", img, BLOCK_SIZE, 2 * MiB)
    _refused(img, errors.UnsafeImage, r"block size .* not 1 MiB")


def test_block_map_outside_file_refused():
    img = _image()
    struct.pack_into("<I", img, BMAP, len(img))
    _refused(img, errors.ImageFormatError, r"block map")


def test_block_map_with_too_many_blocks_refused():
    img = _image()
    struct.pack_into("<I", img, BLOCKS, 1 << 24)
    _refused(img, errors.ImageFormatError, r"block map .* outside the file")


def test_absurd_size_refused():
    img = _image()
    struct.pack_into("<Q", img, DISK_SIZE, 100 << 40)
    _refused(img, errors.UnsafeImage, r"exceeds the 64 TiB limit")


def test_size_larger_than_map_refused():
    img = _image()
    struct.pack_into("<Q", img, DISK_SIZE, 64 * MiB)
    _refused(img, errors.ImageFormatError, r"does not fit")


def test_map_entry_out_of_range_refused():
    img = _image()
    struct.pack_into("<I", img, 512, 77)
    _refused(img, errors.ImageFormatError, r"index 77")


def test_duplicate_map_entries_refused():
    img = _image(static=True)
    struct.pack_into("<I", img, 516, 0)
    _refused(img, errors.ImageFormatError, r"used twice")


def test_block_outside_file_refused():
    img = _image(static=True)
    del img[-MiB:]
    _refused(img, errors.ImageFormatError, r"block at offset .* outside the file")


def test_data_area_overlapping_the_map_refused():
    img = _image()
    struct.pack_into("<I", img, DATA_OFF, 512)
    _refused(img, errors.ImageFormatError, r"overlaps the block map")


def test_bad_sector_size_refused():
    img = _image()
    struct.pack_into("<I", img, SECTOR_SIZE, 4096)
    _refused(img, errors.ImageFormatError, r"sector size")


def test_unsupported_version_refused():
    img = _image()
    struct.pack_into("<I", img, 0x44, 0x00010000)
    _refused(img, errors.ImageFormatError, r"version 1.0")
