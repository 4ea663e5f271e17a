"""A read-only, seekable file over a stored object, for format inspection.

Inspection reads headers and tables, a few small pieces at scattered
offsets; each read becomes one ranged get from the store.
"""

from __future__ import annotations

import io
import os

from ims.drivers.stores.base import Store


class SeekableObject(io.RawIOBase):
    """A read-only file of known size whose reads become ranged gets.

    Subclasses implement ``readinto`` from ``self._pos``.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


class StoreFile(SeekableObject):
    """Random reads of one stored object through ``Store.get``."""

    def __init__(self, store: Store, url: str, size: int) -> None:
        super().__init__(size)
        self._store = store
        self._url = url

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        view = memoryview(buffer)
        got = 0
        for chunk in self._store.get(self._url, self._pos, want):
            view[got : got + len(chunk)] = chunk
            got += len(chunk)
        self._pos += got
        return got


def open_stored(store: Store, url: str, size: int) -> io.BufferedReader | io.FileIO:
    """Open a stored object for random reads: the real file when there is one."""
    opener = getattr(store, "open_file", None)
    if opener is not None:
        return io.FileIO(opener(url), "rb", closefd=True)
    return io.BufferedReader(StoreFile(store, url, size), buffer_size=64 * 1024)
