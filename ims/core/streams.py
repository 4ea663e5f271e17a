"""Push stages over image data: size caps, hashing, probe sampling.

Each stage sees every chunk once, in one loop (``through``), so data is read
once and never buffered beyond a chunk.
"""

from __future__ import annotations

import hashlib
import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO, Protocol

from ims import errors
from ims.disk.model import BLOCK_SIZE, PROBE_HEAD, PROBE_TAIL, Sample

#: How many chunks each hash may lag behind the data (memory: depth x chunk).
HASH_DEPTH = 3
_MD5_HEX = re.compile(r"[0-9a-f]{32}")


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
    """Pass chunks on after every stage has seen them; finish at the end.

    Stages with a ``close`` (threads to stop) are closed however this ends.
    """
    try:
        for chunk in chunks:
            for stage in stages:
                stage.feed(chunk)
            yield chunk
        for stage in stages:
            stage.finish()
    finally:
        for stage in stages:
            close = getattr(stage, "close", None)
            if close is not None:
                close()


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


class _HashThread:
    """One hash fed on its own thread, in order, at most HASH_DEPTH chunks behind.

    hashlib releases the GIL on large buffers, so md5 and the os_hash each
    keep a core busy while the caller reads the socket and writes the store.
    """

    def __init__(self, digest: Any) -> None:
        self.digest = digest
        self._queue: queue.Queue[bytes | None] = queue.Queue(HASH_DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ims-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self.digest.update(chunk)
                except BaseException as ex:  # reported to the feeder by close()
                    self._error = ex

    def put(self, chunk: bytes) -> None:
        self._queue.put(chunk)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error


class Hashes:
    """md5 (``checksum``) and the configured ``os_hash`` side by side.

    With ``md5=False`` the caller vouches for the md5 itself (a store that
    reports the md5 of what it stored) and must set it with ``adopt_md5``.
    """

    def __init__(self, algo: str, md5: bool = True) -> None:
        try:
            self.os_hash = hashlib.new(algo)
        except ValueError:
            raise errors.ConfigError(reason=f"unknown hashing_algorithm {algo}") from None
        self.algo = algo
        self.md5 = hashlib.md5(usedforsecurity=False) if md5 else None
        self._adopted: str | None = None
        self._threads: list[_HashThread] = []

    @property
    def _digests(self) -> list[Any]:
        return [d for d in (self.md5, self.os_hash) if d is not None]

    def feed(self, chunk: bytes) -> None:
        if not self._threads:
            if len(chunk) < 65536:
                # Small data (metadata-sized images, tests) needs no threads.
                for digest in self._digests:
                    digest.update(chunk)
                return
            self._threads = [_HashThread(digest) for digest in self._digests]
        for worker in self._threads:
            worker.put(chunk)

    def finish(self) -> None:
        self.close()

    def close(self) -> None:
        """Wait for the hash threads to take in what they were given, and stop them."""
        threads, self._threads = self._threads, []
        errors_seen = []
        for worker in threads:
            try:
                worker.close()
            except BaseException as ex:
                errors_seen.append(ex)
        if errors_seen:
            raise errors_seen[0]

    @property
    def has_md5(self) -> bool:
        """True once ``checksum`` can be read: computed here, or adopted."""
        return self.md5 is not None or self._adopted is not None

    def adopt_md5(self, value: str) -> None:
        """Take the md5 from elsewhere (see ``md5=False``)."""
        if self.md5 is not None:
            raise ValueError("this Hashes computes its own md5")
        if not _MD5_HEX.fullmatch(value):
            raise ValueError(f"not an md5: {value!r}")
        self._adopted = value

    @property
    def checksum(self) -> str:
        if self.md5 is not None:
            return self.md5.hexdigest()
        if self._adopted is None:
            raise ValueError("md5 neither computed nor adopted")
        return self._adopted

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
        return Sample(head=bytes(self._head), tail=bytes(self._tail), size=self.size)
