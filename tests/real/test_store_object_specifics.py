"""S3 and Swift behaviour beyond the common store contract, against a real Swift."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import threading
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ims import errors
from ims.drivers.stores import s3, swift
from ims.drivers.stores.base import Store
from tests.real import store_backends as backends
from tests.real.store_backends import LARGE, MiB, chunked, contents
from tests.real.swift_server import SwiftServer

pytestmark = pytest.mark.real


def leftover_upload(server: SwiftServer, bucket: str, key: str) -> str:
    client = backends.s3_client(server)
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    client.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"x" * MiB)
    return upload


def open_uploads(server: SwiftServer, bucket: str) -> list[str]:
    uploads = backends.s3_client(server).list_multipart_uploads(Bucket=bucket)
    return sorted(upload["Key"] for upload in uploads.get("Uploads", []))


def test_s3_delete_aborts_leftover_uploads_of_that_key(
    swift_up: SwiftServer, tmp_path: Path
) -> None:
    store = backends.make_store("s3", swift_up, tmp_path)
    stored = store.add(str(uuid.uuid4()), [b"data"], 4)
    key = stored.url.rsplit("/", 1)[1]
    other = str(uuid.uuid4())
    leftover_upload(swift_up, store.bucket, key)
    leftover_upload(swift_up, store.bucket, other)
    store.delete(stored.url)
    assert open_uploads(swift_up, store.bucket) == [other]


def test_s3_prefix_scopes_keys_and_cleanup(swift_up: SwiftServer, tmp_path: Path) -> None:
    store = backends.make_store("s3", swift_up, tmp_path, s3_store_prefix="/images/")
    assert store.url_prefix() == f"s3://{store.bucket}/images/"
    stored = store.add(str(uuid.uuid4()), [b"data"], 4)
    assert stored.url.startswith(store.url_prefix())
    ident = str(uuid.uuid4())
    leftover_upload(swift_up, store.bucket, f"images/{ident}")
    leftover_upload(swift_up, store.bucket, f"elsewhere/{ident}")
    assert store.cleanup() == 1
    assert open_uploads(swift_up, store.bucket) == [f"elsewhere/{ident}"]
    # A URL outside the prefix is not this store's, even in the same bucket.
    with pytest.raises(errors.DataNotFound):
        store.get_size(f"s3://{store.bucket}/elsewhere/{ident}")


def test_swift_reads_cluster_limits(swift_up: SwiftServer, tmp_path: Path) -> None:
    store = backends.make_store("swift", swift_up, tmp_path)
    assert store.limits.max_parts == 1000
    assert store.limits.max_size == 5 * 1024 * MiB + 2


def test_swift_large_object_is_slo_with_token(swift_up: SwiftServer, tmp_path: Path) -> None:
    store = backends.make_store("swift", swift_up, tmp_path, **LARGE["swift"])
    stored = store.add(str(uuid.uuid4()), chunked(os.urandom(11 * MiB)), None)
    headers = backends.swift_connection(swift_up).head_object(
        store.container, stored.url.rsplit("/", 1)[1]
    )
    assert headers["x-static-large-object"] == "True"
    token = headers["x-object-meta-ims-segments"]
    segments = [name for name in contents(store, swift_up) if name.startswith("segment:")]
    assert len(segments) == 3
    assert all(f"/{token}/" in name for name in segments)


@pytest.mark.parametrize("kind", backends.OBJECT_DRIVERS)
def test_concurrent_adds_share_one_client(
    kind: str, swift_up: SwiftServer, tmp_path: Path
) -> None:
    store: Store = backends.make_store(kind, swift_up, tmp_path, **LARGE[kind])
    blobs = {str(uuid.uuid4()): os.urandom(6 * MiB + n) for n in range(4)}
    urls: dict[str, str] = {}
    failures: list[BaseException] = []

    def put(ident: str, data: bytes) -> None:
        try:
            urls[ident] = store.add(ident, chunked(data), None).url
        except BaseException as ex:  # noqa: BLE001 - reported below
            failures.append(ex)

    threads = [threading.Thread(target=put, args=item) for item in blobs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    for ident, data in blobs.items():
        assert b"".join(store.get(urls[ident])) == data


THREADS, PART, CHUNK, SIZE = 2, 5 * MiB, MiB, 30 * MiB


def _measure_in_child(kind: str, options: dict, known_size: bool) -> tuple[int, int, int]:
    """Trace add() and get() alone in a fresh interpreter.

    tracemalloc counts every thread of the process; run inside the test
    session, threads of other fixtures (server log readers, pools) would be
    counted too.
    """
    from ims.drivers.stores.s3 import S3Store
    from ims.drivers.stores.swift import SwiftStore

    store = backends.build({"s3": S3Store, "swift": SwiftStore}[kind], kind, options)
    block = os.urandom(CHUNK)

    def chunks() -> Iterator[bytes]:
        for _ in range(SIZE // CHUNK):
            yield bytes(memoryview(block))  # a fresh copy, as a request body gives

    tracemalloc.start()
    try:
        stored = store.add(str(uuid.uuid4()), chunks(), SIZE if known_size else None)
        added_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        received = sum(len(piece) for piece in store.get(stored.url))
        read_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return added_peak, read_peak, received


@pytest.mark.parametrize("kind", backends.OBJECT_DRIVERS)
@pytest.mark.parametrize("size_hint", ["known", None])
def test_memory_stays_within_the_bound(
    kind: str, size_hint: str | None, swift_up: SwiftServer, tmp_path: Path
) -> None:
    """Python allocations during add() and get() stay within the documented bound."""
    name = f"ims-{uuid.uuid4().hex[:12]}"
    make_options = backends.s3_options if kind == "s3" else backends.swift_options
    options = make_options(swift_up, name, **LARGE[kind])
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        added_peak, read_peak, received = pool.apply(
            _measure_in_child, (kind, options, bool(size_hint))
        )
    assert received == SIZE
    slack = MiB  # client libraries' own buffers
    if kind == "s3":
        # Parts being sent and the one being read, each in a reused buffer.
        assert added_peak <= (THREADS + 1) * PART + CHUNK + slack
    else:
        # Streamed: what is held to tell a small object from a large one, and
        # a few chunks on their way, whatever the segment size.
        assert added_peak <= min(PART, swift.SMALL_UNKNOWN) + 2 * CHUNK + slack
    # Ranges being fetched, and the one the caller holds.
    read_range = {"s3": s3.READ_RANGE, "swift": swift.READ_RANGE}[kind]
    assert read_peak <= (THREADS + 1) * read_range + slack


def test_swift_reports_md5_of_one_put(swift_up: SwiftServer, tmp_path: Path) -> None:
    store = backends.make_store("swift", swift_up, tmp_path, **LARGE["swift"])
    small = os.urandom(3 * MiB + 1)
    assert store.reports_md5(len(small))
    stored = store.add(str(uuid.uuid4()), chunked(small), len(small))
    assert stored.md5 == hashlib.md5(small).hexdigest()
    # A large object's ETag is not the md5 of its data: none is reported.
    large = os.urandom(11 * MiB)
    assert not store.reports_md5(len(large)) and not store.reports_md5(None)
    assert store.add(str(uuid.uuid4()), chunked(large), len(large)).md5 is None


def test_swift_refuses_more_data_than_announced(swift_up: SwiftServer, tmp_path: Path) -> None:
    store = backends.make_store("swift", swift_up, tmp_path, **LARGE["swift"])
    data = os.urandom(2 * MiB)
    with pytest.raises(errors.Invalid):
        store.add(str(uuid.uuid4()), chunked(data, 256 * 1024), MiB)
    assert contents(store, swift_up) == []


def test_swift_large_object_missing_a_segment_fails_the_read(
    swift_up: SwiftServer, tmp_path: Path
) -> None:
    store = backends.make_store("swift", swift_up, tmp_path, **LARGE["swift"])
    stored = store.add(str(uuid.uuid4()), chunked(os.urandom(30 * MiB)), None)
    conn = backends.swift_connection(swift_up)
    last = backends.container_names(conn, store.segments)[-1]
    conn.delete_object(store.segments, last)
    with pytest.raises(errors.StoreUnavailable):
        b"".join(store.get(stored.url))  # ranged reads, several at once
    with pytest.raises(errors.StoreUnavailable):
        b"".join(store.get(stored.url, 26 * MiB))  # one GET of the tail
