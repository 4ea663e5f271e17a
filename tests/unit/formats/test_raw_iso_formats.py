"""raw and iso: sparse-aware reading, sparse writing, ISO 9660/UDF detection."""

from __future__ import annotations

import io
import os

import pytest
from qemu_family_samples import MemDisk, iso_image, pattern_disk, read_all

from ims import errors
from ims.disk.model import Sample
from ims.drivers.formats.iso import IsoFormat
from ims.drivers.formats.raw import RawFormat

RAW = RawFormat()
ISO = IsoFormat()
MiB = 1024 * 1024


def _sparse_file(path, size=8 * MiB):
    """Data at 1 MiB and 5 MiB (64 KiB each), holes elsewhere."""
    with open(path, "wb") as f:
        f.truncate(size)
        f.seek(MiB)
        f.write(b"a" * 65536)
        f.seek(5 * MiB)
        f.write(b"b" * 65536)
    return path


def test_raw_is_the_undetectable_fallback():
    assert RAW.detectable is False
    assert RAW.probe(Sample(head=b"QFI\xfb" + bytes(100))) is False
    assert RAW.streaming_write is True


def test_raw_inspect_and_read(tmp_path):
    path = _sparse_file(tmp_path / "disk.raw")
    with open(path, "rb") as f:
        info = RAW.inspect(f)
        assert info.virtual_size == 8 * MiB
        with RAW.open(f) as reader:
            extents = list(reader.extents())
            assert read_all(reader) == path.read_bytes()
    assert extents[0].offset == 0 and extents[-1].end == 8 * MiB
    data = sum(e.length for e in extents if not e.zero)
    # Filesystems without SEEK_HOLE report everything as data.
    if any(e.zero for e in extents):
        assert data < 8 * MiB
        assert all(e.zero for e in extents if e.end <= MiB)


def test_raw_reader_without_fileno():
    disk = pattern_disk(100_000)
    with RAW.open(io.BytesIO(disk)) as reader:
        assert [(e.offset, e.length, e.zero) for e in reader.extents()] == [(0, 100_000, False)]
        assert reader.read(10, 20) == disk[10:30]
        with pytest.raises(errors.Invalid):
            reader.read(99_990, 20)


def test_raw_writer_makes_sparse_files(tmp_path):
    disk = bytes(2 * MiB) + b"x" * 4096 + bytes(6 * MiB)
    out_path = tmp_path / "out.raw"
    out_path.write_bytes(b"\xff" * (12 * MiB))  # old content must not survive
    with open(out_path, "r+b") as out:
        RAW.write(MemDisk(disk, grain=MiB), out)
        assert out.tell() == len(disk)
    assert out_path.read_bytes() == disk
    st = os.stat(out_path)
    assert st.st_size == len(disk)
    assert st.st_blocks * 512 < 4 * MiB  # holes, not written zeros


def test_raw_writer_to_bytesio():
    disk = pattern_disk(300_000, seed=2) + bytes(100_000)
    out = io.BytesIO()
    RAW.write(MemDisk(disk), out)
    assert out.getvalue() == disk


def test_raw_writer_to_forward_only_stream():
    class Pipe:
        def __init__(self):
            self.chunks = []

        def write(self, data):
            self.chunks.append(bytes(data))
            return len(data)

    disk = bytes(5 * MiB) + b"tail"
    pipe = Pipe()
    RAW.write(MemDisk(disk, grain=MiB), pipe)
    assert b"".join(pipe.chunks) == disk
    assert max(len(c) for c in pipe.chunks) <= 4 * MiB


def test_raw_writer_rejects_options():
    with pytest.raises(errors.Invalid, match="unknown raw options"):
        RAW.write(MemDisk(b"x"), io.BytesIO(), {"compress": "on"})


def test_iso_probe():
    assert ISO.probe(Sample(head=iso_image()[:65536]))
    assert ISO.probe(Sample(head=iso_image(udf=True)[:65536]))
    udf_only = bytearray(iso_image(udf=True))
    udf_only[16 * 2048 : 18 * 2048] = bytes(4096)
    udf_only[16 * 2048 : 16 * 2048 + 7] = b"\x00BEA01\x01"
    udf_only[17 * 2048 : 17 * 2048 + 7] = b"\x00NSR03\x01"
    assert ISO.probe(Sample(head=bytes(udf_only[:65536])))
    assert not ISO.probe(Sample(head=bytes(65536)))
    assert not ISO.probe(Sample(head=iso_image()[:32768]))


def test_iso_inspect_and_read():
    image = iso_image(blocks=40)
    info = ISO.inspect(io.BytesIO(image))
    assert info.format == "iso"
    assert info.virtual_size == 40 * 2048
    assert info.details["volume_size"] == 40 * 2048
    assert info.details["volume_id"] == "IMS_TEST"
    with ISO.open(io.BytesIO(image)) as reader:
        assert read_all(reader) == image
    assert ISO.can_write() is False


def test_iso_bytes_after_the_volume_are_kept():
    image = iso_image(blocks=40, extra=4096)
    info = ISO.inspect(io.BytesIO(image))
    assert info.details["volume_size"] == 40 * 2048
    assert info.virtual_size == len(image)


def test_iso_udf_flag():
    assert ISO.inspect(io.BytesIO(iso_image(udf=True))).details["udf"] is True


def test_iso_truncated_refused():
    image = iso_image(blocks=40)[: 30 * 2048]
    with pytest.raises(errors.ImageFormatError, match="larger than the file"):
        ISO.inspect(io.BytesIO(image))


def test_iso_bad_block_size_refused():
    image = bytearray(iso_image())
    image[16 * 2048 + 128 : 16 * 2048 + 130] = (1000).to_bytes(2, "little")
    with pytest.raises(errors.ImageFormatError, match="logical block size"):
        ISO.open(io.BytesIO(bytes(image)))


def test_iso_without_descriptors_refused():
    with pytest.raises(errors.ImageFormatError, match="no ISO 9660"):
        ISO.inspect(io.BytesIO(bytes(80 * 1024)))


def test_raw_writer_propagates_reader_errors():
    class Failing(MemDisk):
        def read(self, offset, length):
            raise errors.ImageFormatError(format="test", reason="bad block")

    import threading

    with pytest.raises(errors.ImageFormatError, match="bad block"):
        RAW.write(Failing(b"x" * 100), io.BytesIO())
    assert not [t for t in threading.enumerate() if t.name == "ims-prefetch"]


def test_raw_reader_leaves_the_file_position_alone(tmp_path):
    path = _sparse_file(tmp_path / "disk.raw")
    with open(path, "rb") as f:
        f.seek(1234)
        with RAW.open(f) as reader:
            list(reader.extents())
            reader.read(MiB, 10)
        assert f.tell() == 1234
        assert f.read(3) == bytes(3)
    buf = io.BytesIO(b"abcdef" * 1000)
    buf.seek(7)
    with RAW.open(buf) as reader:
        assert reader.read(0, 3) == b"abc"
    assert buf.tell() == 7


@pytest.mark.parametrize(
    ("data", "end"),
    [
        (b"", 0),
        (bytes(10), 0),
        (bytes(3 * MiB), 0),
        (b"x", 1),
        (b"x" + bytes(4095), 4096),
        (b"x" + bytes(4096), 4096),
        (b"x" + bytes(MiB - 1), 4096),
        (bytes(5000) + b"y", 5001),
        (bytes(70000) + b"y" + bytes(200000), 73728),
        (b"z" * 100_000 + bytes(1), 100_001),
        (b"z" * (MiB - 4096) + bytes(4096), MiB - 4096),
    ],
)
def test_nonzero_end_trims_whole_zero_pages(data, end):
    from ims.drivers.formats import _qemu

    assert _qemu.nonzero_end(data) == end
    assert _qemu.nonzero_end(memoryview(bytearray(data))) == end
    assert not any(data[end:])


def test_raw_writer_leaves_holes_for_zeros_inside_data(tmp_path):
    """Zero blocks and zero tails of data extents are not written (-S 4k)."""
    disk = b"a" * 5000 + bytes(2 * MiB - 5000) + b"b" * MiB + bytes(MiB)
    out = tmp_path / "out.raw"
    with RAW.open(io.BytesIO(disk)) as reader, open(out, "wb") as f:
        RAW.write(reader, f)
    assert out.read_bytes() == disk
    st = os.stat(out)
    if st.st_blocks * 512 < st.st_size:  # the filesystem keeps holes
        assert st.st_blocks * 512 <= 8192 + MiB + 65536
