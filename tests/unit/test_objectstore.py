"""bucket:object references, the bucket rule, the ranged file and the writer pipe."""

from __future__ import annotations

import os
import random
import threading

import pytest

from ims import errors
from ims.context import RequestContext
from ims.core import objectstore, pipe
from ims.core.objectstore import RangedFile, parse_ref

DATA = os.urandom(3 * 1024 * 1024 + 17)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (None, "IMG.0017"),
        ("bucket", "IMG.0017"),
        ("Bucket:x", "IMG.0017"),
        ("b_c:x", "IMG.0017"),
        ("ab:x", "IMG.0017"),
        ("a..b:x", "IMG.0017"),
        ("bkt:", "IMG.0017"),
        ("bkt:/etc/passwd", "IMG.0017"),
        ("bkt:a/../b", "IMG.0017"),
        ("bkt:a//b", "IMG.0017"),
        ("bkt:a\nb", "IMG.0017"),
        ("bkt:" + "x" * 1025, "IMG.0017"),
        ("bkt:my file.qcow2", "IMG.0175"),
    ],
)
def test_bad_references(text, code):
    with pytest.raises(errors.Invalid) as info:
        parse_ref(text)
    assert info.value.kwargs["ims_code"] == code


def test_good_reference_keeps_folders_and_colons():
    ref = parse_ref("p1-images:dir/disk:v2.qcow2")
    assert (ref.bucket, ref.name) == ("p1-images", "dir/disk:v2.qcow2")
    assert str(ref) == "p1-images:dir/disk:v2.qcow2"


def test_bucket_owner_is_the_name_before_the_first_dash():
    assert objectstore.bucket_owner("abc123-images-2") == "abc123"
    assert objectstore.bucket_owner("abc123") == "abc123"


class _Conf:
    class imaging:  # noqa: N801 - mimics an oslo.config group
        bucket_owner_rule = "prefix"
        project_buckets = ["p9:shared-bkt"]
        object_store = None
        object_store_type = None


def test_may_use_prefix_and_listed():
    storage = objectstore.ObjectStorage(_Conf, stores=None)  # type: ignore[arg-type]
    p1 = RequestContext(project_id="p1")
    assert storage.may_use(p1, "p1-images") and storage.may_use(p1, "p1")
    assert not storage.may_use(p1, "p10-images") and not storage.may_use(p1, "p2-p1")
    assert storage.may_use(RequestContext(project_id="p9"), "shared-bkt")
    assert not storage.may_use(p1, "shared-bkt")
    assert not storage.may_use(RequestContext(project_id=None), "None-x")
    with pytest.raises(errors.Invalid) as info:
        storage.bucket(p1, parse_ref("p1-images:x"))  # no object store configured
    assert info.value.kwargs["ims_code"] == "IMG.0069"


def _ranged(data: bytes, calls: list, **kw: int) -> RangedFile:
    def fetch(offset: int, length: int):
        calls.append((offset, length))
        yield data[offset : offset + length]

    return RangedFile(fetch, len(data), **kw)


def test_ranged_file_reads_anything_correctly():
    rng = random.Random(5)
    with _ranged(DATA, [], min_window=4096, max_window=256 * 1024) as file:
        for _ in range(300):
            offset = rng.randrange(0, len(DATA))
            length = rng.choice([1, 512, 4096, 70000, 300000])
            file.seek(offset)
            assert file.read(length) == DATA[offset : offset + length]
        file.seek(0)
        assert file.read() == DATA
        file.seek(-10, os.SEEK_END)
        assert file.read(100) == DATA[-10:]


def test_ranged_file_grows_its_window_on_forward_reads():
    calls: list = []
    with _ranged(DATA, calls, min_window=64 * 1024, max_window=1024 * 1024) as file:
        while file.read(64 * 1024):
            pass
    assert sum(length for _o, length in calls) == len(DATA)  # nothing fetched twice
    assert len(calls) < 12
    assert max(length for _o, length in calls) == 1024 * 1024


def test_ranged_file_short_object_is_an_error():
    def fetch(offset: int, length: int):
        yield b"x" * (length // 2)

    with RangedFile(fetch, 1000) as file, pytest.raises(errors.StoreUnavailable):
        file.read(10)


def test_pipe_yields_what_the_writer_writes():
    def write(out):
        for i in range(100):
            out.write(bytes([i]) * 70000)

    chunks = list(pipe.written_chunks(write, chunk_size=1 << 20))
    assert b"".join(chunks) == b"".join(bytes([i]) * 70000 for i in range(100))
    assert all(1 << 20 <= len(c) < (1 << 20) + 70000 for c in chunks[:-1])


def test_pipe_copies_buffers_the_writer_reuses():
    def write(out):
        buf = bytearray(1000)
        for i in range(10):
            buf[:] = bytes([i]) * 1000
            out.write(buf)
            out.write(memoryview(buf)[:10])

    data = b"".join(pipe.written_chunks(write, chunk_size=4096))
    assert data == b"".join(bytes([i]) * 1010 for i in range(10))


def test_pipe_raises_the_writer_error_and_stops_the_writer_when_abandoned():
    def failing(out):
        out.write(b"abc")
        raise ValueError("bad disk")

    with pytest.raises(ValueError, match="bad disk"):
        list(pipe.written_chunks(failing))
    stopped = threading.Event()

    def endless(out):
        try:
            while True:
                out.write(b"x" * 65536)
        finally:
            stopped.set()

    chunks = pipe.written_chunks(endless, chunk_size=65536)
    next(chunks)
    chunks.close()
    assert stopped.wait(5)
