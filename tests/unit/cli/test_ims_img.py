"""ims-img: the commands, their JSON and their exit codes, on raw/zvhd/zvhd2.

Most tests run ``main()`` in-process with the registry narrowed to raw,
zvhd and zvhd2 (so they do not depend on every format plugin); one test
runs the real console script in a subprocess once every plugin loads.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from typing import Any, BinaryIO

import pytest

from ims.cmd import img
from ims.disk import registry
from ims.disk.model import DiskReader, Extent, ImageInfo, Sample
from ims.drivers.formats.base import DiskFormat
from ims.drivers.formats.zvhd import ZvhdFormat
from ims.drivers.formats.zvhd2 import Zvhd2Format

MiB = 1024 * 1024


class _MiniRawReader(DiskReader):
    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        file.seek(0, os.SEEK_END)
        self.virtual_size = file.tell()

    def extents(self):
        if self.virtual_size:
            yield Extent(0, self.virtual_size, False)

    def read(self, offset: int, length: int) -> bytes:
        self.file.seek(offset)
        return self.file.read(length)


class _MiniRaw(DiskFormat):
    """Stand-in for the raw plugin where it is not installed yet."""

    name = "raw"
    detectable = False
    streaming_write = True

    def probe(self, sample: Sample) -> bool:
        return False

    def inspect(self, file: BinaryIO) -> ImageInfo:
        return ImageInfo("raw", _MiniRawReader(file).virtual_size)

    def open(self, file: BinaryIO) -> DiskReader:
        return _MiniRawReader(file)

    def can_write(self) -> bool:
        return True

    def write(self, reader: DiskReader, out: BinaryIO, options: Any = None) -> None:
        for extent in reader.extents():
            if not extent.zero:
                out.seek(extent.offset)
                out.write(reader.read(extent.offset, extent.length))
        out.truncate(reader.virtual_size)


def _raw_format() -> DiskFormat:
    try:
        from ims.drivers.formats.raw import RawFormat
    except ImportError:
        return _MiniRaw()
    return RawFormat()


@pytest.fixture(autouse=True)
def narrow_registry(monkeypatch):
    plugins = {"raw": _raw_format(), "zvhd": ZvhdFormat(), "zvhd2": Zvhd2Format()}
    monkeypatch.setattr(registry, "formats", lambda: plugins)
    monkeypatch.setattr(img, "_load_plugin", registry.get)


@pytest.fixture
def disk(tmp_path):
    """A 6 MiB raw disk: zero, random, text and half-filled MiBs."""
    rng = random.Random(3)
    data = (
        bytes(MiB)
        + rng.randbytes(MiB)
        + b"some text\n" * (MiB // 10)
        + bytes(MiB + MiB % 10)
        + rng.randbytes(MiB // 2)
        + bytes(MiB // 2)
        + b"end"
    )
    path = tmp_path / "disk.raw"
    path.write_bytes(data)
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = img.main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


def convert(capsys, src, dst, fmt: str, *extra: str) -> None:
    code, _, err = run(capsys, "convert", "-O", fmt, *extra, src, dst)
    assert code == 0, err


def test_info_json_fields(capsys, disk, tmp_path):
    target = tmp_path / "disk.qcow2"  # the name lies; content decides
    convert(capsys, disk, target, "zvhd2")
    code, out, _ = run(capsys, "info", "--output", "json", target)
    assert code == 0
    info = json.loads(out)
    assert info["format"] == "zvhd2"
    assert info["virtual-size"] == disk.stat().st_size
    assert info["filename"] == str(target)
    assert info["cluster-size"] == MiB
    assert info["actual-size"] > 0
    assert info["format-specific"]["type"] == "zvhd2"
    assert info["format-specific"]["data"]["zero-blocks"] == 2
    code, out, _ = run(capsys, "info", target)
    assert "file format: zvhd2" in out and f"({disk.stat().st_size} bytes)" in out


@pytest.mark.parametrize("chain", [["zvhd"], ["zvhd2"], ["zvhd", "zvhd2"], ["zvhd2", "zvhd"]])
def test_convert_round_trip(capsys, disk, tmp_path, chain):
    src = disk
    for index, fmt in enumerate(chain):
        dst = tmp_path / f"step{index}"
        convert(capsys, src, dst, fmt, "-o", "level=2")
        code, out, _ = run(capsys, "info", "--output", "json", dst)
        assert json.loads(out)["format"] == fmt
        src = dst
    back = tmp_path / "back.raw"
    convert(capsys, src, back, "raw")
    assert back.read_bytes() == disk.read_bytes()
    code, out, _ = run(capsys, "compare", disk, src)
    assert (code, out.strip()) == (0, "Images are identical.")


def test_convert_progress(capsys, disk, tmp_path):
    code, out, _ = run(capsys, "convert", "-p", "-O", "zvhd2", disk, tmp_path / "p")
    assert code == 0
    assert "(100.00/100%)" in out


def test_convert_bad_option_leaves_nothing(capsys, disk, tmp_path):
    dst = tmp_path / "out"
    code, _, err = run(capsys, "convert", "-O", "zvhd", "-o", "nope=1", disk, dst)
    assert code == 1
    assert "unknown zvhd option" in err and err.count("\n") == 1
    assert not dst.exists()


def test_compare_exit_codes(capsys, disk, tmp_path):
    data = bytearray(disk.read_bytes())
    data[3 * MiB + 5] = 7  # inside a zero MiB
    other = tmp_path / "other.raw"
    other.write_bytes(bytes(data))
    packed = tmp_path / "other.zvhd2"
    convert(capsys, other, packed, "zvhd2")
    code, out, _ = run(capsys, "compare", disk, packed)
    assert code == 1
    assert out.strip() == f"Content mismatch at offset {3 * MiB + 5}!"

    # Zeros past the end of the shorter image do not make a difference...
    longer = tmp_path / "longer.raw"
    longer.write_bytes(disk.read_bytes() + bytes(MiB))
    code, out, _ = run(capsys, "compare", disk, longer)
    assert code == 0 and "size mismatch" in out
    # ...data there does.
    longer.write_bytes(disk.read_bytes() + b"\0\0x")
    code, out, _ = run(capsys, "compare", longer, disk)
    assert code == 1 and f"offset {disk.stat().st_size + 2}" in out

    code, _, err = run(capsys, "compare", disk, tmp_path / "missing")
    assert code == 2 and "No such file" in err


def test_map_json(capsys, disk, tmp_path):
    packed = tmp_path / "d.zvhd2"
    convert(capsys, disk, packed, "zvhd2")
    code, out, _ = run(capsys, "map", "--output", "json", packed)
    assert code == 0
    rows = json.loads(out)
    assert rows[0] == {
        "start": 0,
        "length": MiB,
        "depth": 0,
        "present": True,
        "zero": True,
        "data": False,
    }
    assert sum(row["length"] for row in rows) == disk.stat().st_size
    assert all(a["zero"] != b["zero"] for a, b in zip(rows, rows[1:], strict=False))
    code, out, _ = run(capsys, "map", packed)
    assert code == 0 and "zero" in out and "data" in out


@pytest.mark.parametrize("fmt", ["zvhd", "zvhd2"])
def test_check_clean_and_hostile(capsys, disk, tmp_path, fmt):
    packed = tmp_path / "d.img"
    convert(capsys, disk, packed, fmt)
    code, out, _ = run(capsys, "check", packed)
    assert code == 0 and "No errors" in out
    blob = bytearray(packed.read_bytes())
    del blob[len(blob) // 2 :]
    packed.write_bytes(bytes(blob))
    code, out, err = run(capsys, "check", "-f", fmt, packed)
    assert code == 2
    assert err.startswith(f"ims-img: check: Invalid {fmt} image: ")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_usage_errors_exit_1(capsys, disk):
    code, _, err = run(capsys, "frobnicate", disk)
    assert code == 1 and "invalid choice" in err
    code, _, err = run(capsys, "info", "-f", "nosuchformat", disk)
    assert code == 1 and "Unknown disk format" in err


def _full_registry_loads() -> bool:
    probe = "from ims.disk import registry; registry.formats()"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def test_console_script_subprocess(disk, tmp_path):
    if not _full_registry_loads():
        pytest.skip("not every ims.formats plugin is installed yet")
    exe = shutil.which("ims-img") or os.path.join(os.path.dirname(sys.executable), "ims-img")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "ims.cmd.img"]
    packed = tmp_path / "d.zvhd2"
    subprocess.run([*cmd, "convert", "-O", "zvhd2", disk, packed], check=True)
    done = subprocess.run(
        [*cmd, "info", "--output", "json", packed], check=True, capture_output=True, text=True
    )
    assert json.loads(done.stdout)["format"] == "zvhd2"
    done = subprocess.run([*cmd, "compare", disk, packed], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    packed.write_bytes(packed.read_bytes()[:-5])
    done = subprocess.run([*cmd, "check", packed], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
