"""The store's file writer: exact bytes whatever the chunking, on disks and on tmpfs."""

from __future__ import annotations

import os

import pytest

from ims.drivers.stores import _filewriter

SIZES = [0, 1, 4095, 4096, 4097, 3 * 4096 + 17, 2 * 65536, 65536 * 5 + 123]


def _pieces(data: bytes, step: int) -> list[bytes]:
    return [data[i : i + step] for i in range(0, len(data), step)] or []


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("step", [1000, 4096, 70000])
@pytest.mark.parametrize("direct", [True, False])
def test_bytes_and_size_are_exact(tmp_path, size: int, step: int, direct: bool) -> None:
    data = os.urandom(size)
    path = tmp_path / "out"
    written = _filewriter.write_new_file(
        str(path), _pieces(data, step), direct=direct, buffer_size=65536
    )
    assert written == size
    assert path.read_bytes() == data


def test_memoryviews_and_bytearrays_are_taken(tmp_path) -> None:
    data = os.urandom(10000)
    chunks = [memoryview(data)[:3000], bytearray(data[3000:9000]), data[9000:]]
    path = tmp_path / "out"
    assert _filewriter.write_new_file(str(path), chunks, buffer_size=4096) == 10000
    assert path.read_bytes() == data


def test_existing_file_is_never_overwritten(tmp_path) -> None:
    path = tmp_path / "out"
    path.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        _filewriter.write_new_file(str(path), [b"new"])
    assert path.read_bytes() == b"keep"


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no tmpfs mounted at /dev/shm")
def test_tmpfs_refuses_direct_io_and_is_written_anyway() -> None:
    path = f"/dev/shm/ims-test-{os.getpid()}"
    data = os.urandom(5000)
    try:
        assert _filewriter.write_new_file(path, [data], direct=True) == 5000
        with open(path, "rb") as f:
            assert f.read() == data
    finally:
        os.unlink(path)


def test_a_failing_source_leaves_the_error_to_the_caller(tmp_path) -> None:
    def chunks():
        yield b"x" * 5000
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        _filewriter.write_new_file(str(tmp_path / "out"), chunks())
