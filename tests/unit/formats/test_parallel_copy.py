"""The threaded copy paths (positional outputs) write what the serial ones do.

raw and plain qcow2 writers copy windows on several threads when the output
has a file descriptor; qcow2 still allocates clusters in disk order, so the
image is byte for byte the one written to a BytesIO (the serial path).
"""

from __future__ import annotations

import io
import random
import threading
import time

import pytest
from qemu_family_samples import MemDisk, pattern_disk, read_all

from ims import errors
from ims.disk.copy import data_windows
from ims.drivers.formats import _qemu
from ims.drivers.formats.qcow2 import Qcow2Format
from ims.drivers.formats.raw import RawFormat

MiB = 1024 * 1024
QCOW2 = Qcow2Format()
RAW = RawFormat()


class _Disk(MemDisk):
    """A thread-safe in-memory disk, so writers take their threaded paths."""

    concurrent_reads = True


class _Failing(_Disk):
    direct_readinto = True

    def readinto(self, offset, buf):
        if offset >= self.virtual_size // 2:
            raise errors.ImageFormatError(format="test", reason="broken at half")
        buf[:] = self.read(offset, len(buf))


def _copy_threads():
    return [t for t in threading.enumerate() if t.name == "ims-copy"]


@pytest.fixture(params=[1, 2, 4])
def threads(request, monkeypatch):
    monkeypatch.setattr(_qemu, "workers", lambda: request.param)
    return request.param


@pytest.mark.parametrize("cluster_size", ["4096", "65536", "2097152"])
@pytest.mark.parametrize("grain", [4096, 65536 + 512, MiB])
def test_qcow2_threaded_image_is_the_serial_image(tmp_path, threads, cluster_size, grain):
    disk = pattern_disk(7 * MiB + 3 * 512, seed=grain, grain=grain)
    serial = io.BytesIO()  # no file descriptor: the one-thread path
    QCOW2.write(MemDisk(disk, grain=grain), serial, {"cluster_size": cluster_size})
    path = tmp_path / "out.qcow2"
    with open(path, "wb") as out:
        QCOW2.write(_Disk(disk, grain=grain), out, {"cluster_size": cluster_size})
    assert path.read_bytes() == serial.getvalue()
    with open(path, "rb") as f, QCOW2.open(f) as back:
        assert read_all(back) == disk + bytes(len(read_all(back)) - len(disk))


@pytest.mark.parametrize("grain", [4096, 65536 + 512, MiB])
def test_raw_threaded_copy(tmp_path, threads, grain):
    disk = pattern_disk(7 * MiB + 1234, seed=3, grain=grain)
    path = tmp_path / "out.raw"
    path.write_bytes(b"x" * (9 * MiB))  # leftovers must not survive
    with open(path, "r+b") as out:
        RAW.write(_Disk(disk, grain=grain), out)
    assert path.read_bytes() == disk


@pytest.mark.parametrize("fmt", [QCOW2, RAW])
def test_reader_error_stops_every_copy_thread(tmp_path, threads, fmt):
    disk = pattern_disk(8 * MiB, seed=1, grain=65536)
    with open(tmp_path / "out", "wb") as out:
        with pytest.raises(errors.ImageFormatError, match="broken at half"):
            fmt.write(_Failing(disk, grain=MiB), out)
    assert _copy_threads() == []


def test_ordered_windows_plans_in_disk_order_and_propagates_failures(threads):
    disk = random.Random(4).randbytes(6 * MiB)
    seen = []

    def plan(start, view, scanned):
        seen.append(start)
        assert bytes(view[: len(scanned)]) == disk[start : start + len(scanned)]
        if start >= 4 * MiB:
            raise ValueError("stop here")
        return None

    with pytest.raises(ValueError, match="stop here"):
        _qemu.ordered_windows(_Disk(disk, grain=MiB), MiB, threads, bytes, plan)
    assert seen == sorted(seen) and seen[-1] == 4 * MiB
    assert _copy_threads() == []


def test_data_windows_cover_the_data():
    disk = pattern_disk(5 * MiB + 777, seed=9, grain=4096)
    reader = MemDisk(disk, grain=4096)
    rebuilt = bytearray(len(disk))
    for start, length, ranges in data_windows(reader, MiB):
        assert start % MiB == 0 and length == min(MiB, len(disk) - start)
        view = memoryview(bytearray(length))
        _qemu.fill_window(reader, start, ranges, view)
        rebuilt[start : start + length] = view
    assert bytes(rebuilt) == disk


class _OneAtATime(MemDisk):
    """A reader with a shared cursor (as zvhd, zvhd2): two reads at once fail."""

    def __init__(self, data: bytes, grain: int) -> None:
        super().__init__(data, grain)
        self._busy = threading.Lock()

    def read(self, offset, length):
        if not self._busy.acquire(blocking=False):
            raise AssertionError("two threads read at once")
        try:
            time.sleep(0.0005)
            return super().read(offset, length)
        finally:
            self._busy.release()


@pytest.mark.parametrize("fmt", [QCOW2, RAW])
def test_sources_without_concurrent_reads_are_read_by_one_thread(tmp_path, threads, fmt):
    disk = pattern_disk(4 * MiB, seed=6, grain=65536)
    path = tmp_path / "out"
    with open(path, "wb") as out:
        fmt.write(_OneAtATime(disk, grain=65536), out)
    with open(path, "rb") as f, fmt.open(f) as back:
        assert read_all(back)[: len(disk)] == disk
