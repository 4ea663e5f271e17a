"""VHD: crafted hostile files are refused, each for its own reason."""

from __future__ import annotations

import io
import struct

import pytest
from vmfmt_images import MiB, pattern, vhd_checksum_fix, vhd_image

from ims import errors
from ims.drivers.formats.vhd import VhdFormat

FMT = VhdFormat()
DATA = pattern(3 * MiB, seed=5)

# Footer fields (big endian); the dynamic header sits at 512, the BAT at 1536.
CURRENT_SIZE, GEOMETRY, DISK_TYPE, CREATOR = 48, 56, 60, 28
DYN, BAT = 512, 1536


def _fix_footers(img: bytearray) -> bytearray:
    """Copy the footer at the start to the end (if dynamic) and fix checksums."""
    vhd_checksum_fix(img, 0, 512, 64)
    if img[:8] == b"conectix":
        img[-512:] = img[:512]
    return img


def _fix_dyn(img: bytearray) -> bytearray:
    vhd_checksum_fix(img, DYN, 1024, 36)
    return img


def _dynamic() -> bytearray:
    return bytearray(vhd_image(DATA))


def _fixed() -> bytearray:
    return bytearray(vhd_image(DATA, "fixed"))


def _refused(img: bytes, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        FMT.inspect(io.BytesIO(bytes(img)))
    with pytest.raises(exc, match=match):
        FMT.open(io.BytesIO(bytes(img)))


def test_valid_images_pass():
    for img in (_dynamic(), _fixed()):
        assert FMT.open(io.BytesIO(bytes(img))).read(0, len(DATA)) == DATA


def test_differencing_disk_refused():
    img = _dynamic()
    struct.pack_into(">I", img, DISK_TYPE, 4)
    _refused(_fix_footers(img), errors.UnsafeImage, r"differencing")


def test_bad_footer_checksum_refused():
    img = _fixed()
    img[-512 + 100] ^= 0xFF
    _refused(img, errors.ImageFormatError, r"footer checksum")


def test_bad_dynamic_header_checksum_refused():
    img = _dynamic()
    img[DYN + 100] ^= 0xFF
    _refused(img, errors.ImageFormatError, r"dynamic header checksum")


def test_footer_copy_differing_from_footer_refused():
    img = _dynamic()
    struct.pack_into(">Q", img, CURRENT_SIZE, 2 * MiB)
    vhd_checksum_fix(img, 0, 512, 64)
    _refused(img, errors.ImageFormatError, r"footer copy")


def test_bat_entry_outside_file_refused():
    img = _dynamic()
    struct.pack_into(">I", img, BAT, len(img) // 512 + 4)
    _refused(img, errors.ImageFormatError, r"BAT entry 0 points outside")


def test_overlapping_bat_entries_refused():
    img = _dynamic()
    first = struct.unpack_from(">I", img, BAT)[0]
    assert first != 0xFFFFFFFF
    struct.pack_into(">I", img, BAT + 4, first + 1)
    _refused(img, errors.ImageFormatError, r"overlaps another block")


def test_bat_entry_into_metadata_refused():
    img = _dynamic()
    struct.pack_into(">I", img, BAT, 2)
    _refused(img, errors.ImageFormatError, r"overlaps the disk's metadata")


def test_bat_outside_file_refused():
    img = _dynamic()
    struct.pack_into(">Q", img, DYN + 16, len(img) * 2)
    _refused(_fix_dyn(img), errors.ImageFormatError, r"BAT at .* is outside")


def test_bigger_than_2040_gib_refused():
    img = _fixed()
    footer = bytearray(img[-512:])
    struct.pack_into(">Q", footer, CURRENT_SIZE, 2041 << 30)
    vhd_checksum_fix(footer, 0, 512, 64)
    img[-512:] = footer
    _refused(img, errors.UnsafeImage, r"exceeds 2040 GiB")


def test_fixed_disk_longer_than_file_refused():
    img = _fixed()
    footer = bytearray(img[-512:])
    struct.pack_into(">Q", footer, CURRENT_SIZE, 64 * MiB)
    vhd_checksum_fix(footer, 0, 512, 64)
    img[-512:] = footer
    _refused(img, errors.ImageFormatError, r"longer than the file")


def test_parent_locator_refused():
    img = _dynamic()
    struct.pack_into(">IIIIQ", img, DYN + 576, 0x57326B75, 1, 20, 0, 4096)  # "W2ku"
    _refused(_fix_dyn(img), errors.UnsafeImage, r"parent locator")


def test_bad_block_size_refused():
    img = _dynamic()
    struct.pack_into(">I", img, DYN + 32, 3 * MiB)
    _refused(_fix_dyn(img), errors.ImageFormatError, r"block size")


def test_too_small_bat_refused():
    img = _dynamic()
    struct.pack_into(">I", img, DYN + 28, 1)
    _refused(_fix_dyn(img), errors.ImageFormatError, r"too small")


def test_unknown_disk_type_refused():
    img = _fixed()
    footer = bytearray(img[-512:])
    struct.pack_into(">I", footer, DISK_TYPE, 9)
    vhd_checksum_fix(footer, 0, 512, 64)
    img[-512:] = footer
    _refused(img, errors.ImageFormatError, r"unknown disk type")


def test_virtual_size_follows_the_creator():
    """CHS geometry for Virtual PC/qemu images, current_size for the rest."""
    img = _fixed()
    footer = bytearray(img[-512:])
    struct.pack_into(">HBB", footer, GEOMETRY, 90, 4, 17)
    footer[CREATOR : CREATOR + 4] = b"qemu"
    vhd_checksum_fix(footer, 0, 512, 64)
    img[-512:] = footer
    assert FMT.inspect(io.BytesIO(bytes(img))).virtual_size == 90 * 4 * 17 * 512
    footer[CREATOR : CREATOR + 4] = b"vbox"
    vhd_checksum_fix(footer, 0, 512, 64)
    img[-512:] = footer
    assert FMT.inspect(io.BytesIO(bytes(img))).virtual_size == len(DATA)


def test_clear_bitmap_bits_read_as_zeros():
    img = _dynamic()
    first = struct.unpack_from(">I", img, BAT)[0] * 512
    img[first] = 0x7F  # sector 0 of block 0 not present
    reader = FMT.open(io.BytesIO(bytes(img)))
    assert reader.read(0, 1024) == bytes(512) + DATA[512:1024]
    extents = list(reader.extents())
    assert extents[0].zero and extents[0].length == 512
    assert not extents[1].zero
