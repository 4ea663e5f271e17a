"""VHDX: crafted hostile files are refused, each for its own reason."""

from __future__ import annotations

import io
import struct
import uuid

import pytest
from vmfmt_images import MiB, crc32c_fix, pattern, vhdx_image

from ims import errors
from ims.drivers.formats import vhdx
from ims.drivers.formats.vhdx import VhdxFormat

FMT = VhdxFormat()
DATA = pattern(3 * MiB, seed=7)

HEADERS = (64 * 1024, 128 * 1024)
REGIONS = (192 * 1024, 256 * 1024)
META = 2 * MiB  # where our writer puts the metadata region
BAT = 3 * MiB


def _image() -> bytearray:
    return bytearray(vhdx_image(DATA))


def _refused(img: bytes, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        FMT.inspect(io.BytesIO(bytes(img)))
    with pytest.raises(exc, match=match):
        FMT.open(io.BytesIO(bytes(img)))


def _edit_headers(img: bytearray, off: int, fmt: str, value) -> bytearray:
    for head in HEADERS:
        struct.pack_into(fmt, img, head + off, value)
        crc32c_fix(img, head, 4096)
    return img


def _edit_regions(img: bytearray, off: int, fmt: str, *values) -> bytearray:
    for table in REGIONS:
        struct.pack_into(fmt, img, table + off, *values)
        crc32c_fix(img, table, 64 * 1024)
    return img


def _meta_entry(img: bytearray, index: int) -> tuple[bytes, int, int, int]:
    guid, off, length, flags = struct.unpack_from("<16sIII", img, META + 32 + 32 * index)
    return guid, off, length, flags


def _item_offset(img: bytearray, guid: bytes) -> int:
    for i in range(5):
        g, off, _length, _flags = _meta_entry(img, i)
        if g == guid:
            return META + off
    raise AssertionError("item not found")


def test_valid_image_passes():
    reader = FMT.open(io.BytesIO(bytes(_image())))
    assert reader.read(0, len(DATA)) == DATA


def test_has_parent_refused():
    img = _image()
    struct.pack_into("<I", img, _item_offset(img, vhdx.FILE_PARAMETERS) + 4, 2)
    _refused(img, errors.UnsafeImage, r"HasParent")


def test_parent_locator_refused():
    img = _image()
    struct.pack_into("<16s", img, META + 32 + 32 * 2, vhdx.PARENT_LOCATOR)
    _refused(img, errors.UnsafeImage, r"parent locator")


def test_pending_log_refused():
    img = _edit_headers(_image(), 48, "<16s", uuid.uuid4().bytes_le)
    _refused(img, errors.UnsafeImage, r"log is not empty")


def test_unknown_required_metadata_refused():
    img = _image()
    struct.pack_into("<16s", img, META + 32 + 32 * 2, uuid.uuid4().bytes_le)  # was page 83
    _refused(img, errors.UnsafeImage, r"unknown required metadata")


def test_unknown_optional_metadata_is_ignored():
    img = _image()
    struct.pack_into("<16s", img, META + 32 + 32 * 2, uuid.uuid4().bytes_le)
    struct.pack_into("<I", img, META + 32 + 32 * 2 + 24, 0)  # not required
    assert FMT.inspect(io.BytesIO(bytes(img))).virtual_size == len(DATA)


def test_unknown_required_region_refused():
    img = _edit_regions(_image(), 8, "<I", 3)
    _edit_regions(img, 16 + 64, "<16sQII", uuid.uuid4().bytes_le, 40 * MiB, MiB, 1)
    _refused(img, errors.UnsafeImage, r"unknown required region")


def test_region_outside_file_refused():
    img = _image()
    _edit_regions(img, 16 + 32 + 16, "<Q", 512 * MiB)  # metadata region offset
    _refused(img, errors.ImageFormatError, r"outside the file")


def test_overlapping_regions_refused():
    img = _image()
    _edit_regions(img, 16 + 32 + 16, "<Q", BAT)  # metadata region onto the BAT
    _refused(img, errors.ImageFormatError, r"overlaps another region")


def test_region_overlapping_the_log_refused():
    img = _image()
    _edit_regions(img, 16 + 16, "<Q", MiB)  # BAT onto the log
    _refused(img, errors.ImageFormatError, r"overlaps")


def test_too_many_region_entries_refused():
    img = _edit_regions(_image(), 8, "<I", 3000)
    _refused(img, errors.ImageFormatError, r"3000 entries")


def test_too_many_metadata_entries_refused():
    img = _image()
    struct.pack_into("<H", img, META + 10, 2048)
    _refused(img, errors.ImageFormatError, r"2048 entries")


def test_metadata_item_outside_region_refused():
    img = _image()
    struct.pack_into("<I", img, META + 32 + 16, 2 * MiB)
    _refused(img, errors.ImageFormatError, r"outside the metadata region")


def test_overlapping_metadata_items_refused():
    img = _image()
    _g, off, _l, _f = _meta_entry(img, 0)
    struct.pack_into("<I", img, META + 32 + 32 * 2 + 16, off + 4)  # page 83 onto params
    _refused(img, errors.ImageFormatError, r"metadata items overlap")


def test_larger_than_64_tib_refused():
    img = _image()
    struct.pack_into("<Q", img, _item_offset(img, vhdx.VIRTUAL_DISK_SIZE), 65 << 40)
    _refused(img, errors.UnsafeImage, r"exceeds the 64 TiB limit")


def test_bad_block_size_refused():
    img = _image()
    struct.pack_into("<I", img, _item_offset(img, vhdx.FILE_PARAMETERS), 3 * MiB)
    _refused(img, errors.ImageFormatError, r"block size")


def test_bad_sector_size_refused():
    img = _image()
    struct.pack_into("<I", img, _item_offset(img, vhdx.LOGICAL_SECTOR), 1024)
    _refused(img, errors.ImageFormatError, r"logical sector size")


def test_bad_header_crcs_refused():
    img = _image()
    for head in HEADERS:
        img[head + 100] ^= 1
    _refused(img, errors.ImageFormatError, r"no valid header")


def test_one_bad_header_falls_back_to_the_other():
    img = _image()
    img[HEADERS[1] + 100] ^= 1
    assert FMT.inspect(io.BytesIO(bytes(img))).virtual_size == len(DATA)


def test_bad_region_table_crcs_refused():
    img = _image()
    for table in REGIONS:
        img[table + 100] ^= 1
    _refused(img, errors.ImageFormatError, r"no valid region table")


def test_partially_present_block_refused():
    img = _image()
    struct.pack_into("<Q", img, BAT, 7 | (8 * MiB))
    _refused(img, errors.UnsafeImage, r"partially present")


def test_block_outside_file_refused():
    img = _image()
    struct.pack_into("<Q", img, BAT, 6 | (4096 * MiB))
    _refused(img, errors.ImageFormatError, r"outside the file")


def test_block_into_metadata_refused():
    img = _image()
    struct.pack_into("<Q", img, BAT, 6 | META)
    _refused(img, errors.ImageFormatError, r"overlaps metadata")


def test_blocks_sharing_data_refused():
    img = _image()
    entries = struct.unpack_from("<2Q", img, BAT)
    assert entries[0] & 7 == 6
    struct.pack_into("<Q", img, BAT + 8, entries[0])
    _refused(img, errors.ImageFormatError, r"overlaps metadata or another block")


def test_unknown_block_state_refused():
    img = _image()
    struct.pack_into("<Q", img, BAT, 4)
    _refused(img, errors.ImageFormatError, r"unknown state 4")


def test_zero_states_read_as_zeros():
    img = _image()
    struct.pack_into("<Q", img, BAT, 2)  # ZERO
    reader = FMT.open(io.BytesIO(bytes(img)))
    assert reader.read(0, 2 * MiB) == bytes(2 * MiB)
    assert reader.read(2 * MiB, MiB) == DATA[2 * MiB :]


def test_not_a_vhdx():
    _refused(bytes(2 * MiB), errors.ImageFormatError, r"no file identifier")
