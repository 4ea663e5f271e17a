"""VMDK: crafted hostile files are refused, each for its own reason."""

from __future__ import annotations

import io
import struct

import pytest
from vmfmt_images import MiB, pattern, vmdk_image

from ims import errors
from ims.disk.model import Sample
from ims.drivers.formats.vmdk import VmdkFormat

FMT = VmdkFormat()
DATA = pattern(MiB + 64 * 1024, seed=3)

# Header field offsets (little endian).
VERSION, FLAGS, CAPACITY, GRAIN, DESC_OFF, DESC_SIZE = 4, 8, 12, 20, 28, 36
NUM_GTES, RGD, GD, OVERHEAD, UNCLEAN = 44, 48, 56, 64, 72


def _sparse() -> bytearray:
    return bytearray(vmdk_image(DATA))


def _stream() -> bytearray:
    return bytearray(vmdk_image(DATA, "streamOptimized"))


def _put(img: bytearray, off: int, fmt: str, value: int) -> bytearray:
    struct.pack_into(fmt, img, off, value)
    return img


def _get(img: bytes, off: int, fmt: str) -> int:
    return struct.unpack_from(fmt, img, off)[0]


def _with_descriptor(img: bytearray, text: str) -> bytearray:
    """Replace the embedded descriptor (sector 1, 20 sectors) with ``text``."""
    raw = text.encode()
    size = _get(img, DESC_SIZE, "<Q") * 512
    assert len(raw) <= size
    img[512 : 512 + size] = raw.ljust(size, b"\0")
    return img


def _descriptor(extents: str, create: str = "monolithicSparse", extra: str = "") -> str:
    return (
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
        f'createType="{create}"\n{extra}\n# Extent description\n{extents}\n'
        '\n# The Disk Data Base\nddb.adapterType = "ide"\n'
    )


def _capacity(img: bytes) -> int:
    return _get(img, CAPACITY, "<Q")


def _refused(img: bytes, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        FMT.inspect(io.BytesIO(bytes(img)))
    with pytest.raises(exc, match=match):
        FMT.open(io.BytesIO(bytes(img)))


def test_valid_images_pass():
    for img in (_sparse(), _stream()):
        reader = FMT.open(io.BytesIO(bytes(img)))
        assert reader.read(0, len(DATA)) == DATA


def test_cve_2022_47951_flat_descriptor_naming_etc_passwd():
    text = _descriptor('RW 2048 FLAT "/etc/passwd" 0', create="monolithicFlat")
    assert FMT.probe(Sample(head=text.encode()))
    _refused(text.encode(), errors.UnsafeImage, r"/etc/passwd.*CVE-2022-47951")


@pytest.mark.parametrize(
    "create, extent",
    [
        ("monolithicFlat", 'RW 2048 FLAT "disk-flat.vmdk" 0'),
        ("twoGbMaxExtentSparse", 'RW 2048 SPARSE "disk-s001.vmdk"'),
        ("twoGbMaxExtentFlat", 'RW 2048 FLAT "disk-f001.vmdk" 0'),
        ("vmfs", 'RW 2048 VMFS "disk-flat.vmdk"'),
        ("custom", 'RW 2048 FLAT "disk-flat.vmdk" 0'),
    ],
)
def test_descriptor_only_multi_file_vmdk_refused(create, extent):
    text = _descriptor(extent, create=create)
    _refused(text.encode(), errors.UnsafeImage, rf"descriptor-only VMDK.*{create}")


def test_embedded_descriptor_with_second_extent_naming_another_file():
    cap = _capacity(_sparse())
    text = _descriptor(f'RW {cap} SPARSE "disk.vmdk"\nRW {cap} FLAT "other-disk.img" 0')
    _refused(_with_descriptor(_sparse(), text), errors.UnsafeImage, r"2 extents")


def test_embedded_extent_with_a_path_refused():
    cap = _capacity(_sparse())
    text = _descriptor(f'RW {cap} SPARSE "/var/lib/images/secret.vmdk"')
    _refused(_with_descriptor(_sparse(), text), errors.UnsafeImage, r"CVE-2022-47951")


def test_embedded_flat_create_type_refused():
    cap = _capacity(_sparse())
    text = _descriptor(f'RW {cap} SPARSE "disk.vmdk"', create="monolithicFlat")
    _refused(_with_descriptor(_sparse(), text), errors.UnsafeImage, r"createType")


@pytest.mark.parametrize(
    "extent, reason",
    [
        ('RDONLY {cap} SPARSE "disk.vmdk"', "not a plain RW SPARSE"),
        ('RW {cap} FLAT "disk.vmdk"', "not a plain RW SPARSE"),
        ("RW {cap} ZERO", "not a plain RW SPARSE"),
        ('RW {cap} SPARSE "disk.vmdk" 128', "not this file"),
    ],
)
def test_extent_must_be_one_plain_rw_sparse_extent(extent, reason):
    cap = _capacity(_sparse())
    text = _descriptor(extent.format(cap=cap))
    _refused(_with_descriptor(_sparse(), text), errors.UnsafeImage, reason)


def test_parent_cid_refused():
    cap = _capacity(_sparse())
    text = _descriptor(f'RW {cap} SPARSE "disk.vmdk"').replace(
        "parentCID=ffffffff", "parentCID=0badf00d"
    )
    _refused(_with_descriptor(_sparse(), text), errors.UnsafeImage, r"parentCID")


def test_parent_file_name_hint_refused():
    cap = _capacity(_sparse())
    text = _descriptor(f'RW {cap} SPARSE "disk.vmdk"', extra='parentFileNameHint="base.vmdk"')
    _refused(_with_descriptor(_sparse(), text), errors.UnsafeImage, r"parentFileNameHint")


def test_capacity_zero_with_descriptor_is_the_qemu_descriptor_trick():
    img = _put(_sparse(), CAPACITY, "<Q", 0)
    _refused(img, errors.UnsafeImage, r"capacity 0 with a descriptor")


def test_grain_larger_than_1mib_refused():
    _refused(_put(_sparse(), GRAIN, "<Q", 4096), errors.UnsafeImage, r"grain size")


def test_grain_not_power_of_two_refused():
    _refused(_put(_sparse(), GRAIN, "<Q", 96), errors.UnsafeImage, r"grain size")


def test_gt_entries_not_512_refused():
    _refused(_put(_sparse(), NUM_GTES, "<I", 256), errors.UnsafeImage, r"256 entries per grain")


def test_gd_outside_file_refused():
    img = _sparse()
    _refused(_put(img, GD, "<Q", len(img) // 512 + 10), errors.ImageFormatError, r"grain dir")


def test_descriptor_larger_than_1mib_refused():
    _refused(_put(_sparse(), DESC_SIZE, "<Q", 2048), errors.UnsafeImage, r"exceeds 1 MiB")


def test_descriptor_file_larger_than_1mib_is_not_a_vmdk():
    text = _descriptor('RW 2048 FLAT "x" 0').encode().ljust(MiB + 10, b"\n")
    _refused(text, errors.ImageFormatError, r"too large for a descriptor")


def test_absurd_capacity_refused():
    _refused(_put(_sparse(), CAPACITY, "<Q", 1 << 40), errors.UnsafeImage, r"exceeds 64 TiB")


def test_unsupported_version_refused():
    _refused(_put(_sparse(), VERSION, "<I", 4), errors.ImageFormatError, r"version 4")


def test_unclean_shutdown_refused():
    img = _sparse()
    img[UNCLEAN] = 1
    _refused(img, errors.UnsafeImage, r"unclean shutdown")


def test_damaged_newline_check_refused():
    img = _sparse()
    img[73:77] = b"\n \n\n"
    _refused(img, errors.ImageFormatError, r"newline check")


def test_cowd_refused():
    img = b"COWD" + bytes(2044)
    assert FMT.probe(Sample(head=img))
    _refused(img, errors.UnsafeImage, r"COWD")


def _first_gt(img: bytes) -> int:
    return _get(img, _get(img, GD, "<Q") * 512, "<I") * 512


def test_grain_table_outside_file_refused():
    img = _sparse()
    gd = _get(img, GD, "<Q") * 512
    _refused(_put(img, gd, "<I", len(img) // 512 + 1), errors.ImageFormatError, r"grain table")


def test_grain_outside_file_refused():
    img = _sparse()
    gt = _first_gt(img)
    _refused(_put(img, gt, "<I", len(img) // 512), errors.ImageFormatError, r"past the end")


def test_grain_into_metadata_refused():
    img = _sparse()
    _refused(_put(img, _first_gt(img), "<I", 2), errors.ImageFormatError, r"into the metadata")


def test_two_grains_sharing_data_refused():
    img = _sparse()
    gt = _first_gt(img)
    entries = struct.unpack_from("<512I", img, gt)
    used = [i for i, e in enumerate(entries) if e]
    _put(img, gt + used[1] * 4, "<I", entries[used[0]])
    _refused(img, errors.ImageFormatError, r"shares its data")


def test_stream_without_end_of_stream_marker_refused():
    img = _stream()
    img[-512:] = struct.pack("<QII", 1, 0, 3).ljust(512, b"\0")
    _refused(img, errors.ImageFormatError, r"end-of-stream")


def test_stream_footer_disagreeing_with_header_refused():
    img = _stream()
    _put(img, len(img) - 1024 + CAPACITY, "<Q", _capacity(img) * 2)
    _refused(img, errors.ImageFormatError, r"footer and header disagree")


def _stream_grain(img: bytes) -> tuple[int, int]:
    """Return (grain index, file offset of its marker) of the first stored grain."""
    footer = len(img) - 1024
    gd = _get(img, footer + GD, "<Q") * 512
    gt = _get(img, gd, "<I") * 512
    entries = struct.unpack_from("<512I", img, gt)
    index = next(i for i, e in enumerate(entries) if e)
    return index, entries[index] * 512


def test_stream_corrupt_grain_fails_on_read():
    img = _stream()
    index, grain = _stream_grain(img)
    img[grain + 12 : grain + 40] = b"\xff" * 28
    reader = FMT.open(io.BytesIO(bytes(img)))
    with pytest.raises(errors.ImageFormatError, match=r"corrupt compressed grain"):
        reader.read(index * 65536, 65536)


def test_stream_grain_marker_naming_another_sector_fails_on_read():
    img = _stream()
    index, grain = _stream_grain(img)
    _put(img, grain, "<Q", 12345)
    reader = FMT.open(io.BytesIO(bytes(img)))
    with pytest.raises(errors.ImageFormatError, match=r"marker names sector 12345"):
        reader.read(index * 65536, 65536)


def test_stream_oversized_compressed_length_fails_on_read():
    img = _stream()
    index, grain = _stream_grain(img)
    _put(img, grain + 8, "<I", 1 << 30)
    reader = FMT.open(io.BytesIO(bytes(img)))
    with pytest.raises(errors.ImageFormatError, match=r"bad compressed size"):
        reader.read(index * 65536, 65536)


def test_compressed_without_markers_refused():
    img = _put(_stream(), FLAGS, "<I", 0x10001)
    _put(img, len(img) - 1024 + FLAGS, "<I", 0x10001)
    _refused(img, errors.ImageFormatError, r"without markers")


def test_garbage_is_not_a_vmdk():
    _refused(b"hello world" * 100, errors.ImageFormatError, r"no KDMV header")


def test_extent_line_with_absurd_numbers_is_malformed():
    text = _descriptor(f'RW {"9" * 5000} SPARSE "disk.vmdk"')
    _refused(_with_descriptor(_sparse(), text), errors.ImageFormatError, r"malformed extent")


def test_zeroed_grain_entries_read_as_zeros_only_with_the_flag():
    img = _sparse()
    gt = _first_gt(img)
    entries = struct.unpack_from("<512I", img, gt)
    index = next(i for i, e in enumerate(entries) if e)
    _put(img, gt + index * 4, "<I", 1)
    # Without the zeroed-grain flag, GTE 1 points at the descriptor sector.
    _refused(img, errors.ImageFormatError, r"into the metadata")
    _put(img, FLAGS, "<I", _get(img, FLAGS, "<I") | 4)
    _put(img, VERSION, "<I", 2)
    reader = FMT.open(io.BytesIO(bytes(img)))
    assert reader.read(index * 65536, 65536) == bytes(65536)
    assert any(e.zero and e.offset <= index * 65536 < e.end for e in reader.extents())


def test_stream_corrupt_grain_spoils_only_its_own_reads():
    img = _stream()
    index, grain = _stream_grain(img)
    img[grain + 12 : grain + 40] = b"\xff" * 28
    reader = FMT.open(io.BytesIO(bytes(img)))
    # Read-ahead loads the corrupt grain with its neighbours; they still read.
    for start in range(0, index * 65536, 65536):
        assert reader.read(start, 65536) == DATA[start : start + 65536]
    after = (index + 1) * 65536
    assert reader.read(after, 3 * 65536) == DATA[after : after + 3 * 65536]
    with pytest.raises(errors.ImageFormatError, match=r"corrupt compressed grain"):
        reader.read(0, reader.virtual_size)
