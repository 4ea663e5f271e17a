"""Push stages: hashes agree with hashlib however data is cut; no thread outlives a stream."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from ims.core import streams


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
