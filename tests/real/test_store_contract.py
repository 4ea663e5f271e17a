"""One contract for every store driver, run against real backends.

filesystem runs on a temporary directory; s3 and swift run against a real
Swift (s3api and tempauth) started by the ``swift_server`` fixture.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ims import errors
from ims.drivers.stores.base import Store
from tests.real import store_backends as backends
from tests.real.store_backends import LARGE, MiB, chunked, contents

pytestmark = pytest.mark.real


@pytest.fixture(params=backends.DRIVERS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def server(kind: str, request: pytest.FixtureRequest) -> Any:
    return None if kind == "filesystem" else request.getfixturevalue("swift_up")


@pytest.fixture
def make(kind: str, server: Any, tmp_path: Path) -> Callable[..., Store]:
    def build(**extra: Any) -> Store:
        return backends.make_store(kind, server, tmp_path, **extra)

    return build


@pytest.fixture
def store(make: Callable[..., Store]) -> Store:
    return make()


def image_id() -> str:
    return str(uuid.uuid4())


def read_all(store: Store, url: str, offset: int = 0, length: int | None = None) -> bytes:
    return b"".join(store.get(url, offset, length))


def test_add_get_size(store: Store, server: Any) -> None:
    data = os.urandom(3 * MiB + 12345)
    stored = store.add(image_id(), chunked(data, 65536), len(data))
    assert stored.size == len(data)
    assert store.owns(stored.url)
    assert stored.url.startswith(store.url_prefix())
    # APPSEC(ims): no credentials in what gets kept.
    for secret in ("tester", "testing", "test:"):
        assert secret not in stored.url
    assert read_all(store, stored.url) == data
    assert store.get_size(stored.url) == len(data)


@pytest.mark.parametrize("size_hint", [None, 0])
def test_empty_image(store: Store, size_hint: int | None) -> None:
    stored = store.add(image_id(), iter([]), size_hint)
    assert stored.size == 0
    assert read_all(store, stored.url) == b""
    assert store.get_size(stored.url) == 0


def test_unknown_size(store: Store) -> None:
    data = os.urandom(MiB + 7)
    stored = store.add(image_id(), chunked(data, 100_000), None)
    assert stored.size == len(data)
    assert read_all(store, stored.url) == data


@pytest.mark.parametrize(
    ("offset", "length"),
    [(0, 10), (100, None), (5000, 70_000), (2 * MiB - 5, 100), (2 * MiB, None), (7, 0)],
)
def test_ranged_get(store: Store, offset: int, length: int | None) -> None:
    data = os.urandom(2 * MiB)
    stored = store.add(image_id(), chunked(data), len(data))
    end = None if length is None else offset + length
    assert read_all(store, stored.url, offset, length) == data[offset:end]


def test_delete(store: Store, server: Any) -> None:
    stored = store.add(image_id(), [b"x" * 1000], 1000)
    store.delete(stored.url)
    with pytest.raises(errors.DataNotFound):
        read_all(store, stored.url)
    with pytest.raises(errors.DataNotFound):
        store.get_size(stored.url)
    with pytest.raises(errors.DataNotFound):
        store.delete(stored.url)
    assert contents(store, server) == []


def test_missing_object(store: Store) -> None:
    url = store.url_prefix() + image_id()
    with pytest.raises(errors.DataNotFound):
        store.delete(url)
    with pytest.raises(errors.DataNotFound):
        store.get_size(url)
    with pytest.raises(errors.DataNotFound):
        read_all(store, url)


def test_foreign_url_is_not_found(store: Store) -> None:
    for url in ("file:///etc/passwd", "s3://other-bucket/x", "swift://other/x", "http://x/y"):
        assert not store.owns(url)
        with pytest.raises(errors.DataNotFound):
            store.get_size(url)
        with pytest.raises(errors.DataNotFound):
            store.delete(url)


def test_duplicate(store: Store) -> None:
    ident = image_id()
    stored = store.add(ident, [b"first"], 5)
    with pytest.raises(errors.Duplicate):
        store.add(ident, [b"second!"], 7)
    assert read_all(store, stored.url) == b"first"


@pytest.mark.parametrize("size_hint", ["known", None])
def test_large_object(kind: str, make: Callable[..., Store], server: Any, size_hint: Any) -> None:
    store = make(**LARGE[kind])
    data = os.urandom(12 * MiB + 333)
    hint = len(data) if size_hint == "known" else None
    stored = store.add(image_id(), chunked(data, 256 * 1024), hint)
    assert stored.size == len(data)
    assert read_all(store, stored.url) == data
    # Ranges that straddle part boundaries.
    assert read_all(store, stored.url, 5 * MiB - 10, 20) == data[5 * MiB - 10 : 5 * MiB + 10]
    assert read_all(store, stored.url, 9 * MiB, None) == data[9 * MiB :]
    assert store.get_size(stored.url) == len(data)
    found = contents(store, server)
    if kind == "s3":
        etag = backends.s3_client(server).head_object(
            Bucket=store.bucket, Key=stored.url.rsplit("/", 1)[1]
        )["ETag"]
        assert etag.strip('"').endswith("-3")  # three parts: 5 + 5 + 2 MiB
    elif kind == "swift":
        assert len([name for name in found if name.startswith("segment:")]) == 3
    store.delete(stored.url)
    assert contents(store, server) == []


class InputBroke(Exception):
    """What the caller's chunk iterator raises (e.g. the client went away)."""


def failing(data: bytes, fail_after: int) -> Iterator[bytes]:
    sent = 0
    for chunk in chunked(data, 512 * 1024):
        if sent >= fail_after:
            raise InputBroke("client went away")
        sent += len(chunk)
        yield chunk


@pytest.mark.parametrize(
    ("size_hint", "fail_after"),
    [(20 * MiB, 11 * MiB), (None, 11 * MiB), (3 * MiB, 2 * MiB), (None, 2 * MiB)],
    ids=["large-known", "large-unknown", "small-known", "small-unknown"],
)
def test_failure_mid_iterator_leaves_nothing(
    kind: str, make: Callable[..., Store], server: Any, size_hint: int | None, fail_after: int
) -> None:
    store = make(**LARGE[kind])
    kept = store.add(image_id(), [b"keep me"], 7)
    before = contents(store, server)
    data = os.urandom(20 * MiB)
    with pytest.raises(InputBroke):
        store.add(image_id(), failing(data, fail_after), size_hint)
    assert contents(store, server) == before
    assert read_all(store, kept.url) == b"keep me"


def make_leftover(store: Store, server: Any) -> None:
    """Leave what a writer killed mid-upload leaves, using the service's own client."""
    ident = image_id()
    if kind_of(store) == "filesystem":
        Path(store.datadir, f".partial-{ident}-{uuid.uuid4().hex}").write_bytes(b"half")
    elif kind_of(store) == "s3":
        client = backends.s3_client(server)
        key = f"{store.prefix}{ident}"
        upload = client.create_multipart_upload(Bucket=store.bucket, Key=key)["UploadId"]
        client.upload_part(
            Bucket=store.bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"p" * (5 * MiB)
        )
    else:
        conn = backends.swift_connection(server)
        conn.put_container(store.segments)
        token = uuid.uuid4().hex
        for number in (1, 2):
            conn.put_object(store.segments, f"{ident}/{token}/{number:08d}", b"s")


def kind_of(store: Store) -> str:
    return store.TYPE


def test_cleanup_removes_leftovers(kind: str, make: Callable[..., Store], server: Any) -> None:
    store = make(**LARGE[kind])
    data = os.urandom(12 * MiB)
    kept = store.add(image_id(), chunked(data), len(data))
    before = contents(store, server)
    make_leftover(store, server)
    make_leftover(store, server)
    assert contents(store, server) != before
    assert store.cleanup() == 2
    assert contents(store, server) == before
    assert read_all(store, kept.url) == data
    assert store.cleanup() == 0


def test_describe(store: Store) -> None:
    described = store.describe()
    assert described
    assert "testing" not in repr(described)
