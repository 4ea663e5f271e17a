"""A disk as an ordered list of data/zero extents plus random reads.

Every format reader presents this; every writer consumes it. Nothing
format-specific leaks past it.
"""

from __future__ import annotations

import abc
import types
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

#: Default unit of work for copying and streaming (bounded memory).
BLOCK_SIZE = 4 * 1024 * 1024

# PERF(ims): these are NamedTuples, not dataclasses: importing dataclasses
# (inspect, ast, dis, tokenize) was a sixth of ims-img's start-up.


class Extent(NamedTuple):
    """A run of the virtual disk that is either all data or all zeros."""

    offset: int
    length: int
    zero: bool

    @property
    def end(self) -> int:
        return self.offset + self.length


class Sample(NamedTuple):
    """What format probing may look at: the head, and the tail when known.

    ``head`` is the first bytes of the image (up to ``PROBE_HEAD`` bytes,
    fewer for a short image); ``tail`` is the last bytes when the total size is
    known (fixed VHD keeps its footer there), else empty; ``size`` is the total
    size or None for a stream whose end is not reached yet.
    """

    head: bytes
    tail: bytes = b""
    size: int | None = None


#: How much of the head and tail probing is given.
PROBE_HEAD = 64 * 1024
PROBE_TAIL = 4096

_NO_DETAILS: Mapping[str, Any] = types.MappingProxyType({})


class ImageInfo(NamedTuple):
    """What inspection found, with field names borrowed from qemu-img info."""

    format: str
    virtual_size: int
    actual_size: int | None = None
    cluster_size: int | None = None
    details: Mapping[str, Any] = _NO_DETAILS


class DiskReader(abc.ABC):
    """Random and extent-wise read access to one virtual disk.

    Readers never read outside the file they were opened on, and hold at
    most a bounded amount of metadata in memory.
    """

    virtual_size: int

    @abc.abstractmethod
    def extents(self) -> Iterator[Extent]:
        """Yield ordered, contiguous extents covering [0, virtual_size).

        Adjacent extents of the same kind may or may not be merged; callers
        must not rely on either.
        """

    @abc.abstractmethod
    def read(self, offset: int, length: int) -> bytes:
        """Return ``length`` bytes at ``offset`` (zeros where unallocated)."""

    #: True when ``readinto`` reads straight into the caller's buffer rather
    #: than copying the result of ``read``.
    direct_readinto: bool = False
    #: True when ``read`` and ``readinto`` may run in several threads at once
    #: (positional reads, no shared file cursor or decoder state).
    concurrent_reads: bool = False

    def readinto(self, offset: int, buf: memoryview) -> None:
        """Fill ``buf`` with the ``len(buf)`` bytes at ``offset``.

        The default copies ``read``'s result; readers that can fill the
        buffer directly override it and set ``direct_readinto``.
        """
        buf[:] = self.read(offset, len(buf))

    def close(self) -> None:
        """Release what the reader holds; the underlying file is not closed."""

    def __enter__(self) -> DiskReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
