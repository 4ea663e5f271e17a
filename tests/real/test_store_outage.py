"""The Swift proxy dies under the S3 and Swift drivers: they say so, and clean up after."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ims import errors
from ims.drivers.stores.base import Store
from tests.real import store_backends as backends
from tests.real.store_backends import LARGE, OBJECT_DRIVERS, MiB, chunked, contents
from tests.real.swift_server import SwiftServer

pytestmark = pytest.mark.real

#: An outage must be reported within this many seconds (retries included).
REPORT_WITHIN = 20


@pytest.fixture(params=OBJECT_DRIVERS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store(kind: str, swift_up: SwiftServer, tmp_path: Path) -> Store:
    store = backends.make_store(kind, swift_up, tmp_path, **LARGE[kind])
    # The bucket or container exists before the outage, as in real life.
    store.delete(store.add(str(uuid.uuid4()), [b"warm-up"], 7).url)
    return store


def killing(server: SwiftServer, total: int, kill_at: int) -> Iterator[bytes]:
    """Yield ``total`` bytes, killing the proxy once ``kill_at`` bytes are out."""
    piece = os.urandom(MiB)
    sent = 0
    while sent < total:
        if sent == kill_at:
            server.stop_proxy()
        yield piece
        sent += len(piece)


def assert_store_error(info: pytest.ExceptionInfo[BaseException], what: str = "") -> None:
    # The driver's own error, chained to the client library's.
    assert isinstance(info.value, errors.StoreUnavailable), what
    assert info.value.__cause__ is not None, what


@pytest.mark.parametrize(
    ("size_hint", "kill_at"),
    [(40 * MiB, 12 * MiB), (None, 12 * MiB), (3 * MiB, 2 * MiB)],
    ids=["large-known", "large-unknown", "small"],
)
def test_proxy_dies_during_upload(
    store: Store, swift_up: SwiftServer, size_hint: int | None, kill_at: int
) -> None:
    total = size_hint or 40 * MiB
    started = time.monotonic()
    with pytest.raises(errors.IMSError) as info:
        store.add(str(uuid.uuid4()), killing(swift_up, total, kill_at), size_hint)
    assert time.monotonic() - started < REPORT_WITHIN
    assert_store_error(info)

    swift_up.start_proxy()
    assert store.cleanup() in (0, 1)
    assert contents(store, swift_up) == []


def test_proxy_dies_during_download(store: Store, swift_up: SwiftServer) -> None:
    data = os.urandom(40 * MiB)
    stored = store.add(str(uuid.uuid4()), chunked(data), len(data))
    stream = store.get(stored.url)
    received = len(next(stream))
    swift_up.stop_proxy()
    started = time.monotonic()
    with pytest.raises(errors.IMSError) as info:
        for chunk in stream:
            received += len(chunk)
    assert time.monotonic() - started < REPORT_WITHIN
    assert_store_error(info)
    assert received < len(data)


def test_proxy_down_every_operation(
    kind: str, store: Store, swift_up: SwiftServer, tmp_path: Path
) -> None:
    url = store.url_prefix() + str(uuid.uuid4())
    calls: dict[str, Callable[[], object]] = {
        "get": lambda: list(store.get(url)),
        "get_size": lambda: store.get_size(url),
        "delete": lambda: store.delete(url),
        "add": lambda: store.add(str(uuid.uuid4()), [b"x"], 1),
        "cleanup": store.cleanup,
    }
    swift_up.stop_proxy()
    for name, call in calls.items():
        with pytest.raises(errors.IMSError) as info:
            call()
        assert_store_error(info, name)
    # A store that cannot reach its backend at start-up stops the service.
    with pytest.raises(errors.ConfigError):
        backends.make_store(kind, swift_up, tmp_path)


def test_configure_with_wrong_key(kind: str, swift_up: SwiftServer, tmp_path: Path) -> None:
    option = {"s3": "s3_store_secret_key", "swift": "swift_store_key"}[kind]
    with pytest.raises(errors.ConfigError) as info:
        backends.make_store(kind, swift_up, tmp_path, **{option: "wrong"})
    assert "wrong" not in str(info.value)


def test_configure_missing_bucket_without_create(
    kind: str, swift_up: SwiftServer, tmp_path: Path
) -> None:
    option = {
        "s3": "s3_store_create_bucket_on_put",
        "swift": "swift_store_create_container_on_put",
    }
    with pytest.raises(errors.ConfigError):
        backends.make_store(kind, swift_up, tmp_path, **{option[kind]: False})
