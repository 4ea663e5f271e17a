"""VMDK, VHD, VHDX writers: round trips through our readers, layouts, options."""

from __future__ import annotations

import io
import random
import struct
import zlib

import pytest
from vmfmt_images import ForwardOnly, KiB, MemReader, MiB, pattern, vdi_image, write_image

from ims import errors
from ims.disk import registry
from ims.disk.model import Extent, Sample
from ims.drivers.formats import vhd, vmdk
from ims.drivers.formats.vhd import VhdFormat
from ims.drivers.formats.vhdx import VhdxFormat
from ims.drivers.formats.vmdk import VmdkFormat

CASES = [
    (VmdkFormat(), {"subformat": "monolithicSparse"}),
    (VmdkFormat(), {"subformat": "streamOptimized"}),
    (VhdFormat(), {"subformat": "fixed"}),
    (VhdFormat(), {"subformat": "dynamic"}),
    (VhdxFormat(), {}),
]
IDS = ["vmdk-sparse", "vmdk-stream", "vhd-fixed", "vhd-dynamic", "vhdx"]
SIZES = [5 * MiB, 5 * MiB + 512, 64 * KiB * 513 + 1536]


def _read_all(reader) -> bytes:
    """Rebuild the disk from its extents, reading data in uneven pieces."""
    out = bytearray(reader.virtual_size)
    pos = 0
    for ext in reader.extents():
        assert ext.offset == pos and ext.length > 0
        pos = ext.end
        if ext.zero:
            continue
        start = ext.offset
        while start < ext.end:
            n = min(ext.end - start, 3 * MiB + 4096 + 7)
            out[start : start + n] = reader.read(start, n)
            start += n
    assert pos == reader.virtual_size
    return bytes(out)


@pytest.mark.parametrize("fmt, opts", CASES, ids=IDS)
@pytest.mark.parametrize("size", SIZES)
def test_round_trip(fmt, opts, size):
    data = pattern(size, seed=size)
    img = write_image(fmt, data, **opts)
    sample = Sample(head=img[:65536], tail=img[-4096:], size=len(img))
    assert fmt.probe(sample)
    info = fmt.inspect(io.BytesIO(img))
    want_size = -(-size // 512) * 512
    assert info.virtual_size == want_size
    if "subformat" in opts:
        assert info.details["subformat"] == opts["subformat"]
    reader = fmt.open(io.BytesIO(img))
    assert _read_all(reader) == data.ljust(want_size, b"\0")
    assert reader.read(size - 100, 100) == data[-100:]


@pytest.mark.parametrize("fmt, opts", CASES, ids=IDS)
def test_empty_and_all_zero_disks(fmt, opts):
    for data in (bytes(2 * MiB), bytes(512)):
        img = write_image(fmt, data, **opts)
        reader = fmt.open(io.BytesIO(img))
        assert _read_all(reader) == data
        if opts.get("subformat") != "fixed":
            assert all(ext.zero for ext in reader.extents())


@pytest.mark.parametrize(
    "fmt, opts",
    [
        (VmdkFormat(), {"subformat": "streamOptimized"}),
        (VhdFormat(), {"subformat": "fixed"}),
        (VhdFormat(), {"subformat": "dynamic"}),
    ],
    ids=["vmdk-stream", "vhd-fixed", "vhd-dynamic"],
)
def test_streaming_writers_need_no_seek(fmt, opts):
    assert fmt.streaming_write
    data = pattern(3 * MiB, seed=2)
    sink = ForwardOnly()
    fmt.write(MemReader(data), sink, opts)
    assert fmt.open(io.BytesIO(bytes(sink.buf))).read(0, len(data)) == data


def test_streamed_vmdk_matches_seekable_output_layout():
    data = pattern(2 * MiB, seed=4)
    sink = ForwardOnly()
    VmdkFormat().write(MemReader(data), sink, {"subformat": "streamOptimized"})
    img = write_image(VmdkFormat(), data, subformat="streamOptimized")
    # Same layout either way; only the random CID in the descriptor differs.
    assert len(sink.buf) == len(img)
    assert sink.buf[:512] == img[:512]


@pytest.mark.parametrize(
    "fmt, opts",
    [(VmdkFormat(), {"subformat": "monolithicSparse"}), (VhdxFormat(), {})],
    ids=["vmdk-sparse", "vhdx"],
)
def test_seeking_writers_refuse_forward_only_output(fmt, opts):
    with pytest.raises(errors.Invalid, match="seekable"):
        fmt.write(MemReader(bytes(MiB)), ForwardOnly(), opts)


@pytest.mark.parametrize(
    "fmt, opts",
    [
        (VmdkFormat(), {"subformat": "monolithicFlat"}),
        (VmdkFormat(), {"compat6": "on"}),
        (VmdkFormat(), {"subformat": "streamOptimized", "compression_level": "0"}),
        (VmdkFormat(), {"subformat": "monolithicSparse", "compression_level": "6"}),
        (VhdFormat(), {"subformat": "differencing"}),
        (VhdxFormat(), {"subformat": "fixed"}),
        (VhdxFormat(), {"block_size": "3145728"}),
    ],
)
def test_bad_options_are_invalid(fmt, opts):
    with pytest.raises(errors.Invalid):
        fmt.write(MemReader(bytes(MiB)), io.BytesIO(), opts)


def test_stream_vmdk_layout_is_vmwares():
    data = pattern(MiB, seed=9)
    img = write_image(VmdkFormat(), data, subformat="streamOptimized")
    version, flags = struct.unpack_from("<II", img, 4)
    gd_offset = struct.unpack_from("<Q", img, 56)[0]
    assert (version, flags, gd_offset) == (3, 0x30001, 0xFFFFFFFFFFFFFFFF)
    assert struct.unpack_from("<QII", img, len(img) - 512) == (0, 0, 0)  # EOS
    assert struct.unpack_from("<QII", img, len(img) - 1536)[1:] == (0, 3)  # footer marker
    assert img[len(img) - 1024 : len(img) - 1020] == b"KDMV"


def test_sparse_vmdk_skips_zero_grains():
    data = bytearray(2 * MiB)
    data[MiB : MiB + 10] = b"x" * 10
    img = write_image(VmdkFormat(), bytes(data), subformat="monolithicSparse")
    reader = VmdkFormat().open(io.BytesIO(img))
    data_extents = [e for e in reader.extents() if not e.zero]
    assert [(e.offset, e.length) for e in data_extents] == [(MiB, 64 * KiB)]


def test_vhd_footer_keeps_exact_size_for_every_reader():
    size = 10 * MiB + 512  # not a CHS product
    img = write_image(VhdFormat(), bytes(size), subformat="fixed")
    footer = img[-512:]
    assert footer[28:32] == b"win "
    assert struct.unpack_from(">Q", footer, 48)[0] == size
    cyls, heads, spt = struct.unpack_from(">HBB", footer, 56)
    assert (cyls, heads, spt) == vhd.chs_geometry(size)
    assert cyls * heads * spt * 512 <= size
    assert VhdFormat().inspect(io.BytesIO(img)).virtual_size == size


@pytest.mark.parametrize(
    "size, geometry",
    [(10 * (1 << 30), (20805, 16, 63)), (MiB, (30, 4, 17)), (200 << 30, (65535, 16, 255))],
)
def test_chs_geometry_follows_the_spec(size, geometry):
    assert vhd.chs_geometry(size) == geometry


def test_vhd_dynamic_bat_covers_exactly_the_disk():
    data = pattern(5 * MiB, seed=8)
    img = write_image(VhdFormat(), data, subformat="dynamic")
    max_entries, block = struct.unpack_from(">II", img, 512 + 28)
    assert (max_entries, block) == (3, 2 * MiB)


def test_vhdx_block_size_option():
    data = pattern(5 * MiB, seed=6)
    img = write_image(VhdxFormat(), data, block_size=str(MiB))
    info = VhdxFormat().inspect(io.BytesIO(img))
    assert info.cluster_size == MiB
    assert VhdxFormat().open(io.BytesIO(img)).read(0, len(data)) == data


def test_writers_refuse_oversized_disks():
    class Huge(MemReader):
        def __init__(self, size: int) -> None:
            super().__init__(b"")
            self.virtual_size = size

        def extents(self):
            return iter(())

    with pytest.raises(errors.Invalid, match="2040 GiB"):
        VhdFormat().write(Huge(2041 << 30), io.BytesIO(), {})
    with pytest.raises(errors.Invalid, match="64 TiB"):
        VhdxFormat().write(Huge(65 << 40), io.BytesIO(), {})
    with pytest.raises(errors.Invalid, match="64 TiB"):
        VmdkFormat().write(Huge(65 << 40), io.BytesIO(), {"subformat": "streamOptimized"})


class _Empty(MemReader):
    def __init__(self, size: int) -> None:
        super().__init__(b"")
        self.virtual_size = size

    def extents(self):
        yield Extent(0, self.virtual_size, True)


@pytest.mark.parametrize(
    "fmt, opts, size",
    [
        (VmdkFormat(), {"subformat": "monolithicSparse"}, 1 << 40),
        (VmdkFormat(), {"subformat": "streamOptimized"}, 64 << 40),
        (VhdFormat(), {"subformat": "dynamic"}, 2040 << 30),
        (VhdxFormat(), {}, 16 << 40),
    ],
    ids=["vmdk-sparse", "vmdk-stream", "vhd-dynamic", "vhdx"],
)
def test_huge_empty_disks_are_one_zero_extent(tmp_path, fmt, opts, size):
    """Tables of terabyte disks are scanned a slice at a time, not entry by entry."""
    path = tmp_path / "huge.img"
    with open(path, "wb") as out:
        fmt.write(_Empty(size), out, opts)
    with open(path, "rb") as f:
        assert fmt.inspect(f).virtual_size == size
        assert list(fmt.open(f).extents()) == [Extent(0, size, True)]


def test_stream_vmdk_stores_only_incompressible_grains_uncompressed():
    rng = random.Random(5)
    noise = rng.randbytes(64 * KiB)
    text = (b"the quick brown fox jumps over the lazy dog " * 2000)[: 64 * KiB]
    half = rng.randbytes(32 * KiB) + bytes(32 * KiB)
    assert vmdk._incompressible(noise)
    assert not vmdk._incompressible(text)
    assert not vmdk._incompressible(half)
    for grain in (noise, text, half):
        blob = vmdk._deflate(grain)
        assert zlib.decompress(blob) == grain
    assert len(vmdk._deflate(text)) < 4 * KiB
    assert len(vmdk._deflate(half)) < 40 * KiB


@pytest.mark.parametrize("fmt, opts", CASES, ids=IDS)
def test_registry_detects_written_images(fmt, opts):
    """No other format plugin claims our images (no polyglot refusal)."""
    img = write_image(fmt, pattern(2 * MiB, seed=12), **opts)
    assert registry.detect(io.BytesIO(img)) == fmt.name


def test_registry_detects_vdi_and_descriptor_files():
    assert registry.detect(io.BytesIO(vdi_image(pattern(MiB, seed=13)))) == "vdi"
    text = b'# Disk DescriptorFile\nversion=1\ncreateType="monolithicFlat"\n'
    assert registry.detect(io.BytesIO(text)) == "vmdk"


@pytest.mark.parametrize("level", ["1", "9"])
def test_stream_vmdk_compression_level_option(level):
    data = pattern(2 * MiB, seed=14)
    img = write_image(VmdkFormat(), data, subformat="streamOptimized", compression_level=level)
    assert VmdkFormat().open(io.BytesIO(img)).read(0, len(data)) == data


@pytest.mark.parametrize("backend", ["default", "stdlib"])
def test_stream_vmdk_with_either_zlib(monkeypatch, backend):
    """zlib-ng is optional: the standard zlib must read and write the same."""
    if backend == "stdlib":
        monkeypatch.setattr(vmdk, "zlib", zlib)
    data = pattern(3 * MiB, seed=15)
    img = bytearray(write_image(VmdkFormat(), data, subformat="streamOptimized"))
    assert VmdkFormat().open(io.BytesIO(bytes(img))).read(0, len(data)) == data
    marker = struct.unpack_from("<Q", img, 64)[0] * 512  # overHead: the first grain
    img[marker + 14 : marker + 30] = b"\xff" * 16
    with pytest.raises(errors.ImageFormatError):
        VmdkFormat().open(io.BytesIO(bytes(img))).read(0, len(data))
