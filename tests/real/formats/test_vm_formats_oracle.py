"""qemu-img as the oracle for the VMDK, VHD, VHDX and VDI readers and writers.

Readers: for images qemu-img makes, our raw output must be byte-identical to
``qemu-img convert -O raw`` and our virtual size equal to ``qemu-img info``'s.
Writers: ``qemu-img check`` (where qemu has one) must pass and ``qemu-img
compare`` against the source raw must report identical images.
"""

from __future__ import annotations

import io
import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from ims.drivers.formats.raw import RawFormat
from ims.drivers.formats.vdi import VdiFormat
from ims.drivers.formats.vhd import VhdFormat
from ims.drivers.formats.vhdx import VhdxFormat
from ims.drivers.formats.vmdk import VmdkFormat

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img (qemu-utils)"),
]

MiB = 1 << 20
SIZE = 12 * MiB + 192 * 1024
OURS = {"vmdk": VmdkFormat(), "vpc": VhdFormat(), "vhdx": VhdxFormat(), "vdi": VdiFormat()}


def _qemu(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=120)


def _ok(*args: str) -> str:
    proc = _qemu(*args)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A raw disk like a used filesystem: zero, random and text blocks, some partial."""
    rng = random.Random(2024)
    words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9)))
             for _ in range(500)]  # fmt: skip
    path = tmp_path_factory.mktemp("vmsrc") / "disk.raw"
    with open(path, "wb") as out:
        out.truncate(SIZE)
        for pos in range(0, SIZE, 256 * 1024):
            kind = rng.random()
            if kind < 0.4:
                continue
            fill = min(256 * 1024, SIZE - pos)
            if rng.random() < 0.3:
                fill = rng.randrange(512, fill, 512)
            if kind < 0.7:
                data = rng.randbytes(fill)
            else:
                data = (b" ".join(rng.choices(words, k=fill // 3)) + b"\n")[:fill]
            out.seek(pos)
            out.write(data)
    return path


def _read_all(reader) -> bytes:
    out = bytearray(reader.virtual_size)
    pos = 0
    for ext in reader.extents():
        assert ext.offset == pos
        pos = ext.end
        if not ext.zero:
            out[ext.offset : ext.end] = reader.read(ext.offset, ext.length)
    assert pos == reader.virtual_size
    return bytes(out)


READ_CASES = [
    ("vmdk", "subformat=monolithicSparse"),
    ("vmdk", "subformat=streamOptimized"),
    ("vmdk", "subformat=monolithicSparse,zeroed_grain=on"),
    ("vpc", "subformat=fixed"),
    ("vpc", "subformat=dynamic"),
    ("vhdx", "subformat=fixed"),
    ("vhdx", "subformat=dynamic"),
    ("vhdx", "subformat=dynamic,block_size=1048576,block_state_zero=off"),
    ("vdi", "static=on"),
    ("vdi", "static=off"),
]


@pytest.mark.parametrize("fmt, opts", READ_CASES, ids=[f"{f}-{o}" for f, o in READ_CASES])
def test_reader_matches_qemu(source: Path, tmp_path: Path, fmt: str, opts: str):
    image = tmp_path / f"disk.{fmt}"
    ref = tmp_path / "ref.raw"
    _ok("convert", "-f", "raw", "-O", fmt, "-o", opts, str(source), str(image))
    _ok("convert", "-f", fmt, "-O", "raw", str(image), str(ref))
    qinfo = json.loads(_ok("info", "-f", fmt, "--output=json", str(image)))
    ours = OURS[fmt]
    with open(image, "rb") as f:
        info = ours.inspect(f)
        assert info.virtual_size == qinfo["virtual-size"]
        reader = ours.open(f)
        got = _read_all(reader)
    want = ref.read_bytes()
    assert len(got) == len(want)
    assert got == want
    # The source itself is inside (qemu may round the size up).
    assert got[:SIZE] == source.read_bytes()


class _ForwardOnly(io.RawIOBase):
    """A real file seen as a pipe: write only, no seek."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "wb")

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data) -> int:
        return self._file.write(data)

    def close(self) -> None:
        self._file.close()
        super().close()


WRITE_CASES = [
    ("vmdk", {"subformat": "monolithicSparse"}, True, False),
    ("vmdk", {"subformat": "streamOptimized"}, True, True),
    ("vmdk", {"subformat": "streamOptimized"}, True, False),
    ("vpc", {"subformat": "fixed"}, False, True),
    ("vpc", {"subformat": "dynamic"}, False, True),
    ("vpc", {"subformat": "fixed"}, False, False),
    ("vhdx", {}, True, False),
]


@pytest.mark.parametrize(
    "fmt, opts, checkable, forward_only",
    WRITE_CASES,
    ids=[
        f"{f}-{o.get('subformat', 'dynamic')}-{'pipe' if p else 'file'}"
        for f, o, _c, p in WRITE_CASES
    ],  # fmt: skip
)
def test_writer_output_passes_qemu(
    source: Path, tmp_path: Path, fmt: str, opts: dict, checkable: bool, forward_only: bool
):
    out_path = tmp_path / f"out.{fmt}"
    with open(source, "rb") as f:
        reader = RawFormat().open(f)
        if forward_only:
            out = _ForwardOnly(out_path)
            try:
                OURS[fmt].write(reader, out, opts)
            finally:
                out.close()
        else:
            with open(out_path, "wb") as out:
                OURS[fmt].write(reader, out, opts)
    if checkable:
        _ok("check", "-f", fmt, str(out_path))
    qinfo = json.loads(_ok("info", "-f", fmt, "--output=json", str(out_path)))
    assert qinfo["virtual-size"] == SIZE
    proc = _qemu("compare", "-f", "raw", "-F", fmt, str(source), str(out_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "identical" in proc.stdout
    # And our own reader agrees.
    with open(out_path, "rb") as f:
        assert _read_all(OURS[fmt].open(f)) == source.read_bytes()


def test_vmdk_stream_output_reads_back_in_qemu_as_stream(source: Path, tmp_path: Path):
    out_path = tmp_path / "s.vmdk"
    with open(source, "rb") as f, open(out_path, "wb") as out:
        VmdkFormat().write(RawFormat().open(f), out, {"subformat": "streamOptimized"})
    info = json.loads(_ok("info", "-f", "vmdk", "--output=json", str(out_path)))
    assert info["format-specific"]["data"]["create-type"] == "streamOptimized"
    assert info["format-specific"]["data"]["extents"][0]["compressed"] is True


@pytest.mark.parametrize(
    "fmt, opts",
    [("vmdk", {"subformat": "monolithicSparse"}), ("vmdk", {"subformat": "streamOptimized"}),
     ("vpc", {"subformat": "fixed"}), ("vpc", {"subformat": "dynamic"}), ("vhdx", {})],
    ids=["vmdk-sparse", "vmdk-stream", "vhd-fixed", "vhd-dynamic", "vhdx"],
)  # fmt: skip
def test_writers_handle_a_size_that_is_not_whole_sectors(
    source: Path, tmp_path: Path, fmt: str, opts: dict
):
    odd = tmp_path / "odd.raw"
    size = 5 * MiB + 700
    data = bytearray(source.read_bytes()[:size])
    data[-700:] = b"tail" * 175  # data in the last, short sector
    odd.write_bytes(data)
    out_path = tmp_path / f"odd.{fmt}"
    with open(odd, "rb") as f, open(out_path, "wb") as out:
        OURS[fmt].write(RawFormat().open(f), out, opts)
    qinfo = json.loads(_ok("info", "-f", fmt, "--output=json", str(out_path)))
    assert qinfo["virtual-size"] == -(-size // 512) * 512
    back = tmp_path / "back.raw"
    _ok("convert", "-f", fmt, "-O", "raw", str(out_path), str(back))
    assert back.read_bytes() == odd.read_bytes() + bytes(-size % 512)
