"""Users' files in object storage: "bucket:object" references, who may use them.

IMS names files in OBS as ``"<bucket>:<object>"``. Here they live in the
store named by ``[imaging] object_store``: one of the image stores, or
(better) a store of its own built from the ``[<object_store>]`` group, whose
driver opens other buckets with the same credentials
(``Store.open_bucket``).

APPSEC(ims): who may use a bucket. The service reads and writes buckets with
its own credentials, so the bucket name alone must say whose it is. A bucket
belongs to a project when

- ``[imaging] project_buckets`` lists it for that project
  (``project_id:bucket``), or
- with ``bucket_owner_rule = prefix`` (the default), its name up to the
  first ``-`` is exactly the project id: ``0a1b…ff-images`` belongs to
  project ``0a1b…ff``. Keystone project ids hold no ``-``, so each bucket
  has at most one owner under this rule, and no project can reach another's
  buckets by choosing a longer id.

Everything else is refused (IMG.0069), admins included: an admin acts for
its own project here. A store's own image bucket is never a user bucket
(the drivers refuse it). Names are checked before any request: S3 bucket
rules, object names of 1-1024 characters without control characters,
``..`` segments, a leading ``/`` or spaces (IMG.0175, as IMS).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from oslo_config import cfg
from stevedore import DriverManager
from stevedore.exception import NoMatches

from ims import errors
from ims.context import RequestContext
from ims.core.storefile import SeekableObject
from ims.core.stores import NAMESPACE, StoreRegistry
from ims.drivers.stores.base import ObjectBucket, Store

BAD_URL = "IMG.0017"
NO_ACCESS = "IMG.0069"
SPACES = "IMG.0175"
MAX_NAME = 1024
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclasses.dataclass(frozen=True)
class ObjectRef:
    """One file in object storage."""

    bucket: str
    name: str

    def __str__(self) -> str:
        return f"{self.bucket}:{self.name}"


def parse_ref(value: object, field: str = "image_url") -> ObjectRef:
    """Parse and check a ``bucket:object`` reference (IMG.0017 when malformed)."""
    if not isinstance(value, str) or ":" not in value:
        raise errors.Invalid(f"{field} must be 'bucket:object'", ims_code=BAD_URL)
    bucket, _, name = value.partition(":")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise errors.Invalid(
            f"{field}: {bucket!r} is not a valid bucket name (3-63 lower-case letters, "
            "digits, '.' and '-')",
            ims_code=BAD_URL,
        )
    if not name or len(name) > MAX_NAME or _CONTROL.search(name) or name.startswith("/"):
        raise errors.Invalid(
            f"{field}: the object name must have 1 to {MAX_NAME} characters and no "
            "control characters or leading '/'",
            ims_code=BAD_URL,
        )
    if " " in name:
        raise errors.Invalid(
            f"{field}: folder and file names must not contain spaces", ims_code=SPACES
        )
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise errors.Invalid(
            f"{field}: the object name has an empty, '.' or '..' segment", ims_code=BAD_URL
        )
    return ObjectRef(bucket, name)


def bucket_owner(bucket: str) -> str:
    """The project a bucket belongs to under the prefix rule."""
    return bucket.split("-", 1)[0]


class ObjectStorage:
    """The object store of users' buckets, and the rule of who uses which."""

    def __init__(self, conf: cfg.ConfigOpts, stores: StoreRegistry) -> None:
        self.conf = conf
        opts = conf.imaging
        self.rule = opts.bucket_owner_rule
        self.granted: dict[str, set[str]] = {}
        for entry in opts.project_buckets:
            project, sep, bucket = entry.partition(":")
            if not sep or not project.strip() or not bucket.strip():
                raise errors.ConfigError(
                    reason=f"[imaging] project_buckets entry {entry!r} is not project:bucket"
                )
            self.granted.setdefault(project.strip(), set()).add(bucket.strip())
        self.store: Store | None = None
        if opts.object_store:
            self.store = _object_store(conf, stores, opts.object_store, opts.object_store_type)

    def may_use(self, ctx: RequestContext, bucket: str) -> bool:
        """Tell whether the caller's project owns ``bucket``."""
        project = ctx.project_id
        if not project:
            return False
        if bucket in self.granted.get(project, ()):
            return True
        return self.rule == "prefix" and bucket_owner(bucket) == project

    def bucket(self, ctx: RequestContext, ref: ObjectRef) -> ObjectBucket:
        """Open the bucket of ``ref`` for the caller, or refuse with IMG.0069."""
        if self.store is None:
            raise errors.Invalid(
                "This deployment has no object storage for image files "
                "([imaging] object_store is not set)",
                ims_code=NO_ACCESS,
            )
        if not self.may_use(ctx, ref.bucket):
            raise errors.Invalid(f"Bucket {ref.bucket} is not accessible", ims_code=NO_ACCESS)
        try:
            return self.store.open_bucket(ref.bucket)
        except errors.Forbidden:
            raise errors.Invalid(
                f"Bucket {ref.bucket} is not accessible", ims_code=NO_ACCESS
            ) from None


def _object_store(
    conf: cfg.ConfigOpts, stores: StoreRegistry, store_id: str, type_name: str | None
) -> Store:
    if not type_name:
        try:
            store = stores.get(store_id)
        except errors.StoreNotFound:
            raise errors.ConfigError(
                reason=f"[imaging] object_store {store_id!r} is not an image store; "
                "set object_store_type to build it from its own group"
            ) from None
    else:
        try:
            cls = DriverManager(NAMESPACE, type_name, invoke_on_load=False).driver
        except NoMatches:
            raise errors.ConfigError(reason=f"unknown store type '{type_name}'") from None
        conf.register_opts(cls.OPTS, group=store_id)
        store = cls(conf, store_id)
        store.configure()
    if type(store).open_bucket is Store.open_bucket:
        raise errors.ConfigError(reason=f"[imaging] object_store {store_id!r} cannot open buckets")
    return store


class RangedFile(SeekableObject):
    """A read-only, seekable file over ranged gets, with adaptive read-ahead.

    Format readers read headers and tables at scattered offsets, then data
    mostly front to back. A read that moves forward from the last window
    doubles the next window (up to ``max_window``) and fetches the window
    after it in a background thread, so the network works while the caller
    converts; a jump starts again small, so metadata costs small requests
    and data large ones. Two windows are kept (metadata and data regions
    alternate). Memory: at most 3 × max_window (two kept, one in flight) plus
    one read.
    """

    def __init__(
        self,
        fetch: Callable[[int, int], Iterator[bytes]],
        size: int,
        min_window: int = 256 * 1024,
        max_window: int = 32 * 1024 * 1024,
    ) -> None:
        super().__init__(size)
        self._fetch = fetch
        self._min = min_window
        self._max = max_window
        self._window = min_window
        self._last = (-1, -1)  # the last window fetched: start, end
        self._cache: list[tuple[int, bytes]] = []
        self._ahead: tuple[int, int, Future[bytes]] | None = None
        self._pool: ThreadPoolExecutor | None = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._ahead = None
        self._cache = []
        super().close()

    def _get(self, start: int, length: int) -> bytes:
        data = b"".join(self._fetch(start, length))
        if len(data) != length:
            raise errors.StoreUnavailable(
                store="object", reason=f"short read: {len(data)} of {length} bytes at {start}"
            )
        return data

    def _cached(self, pos: int) -> tuple[int, bytes] | None:
        for start, data in self._cache:
            if start <= pos < start + len(data):
                return start, data
        return None

    def _load(self, pos: int, want: int) -> tuple[int, bytes]:
        last_start, last_end = self._last
        forward = last_start <= pos <= last_end + self._window
        self._window = min(self._window * 2, self._max) if forward else self._min
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] <= pos < ahead[0] + ahead[1]:
            start, data = ahead[0], ahead[2].result()
            if pos + want > start + len(data):  # a large read past the prefetched window
                data += self._get(start + len(data), pos + want - start - len(data))
        else:
            start = pos
            data = self._get(pos, min(max(want, self._window), self._size - pos))
        self._cache = [*self._cache[-1:], (start, data)]
        self._last = (start, start + len(data))
        end = start + len(data)
        if forward and end < self._size:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="ims-readahead")
            length = min(self._window, self._size - end)
            self._ahead = (end, length, self._pool.submit(self._get, end, length))
        return start, data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._size - self._pos)
        got = 0
        while got < want:
            pos = self._pos + got
            start, data = self._cached(pos) or self._load(pos, want - got)
            take = min(want - got, start + len(data) - pos)
            view[got : got + take] = memoryview(data)[pos - start : pos - start + take]
            got += take
        self._pos += got
        return got
