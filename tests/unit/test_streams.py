"""Push stages: hashes agree with hashlib however data is cut; no thread outlives a stream."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading

import pytest
from oslo_config import cfg

from ims.core import streams
from ims.core.image_data import settle_md5
from ims.drivers.stores.memory import MemoryStore


def _hash_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "ims-hash")


@pytest.mark.parametrize("sizes", [[10], [70000] * 9, [100, 70000, 5, 1 << 20, 3]])
def test_hashes_match_hashlib(sizes: list[int]) -> None:
    chunks = [os.urandom(n) for n in sizes]
    hashes = streams.Hashes("sha512")
    assert b"".join(streams.through(iter(chunks), [hashes])) == b"".join(chunks)
    whole = b"".join(chunks)
    assert hashes.checksum == hashlib.md5(whole).hexdigest()
    assert hashes.os_hash_value == hashlib.sha512(whole).hexdigest()
    assert _hash_threads() == 0


def test_a_failing_source_stops_the_hash_threads() -> None:
    def source():
        for _ in range(5):
            yield os.urandom(1 << 20)
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        for _ in streams.through(source(), [streams.Hashes("sha256")]):
            pass
    assert _hash_threads() == 0


def test_a_consumer_that_stops_early_stops_the_hash_threads() -> None:
    data = streams.through(iter([os.urandom(1 << 20)] * 8), [streams.Hashes("sha256")])
    next(data)
    next(data)
    data.close()
    assert _hash_threads() == 0


def test_unknown_algorithm_is_a_config_error() -> None:
    from ims import errors

    with pytest.raises(errors.ConfigError):
        streams.Hashes("nope")


@pytest.mark.parametrize("sizes", [[10], [70000] * 9])
def test_hashes_without_md5_take_the_stores(sizes: list[int]) -> None:
    chunks = [os.urandom(n) for n in sizes]
    whole = b"".join(chunks)
    hashes = streams.Hashes("sha512", md5=False)
    assert b"".join(streams.through(iter(chunks), [hashes])) == whole
    assert hashes.os_hash_value == hashlib.sha512(whole).hexdigest()
    with pytest.raises(ValueError):
        hashes.checksum  # noqa: B018 - neither computed nor adopted yet
    with pytest.raises(ValueError):
        hashes.adopt_md5("not-an-md5")
    hashes.adopt_md5(hashlib.md5(whole).hexdigest())
    assert hashes.checksum == hashlib.md5(whole).hexdigest()
    with pytest.raises(ValueError):
        streams.Hashes("sha512").adopt_md5(hashlib.md5(whole).hexdigest())


class _ReportingStore(MemoryStore):
    """A memory store that claims to report md5s, and may not keep its word."""

    def __init__(self, reported: str | None) -> None:
        super().__init__(cfg.ConfigOpts(), "mem")
        self.configure()
        self.reported = reported

    def reports_md5(self, size_hint: int | None) -> bool:
        return True

    def add(self, image_id, chunks, size_hint=None, owner=None):  # type: ignore[no-untyped-def]
        stored = super().add(image_id, chunks, size_hint, owner)
        return dataclasses.replace(stored, md5=self.reported)


@pytest.mark.parametrize("reported", ["store", None])
def test_settle_md5_adopts_or_reads_back(reported: str | None) -> None:
    data = os.urandom(200000)
    md5 = hashlib.md5(data).hexdigest()
    store = _ReportingStore(md5 if reported else None)
    hashes = streams.Hashes("sha256", md5=not store.reports_md5(len(data)))
    stored = store.add("image", streams.through(iter([data]), [hashes]), len(data))
    settle_md5(hashes, store, stored)
    assert hashes.checksum == md5


def test_settle_md5_reads_back_once() -> None:
    data = os.urandom(1000)
    store = _ReportingStore(None)
    hashes = streams.Hashes("sha256", md5=False)
    stored = store.add("image", streams.through(iter([data]), [hashes]), len(data))
    reads = []
    original = store.get
    store.get = lambda *args, **kw: reads.append(args) or original(*args, **kw)  # type: ignore[method-assign]
    settle_md5(hashes, store, stored)
    settle_md5(hashes, store, stored)
    assert len(reads) == 1 and hashes.checksum == hashlib.md5(data).hexdigest()
