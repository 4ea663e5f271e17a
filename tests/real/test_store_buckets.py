"""Store.open_bucket: users' own buckets through each driver, against real backends."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ims import errors
from ims.drivers.stores.base import ObjectBucket, Store
from ims.drivers.stores.filesystem import FilesystemStore
from tests.real import store_backends as backends
from tests.real.store_backends import LARGE, MiB, chunked

pytestmark = pytest.mark.real


@pytest.fixture(params=backends.DRIVERS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def server(kind: str, request: pytest.FixtureRequest) -> Any:
    return None if kind == "filesystem" else request.getfixturevalue("swift_up")


@pytest.fixture
def store(kind: str, server: Any, tmp_path: Path) -> Store:
    return backends.make_store(kind, server, tmp_path, **LARGE[kind])


@pytest.fixture
def new_bucket(store: Store, server: Any) -> Callable[[], ObjectBucket]:
    """Make a bucket the way its owner would (not through IMS), and open it."""

    def make() -> ObjectBucket:
        name = f"p1-{uuid.uuid4().hex[:10]}"
        if isinstance(store, FilesystemStore):
            os.mkdir(os.path.join(store.datadir, name))
        else:
            backends.s3_client(server).create_bucket(Bucket=name)
        return store.open_bucket(name)

    return make


def test_put_get_size_delete_with_folders(new_bucket):
    bucket = new_bucket()
    data = os.urandom(12 * MiB + 5)  # large enough for multipart / SLO
    assert bucket.put("dir/sub/disk.qcow2", chunked(data)) == len(data)
    assert bucket.size("dir/sub/disk.qcow2") == len(data)
    assert b"".join(bucket.get("dir/sub/disk.qcow2")) == data
    assert b"".join(bucket.get("dir/sub/disk.qcow2", 7 * MiB, 10)) == data[7 * MiB : 7 * MiB + 10]
    small = b"small file"
    assert bucket.put("small", iter([small]), size_hint=len(small)) == len(small)
    with pytest.raises(errors.Duplicate):
        bucket.put("small", iter([b"again"]))
    assert b"".join(bucket.get("small")) == small
    bucket.delete("dir/sub/disk.qcow2")
    with pytest.raises(errors.DataNotFound):
        bucket.size("dir/sub/disk.qcow2")
    with pytest.raises(errors.DataNotFound):
        bucket.delete("dir/sub/disk.qcow2")
    with pytest.raises(errors.DataNotFound):
        list(bucket.get("nothing"))


def test_failed_put_leaves_nothing(new_bucket):
    bucket = new_bucket()

    def broken():
        yield os.urandom(6 * MiB)
        yield os.urandom(6 * MiB)
        raise RuntimeError("source died")

    with pytest.raises(RuntimeError, match="source died"):
        bucket.put("partial.vhd", broken())
    with pytest.raises(errors.DataNotFound):
        bucket.size("partial.vhd")


def test_own_bucket_is_refused_and_missing_bucket_fails(store, kind):
    own = {
        "filesystem": None,
        "s3": getattr(store, "bucket", None),
        "swift": getattr(store, "container", None),
    }[kind]
    if own is not None:
        with pytest.raises(errors.Forbidden):
            store.open_bucket(own)
    missing = store.open_bucket(f"p1-missing-{uuid.uuid4().hex[:8]}")
    with pytest.raises(errors.DataNotFound):
        missing.size("x")
    with pytest.raises(errors.StoreUnavailable):
        missing.put("x", iter([b"data"]))


def test_filesystem_names_cannot_escape(tmp_path: Path):
    store = backends.make_store("filesystem", None, tmp_path)
    os.mkdir(os.path.join(store.datadir, "p1-b"))
    os.mkdir(os.path.join(store.datadir, "p2-b"))
    with open(os.path.join(store.datadir, "p2-b", "secret"), "wb") as f:
        f.write(b"p2's")
    os.symlink(os.path.join(store.datadir, "p2-b"), os.path.join(store.datadir, "p1-b", "link"))
    bucket = store.open_bucket("p1-b")
    for name in ("../p2-b/secret", "link/secret", "/etc/passwd"):
        with pytest.raises(errors.DataNotFound):
            bucket.size(name)
        with pytest.raises(errors.DataNotFound):
            bucket.put(name, iter([b"x"]))
    for bad in ("..", ".hidden", "a/b", ""):
        with pytest.raises(errors.Forbidden):
            store.open_bucket(bad)


@pytest.mark.parametrize("kind", backends.OBJECT_DRIVERS)
def test_delete_removes_a_dead_writers_upload(kind, server, new_bucket):
    """An export whose worker died left an unfinished upload: delete takes it."""
    bucket = new_bucket()
    name, other = "exports/disk.qcow2", "exports/disk.qcow2/inner"
    if kind == "s3":
        client = backends.s3_client(server)
        for key in (name, other):
            upload = client.create_multipart_upload(Bucket=bucket.bucket, Key=key)["UploadId"]
            client.upload_part(
                Bucket=bucket.bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"x" * MiB
            )

        def left() -> list[str]:
            found = client.list_multipart_uploads(Bucket=bucket.bucket).get("Uploads", [])
            return sorted(upload["Key"] for upload in found)
    else:
        conn = backends.swift_connection(server)
        segments = f"{bucket.bucket}_segments"
        conn.put_container(segments)
        for key in (name, other):
            token = uuid.uuid4().hex
            for number in range(2):
                conn.put_object(segments, f"{key}/{token}/{number:08d}", b"x" * 100)

        def left() -> list[str]:
            names = backends.container_names(conn, segments)
            return sorted({segment.rsplit("/", 2)[0] for segment in names})

    assert left() == [name, other]
    bucket.delete(name)  # no object, only the upload: no DataNotFound
    assert left() == [other]
    with pytest.raises(errors.DataNotFound):
        bucket.delete(name)
