"""Image data: upload (check, hash, store) and download (whole or ranged).

Upload moves an image queued → saving → active. Any failure, including a
client that goes away, removes the partial data and puts the image back to
queued; nothing half-written is ever active.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import BinaryIO

from oslo_config import cfg
from oslo_utils import strutils

from ims import errors
from ims.context import RequestContext
from ims.core import status as st
from ims.core import streams
from ims.core.images import ImageService
from ims.core.storefile import open_stored
from ims.db import api as db
from ims.disk import registry
from ims.disk.model import Sample
from ims.drivers.stores.base import Store, StoredObject

LOG = logging.getLogger(__name__)

#: Declared disk formats whose content is not checked (no way to tell).
UNINSPECTABLE = frozenset({"ami", "ari", "aki", "ploop"})


@dataclasses.dataclass
class Download:
    """What a download sends: the bytes and how to describe them."""

    chunks: Iterator[bytes] | None
    length: int
    total: int
    start: int
    checksum: str | None
    partial: bool
    fd: int | None = None  # a real file for zero-copy sending, when whole


def hashes_for(store: Store, size: int | None, algo: str) -> streams.Hashes:
    """Hashes for data about to go to ``store``: no md5 pass when the store reports it.

    PERF(ims): a store that computes the md5 anyway (one Swift PUT) spares
    a core-second per GiB; ``settle_md5`` completes the hashes after ``add``.
    """
    return streams.Hashes(algo, md5=not store.reports_md5(size))


def settle_md5(hashes: streams.Hashes, store: Store, stored: StoredObject) -> None:
    """Give ``hashes`` the md5 the store reported, or read the data back for it.

    Does nothing when ``hashes`` has its md5 already (computed, or settled before).
    """
    if hashes.has_md5:
        return
    if stored.md5 is not None:
        hashes.adopt_md5(stored.md5)
        return
    LOG.warning("Store %s reported no md5 for %s; reading it back", store.store_id, stored.url)
    digest = hashlib.md5(usedforsecurity=False)
    for chunk in store.get(stored.url):
        digest.update(chunk)
    hashes.adopt_md5(digest.hexdigest())


def parse_size(value: str) -> int:
    """Parse '10GB', '512 MB', '1099511627776' into bytes."""
    try:
        return strutils.string_to_bytes(
            str(value).replace(" ", ""), unit_system="IEC", return_int=True
        )
    except ValueError:
        try:
            return strutils.string_to_bytes(f"{value}B", unit_system="IEC", return_int=True)
        except ValueError:
            raise errors.ConfigError(reason=f"invalid size {value!r}") from None


class ImageDataService:
    """Moves image bytes between clients and stores, under the rules."""

    def __init__(self, conf: cfg.ConfigOpts, images: ImageService) -> None:
        self.conf = conf
        self.images = images
        self.db = images.db
        self.stores = images.stores
        self.size_cap = parse_size(conf.image_size_cap)
        self.storage_quota = parse_size(conf.user_storage_quota)

    # -- upload -----------------------------------------------------------

    def upload(
        self,
        ctx: RequestContext,
        image_id: str,
        stream: BinaryIO,
        expected_size: int | None,
        store_id: str | None = None,
    ) -> db.Image:
        store = self.stores.user_store(store_id)
        with self.db.session() as session:
            image = self.images.load_visible(ctx, session, image_id)
            self.images.policy.enforce(ctx, "upload_image", self.images.target(image))
            if image.status != st.QUEUED:
                raise errors.Conflict(
                    f"Image status transition from {image.status} to {st.SAVING} is not allowed"
                )
            st.check_transition(image.status, st.SAVING, image.disk_format, image.container_format)
            limit = self.limit_for(session, image)
            db.image_update(
                session, image_id, values={"status": st.SAVING}, from_status=[st.QUEUED]
            )
        try:
            return self._receive(image, store, stream, expected_size, limit)
        except BaseException:
            self._revert(image_id)
            raise

    def limit_for(self, session: object, image: db.Image) -> int:
        limit = self.size_cap
        if self.storage_quota and image.owner:
            used, _count = db.project_usage(session, image.owner)
            remaining = self.storage_quota - used
            if remaining <= 0:
                raise errors.QuotaExceeded(what="storage per project", limit=self.storage_quota)
            limit = min(limit, remaining)
        return limit

    def _receive(
        self, image: db.Image, store: Store, stream: BinaryIO, expected: int | None, limit: int
    ) -> db.Image:
        if expected is not None and expected > limit:
            raise self.too_large(limit)
        hashes = hashes_for(store, expected, self.conf.hashing_algorithm)
        probe = streams.ProbeSample()
        size_check = streams.SizeLimit(limit, expected, on_exceed=self.too_large)
        data = streams.through(streams.read_chunks(stream), [size_check, hashes, probe])
        stored = store.add(image.id, data, size_hint=expected, owner=image.owner)
        try:
            settle_md5(hashes, store, stored)
            virtual_size = self.check_format(
                image,
                lambda: open_stored(store, stored.url, stored.size),
                stored.size,
                probe.sample(),
            )
            with self.db.session() as session:
                db.location_add(session, image.id, store.store_id, stored.url)
                return db.image_update(
                    session,
                    image.id,
                    values={
                        "status": st.ACTIVE,
                        "size": stored.size,
                        "virtual_size": virtual_size,
                        "checksum": hashes.checksum,
                        "os_hash_algo": hashes.algo,
                        "os_hash_value": hashes.os_hash_value,
                    },
                    from_status=[st.SAVING],
                )
        except (errors.ImageNotFound, errors.Conflict):
            self._drop(store, stored)
            raise errors.Gone(f"Image {image.id} was deleted during the upload") from None
        except BaseException:
            self._drop(store, stored)
            raise

    def too_large(self, limit: int) -> errors.IMSError:
        if limit < self.size_cap:
            return errors.QuotaExceeded(what="storage per project", limit=self.storage_quota)
        return errors.TooLarge(f"Image exceeds the size limit of {limit} bytes")

    def check_format(
        self,
        image: db.Image,
        open_file: Callable[[], AbstractContextManager[BinaryIO]],
        size: int,
        sample: Sample,
    ) -> int | None:
        """Check content against disk_format; return the virtual size.

        ``open_file`` opens the data for random reads; it is only called when
        the declared format is one IMS can inspect.
        """
        declared = image.disk_format or "raw"
        if image.container_format != "bare" or declared in UNINSPECTABLE:
            return None
        strict = self.conf.image_format.require_image_format_match
        try:
            detected = registry.probe(sample)
        except errors.ImageFormatError:
            if strict:
                raise
            return None
        if detected != declared:
            if declared == "raw" or not strict:
                LOG.warning("Image %s declared %s but looks like %s", image.id, declared, detected)
                return size
            raise errors.FormatMismatch(detected=detected, declared=declared)
        with open_file() as file:
            try:
                info = registry.get(declared).inspect(file)
            except errors.ImageFormatError:
                if strict:
                    raise
                return None
        return info.virtual_size

    def _drop(self, store: Store, stored: StoredObject) -> None:
        try:
            store.delete(stored.url)
        except errors.IMSError:
            LOG.exception("Could not remove %s; store cleanup will", stored.url)

    def _revert(self, image_id: str) -> None:
        try:
            with self.db.session() as session:
                db.image_update(
                    session,
                    image_id,
                    values={"status": st.QUEUED, "size": None, "virtual_size": None},
                    from_status=[st.SAVING],
                )
        except (errors.NotFound, errors.Conflict):
            pass

    # -- download ---------------------------------------------------------

    def download(
        self, ctx: RequestContext, image_id: str, byte_range: tuple[int | None, int | None] | None
    ) -> Download | None:
        """Return the data to send, or None when the image has none.

        ``byte_range`` is (first, last) inclusive as in HTTP; (None, n) means
        the last n bytes.
        """
        image = self.images.get(ctx, image_id)
        self.images.policy.enforce(ctx, "download_image", self.images.target(image))
        if image.status == st.DEACTIVATED and not ctx.is_admin:
            raise errors.Forbidden(
                "The requested image has been deactivated. Image data download is forbidden."
            )
        locations = [loc for loc in image.locations if loc.status == "active"]
        if image.status != st.ACTIVE and image.status != st.DEACTIVATED or not locations:
            return None
        loc = max(locations, key=lambda loc: self.stores.weight(loc.store))
        store = self.stores.get(loc.store)
        total = image.size if image.size is not None else store.get_size(loc.url)
        if byte_range is None:
            opener = getattr(store, "open_file", None)
            if opener is not None:
                return Download(None, total, total, 0, image.checksum, False, fd=opener(loc.url))
            return Download(store.get(loc.url), total, total, 0, image.checksum, False)
        start, end = _resolve_range(byte_range, total)
        length = end - start + 1
        return Download(store.get(loc.url, start, length), length, total, start, None, True)


def _resolve_range(byte_range: tuple[int | None, int | None], total: int) -> tuple[int, int]:
    first, last = byte_range
    text = f"{'' if first is None else first}-{'' if last is None else last}"
    if first is None:
        if not last:
            raise errors.InvalidRange(range=text, size=total)
        return max(0, total - last), total - 1
    if first >= total:
        raise errors.InvalidRange(range=text, size=total)
    end = total - 1 if last is None else min(last, total - 1)
    if end < first:
        raise errors.InvalidRange(range=text, size=total)
    return first, end


def usage(service: ImageDataService, ctx: RequestContext) -> dict[str, dict[str, int]]:
    """What the caller's project uses against its limits (-1: unlimited)."""
    with service.db.session() as session:
        used, count = db.project_usage(session, ctx.project_id) if ctx.project_id else (0, 0)
    return {
        "image_size_total": {"limit": service.storage_quota or -1, "usage": used},
        "image_count_total": {"limit": -1, "usage": count},
        "image_stage_total": {"limit": -1, "usage": 0},
        "image_count_uploading": {"limit": -1, "usage": 0},
    }
