"""The base interface of an image data store (``ims.stores``).

A store moves bytes and nothing more: hashing, size caps, quotas and format
checks happen in the core before chunks reach ``add``. A driver is one module
with one ``Store`` subclass and one entry point line in setup.cfg; its options
are a class attribute registered in the config group named after each store
id that uses it.

Life cycle: ``__init__`` (cheap) → ``configure()`` (checks options and
reachability once at start-up; raises ConfigError) → requests.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from collections.abc import Iterable, Iterator
from typing import ClassVar

from oslo_config import cfg

from ims import errors


class Capability(enum.Flag):
    """What a store can do; narrowed by ``configure``."""

    NONE = 0
    READ = enum.auto()
    WRITE = enum.auto()
    RANDOM_READ = enum.auto()
    DELETE = enum.auto()


@dataclasses.dataclass(frozen=True)
class StoredObject:
    """Where ``add`` put the data. The URL never holds credentials.

    ``md5``: the hex md5 of the stored bytes as the backend computed it, when
    ``reports_md5`` promised one (None otherwise, or when the backend's
    answer did not hold one after all).
    """

    url: str
    size: int
    md5: str | None = None


class Store(abc.ABC):
    """One configured store: a backend driver bound to a store id."""

    #: Options this driver reads from the store's own config group.
    OPTS: ClassVar[list[cfg.Opt]] = []
    #: What the code can do at most.
    CAPABILITIES: ClassVar[Capability] = (
        Capability.READ | Capability.WRITE | Capability.RANDOM_READ | Capability.DELETE
    )
    #: Short type name, as in ``enabled_backends = id:type``.
    TYPE: ClassVar[str] = ""

    def __init__(self, conf: cfg.ConfigOpts, store_id: str) -> None:
        self.conf = conf
        self.store_id = store_id
        self.capabilities = self.CAPABILITIES

    @property
    def options(self) -> cfg.ConfigOpts.GroupAttr:
        """This store's config group."""
        return getattr(self.conf, self.store_id)

    def configure(self) -> None:
        """Check options and the backend once, before the first request."""

    @abc.abstractmethod
    def add(
        self,
        image_id: str,
        chunks: Iterable[bytes],
        size_hint: int | None = None,
        owner: str | None = None,
    ) -> StoredObject:
        """Store the chunks as one object for ``image_id`` and say where.

        ``owner`` is the image's project (None for internal data); a driver
        may use it to keep each project's images apart (``url_for`` must then
        say where they go). On any failure nothing is left behind in the
        store. Raises StorageFull, StoreUnavailable or Duplicate.
        """

    def reports_md5(self, size_hint: int | None) -> bool:
        """Tell whether ``add`` with this size hint will report the data's md5.

        For backends that compute the md5 of what they store anyway (a Swift
        object's ETag): the core then skips its own md5 pass over the data.
        """
        return False

    @abc.abstractmethod
    def get(self, url: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Yield the object's bytes from ``offset``, ``length`` of them (None: to the end).

        Raises DataNotFound or StoreUnavailable, also from inside the iterator.
        """

    @abc.abstractmethod
    def get_size(self, url: str) -> int:
        """Return the stored object's size."""

    @abc.abstractmethod
    def delete(self, url: str) -> None:
        """Remove the object; a missing object raises DataNotFound."""

    def owns(self, url: str) -> bool:
        """Tell whether ``url`` names an object in this store."""
        return url.startswith(self.url_prefix())

    @abc.abstractmethod
    def url_prefix(self) -> str:
        """Return the URL prefix of the objects written without an owner."""

    def url_for(self, image_id: str, owner: str | None = None) -> str:
        """Return the URL ``add(image_id, owner=owner)`` writes to.

        For callers that look for data an earlier, maybe interrupted, write left.
        """
        return self.url_prefix() + image_id

    def _short(self, url: str, got: int, wanted: int) -> errors.IMSError:
        """The error for a read of ``url`` that gave ``got`` of the ``wanted`` bytes."""
        return errors.StoreUnavailable(
            store=self.store_id, reason=f"{url} ended after {got} of {wanted} bytes"
        )

    def cleanup(self) -> int:
        """Remove leftovers of interrupted writes; return how many."""
        return 0

    def discard_partial(self, image_id: str, owner: str | None = None) -> int:
        """Remove what unfinished writes of ``image_id`` left (a writer that died).

        For a caller that owns the image id, so that no other process is
        adding it: a job about to write the image again. Stored data a
        finished write left stays (``delete`` removes it). Returns how many
        leftovers went.
        """
        return 0

    def describe(self) -> dict[str, object]:
        """Return the public details shown by ``/v2/info/stores/detail``."""
        return {}

    def open_bucket(self, bucket: str) -> ObjectBucket:
        """Address another bucket (container, directory) with this store's credentials.

        Optional: for users' own files (IMS "bucket:object" references). The
        store's own bucket is refused with Forbidden; who may use which bucket
        is the core's decision, not the driver's.
        """
        raise errors.ConfigError(reason=f"{self.TYPE or 'this'} stores cannot open other buckets")


class ObjectBucket(abc.ABC):
    """Objects named by users in one bucket of a store's backend.

    Names may hold ``/`` (folders); the core validates them, the driver still
    never lets one escape the bucket. Errors as for ``Store``.
    """

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket

    @abc.abstractmethod
    def size(self, name: str) -> int:
        """Return the object's size; DataNotFound when it does not exist."""

    @abc.abstractmethod
    def get(self, name: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Yield the object's bytes from ``offset``, ``length`` of them (None: to the end)."""

    @abc.abstractmethod
    def put(self, name: str, chunks: Iterable[bytes], size_hint: int | None = None) -> int:
        """Write a new object and return its size; Duplicate if it exists.

        On any failure nothing is left under ``name``.
        """

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Remove the object and any unfinished upload of it; DataNotFound if neither exists."""
