"""Fuzz the VMDK, VHD, VHDX and VDI readers with mutated valid images.

Whatever the mutation, probing, inspecting, opening, listing extents and
reading every data extent may only raise ImageFormatError (UnsafeImage is
one). Mutations favour the metadata (headers, descriptors, tables), and
half the time checksums are fixed afterwards so that the parsers behind
them are reached too.
"""

from __future__ import annotations

import functools
import io
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vmfmt_images import (
    KiB,
    MiB,
    crc32c_fix,
    pattern,
    vdi_image,
    vhd_checksum_fix,
    vhd_image,
    vhdx_image,
    vmdk_image,
)

from ims import errors
from ims.disk.model import Sample
from ims.drivers.formats.vdi import VdiFormat
from ims.drivers.formats.vhd import VhdFormat
from ims.drivers.formats.vhdx import VhdxFormat
from ims.drivers.formats.vmdk import VmdkFormat

DATA = pattern(MiB + 192 * KiB, seed=21)
INTERESTING = [0, 1, 2, 7, 0x80, 0xFF, 0x200, 0x1000, 0x100000, 0x7FFFFFFF, 0xFFFFFFFF,
               0xFFFFFFFE, 1 << 32, 1 << 40, 0xFFFFFFFFFFFFFFFF]  # fmt: skip
MAX_READ = 64 * MiB


def _fix_vhd(img: bytearray) -> None:
    if len(img) >= 512:
        vhd_checksum_fix(img, len(img) - 512, 512, 64)
    if img[:8] == b"conectix" and len(img) >= 512:
        vhd_checksum_fix(img, 0, 512, 64)
        if len(img) >= 1536:
            vhd_checksum_fix(img, 512, 1024, 36)


def _fix_vhdx(img: bytearray) -> None:
    for head in (64 * KiB, 128 * KiB):
        if len(img) >= head + 4096:
            crc32c_fix(img, head, 4096)
    for table in (192 * KiB, 256 * KiB):
        if len(img) >= table + 64 * KiB:
            crc32c_fix(img, table, 64 * KiB)


@functools.cache
def _bases() -> dict[str, tuple[object, bytes, str, list[tuple[int, int]], object]]:
    """name → (format, image, endianness, metadata ranges, checksum fixer)."""
    sparse = vmdk_image(DATA)
    stream = vmdk_image(DATA, "streamOptimized")
    overhead = struct.unpack_from("<Q", sparse, 64)[0] * 512
    dyn = vhd_image(DATA)
    fixed = vhd_image(DATA, "fixed")
    vhdx = vhdx_image(DATA)
    meta_vhdx = [(0, 64), (64 * KiB, 64 * KiB + 96), (128 * KiB, 128 * KiB + 96),
                 (192 * KiB, 192 * KiB + 96), (256 * KiB, 256 * KiB + 96),
                 (2 * MiB, 2 * MiB + 200), (2 * MiB + 64 * KiB, 2 * MiB + 64 * KiB + 40),
                 (3 * MiB, 3 * MiB + 64)]  # fmt: skip
    return {
        "vmdk-sparse": (VmdkFormat(), sparse, "<", [(0, 80), (512, 1024), (1024, overhead)], None),
        "vmdk-stream": (
            VmdkFormat(),
            stream,
            "<",
            [(0, 80), (512, 1024), (len(stream) - 6 * KiB, len(stream)), (1536, 8 * KiB)],
            None,
        ),
        "vhd-dynamic": (
            VhdFormat(),
            dyn,
            ">",
            [(0, 96), (512, 1600), (len(dyn) - 512, len(dyn))],
            _fix_vhd,
        ),  # fmt: skip
        "vhd-fixed": (VhdFormat(), fixed, ">", [(len(fixed) - 512, len(fixed))], _fix_vhd),
        "vhdx": (VhdxFormat(), vhdx, "<", meta_vhdx, _fix_vhdx),
        "vdi-dynamic": (VdiFormat(), vdi_image(DATA), "<", [(0x40, 0x200), (0x200, 0x220)], None),
        "vdi-static": (
            VdiFormat(),
            vdi_image(DATA, True),
            "<",
            [(0x40, 0x200), (0x200, 0x220)],
            None,
        ),  # fmt: skip
    }


def _exercise(fmt, img: bytes) -> None:
    sample = Sample(head=img[:65536], tail=img[-4096:], size=len(img))
    fmt.probe(sample)
    fmt.inspect(io.BytesIO(img))
    reader = fmt.open(io.BytesIO(img))
    budget = MAX_READ
    pos = 0
    for count, ext in enumerate(reader.extents()):
        assert ext.offset == pos and ext.length > 0 and count < 1_000_000
        pos = ext.end
        if ext.zero or budget <= 0:
            continue
        start = ext.offset
        while start < ext.end and budget > 0:
            n = min(ext.end - start, 4 * MiB)
            assert len(reader.read(start, n)) == n
            start += n
            budget -= n
    assert pos == reader.virtual_size


@pytest.mark.parametrize("name", sorted(_bases()))
@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_mutated_images_raise_only_format_errors(name, data):
    fmt, base, endian, ranges, fixer = _bases()[name]
    img = bytearray(base)
    for _ in range(data.draw(st.integers(1, 6), label="mutations")):
        if data.draw(st.booleans(), label="in metadata"):
            start, end = data.draw(st.sampled_from(ranges), label="range")
            off = data.draw(st.integers(start, max(start, min(end, len(img)) - 1)))
        else:
            off = data.draw(st.integers(0, len(img) - 1), label="offset")
        width = data.draw(st.sampled_from([1, 2, 4, 8]), label="width")
        value = data.draw(
            st.one_of(st.sampled_from(INTERESTING), st.integers(0, (1 << 64) - 1)), label="value"
        )
        value &= (1 << (8 * width)) - 1
        raw = value.to_bytes(width, "little" if endian == "<" else "big")
        img[off : off + width] = raw[: len(img) - off]
    if data.draw(st.booleans(), label="truncate") and data.draw(st.booleans()):
        del img[data.draw(st.integers(0, len(img))) :]
    if fixer is not None and data.draw(st.booleans(), label="fix checksums"):
        fixer(img)
    try:
        _exercise(fmt, bytes(img))
    except errors.ImageFormatError:
        pass


@pytest.mark.parametrize("name", sorted(_bases()))
def test_bases_are_valid(name):
    fmt, base, _endian, _ranges, _fixer = _bases()[name]
    _exercise(fmt, base)
    assert fmt.open(io.BytesIO(base)).read(0, len(DATA)) == DATA
