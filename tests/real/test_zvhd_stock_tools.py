"""Oracle tests: stock gzip/zstd read what the zvhd/zvhd2 writers produce."""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import subprocess

import pytest

from ims.disk.model import DiskReader, Extent
from ims.drivers.formats.zvhd import ZvhdFormat
from ims.drivers.formats.zvhd2 import Zvhd2Format

pytestmark = pytest.mark.real

MiB = 1024 * 1024


class FileReader(DiskReader):
    """A raw file with zero MiBs reported as zero extents."""

    def __init__(self, path) -> None:
        self.file = open(path, "rb")  # noqa: SIM115
        self.virtual_size = os.path.getsize(path)

    def extents(self):
        for pos in range(0, self.virtual_size, MiB):
            piece = self.read(pos, min(MiB, self.virtual_size - pos))
            yield Extent(pos, len(piece), not piece.strip(b"\0"))

    def read(self, offset: int, length: int) -> bytes:
        self.file.seek(offset)
        return self.file.read(length)

    def close(self) -> None:
        self.file.close()


@pytest.fixture(scope="module")
def raw_disk(tmp_path_factory):
    """24 MiB + a tail: zero, random, text and partly filled MiBs."""
    rng = random.Random(42)
    words = [
        bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(500)
    ]
    path = tmp_path_factory.mktemp("zvhd") / "disk.raw"
    with open(path, "wb") as out:
        for index in range(24):
            kind = index % 4
            if kind == 0:
                out.write(bytes(MiB))
            elif kind == 1:
                out.write(rng.randbytes(MiB))
            elif kind == 2:
                text = b" ".join(rng.choices(words, k=MiB // 4))[:MiB]
                out.write(text.ljust(MiB, b"\n"))
            else:
                fill = rng.randrange(4096, MiB, 4096)
                out.write(rng.randbytes(fill) + bytes(MiB - fill))
        out.write(b"unaligned tail" * 100)
    return path


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write(fmt, raw_disk, target) -> None:
    reader = FileReader(raw_disk)
    try:
        with open(target, "wb") as out:
            fmt.write(reader, out)
    finally:
        reader.close()


def _round_trip(fmt, path) -> bytes:
    with open(path, "rb") as file:
        reader = fmt.open(file)
        out = io.BytesIO()
        for extent in reader.extents():
            out.write(
                bytes(extent.length) if extent.zero else reader.read(extent.offset, extent.length)
            )
        fmt.verify(file)
    return out.getvalue()


@pytest.mark.skipif(shutil.which("gzip") is None, reason="gzip is not installed")
def test_zvhd_is_read_by_gzip(raw_disk, tmp_path):
    fmt = ZvhdFormat()
    packed = tmp_path / "disk.zvhd"
    _write(fmt, raw_disk, packed)
    subprocess.run(["gzip", "-t", str(packed)], check=True)
    unpacked = subprocess.run(["gzip", "-dc", str(packed)], check=True, capture_output=True)
    assert hashlib.sha256(unpacked.stdout).hexdigest() == _sha(raw_disk)
    assert _round_trip(fmt, packed) == raw_disk.read_bytes()
    assert packed.stat().st_size < raw_disk.stat().st_size


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd is not installed")
def test_zvhd2_is_read_by_zstd(raw_disk, tmp_path):
    fmt = Zvhd2Format()
    packed = tmp_path / "disk.zvhd2"
    _write(fmt, raw_disk, packed)
    subprocess.run(["zstd", "-q", "-t", str(packed)], check=True)
    unpacked = subprocess.run(["zstd", "-dc", str(packed)], check=True, capture_output=True)
    assert hashlib.sha256(unpacked.stdout).hexdigest() == _sha(raw_disk)
    assert _round_trip(fmt, packed) == raw_disk.read_bytes()
    assert packed.stat().st_size < raw_disk.stat().st_size


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd is not installed")
def test_zstd_cli_output_round_trips_through_zvhd2(raw_disk, tmp_path):
    # What zstd -d gives back, written again as zvhd2, is byte-identical.
    fmt = Zvhd2Format()
    first, second = tmp_path / "a.zvhd2", tmp_path / "b.zvhd2"
    _write(fmt, raw_disk, first)
    unpacked = tmp_path / "unpacked.raw"
    subprocess.run(["zstd", "-q", "-d", str(first), "-o", str(unpacked)], check=True)
    _write(fmt, unpacked, second)
    assert first.read_bytes() == second.read_bytes()
