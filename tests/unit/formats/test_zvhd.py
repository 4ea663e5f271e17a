"""ZVHD: round trips, stock-gzip compatibility, hostile files."""

from __future__ import annotations

import gzip
import io
import random
import struct
import zlib

import pytest

from ims import errors
from ims.disk.model import DiskReader, Extent, Sample
from ims.drivers.formats import zvhd
from ims.drivers.formats.zvhd import ZvhdFormat

KiB = 1024
MiB = 1024 * KiB
FMT = ZvhdFormat()


class MemReader(DiskReader):
    """A disk in memory whose extents are cut at ``step`` (zero runs detected)."""

    def __init__(self, data: bytes, step: int = MiB) -> None:
        self.data = data
        self.virtual_size = len(data)
        self.step = step

    def extents(self):
        for pos in range(0, len(self.data), self.step):
            piece = self.data[pos : pos + self.step]
            yield Extent(pos, len(piece), not piece.strip(b"\0"))

    def read(self, offset: int, length: int) -> bytes:
        assert 0 <= offset and offset + length <= self.virtual_size
        return self.data[offset : offset + length]


def make_disk(nblocks: int, seed: int = 1, block: int = MiB, tail: int = 0) -> bytes:
    """A mix of zero, random, text and half-filled blocks."""
    rng = random.Random(seed)
    words = [bytes(rng.choices(b"abcdefghij", k=rng.randint(2, 8))) for _ in range(200)]
    parts = []
    for _ in range(nblocks):
        kind = rng.random()
        if kind < 0.35:
            parts.append(bytes(block))
        elif kind < 0.6:
            parts.append(rng.randbytes(block))
        elif kind < 0.85:
            text = b" ".join(rng.choices(words, k=block // 4))[:block]
            parts.append(text.ljust(block, b"\n"))
        else:
            fill = rng.randrange(1, block)
            parts.append(rng.randbytes(fill) + bytes(block - fill))
    return b"".join(parts) + rng.randbytes(tail)


def write(data: bytes, step: int = MiB, **options: str) -> bytes:
    out = io.BytesIO()
    FMT.write(MemReader(data, step), out, options or None)
    return out.getvalue()


def read_all(blob: bytes) -> bytes:
    reader = FMT.open(io.BytesIO(blob))
    out = bytearray()
    for extent in reader.extents():
        out += bytes(extent.length) if extent.zero else reader.read(extent.offset, extent.length)
    return bytes(out)


@pytest.mark.parametrize(
    ("data_fn", "options"),
    [
        (lambda: b"", {}),
        (lambda: b"x", {}),
        (lambda: bytes(5000), {}),
        (lambda: make_disk(6, seed=2), {}),
        (lambda: make_disk(5, seed=3, tail=12345), {"level": "6"}),
        (lambda: make_disk(12, seed=4, block=64 * KiB, tail=1), {"block_size": "64K"}),
        (lambda: make_disk(4, seed=5), {"level": "0", "threads": "1"}),
    ],
)
def test_round_trip(data_fn, options):
    data = data_fn()
    blob = write(data, digest="on", **options)
    assert gzip.decompress(blob) == data  # a valid gzip stream: stock tools read it
    assert read_all(blob) == data
    info = FMT.inspect(io.BytesIO(blob))
    assert info.virtual_size == len(data)
    assert info.actual_size == len(blob)
    summary = FMT.verify(io.BytesIO(blob))
    assert summary["digest-checked"]


@pytest.mark.parametrize("options", [{}, {"digest": "off"}])
def test_digest_off_by_default(options):
    data = make_disk(2, seed=6, tail=3)
    blob = write(data, **options)
    assert read_all(blob) == data
    assert FMT.inspect(io.BytesIO(blob)).details["digest"] is None
    assert not FMT.verify(io.BytesIO(blob))["digest-checked"]
    with pytest.raises(errors.Invalid):
        write(data, digest="maybe")


def test_unaligned_source_extents_and_zero_detection():
    data = make_disk(5, seed=9, tail=777)
    blob = write(data, step=300 * KiB + 3)
    assert gzip.decompress(blob) == data
    reader = FMT.open(io.BytesIO(blob))
    extents = list(reader.extents())
    assert extents[0].offset == 0 and extents[-1].end == len(data)
    assert all(a.end == b.offset for a, b in zip(extents, extents[1:], strict=False))
    for extent in extents:
        if extent.zero:
            assert data[extent.offset : extent.end] == bytes(extent.length)


def test_random_reads_restart_backwards():
    data = make_disk(4, seed=11, tail=99)
    reader = FMT.open(io.BytesIO(write(data)))
    rng = random.Random(5)
    for _ in range(25):
        offset = rng.randrange(len(data))
        length = rng.randrange(min(3 * MiB, len(data) - offset) + 1)
        assert reader.read(offset, length) == data[offset : offset + length]
    with pytest.raises(errors.Invalid):
        reader.read(len(data) - 1, 2)
    assert reader.read(len(data), 0) == b""


def test_same_digest_as_zvhd2_for_same_disk():
    from ims.drivers.formats.zvhd2 import Zvhd2Format

    data = make_disk(3, seed=12, tail=5)
    out = io.BytesIO()
    Zvhd2Format().write(MemReader(data), out, {"digest": "on"})
    one = FMT.inspect(io.BytesIO(write(data, digest="on"))).details["digest"]
    two = Zvhd2Format().inspect(io.BytesIO(out.getvalue())).details["digest"]
    assert one is not None and one == two


def test_probe():
    blob = write(make_disk(1, seed=1))
    assert FMT.probe(Sample(head=blob[:65536]))
    assert not FMT.probe(Sample(head=gzip.compress(b"hello" * 100)))
    assert not FMT.probe(Sample(head=b"\x1f\x8b\x08\x04" + bytes(60)))
    assert not FMT.probe(Sample(head=bytes(4096)))
    assert not FMT.probe(Sample(head=b""))


def test_writer_options_refused():
    with pytest.raises(errors.Invalid):
        write(b"abc", bogus="1")
    with pytest.raises(errors.Invalid):
        write(b"abc", level="10")
    with pytest.raises(errors.Invalid):
        write(b"abc", block_size="3M")


# -- hostile files ------------------------------------------------------------


def craft(
    payload: bytes,
    vsize: int,
    *,
    head_vsize: int | None = None,
    version: int = 1,
    flags: int = 0,
    bsize: int = MiB,
    crc: int | None = None,
    isize: int | None = None,
    end_vsize: int | None = None,
    member_len_delta: int = 0,
) -> bytes:
    """Assemble a ZVHD from a raw deflate ``payload`` and chosen fields."""
    head = zvhd._HEAD.pack(
        zvhd.HEAD_MAGIC, version, flags, vsize if head_vsize is None else head_vsize, bsize, 0
    )
    header = zvhd._gzip_header(zvhd._sealed(head))
    data_crc = crc if crc is not None else 0
    member = header + payload + struct.pack("<II", data_crc, vsize if isize is None else isize)
    end = zvhd._END.pack(
        zvhd.END_MAGIC,
        1,
        0,
        vsize if end_vsize is None else end_vsize,
        len(member) + member_len_delta,
        bytes(32),
    )
    return member + zvhd._gzip_header(zvhd._sealed(end)) + zvhd.EMPTY_DEFLATE + bytes(8)


def deflate(data: bytes) -> bytes:
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    return comp.compress(data) + comp.flush()


def full_check(blob: bytes) -> None:
    FMT.verify(io.BytesIO(blob))


def test_crafted_valid_file_passes():
    data = b"hello" * 1000
    full_check(craft(deflate(data), len(data), crc=zlib.crc32(data)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"version": 2}, "version"),
        ({"flags": 1}, "flags"),
        ({"bsize": 3000}, "block size"),
        ({"end_vsize": 4}, "end record"),
        ({"member_len_delta": 1}, "data member length"),
        ({"head_vsize": 1 << 50, "end_vsize": 1 << 50}, "exceeds"),
        ({"head_vsize": 1 << 40, "end_vsize": 1 << 40}, "cannot hold"),
    ],
)
def test_bad_metadata_refused_at_inspect(kwargs, message):
    data = b"hello" * 1000
    blob = craft(deflate(data), len(data), crc=zlib.crc32(data), **kwargs)
    with pytest.raises(errors.ImageFormatError, match=message):
        FMT.inspect(io.BytesIO(blob))


def test_head_record_crc_checked():
    blob = bytearray(write(b"abc" * 100))
    blob[20] ^= 0x01  # inside the virtual size field of the head record
    with pytest.raises(errors.ImageFormatError, match="checksum"):
        FMT.inspect(io.BytesIO(bytes(blob)))


@pytest.mark.parametrize("cut", [1, 8, 50, 86, 87, 300, 2000])
def test_truncated(cut):
    blob = write(make_disk(2, seed=21))
    with pytest.raises(errors.ImageFormatError):
        full_check(blob[:-cut])


def test_trailing_garbage():
    blob = write(b"abc" * 100)
    with pytest.raises(errors.ImageFormatError):
        FMT.inspect(io.BytesIO(blob + b"\0"))


def test_crc_mismatch_detected_when_stream_ends():
    data = b"hello" * 1000
    blob = craft(deflate(data), len(data), crc=zlib.crc32(data) ^ 1)
    reader = FMT.open(io.BytesIO(blob))
    with pytest.raises(errors.ImageFormatError, match="CRC"):
        reader.read(0, len(data))


def test_isize_mismatch():
    data = b"hello" * 1000
    blob = craft(deflate(data), len(data), crc=zlib.crc32(data), isize=1)
    with pytest.raises(errors.ImageFormatError, match="ISIZE"):
        full_check(blob)


def test_stream_shorter_than_virtual_size():
    data = b"hello" * 1000
    blob = craft(deflate(data), len(data) + 10, crc=zlib.crc32(data))
    with pytest.raises(errors.ImageFormatError, match="ends"):
        full_check(blob)


def test_bomb_inflating_more_than_declared_stops_early():
    # 64 MiB of zeros declared as a 4 KiB disk: the reader must refuse after
    # at most one extra byte rather than inflating everything.
    bomb = deflate(bytes(64 * MiB))
    blob = craft(bomb, 4096, crc=zlib.crc32(bytes(4096)))
    reader = FMT.open(io.BytesIO(blob))
    with pytest.raises(errors.ImageFormatError, match="more than the virtual size"):
        reader.read(0, 4096)


def test_corrupt_deflate_data():
    blob = bytearray(write(make_disk(2, seed=31)))
    for pos in range(200, 260):
        blob[pos] ^= 0xFF
    with pytest.raises(errors.ImageFormatError):
        full_check(bytes(blob))


def test_digest_mismatch_detected_by_verify():
    data = make_disk(2, seed=41)
    blob = bytearray(write(data, digest="on"))
    # Re-seal an end record carrying a wrong digest.
    end_at = len(blob) - zvhd.END_MEMBER_SIZE + 16
    body = bytearray(blob[end_at : end_at + zvhd._END.size])
    body[-1] ^= 1
    blob[end_at : end_at + zvhd.END_RECORD_SIZE] = zvhd._sealed(bytes(body))
    FMT.inspect(io.BytesIO(bytes(blob)))  # metadata alone is consistent
    with pytest.raises(errors.ImageFormatError, match="digest"):
        full_check(bytes(blob))


def test_plain_gzip_refused():
    with pytest.raises(errors.ImageFormatError, match="plain"):
        FMT.inspect(io.BytesIO(gzip.compress(b"x" * 10000)))
