"""ZVHD2: round trips, zstd compatibility, seek-table and frame validation."""

from __future__ import annotations

import io
import random
import struct
import zlib

import pytest
import zstandard

from ims import errors
from ims.disk.model import DiskReader, Extent, Sample
from ims.drivers.formats import zvhd2
from ims.drivers.formats.zvhd2 import Zvhd2Format

KiB = 1024
MiB = 1024 * KiB
BS = 64 * KiB  # small blocks keep hostile-file tests fast
FMT = Zvhd2Format()


class MemReader(DiskReader):
    def __init__(self, data: bytes, step: int = MiB) -> None:
        self.data = data
        self.virtual_size = len(data)
        self.step = step

    def extents(self):
        for pos in range(0, len(self.data), self.step):
            piece = self.data[pos : pos + self.step]
            yield Extent(pos, len(piece), not piece.strip(b"\0"))

    def read(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]


def make_disk(nblocks: int, seed: int = 1, block: int = MiB, tail: int = 0) -> bytes:
    rng = random.Random(seed)
    parts = []
    for index in range(nblocks):
        kind = (index + seed) % 4
        if kind == 0:
            parts.append(bytes(block))
        elif kind == 1:
            parts.append(rng.randbytes(block))
        elif kind == 2:
            parts.append((b"text %d " % index) * (block // 8) + bytes(block % 8))
        else:
            fill = rng.randrange(1, block)
            parts.append(rng.randbytes(fill) + bytes(block - fill))
    return b"".join(parts) + rng.randbytes(tail)


def write(data: bytes, step: int = MiB, **options: str) -> bytes:
    out = io.BytesIO()
    FMT.write(MemReader(data, step), out, options or None)
    return out.getvalue()


def zstd_decode(blob: bytes) -> bytes:
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob), read_across_frames=True)
    return reader.read()


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
        (lambda: make_disk(5, seed=3, tail=12345), {"level": "1"}),
        (lambda: make_disk(13, seed=4, block=BS, tail=1), {"block_size": "64K"}),
        (lambda: make_disk(3, seed=5, block=4 * MiB), {"block_size": "4M", "threads": "1"}),
    ],
)
def test_round_trip(data_fn, options):
    data = data_fn()
    blob = write(data, digest="on", **options)
    assert zstd_decode(blob) == data  # a valid zstd stream: stock tools read it
    assert read_all(blob) == data
    info = FMT.inspect(io.BytesIO(blob))
    assert info.virtual_size == len(data)
    assert FMT.verify(io.BytesIO(blob))["digest-checked"]


@pytest.mark.parametrize("options", [{}, {"digest": "off"}])
def test_digest_off_by_default(options):
    data = make_disk(2, seed=6, tail=3)
    blob = write(data, **options)
    assert read_all(blob) == data
    assert FMT.inspect(io.BytesIO(blob)).details["digest"] is None
    assert not FMT.verify(io.BytesIO(blob))["digest-checked"]
    with pytest.raises(errors.Invalid):
        write(data, digest="maybe")


def test_zero_blocks_come_from_the_bitmap_without_reading():
    data = bytes(MiB) + b"a" * MiB + bytes(3 * MiB) + b"b"
    blob = write(data)
    reader = FMT.open(io.BytesIO(blob))
    assert [(e.offset, e.length, e.zero) for e in reader.extents()] == [
        (0, MiB, True),
        (MiB, MiB, False),
        (2 * MiB, 3 * MiB, True),
        (5 * MiB, 1, False),
    ]
    assert FMT.inspect(io.BytesIO(blob)).details["zero-blocks"] == 4
    # 41-byte canonical zero frames: four zero MiB cost almost nothing.
    assert len(blob) < 2000


def test_random_reads():
    data = make_disk(5, seed=7, tail=1000)
    reader = FMT.open(io.BytesIO(write(data)))
    rng = random.Random(3)
    for _ in range(40):
        offset = rng.randrange(len(data))
        length = rng.randrange(min(3 * MiB, len(data) - offset) + 1)
        assert reader.read(offset, length) == data[offset : offset + length]
    assert reader.read(len(data), 0) == b""
    with pytest.raises(errors.Invalid):
        reader.read(-1, 1)


def test_zero_frame_is_canonical_and_decodes():
    for length in (1, BS, 131072, MiB, MiB - 7):
        frame = zvhd2.zero_frame(length)
        assert zstandard.ZstdDecompressor().decompress(frame) == bytes(length)
    assert len(zvhd2.zero_frame(MiB)) == 41


def test_probe():
    blob = write(b"abc")
    assert FMT.probe(Sample(head=blob[:4096]))
    assert not FMT.probe(Sample(head=zstandard.ZstdCompressor().compress(b"abc" * 100)))
    assert not FMT.probe(Sample(head=b""))


# -- hostile files ------------------------------------------------------------


def build(
    frames: list[bytes],
    vsize: int,
    *,
    bsize: int = BS,
    zero: set[int] = frozenset(),
    sizes: list[tuple[int, int]] | None = None,
    head_fields: dict | None = None,
    trailer_fields: dict | None = None,
    descriptor: int = 0,
    nframes_delta: int = 0,
    bitmap: bytes | None = None,
) -> bytes:
    """Assemble a ZVHD2 from block frames, with any field overridden."""
    nblocks = len(frames)
    hf = {"version": 1, "size": 64, "flags": 0, "vsize": vsize, "bsize": bsize, "count": nblocks}
    hf.update(head_fields or {})
    head = zvhd2._HEAD.pack(
        zvhd2.HEAD_MAGIC, hf["version"], hf["size"], hf["flags"], hf["vsize"], hf["bsize"], 0,
        hf["count"],
    )  # fmt: skip
    head += bytes(60 - len(head))
    out = zvhd2._skippable(zvhd2.HEAD_FRAME_MAGIC, head + struct.pack("<I", zlib.crc32(head)))
    out += b"".join(frames)
    if bitmap is None:
        bm = bytearray((nblocks + 7) // 8)
        for index in zero:
            bm[index >> 3] |= 1 << (index & 7)
        bitmap = bytes(bm)
    tf = {"vsize": vsize, "bsize": bsize, "count": nblocks, "zeros": len(zero), "flags": 0}
    tf.update(trailer_fields or {})
    record = zvhd2._TRAILER.pack(
        zvhd2.TRAILER_MAGIC, 1, 0, tf["flags"], tf["vsize"], tf["bsize"], 0, tf["count"],
        tf["zeros"], bytes(32),
    ) + bitmap  # fmt: skip
    trailer = zvhd2._skippable(
        zvhd2.TRAILER_FRAME_MAGIC, record + struct.pack("<I", zlib.crc32(record))
    )
    out += trailer
    if sizes is None:
        sizes = []
        for index, frame in enumerate(frames):
            sizes.append((len(frame), min(bsize, vsize - index * bsize)))
    entries = [(72, 0), *sizes, (len(trailer), 0)]
    table = b"".join(struct.pack("<II", c, d) for c, d in entries)
    n = len(entries) + nframes_delta
    out += struct.pack("<II", zvhd2.SEEK_TABLE_MAGIC, len(table) + 9) + table
    out += struct.pack("<IBI", n, descriptor, zvhd2.SEEKABLE_FOOTER_MAGIC)
    return out


CCTX = zstandard.ZstdCompressor(level=3, write_checksum=True)


def good_frames(count: int = 3) -> tuple[list[bytes], bytes]:
    rng = random.Random(count)
    data = b"".join(rng.randbytes(BS // 2) + bytes(BS // 2) for _ in range(count))
    return [CCTX.compress(data[i * BS : (i + 1) * BS]) for i in range(count)], data


def check(blob: bytes) -> None:
    FMT.verify(io.BytesIO(blob))


def test_built_file_is_valid():
    frames, data = good_frames()
    blob = build(frames, len(data))
    check(blob)
    assert zstd_decode(blob) == data


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"head_fields": {"version": 2}}, "version"),
        ({"head_fields": {"flags": 4}}, "flags"),
        ({"head_fields": {"bsize": 1000}}, "block size"),
        ({"head_fields": {"count": 4}}, "block count"),
        ({"head_fields": {"vsize": 1 << 50}}, "exceeds"),
        ({"descriptor": 0x80}, "descriptor"),
        ({"nframes_delta": 1}, "frames"),
        ({"trailer_fields": {"vsize": 3 * BS - 1}}, "disagrees"),
        ({"trailer_fields": {"zeros": 1}}, "zero-block count"),
        ({"trailer_fields": {"flags": 2}}, "flags"),
        ({"bitmap": b"\x08"}, "past the last block"),
        ({"zero": {1}}, "not a zero frame"),
    ],
)
def test_bad_metadata(kwargs, message):
    frames, data = good_frames()
    with pytest.raises(errors.ImageFormatError, match=message):
        FMT.inspect(io.BytesIO(build(frames, len(data), **kwargs)))


@pytest.mark.parametrize(
    "sizes",
    [
        [(0x7FFFFFFF, BS), (100, BS), (100, BS)],  # out of the file
        [(5, BS), (100, BS), (100, BS)],  # too small to be a frame
        [(100, BS - 1), (100, BS), (100, BS)],  # decompressed size is not the block size
        [(100, BS), (100, BS)],  # one entry missing
    ],
)
def test_seek_table_entries_validated(sizes):
    frames, data = good_frames()
    with pytest.raises(errors.ImageFormatError):
        FMT.inspect(io.BytesIO(build(frames, len(data), sizes=sizes)))


def test_seek_table_sizes_must_add_up():
    frames, data = good_frames()
    sizes = [(len(frames[0]) + 1, BS), (len(frames[1]) - 1, BS), (len(frames[2]), BS)]
    blob = build(frames, len(data), sizes=sizes)
    # The sum still matches, but each frame is cut wrong: caught when read.
    reader = FMT.open(io.BytesIO(blob))
    with pytest.raises(errors.ImageFormatError):
        reader.read(0, BS)
    sizes = [(len(frames[0]) + 1, BS), (len(frames[1]), BS), (len(frames[2]), BS)]
    with pytest.raises(errors.ImageFormatError, match="add up"):
        FMT.inspect(io.BytesIO(build(frames, len(data), sizes=sizes)))


@pytest.mark.parametrize("cut", [1, 9, 20, 100, 1000, 5000])
def test_truncated(cut):
    blob = write(make_disk(3, seed=8, block=BS), block_size="64K")
    with pytest.raises(errors.ImageFormatError):
        check(blob[:-cut])


def test_bomb_frame_declaring_small_size():
    # A frame that says BS bytes but holds 4 * BS: decompression must stop at BS.
    frames, data = good_frames()
    bomb = bytearray(CCTX.compress(bytes(4 * BS)))
    assert bomb[4] >> 6 == 2  # 4-byte content size field follows the descriptor
    fcs_at = 5 if bomb[4] & 0x20 else 6
    bomb[fcs_at : fcs_at + 4] = struct.pack("<I", BS)
    frames[1] = bytes(bomb)
    reader = FMT.open(io.BytesIO(build(frames, len(data))))
    assert reader.read(0, BS) == data[:BS]
    with pytest.raises(errors.ImageFormatError):
        reader.read(BS, BS)


def test_frame_rules():
    frames, data = good_frames()
    no_checksum = zstandard.ZstdCompressor(write_checksum=False).compress(data[BS : 2 * BS])
    no_size = zstandard.ZstdCompressor(write_checksum=True, write_content_size=False)
    for bad, message in [
        (no_checksum, "checksum"),
        (no_size.compress(data[BS : 2 * BS]), "content size"),
        (b"\0" * 50, "magic"),
        (frames[1][:-1] + bytes([frames[1][-1] ^ 1]), "decompress"),
    ]:
        candidate = list(frames)
        candidate[1] = bad
        reader = FMT.open(io.BytesIO(build(candidate, len(data))))
        with pytest.raises(errors.ImageFormatError, match=message):
            reader.read(BS, 1)


def test_zero_marked_frame_with_other_content_fails_verify():
    frames, data = good_frames()
    fake = bytearray(zvhd2.zero_frame(BS))
    fake[-1] = 1  # same size, but the last RLE block repeats byte 1
    frames[2] = bytes(fake)
    blob = build(frames, len(data), zero={2})
    reader = FMT.open(io.BytesIO(blob))  # metadata is consistent
    assert reader.read(2 * BS, BS) == bytes(BS)
    with pytest.raises(errors.ImageFormatError, match="zero frame"):
        check(blob)


def test_digest_mismatch():
    frames, data = good_frames()
    blob = build(frames, len(data), trailer_fields={"flags": 1})  # digest of zeros
    FMT.inspect(io.BytesIO(blob))
    with pytest.raises(errors.ImageFormatError, match="digest"):
        check(blob)


def test_writer_refuses_too_many_blocks():
    huge = MemReader(b"")
    huge.virtual_size = 64 << 40
    with pytest.raises(errors.Invalid, match="block"):
        FMT.write(huge, io.BytesIO(), {"block_size": "64K"})


@pytest.mark.parametrize(("options", "level", "hash_log"), [({}, 1, 15), ({"level": "3"}, 3, 0)])
def test_frames_use_the_level_with_at_least_a_2_15_hash_table(options, level, hash_log):
    rng = random.Random(9)
    words = [rng.randbytes(rng.randint(1, 6)).hex().encode() for _ in range(500)]
    text = b" ".join(rng.choices(words, k=MiB))[:MiB]
    base = zstandard.ZstdCompressionParameters.from_level(level, source_size=MiB)
    params = zstandard.ZstdCompressionParameters.from_level(
        level,
        source_size=MiB,
        hash_log=max(base.hash_log, hash_log),
        write_checksum=1,
        write_content_size=1,
    )
    frame = zstandard.ZstdCompressor(compression_params=params).compress(text)
    assert frame in write(text, **options)
