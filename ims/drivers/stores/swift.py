"""Store images as objects in an OpenStack Swift container.

The object is named by the image id in ``swift_store_container``, or with
``swift_store_container_per_project`` in ``<container>_<project id>`` (one
container per project, all in the store's account, created when first
needed). The stored URL is ``swift://<container>/<image_id>``, with no
endpoint, account or credentials in it (the store id kept beside the URL says
where and how), so images stay readable when the option changes.

A known size below ``swift_store_large_object_size`` is streamed in one PUT
(chunked, nothing buffered). Anything larger, or of unknown size and larger
than 8 MiB (or one segment, if smaller), becomes a Static Large Object:
segments named ``<image_id>/<upload token>/<number>`` go to
``<container>_segments``, then the manifest goes to the container with the
token in its metadata. Each segment is streamed while it is read; up to
``swift_store_thread_pools`` segment PUTs are open at a time, all but one
waiting for Swift to sync and answer, which is where a single stream loses
its time. A failed upload deletes its segments; ``cleanup`` deletes segments
that no manifest claims (a crash). Reads longer than 8 MiB are ranged GETs of
8 MiB, ``swift_store_thread_pools`` at a time.

Worst-case memory per upload: 8 MiB (an upload of unknown size held until it
proves large) or a few input chunks, whatever the segment size; per
download, (T + 1) × 8 MiB with T = thread pools (T ranges on their way, one
being sent on).

Auth is tempauth/swauth v1 (``account:user`` and a key) or Keystone v3
through a keystoneauth1 session. swiftclient's ``Connection`` holds a single
HTTP connection and is not thread-safe, so the store keeps a small pool of
them that share one token.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import http.client
import io
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests.exceptions
import urllib3.exceptions
from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3
from oslo_config import cfg
from swiftclient import client as swift_client
from swiftclient.exceptions import ClientException

from ims import errors
from ims.drivers.stores._parts import ChunkReader, MiB, PartLimits, read_ranges, stream_parts
from ims.drivers.stores.base import ObjectBucket, Store, StoredObject

LOG = logging.getLogger(__name__)

READ_CHUNK = 4 * MiB
#: Reads longer than this are fetched as ranges of this size, several at once.
READ_RANGE = 8 * MiB
#: Most of an upload of unknown size held to tell a small object from a large one.
SMALL_UNKNOWN = 8 * MiB
#: Swift's defaults, used when the cluster does not publish /info.
DEFAULT_LIMITS = PartLimits(min_size=1, max_size=5 * 1024 * MiB + 2, max_parts=1000)
#: Per-request timeout (s) and retries; a dead proxy fails within seconds.
TIMEOUT = 60
RETRIES = 2
STARTING_BACKOFF = 0.5
MAX_BACKOFF = 4
#: Idle connections kept for reuse.
MAX_IDLE = 16
TOKEN_META = "X-Object-Meta-Ims-Segments"
# Users' objects (in buckets) may hold "/": the token and number end the name.
_SEGMENT_RE = re.compile(r"^(?P<object>.+)/(?P<token>[0-9a-f]{32})/\d{8}$")
#: A project id used as it is in a container name; others are hashed.
_PLAIN_PROJECT = re.compile(r"[A-Za-z0-9-]{1,128}")
#: The container-name suffix of a project: its id, or ``~`` and a hash.
_PROJECT_SUFFIX = r"(?:[A-Za-z0-9-]{1,128}|~[0-9a-f]{40})"
_MD5_HEX = re.compile(r"[0-9a-f]{32}")
#: Swift's default limit on a container name, in bytes.
MAX_CONTAINER_NAME = 256

_FOREIGN = (
    ClientException,
    requests.exceptions.RequestException,
    ks_exceptions.ClientException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
)


class _Pool:
    """swiftclient connections, each used by one thread at a time."""

    def __init__(self, factory: Callable[[str | None, str | None], swift_client.Connection]):
        self._factory = factory
        self._idle: list[swift_client.Connection] = []
        self._lock = threading.Lock()
        self._auth: tuple[str | None, str | None] = (None, None)

    def acquire(self) -> swift_client.Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            url, token = self._auth
        # NOTE(ims): a new connection reuses the last token instead of
        # authenticating again; swiftclient re-authenticates on a 401.
        return self._factory(url, token)

    def release(self, conn: swift_client.Connection, broken: bool = False) -> None:
        if broken:
            conn.close()  # the HTTP connection may hold half a response
        with self._lock:
            if conn.url and conn.token:
                self._auth = (conn.url, conn.token)
            if len(self._idle) < MAX_IDLE:
                self._idle.append(conn)
                return
        conn.close()

    @contextlib.contextmanager
    def connection(self) -> Iterator[swift_client.Connection]:
        conn = self.acquire()
        try:
            yield conn
        except errors.IMSError:
            self.release(conn)  # our own decision; the connection is fine
            raise
        except BaseException:
            self.release(conn, broken=True)
            raise
        self.release(conn)


class SwiftStore(Store):
    """A container (and its ``_segments`` twin) in one Swift account."""

    TYPE = "swift"
    OPTS: ClassVar[list[cfg.Opt]] = [
        cfg.StrOpt(
            "swift_store_auth_version",
            default="3",
            choices=[("1", "tempauth/swauth: account:user and key"), ("3", "Keystone v3")],
            help="How to authenticate. Possible values: see choices. Related "
            "options: swift_store_auth_address, swift_store_user, swift_store_key, "
            "swift_store_project_name.",
        ),
        cfg.StrOpt(
            "swift_store_auth_address",
            help="The auth URL. Possible values: for v1 the proxy's auth URL "
            "(http://proxy:8080/auth/v1.0); for v3 the Keystone URL "
            "(https://keystone:5000/v3). Related options: swift_store_auth_version.",
        ),
        cfg.StrOpt(
            "swift_store_user",
            help="Who to authenticate as. Possible values: for v1 account:user; "
            "for v3 the user name. Related options: swift_store_key, "
            "swift_store_user_domain_name.",
        ),
        cfg.StrOpt(
            "swift_store_key",
            secret=True,
            help="The user's key (v1) or password (v3). It never appears in stored "
            "image locations. Related options: swift_store_user.",
        ),
        cfg.StrOpt(
            "swift_store_project_name",
            help="Keystone v3 only: the project that owns the container. Related "
            "options: swift_store_project_domain_name.",
        ),
        cfg.StrOpt(
            "swift_store_user_domain_name",
            default="Default",
            help="Keystone v3 only: the user's domain. Related options: swift_store_user.",
        ),
        cfg.StrOpt(
            "swift_store_project_domain_name",
            default="Default",
            help="Keystone v3 only: the project's domain. Related options: "
            "swift_store_project_name.",
        ),
        cfg.StrOpt(
            "swift_store_region",
            help="Keystone v3 only: the catalog region of the object-store endpoint. "
            "Possible values: a region name; unset takes the first one.",
        ),
        cfg.StrOpt(
            "swift_store_endpoint_type",
            default="publicURL",
            choices=["publicURL", "internalURL", "adminURL"],
            help="Keystone v3 only: which catalog endpoint to use.",
        ),
        cfg.StrOpt(
            "swift_store_service_type",
            default="object-store",
            help="Keystone v3 only: the catalog service type of Swift.",
        ),
        cfg.StrOpt(
            "swift_store_endpoint",
            help="A storage URL that replaces the one from auth, e.g. "
            "https://swift:8080/v1/AUTH_images. Possible values: unset (use the "
            "catalog or the v1 auth answer), or a URL.",
        ),
        cfg.StrOpt(
            "swift_store_cacert",
            help="A CA bundle file to verify TLS certificates with (auth and storage). "
            "Related options: swift_store_auth_insecure.",
        ),
        cfg.BoolOpt(
            "swift_store_auth_insecure",
            default=False,
            help="Skip TLS certificate verification. Turn on only for tests. Related "
            "options: swift_store_cacert.",
        ),
        cfg.StrOpt(
            "swift_store_container",
            default="glance",
            help="The container that holds the images. Large-object segments go to "
            "<container>_segments, created when first needed. Related options: "
            "swift_store_create_container_on_put, swift_store_container_per_project.",
        ),
        cfg.BoolOpt(
            "swift_store_container_per_project",
            default=False,
            help="Put each project's images in a container of its own, "
            "<swift_store_container>_<project id> (segments in "
            "<swift_store_container>_<project id>_segments), in the store's account, "
            "created on the project's first upload (so is swift_store_container, "
            "whatever swift_store_create_container_on_put says). A project id other than letters, "
            "digits and '-' (or one named 'segments') is replaced by '~' and a hash of "
            "it. Images without a project (internal data) stay in "
            "swift_store_container (which may then be at most 118 bytes long). "
            "Turning this on or off later keeps every image "
            "readable: each image's location names its container. Related options: "
            "swift_store_container.",
        ),
        cfg.BoolOpt(
            "swift_store_create_container_on_put",
            default=False,
            help="Create the container on the first upload if it does not exist. "
            "When false, a missing container stops the service at start-up.",
        ),
        cfg.IntOpt(
            "swift_store_large_object_size",
            default=5 * 1024,
            min=1,
            max=5 * 1024,
            help="Size in MiB from which an upload of known size is stored as a "
            "Static Large Object; smaller ones are streamed in one PUT. Uploads of "
            "unknown size become large objects once they exceed 8 MiB or one "
            "segment. Possible values: 1 to 5120 (Swift's single-object limit). "
            "Related options: swift_store_large_object_chunk_size.",
        ),
        cfg.IntOpt(
            "swift_store_large_object_chunk_size",
            default=100,
            min=1,
            max=5 * 1024,
            help="Size in MiB of each large-object segment. It grows automatically "
            "for objects that would need more segments than the cluster allows "
            "(slo max_manifest_segments, 1000 by default). Segments are streamed, "
            "not held in memory, so a failed segment fails the upload instead of "
            "being retried. Related options: swift_store_thread_pools.",
        ),
        cfg.IntOpt(
            "swift_store_thread_pools",
            default=4,
            min=1,
            help="How many segment PUTs of one upload are open at the same time (one "
            "receives data, the others wait for Swift to answer), and how many 8 MiB "
            "ranges of one download are fetched at the same time (each held in "
            "memory). Related options: swift_store_large_object_chunk_size.",
        ),
    ]

    def configure(self) -> None:
        opts = self.options
        for name in ("swift_store_auth_address", "swift_store_user", "swift_store_container"):
            if not getattr(opts, name):
                raise errors.ConfigError(reason=f"[{self.store_id}] {name} is required")
        if opts.swift_store_key is None:
            raise errors.ConfigError(reason=f"[{self.store_id}] swift_store_key is required")
        if opts.swift_store_auth_version == "3" and not opts.swift_store_project_name:
            raise errors.ConfigError(
                reason=f"[{self.store_id}] swift_store_project_name is required with v3"
            )
        self.container = opts.swift_store_container
        self.segments = f"{self.container}_segments"
        self.per_project = opts.swift_store_container_per_project
        # The longest per-project name: the container, "_", a 128-byte id, "_segments".
        room = MAX_CONTAINER_NAME - len("_" + "x" * 128 + "_segments")
        if self.per_project and len(self.container.encode()) > room:
            raise errors.ConfigError(
                reason=f"[{self.store_id}] swift_store_container is too long for "
                f"per-project containers (at most {room} bytes)"
            )
        self.create_container = opts.swift_store_create_container_on_put or self.per_project
        self._project_container = re.compile(re.escape(self.container) + "_" + _PROJECT_SUFFIX)
        self._views: dict[str, SwiftStore] = {}  # per-project containers, shared by views
        self.segment_size = opts.swift_store_large_object_chunk_size * MiB
        self.threads = opts.swift_store_thread_pools
        self._active: set[str] = set()  # upload tokens this process is writing
        self._active_lock = threading.Lock()
        self._ready: set[str] = set()  # containers known to exist
        self._pool = _Pool(self._connection_factory())
        try:
            with self._mapped(), self._pool.connection() as conn:
                try:
                    conn.head_container(self.container)
                    self._ready.add(self.container)
                except ClientException as ex:
                    if ex.http_status != 404:
                        raise
                    if not self.create_container:
                        raise errors.StoreUnavailable(
                            store=self.store_id,
                            reason=f"container {self.container} does not exist",
                        ) from None
                self.limits = self._limits(conn)
        except errors.IMSError as ex:
            raise errors.ConfigError(reason=f"[{self.store_id}] {ex}") from ex
        self.large_object_size = min(
            opts.swift_store_large_object_size * MiB, self.limits.max_size
        )

    def _connection_factory(self) -> Callable[[str | None, str | None], swift_client.Connection]:
        opts = self.options
        common: dict[str, Any] = {
            "retries": RETRIES,
            "starting_backoff": STARTING_BACKOFF,
            "max_backoff": MAX_BACKOFF,
            "timeout": TIMEOUT,
            "cacert": opts.swift_store_cacert,
            "insecure": opts.swift_store_auth_insecure,
        }
        os_options: dict[str, Any] = {}
        if opts.swift_store_endpoint:
            os_options["object_storage_url"] = opts.swift_store_endpoint
        if opts.swift_store_auth_version == "1":

            def make_v1(url: str | None, token: str | None) -> swift_client.Connection:
                return swift_client.Connection(
                    authurl=opts.swift_store_auth_address,
                    user=opts.swift_store_user,
                    key=opts.swift_store_key,
                    auth_version="1",
                    preauthurl=url,
                    preauthtoken=token,
                    os_options=dict(os_options),
                    **common,
                )

            return make_v1

        # The keystoneauth1 session is thread-safe and caches the token itself.
        auth = v3.Password(
            auth_url=opts.swift_store_auth_address,
            username=opts.swift_store_user,
            password=opts.swift_store_key,
            project_name=opts.swift_store_project_name,
            user_domain_name=opts.swift_store_user_domain_name,
            project_domain_name=opts.swift_store_project_domain_name,
        )
        verify: bool | str = not opts.swift_store_auth_insecure
        if verify and opts.swift_store_cacert:
            verify = opts.swift_store_cacert
        session = ks_session.Session(auth=auth, verify=verify, timeout=TIMEOUT)
        os_options.update(
            service_type=opts.swift_store_service_type,
            endpoint_type=opts.swift_store_endpoint_type,
            region_name=opts.swift_store_region,
        )

        def make_v3(url: str | None, token: str | None) -> swift_client.Connection:
            return swift_client.Connection(session=session, os_options=dict(os_options), **common)

        return make_v3

    def _limits(self, conn: swift_client.Connection) -> PartLimits:
        """Read the cluster's object and SLO limits from /info."""
        try:
            info = conn.get_capabilities()
        except ClientException:
            return DEFAULT_LIMITS
        slo = info.get("slo")
        if slo is None:
            raise errors.StoreUnavailable(
                store=self.store_id, reason="the cluster has no SLO support"
            )
        return PartLimits(
            min_size=max(1, int(slo.get("min_segment_size", 1))),
            max_size=int(info.get("swift", {}).get("max_file_size", DEFAULT_LIMITS.max_size)),
            max_parts=int(slo.get("max_manifest_segments", DEFAULT_LIMITS.max_parts)),
        )

    # -- errors --------------------------------------------------------------

    @contextlib.contextmanager
    def _mapped(self, location: str | None = None, source: ChunkReader | None = None):
        """Translate Swift client errors into ims.errors, once, at the boundary.

        ``location`` turns "not found" into DataNotFound. When the caller's
        input (``source``) failed, its own exception wins over whatever the
        HTTP stack made of the broken upload.
        """
        try:
            yield
        except errors.IMSError:
            raise
        except _FOREIGN as ex:
            if source is not None and source.error is not None:
                raise source.error from None
            raise self._translate(ex, location) from ex

    def _translate(self, ex: BaseException, location: str | None) -> errors.IMSError:
        status = ex.http_status if isinstance(ex, ClientException) else None
        if status == 404:
            if location is not None:
                return errors.DataNotFound(location=location)
            return errors.StoreUnavailable(
                store=self.store_id, reason=f"container {self.container} not found"
            )
        if status in (413, 507):
            return errors.StorageFull(store=self.store_id)
        if status in (401, 403) or isinstance(ex, ks_exceptions.Unauthorized):
            return errors.StoreUnavailable(store=self.store_id, reason="access denied")
        if status is not None:
            reason = f"{status} {ex.http_reason}"
        else:
            reason = str(ex) or type(ex).__name__
        return errors.StoreUnavailable(store=self.store_id, reason=reason)

    # -- locations -----------------------------------------------------------

    def url_prefix(self) -> str:
        return f"swift://{self.container}/"

    def url_for(self, image_id: str, owner: str | None = None) -> str:
        return f"swift://{self._container_for(owner)}/{image_id}"

    def owns(self, url: str) -> bool:
        try:
            self._locate(url)
        except errors.DataNotFound:
            return False
        return True

    def _container_for(self, owner: str | None) -> str:
        if not (self.per_project and owner):
            return self.container
        if _PLAIN_PROJECT.fullmatch(owner) and owner != "segments":
            return f"{self.container}_{owner}"
        return f"{self.container}_~{hashlib.sha256(owner.encode()).hexdigest()[:40]}"

    def _holds_images(self, container: str) -> bool:
        """Tell whether ``container`` is one of this store's image containers."""
        return (
            container == self.container or self._project_container.fullmatch(container) is not None
        )

    def _is_own(self, container: str) -> bool:
        """Tell whether ``container`` holds this store's images or their segments."""
        if self._holds_images(container):
            return True
        main = container.removesuffix("_segments")
        return main != container and self._holds_images(main)

    def _view(self, container: str) -> SwiftStore:
        """This store, working on one of its containers (shares pool and token)."""
        if container == self.container:
            return self
        view = self._views.get(container)
        if view is None:
            view = copy.copy(self)
            view.container = container
            view.segments = f"{container}_segments"
            view.create_container = True
            view = self._views.setdefault(container, view)
        return view

    def _locate(self, url: str) -> tuple[SwiftStore, str]:
        """Return the container's view and the object name of a location."""
        parts = urlsplit(url)
        name = parts.path.lstrip("/")
        # APPSEC(ims): only objects of this store's containers.
        if (
            parts.scheme != "swift"
            or not self._holds_images(parts.netloc)
            or not name
            or "/" in name
        ):
            raise errors.DataNotFound(location=url)
        return self._view(parts.netloc), name

    # -- writes --------------------------------------------------------------

    def _ensure_container(self, conn: swift_client.Connection, name: str, create: bool) -> None:
        if name in self._ready:
            return
        try:
            conn.head_container(name)
        except ClientException as ex:
            if ex.http_status != 404 or not create:
                raise
            conn.put_container(name)
        self._ready.add(name)

    def add(
        self,
        image_id: str,
        chunks: Iterable[bytes],
        size_hint: int | None = None,
        owner: str | None = None,
    ) -> StoredObject:
        url = self.url_for(image_id, owner)
        view, _ = self._locate(url)
        size, etag = view._put_name(image_id, chunks, size_hint, f"Image data for {image_id}")
        md5 = etag if etag and _MD5_HEX.fullmatch(etag) else None
        return StoredObject(url=url, size=size, md5=md5)

    def reports_md5(self, size_hint: int | None) -> bool:
        # One PUT: Swift's ETag is the md5 of the object, checked by the
        # object servers. A large object's is an md5 of segment md5s.
        return size_hint is not None and size_hint < self.large_object_size

    def _put_name(
        self, name: str, chunks: Iterable[bytes], size_hint: int | None, what: str
    ) -> tuple[int, str | None]:
        """Write an object; return its size and, for one PUT, its ETag."""
        reader = ChunkReader(chunks)
        with self._mapped(source=reader):
            with self._pool.connection() as conn:
                try:
                    self._ensure_container(conn, self.container, self.create_container)
                except ClientException:
                    self._ready.discard(self.container)
                    raise
                if self._exists(conn, name):
                    raise errors.Duplicate(what=what)
                if size_hint is not None and size_hint < self.large_object_size:
                    etag = self._put_one(conn, name, reader, size_hint)
                    return reader.consumed, etag
                # Unknown size: hold a little to tell a small object from a large one.
                small = min(self.segment_size, SMALL_UNKNOWN)
                if size_hint is None and reader.peek(small) < small:
                    etag = _put_bytes(conn, self.container, name, reader.drain())
                    return reader.consumed, etag
                self._ensure_container(conn, self.segments, True)
            self._add_slo(name, reader, size_hint)
        return reader.consumed, None

    def _put_one(
        self, conn: swift_client.Connection, name: str, reader: ChunkReader, size_hint: int
    ) -> str:
        """One PUT, sent from a thread of its own; return the ETag.

        PERF(ims): reading the input (a client socket, hashes) and sending
        to Swift then overlap instead of taking turns on one thread.
        """

        def too_long() -> errors.IMSError:
            return errors.Invalid(f"Data for {name} is longer than announced ({size_hint} bytes)")

        def at_most(pieces: Iterable[bytes | memoryview]) -> Iterator[bytes | memoryview]:
            # Raising here aborts the PUT: nothing longer than announced is stored.
            sent = 0
            for piece in pieces:
                sent += len(piece)
                if sent > size_hint:
                    raise too_long()
                yield piece

        [etag] = stream_parts(
            reader,
            lambda _number: self.large_object_size,
            lambda _number, pieces: _put_iter(conn, self.container, name, at_most(pieces)),
            1,
            1,
            too_long,
        )
        return etag

    def _exists(self, conn: swift_client.Connection, name: str) -> bool:
        try:
            conn.head_object(self.container, name)
        except ClientException as ex:
            if ex.http_status == 404:
                return False
            raise
        return True

    def _add_slo(self, image_id: str, reader: ChunkReader, size_hint: int | None) -> None:
        token = uuid.uuid4().hex
        uploaded: list[str] = []
        lock = threading.Lock()
        manifest_sent = False

        def send(number: int, pieces: Iterable[bytes | memoryview]) -> dict[str, Any]:
            name = f"{image_id}/{token}/{number:08d}"
            with lock:
                uploaded.append(name)  # before the PUT: a lost answer may hide a written one
            size = 0

            def counted() -> Iterator[bytes | memoryview]:
                nonlocal size
                for piece in pieces:
                    size += len(piece)
                    yield piece

            with self._pool.connection() as conn:
                etag = _put_iter(conn, self.segments, name, counted())
            return {"path": f"/{self.segments}/{name}", "etag": etag, "size_bytes": size}

        with self._active_lock:
            self._active.add(token)
        try:
            manifest = stream_parts(
                reader,
                self.limits.planner(self.segment_size, size_hint),
                send,
                self.threads,
                self.limits.max_parts,
                lambda: errors.StorageFull(store=self.store_id),
            )
            manifest_sent = True
            with self._pool.connection() as conn:
                conn.put_object(
                    self.container,
                    image_id,
                    json.dumps(manifest),
                    query_string="multipart-manifest=put",
                    headers={TOKEN_META: token},
                )
        except BaseException:
            if manifest_sent:
                self._delete_quietly(self.container, image_id, token)
            for name in uploaded:
                if not self._delete_quietly(self.segments, name):
                    break  # the store is out of reach: the rest is for cleanup()
            raise
        finally:
            with self._active_lock:
                self._active.discard(token)

    def _delete_quietly(self, container: str, name: str, token: str | None = None) -> bool:
        """Delete one object; on failure log it and leave it to ``cleanup``.

        With ``token``, only a manifest written by that upload is deleted.
        """
        try:
            with self._mapped(), self._pool.connection() as conn:
                if token is not None:
                    try:
                        headers = conn.head_object(container, name)
                    except ClientException as ex:
                        if ex.http_status == 404:
                            return True
                        raise
                    if headers.get(TOKEN_META.lower()) != token:
                        return True
                conn.delete_object(container, name)
        except errors.DataNotFound:
            return True
        except errors.IMSError as ex:
            LOG.warning("Could not delete %s/%s (cleanup will): %s", container, name, ex)
            return False
        return True

    # -- reads ---------------------------------------------------------------

    def get(self, url: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        view, name = self._locate(url)
        return view._get_name(name, url, offset, length)

    def _get_name(self, name: str, url: str, offset: int, length: int | None) -> Iterator[bytes]:
        if length == 0:
            self._size_name(name, url)
            return iter(())
        if length is None or length > READ_RANGE:
            total = self._size_name(name, url)
            stop = total if length is None else min(total, offset + length)
            if stop - offset > READ_RANGE:
                return self._read_ranges(name, url, offset, stop)
        headers = {}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            headers["Range"] = f"bytes={offset}-{end}"
        with self._mapped(url):
            conn = self._pool.acquire()
            try:
                resp_headers, body = conn.get_object(
                    self.container, name, resp_chunk_size=READ_CHUNK, headers=headers
                )
            except ClientException as ex:
                self._pool.release(conn, broken=True)
                # Reading past the end yields nothing, as a file would.
                if ex.http_status == 416:
                    return iter(())
                raise
            except BaseException:
                self._pool.release(conn, broken=True)
                raise
        expected = resp_headers.get("content-length")
        return self._stream(conn, body, None if expected is None else int(expected), url)

    def _read_ranges(self, name: str, url: str, start: int, stop: int) -> Iterator[bytes]:
        def fetch(first: int, end: int) -> bytes:
            headers = {"Range": f"bytes={first}-{end - 1}"}
            with self._mapped(url), self._pool.connection() as conn:
                return conn.get_object(self.container, name, headers=headers)[1]

        return read_ranges(
            fetch, start, stop, READ_RANGE, self.threads, functools.partial(self._short, url)
        )

    def _stream(
        self, conn: swift_client.Connection, body: Any, expected: int | None, url: str
    ) -> Iterator[bytes]:
        complete = False
        try:
            with self._mapped(url):
                received = 0
                for chunk in body:
                    received += len(chunk)
                    yield chunk
                if expected is not None and received != expected:
                    # A large object whose segment vanished ends early.
                    raise self._short(url, received, expected)
            complete = True
        finally:
            if not complete:
                body.close()
            self._pool.release(conn, broken=not complete)

    def get_size(self, url: str) -> int:
        view, name = self._locate(url)
        return view._size_name(name, url)

    def _size_name(self, name: str, url: str) -> int:
        with self._mapped(url), self._pool.connection() as conn:
            return int(conn.head_object(self.container, name)["content-length"])

    # -- removal -------------------------------------------------------------

    def delete(self, url: str) -> None:
        view, name = self._locate(url)
        view._delete_name(name, url)

    def _delete_name(self, name: str, url: str) -> None:
        with self._mapped(url), self._pool.connection() as conn:
            headers = conn.head_object(self.container, name)
            if headers.get("x-static-large-object", "").lower() != "true":
                conn.delete_object(self.container, name)
                return
            # NOTE(ims): this removes the manifest and every segment, but it
            # answers 200 even when it failed (the errors are in the body,
            # which swiftclient drops): check the manifest is really gone.
            # Segments it could not remove are orphans for cleanup().
            conn.delete_object(self.container, name, query_string="multipart-manifest=delete")
            try:
                conn.head_object(self.container, name)
            except ClientException as ex:
                if ex.http_status == 404:
                    return
                raise
            raise errors.StoreUnavailable(store=self.store_id, reason=f"could not delete {url}")

    def cleanup(self) -> int:
        """Delete segments that no manifest claims; return how many uploads.

        Looks in every container of the store, per-project ones included
        (whatever swift_store_container_per_project says now). Uploads this
        process is still writing are spared; run it when no other process
        writes to the same containers (for example at start-up).
        """
        with self._mapped():
            containers = [self.container, *self._project_containers()]
        return sum(self._view(name)._discard_unclaimed("") for name in containers)

    def discard_partial(self, image_id: str, owner: str | None = None) -> int:
        """Delete the segments of ``image_id`` that its manifest does not claim."""
        view = self._view(self._container_for(owner))
        return view._discard_unclaimed(f"{image_id}/", only=image_id)

    def _project_containers(self) -> Iterator[str]:
        """Yield the per-project containers that have a segments container."""
        marker = ""
        while True:
            with self._pool.connection() as conn:
                _, page = conn.get_account(prefix=f"{self.container}_", marker=marker, limit=1000)
            if not page:
                return
            for entry in page:
                main = entry["name"].removesuffix("_segments")
                if main != entry["name"] and self._project_container.fullmatch(main):
                    yield main
            marker = page[-1]["name"]

    def _discard_unclaimed(self, prefix: str, only: str | None = None) -> int:
        """Delete segment groups under ``prefix`` that no manifest claims and no
        upload of this process is writing; return how many groups.

        With ``only``, just the groups of that object (a prefix "a/" also
        covers a user's "a/b").
        """
        removed = 0
        with self._mapped():
            for (image_id, token), names in list(self._segment_groups(prefix)):
                if only is not None and image_id != only:
                    continue
                with self._active_lock:
                    if token in self._active:
                        continue
                if self._claimed(image_id, token):
                    continue
                if all([self._delete_quietly(self.segments, name) for name in names]):
                    removed += 1
        return removed

    def _segment_groups(self, prefix: str = "") -> Iterator[tuple[tuple[str, str], list[str]]]:
        """Yield ((image id, token), segment names) from the listing, page by page."""
        current: tuple[str, str] | None = None
        names: list[str] = []
        marker = ""
        while True:
            with self._pool.connection() as conn:
                try:
                    _, page = conn.get_container(
                        self.segments, marker=marker, limit=1000, prefix=prefix or None
                    )
                except ClientException as ex:
                    if ex.http_status == 404:
                        return
                    raise
            if not page:
                break
            for entry in page:
                match = _SEGMENT_RE.match(entry["name"])
                if match is None:
                    continue  # not ours
                group = (match["object"], match["token"])
                if group != current:
                    if current is not None:
                        yield current, names
                    current, names = group, []
                names.append(entry["name"])
            marker = page[-1]["name"]
        if current is not None:
            yield current, names

    def _claimed(self, image_id: str, token: str) -> bool:
        with self._pool.connection() as conn:
            try:
                headers = conn.head_object(self.container, image_id)
            except ClientException as ex:
                if ex.http_status == 404:
                    return False
                raise
        return headers.get(TOKEN_META.lower()) == token

    def describe(self) -> dict[str, object]:
        return {
            "container": self.container,
            "container_per_project": self.per_project,
            "large_object_size": self.large_object_size,
            "large_object_chunk_size": self.segment_size,
        }

    def open_bucket(self, bucket: str) -> ObjectBucket:
        """Another container of the same account (an S3 bucket under s3api)."""
        if self._is_own(bucket):
            raise errors.Forbidden(f"Container {bucket} holds the images of store {self.store_id}")
        view = copy.copy(self)  # shares the connection pool and token
        view.container = bucket
        view.segments = f"{bucket}_segments"
        view.create_container = False
        view._ready = set()
        return _SwiftBucket(view)


class _SwiftBucket(ObjectBucket):
    """Objects of one container, named by users (folders are ``/`` in the name).

    Large objects are SLOs whose segments go to ``<container>_segments``.
    """

    def __init__(self, view: SwiftStore) -> None:
        super().__init__(view.container)
        self.view = view

    def size(self, name: str) -> int:
        return self.view._size_name(name, f"{self.bucket}:{name}")

    def get(self, name: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        return self.view._get_name(name, f"{self.bucket}:{name}", offset, length)

    def put(self, name: str, chunks: Iterable[bytes], size_hint: int | None = None) -> int:
        return self.view._put_name(name, chunks, size_hint, f"Object {self.bucket}:{name}")[0]

    def delete(self, name: str) -> None:
        # A writer that died (an export's worker) leaves unclaimed segments.
        try:
            self.view._delete_name(name, f"{self.bucket}:{name}")
        except errors.DataNotFound:
            if not self.view._discard_unclaimed(f"{name}/", only=name):
                raise
            return
        self.view._discard_unclaimed(f"{name}/", only=name)


def _put_iter(
    conn: swift_client.Connection,
    container: str,
    name: str,
    pieces: Iterable[bytes | memoryview],
) -> str:
    """PUT the pieces as they come, with chunked transfer (a stream has no retries)."""
    # NOTE(ims): chunked, so input that ends before a size hint said it
    # would cannot leave the request waiting for bytes that never come.
    retries, conn.retries = conn.retries, 0
    try:
        return conn.put_object(container, name, pieces)
    finally:
        conn.retries = retries


def _put_bytes(conn: swift_client.Connection, container: str, name: str, data: bytes) -> str:
    """PUT ``data`` as one object (retryable, since a BytesIO can be rewound)."""
    body = io.BytesIO(data)  # shares ``data``, no copy
    try:
        return conn.put_object(container, name, body, content_length=len(data))
    finally:
        # PERF(ims): the connection keeps its last request (and so this body)
        # alive; closing the BytesIO lets the segment go now, not at the next
        # request on that connection, which would double the memory bound.
        body.close()
