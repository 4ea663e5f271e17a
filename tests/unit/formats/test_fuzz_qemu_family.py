"""Fuzz the QEMU-family readers: mutated images raise ImageFormatError or nothing.

Each example takes a small valid image, overwrites a few bytes or integers
(biased to the header and to interesting values such as 0, 1, the file size
and huge offsets), maybe truncates it, then inspects, opens and reads every
extent. Any exception other than ImageFormatError is a parser bug.
"""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qemu_family_samples import (
    iso_image,
    pattern_disk,
    qcow1_image,
    qcow2_ext_l2_image,
    qcow2_image,
    qed_image,
)

from ims import errors
from ims.drivers.formats.iso import IsoFormat
from ims.drivers.formats.qcow import QcowFormat
from ims.drivers.formats.qcow2 import Qcow2Format
from ims.drivers.formats.qed import QedFormat
from ims.drivers.formats.raw import RawFormat

DISK = pattern_disk(48 * 1024, seed=21, grain=2048)

BASES = {
    "qcow2": (
        Qcow2Format(),
        [
            qcow2_image(DISK, cluster_size="512"),
            qcow2_image(DISK, cluster_size="1024", compat="0.10"),
            qcow2_image(DISK, cluster_size="4096", compress="on"),
            qcow2_image(DISK, cluster_size="4096", compress="on", compression_type="zstd"),
            qcow2_ext_l2_image()[0],
        ],
    ),
    "qcow": (QcowFormat(), [qcow1_image(DISK), qcow1_image(DISK, 12, 9, compress=True)]),
    "qed": (QedFormat(), [qed_image(DISK), qed_image(DISK, zero_entries=True)]),
    "iso": (IsoFormat(), [iso_image(blocks=40, udf=True)]),
    "raw": (RawFormat(), [DISK[:8192]]),
}

#: Never read more than this much of one mutated disk (keeps examples fast).
READ_BUDGET = 8 * 1024 * 1024

INTERESTING = st.sampled_from(
    [0, 1, 2, 7, 8, 9, 16, 21, 30, 63, 64, 511, 512, 4096, 65536, 1 << 31, 1 << 32]
    + [(1 << 40), (1 << 56) - 512, (1 << 62), (1 << 63), (1 << 64) - 1]
)


@st.composite
def mutations(draw: st.DrawFn, size: int) -> list[tuple[str, int, int]]:
    ops = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["byte", "u32", "u64", "u64", "u64", "u64", "truncate"]))
        where = draw(st.one_of(st.integers(4, 127), st.integers(4, size - 1)))
        if kind == "u64":
            where &= ~7  # land on table entries as whole entries
        value = draw(st.one_of(INTERESTING, st.integers(0, (1 << 64) - 1), st.just(size)))
        if kind == "truncate" and draw(st.booleans()):
            kind = "byte"  # keep truncation rare: it ends most examples early
        ops.append((kind, where, value))
    return ops


def _apply(base: bytes, ops: list[tuple[str, int, int]], big_endian: bool) -> bytes:
    buf = bytearray(base)
    order = ">" if big_endian else "<"
    for kind, where, value in ops:
        if kind == "truncate":
            del buf[max(where, 4) :]
            continue
        if where >= len(buf):
            continue
        if kind == "byte":
            buf[where] = value & 0xFF
        else:
            fmt = order + ("I" if kind == "u32" else "Q")
            width = struct.calcsize(fmt)
            if where + width <= len(buf):
                struct.pack_into(fmt, buf, where, value & ((1 << (8 * width)) - 1))
    # The magic stays: mutating it only exercises the first check.
    buf[:4] = base[:4]
    return bytes(buf)


def _table_positions(name: str, image: bytes) -> list[tuple[int, str]]:
    """Offsets (and byte order) of every L1/L2 entry of a valid base image."""
    positions: list[tuple[int, str]] = []
    if name == "qcow2":
        cs = 1 << struct.unpack_from(">I", image, 20)[0]
        l1_size, l1_off = struct.unpack_from(">IQ", image, 36)
        tables = [(l1_off, l1_size * 8)]
        for i in range(l1_size):
            l2 = struct.unpack_from(">Q", image, l1_off + 8 * i)[0] & 0x00FFFFFFFFFFFE00
            if l2:
                tables.append((l2, cs))
        order = ">"
    elif name == "qcow":
        size, cluster_bits, l2_bits = struct.unpack_from(">QBB", image, 24)
        span = 1 << (cluster_bits + l2_bits)
        n_l1 = (size + span - 1) // span
        tables = [(48, n_l1 * 8)]
        for i in range(n_l1):
            l2 = struct.unpack_from(">Q", image, 48 + 8 * i)[0]
            if l2:
                tables.append((l2, 8 << l2_bits))
        order = ">"
    elif name == "qed":
        cs, table_size = struct.unpack_from("<II", image, 4)
        l1_off = struct.unpack_from("<Q", image, 40)[0]
        tables = [(l1_off, table_size * cs)]
        for i in range(table_size * cs // 8):
            l2 = struct.unpack_from("<Q", image, l1_off + 8 * i)[0]
            if l2:
                tables.append((l2, table_size * cs))
        order = "<"
    else:
        return positions
    for off, length in tables:
        positions.extend((pos, order) for pos in range(off, off + length, 8))
    return positions


ENTRY_VALUES = st.one_of(
    INTERESTING,
    st.integers(0, (1 << 64) - 1),
    # qcow2-shaped: flags | offset (compressed descriptors, COPIED, zero flag)
    st.builds(
        lambda flags, off: flags | off,
        st.sampled_from([0, 1, 1 << 62, 1 << 63, (1 << 63) | 1, 3 << 62]),
        st.integers(0, 1 << 20),
    ),
    # qcow v1 compressed: bit 63 | size << (63 - cluster_bits) | offset
    st.builds(
        lambda size, off: (1 << 63) | (size << 54) | off,
        st.integers(0, 511),
        st.integers(0, 1 << 20),
    ),
)


def _exercise(fmt, image: bytes) -> None:
    try:
        fmt.inspect(io.BytesIO(image))
    except errors.ImageFormatError:
        pass
    try:
        reader = fmt.open(io.BytesIO(image))
    except errors.ImageFormatError:
        return
    budget = READ_BUDGET
    try:
        pos = 0
        for extent in reader.extents():
            assert extent.offset == pos and extent.length > 0
            pos = extent.end
            if extent.zero or budget <= 0:
                continue
            off = extent.offset
            while off < extent.end and budget > 0:
                n = min(1 << 20, extent.end - off, budget)
                assert len(reader.read(off, n)) == n
                off += n
                budget -= n
        assert pos == reader.virtual_size
    except errors.ImageFormatError:
        pass


FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)


@pytest.mark.parametrize("name", sorted(BASES))
@FUZZ
@given(data=st.data())
def test_mutated_images_raise_only_format_errors(name, data):
    fmt, bases = BASES[name]
    base = data.draw(st.sampled_from(bases))
    ops = data.draw(mutations(len(base)))
    big_endian = name in ("qcow", "qcow2")
    _exercise(fmt, _apply(base, ops, big_endian))


POSITIONS = {
    name: [_table_positions(name, base) for base in bases] for name, (_, bases) in BASES.items()
}


@pytest.mark.parametrize("name", ["qcow", "qcow2", "qed"])
@FUZZ
@given(data=st.data())
def test_mutated_table_entries_raise_only_format_errors(name, data):
    fmt, bases = BASES[name]
    index = data.draw(st.integers(0, len(bases) - 1))
    buf = bytearray(bases[index])
    positions = POSITIONS[name][index]
    for _ in range(data.draw(st.integers(1, 4))):
        pos, order = data.draw(st.sampled_from(positions))
        struct.pack_into(order + "Q", buf, pos, data.draw(ENTRY_VALUES))
    _exercise(fmt, bytes(buf))


def test_bases_are_valid():
    # The fuzzer starts from images that open and read back correctly.
    for name, (fmt, bases) in BASES.items():
        for base in bases:
            with fmt.open(io.BytesIO(base)) as reader:
                assert reader.virtual_size > 0, name
                _exercise(fmt, base)
