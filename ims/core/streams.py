"""Push stages over image data: size caps, hashing, probe sampling.

Each stage sees every chunk once, in one loop (``through``), so data is read
once and never buffered beyond a chunk.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO, Protocol

from ims import errors
from ims.disk.model import BLOCK_SIZE, PROBE_HEAD, PROBE_TAIL, Sample

# NOTE(ims): hashlib releases the GIL on large buffers, so md5 and the
# os_hash run on two threads while the caller hands the chunk to the store.
_HASH_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ims-hash")


class Stage(Protocol):
    def feed(self, chunk: bytes) -> None: ...

    def finish(self) -> None: ...


def read_chunks(stream: BinaryIO, chunk_size: int = BLOCK_SIZE) -> Iterator[bytes]:
    """Yield chunks of at most ``chunk_size`` until the stream ends."""
    while True:
        chunk = stream.read(chunk_size)
        if not chunk:
            return
        yield chunk


def through(chunks: Iterable[bytes], stages: list[Stage]) -> Iterator[bytes]:
    """Pass chunks on after every stage has seen them; finish at the end."""
    for chunk in chunks:
        for stage in stages:
            stage.feed(chunk)
        yield chunk
    for stage in stages:
        stage.finish()


class SizeLimit:
    """Stop as soon as data exceeds a limit, or differs from an expected size."""

    def __init__(
        self,
        limit: int | None,
        expected: int | None = None,
        on_exceed: Callable[[int], errors.IMSError] | None = None,
    ) -> None:
        self.limit = limit
        self.expected = expected
        self.on_exceed = on_exceed
        self.count = 0

    def feed(self, chunk: bytes) -> None:
        self.count += len(chunk)
        if self.limit is not None and self.count > self.limit:
            if self.on_exceed:
                raise self.on_exceed(self.limit)
            raise errors.TooLarge(f"Image exceeds the limit of {self.limit} bytes")
        if self.expected is not None and self.count > self.expected:
            raise errors.Invalid(
                f"Image data is larger than the declared size of {self.expected} bytes"
            )

    def finish(self) -> None:
        if self.expected is not None and self.count != self.expected:
            raise errors.Invalid(
                f"Image data ended after {self.count} of the declared {self.expected} bytes"
            )


class Hashes:
    """md5 (``checksum``) and the configured ``os_hash`` side by side."""

    def __init__(self, algo: str) -> None:
        try:
            self.os_hash = hashlib.new(algo)
        except ValueError:
            raise errors.ConfigError(reason=f"unknown hashing_algorithm {algo}") from None
        self.algo = algo
        self.md5 = hashlib.md5(usedforsecurity=False)
        self._pending: list[Future[None]] = []

    def _wait(self) -> None:
        for fut in self._pending:
            fut.result()
        self._pending = []

    def feed(self, chunk: bytes) -> None:
        # Wait for the previous chunk first: at most one chunk in flight.
        self._wait()
        if len(chunk) < 65536:
            self.md5.update(chunk)
            self.os_hash.update(chunk)
            return
        self._pending = [
            _HASH_POOL.submit(self.md5.update, chunk),
            _HASH_POOL.submit(self.os_hash.update, chunk),
        ]

    def finish(self) -> None:
        self._wait()

    @property
    def checksum(self) -> str:
        return self.md5.hexdigest()

    @property
    def os_hash_value(self) -> str:
        return self.os_hash.hexdigest()


class ProbeSample:
    """Keep the head and the tail of the data for format probing."""

    def __init__(self) -> None:
        self._head = bytearray()
        self._tail = b""
        self.size = 0

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if len(self._head) < PROBE_HEAD:
            self._head += chunk[: PROBE_HEAD - len(self._head)]
        if len(chunk) >= PROBE_TAIL:
            self._tail = chunk[-PROBE_TAIL:]
        else:
            self._tail = (self._tail + chunk)[-PROBE_TAIL:]

    def finish(self) -> None:
        pass

    def sample(self) -> Sample:
        return Sample(head=bytes(self._head), tail=self._tail, size=self.size)
