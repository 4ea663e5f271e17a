"""Keep image data in process memory: for tests and throwaway demos only."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

from ims import errors
from ims.drivers.stores.base import Store, StoredObject


class MemoryStore(Store):
    """A dict of bytes per image; lost when the process ends."""

    TYPE = "memory"

    def configure(self) -> None:
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def url_prefix(self) -> str:
        return f"memory://{self.store_id}/"

    def add(
        self,
        image_id: str,
        chunks: Iterable[bytes],
        size_hint: int | None = None,
        owner: str | None = None,
    ) -> StoredObject:
        url = self.url_prefix() + image_id
        data = b"".join(chunks)
        with self._lock:
            if url in self._objects:
                raise errors.Duplicate(what=f"Image data for {image_id}")
            self._objects[url] = data
        return StoredObject(url=url, size=len(data))

    def _data(self, url: str) -> bytes:
        try:
            return self._objects[url]
        except KeyError:
            raise errors.DataNotFound(location=url) from None

    def get(self, url: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        data = self._data(url)
        end = len(data) if length is None else min(len(data), offset + length)
        return iter([data[offset:end]])

    def get_size(self, url: str) -> int:
        return len(self._data(url))

    def delete(self, url: str) -> None:
        with self._lock:
            if self._objects.pop(url, None) is None:
                raise errors.DataNotFound(location=url)
