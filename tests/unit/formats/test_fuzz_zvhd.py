"""Fuzz both ZVHD readers: mutated images may only raise ImageFormatError."""

from __future__ import annotations

import functools
import io
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ims import errors
from ims.disk.model import DiskReader, Extent, Sample
from ims.drivers.formats.zvhd import ZvhdFormat
from ims.drivers.formats.zvhd2 import Zvhd2Format

BS = 64 * 1024
FORMATS = {"zvhd": ZvhdFormat(), "zvhd2": Zvhd2Format()}


class _Mem(DiskReader):
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.virtual_size = len(data)

    def extents(self):
        for pos in range(0, len(self.data), BS):
            piece = self.data[pos : pos + BS]
            yield Extent(pos, len(piece), not piece.strip(b"\0"))

    def read(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]


@functools.cache
def seed_image(name: str) -> bytes:
    rng = random.Random(1)
    data = bytes(BS) + rng.randbytes(BS // 2) + b"abc" * (BS // 3) + bytes(BS + 17)
    out = io.BytesIO()
    FORMATS[name].write(_Mem(data), out, {"block_size": "64K", "threads": "1"})
    return out.getvalue()


def exercise(name: str, blob: bytes) -> None:
    """Do everything a caller may do; only ImageFormatError may escape."""
    fmt = FORMATS[name]
    fmt.probe(Sample(head=blob[:65536], tail=blob[-4096:], size=len(blob)))
    try:
        fmt.inspect(io.BytesIO(blob))
        reader = fmt.open(io.BytesIO(blob))
        for extent in reader.extents():
            if not extent.zero:
                assert len(reader.read(extent.offset, extent.length)) == extent.length
        if reader.virtual_size:
            assert len(reader.read(reader.virtual_size - 1, 1)) == 1
        fmt.verify(io.BytesIO(blob))
    except errors.ImageFormatError:
        pass


mutation = st.tuples(
    st.sampled_from(["flip", "set", "cut", "insert", "delete"]),
    st.floats(min_value=0, max_value=1, allow_nan=False),
    st.integers(min_value=0, max_value=255),
)


def mutate(blob: bytes, edits: list[tuple[str, float, int]]) -> bytes:
    data = bytearray(blob)
    for kind, where, value in edits:
        if not data:
            break
        pos = min(int(where * len(data)), len(data) - 1)
        if kind == "flip":
            data[pos] ^= 1 << (value % 8)
        elif kind == "set":
            data[pos] = value
        elif kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = bytes([value]) * (1 + value % 9)
        else:
            del data[pos : pos + 1 + value % 9]
    return bytes(data)


@pytest.mark.parametrize("name", sorted(FORMATS))
@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(edits=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_images_fail_cleanly(name, edits):
    exercise(name, mutate(seed_image(name), edits))


@pytest.mark.parametrize("name", sorted(FORMATS))
@settings(max_examples=60, deadline=None, derandomize=True)
@given(tail=st.binary(min_size=0, max_size=300))
def test_garbage_after_a_valid_head(name, tail):
    head = seed_image(name)[:80]
    exercise(name, head + tail)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_seed_images_are_valid(name):
    # The fuzz tests only mean something if the unmutated image reads fully.
    fmt = FORMATS[name]
    assert fmt.verify(io.BytesIO(seed_image(name)))["blocks"] == 4
