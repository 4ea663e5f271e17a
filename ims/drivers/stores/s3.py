"""Store images as objects in an S3 bucket (AWS, Ceph RGW, Swift s3api, MinIO…).

Objects are named ``<prefix><image_id>``; the stored URL is
``s3://<bucket>/<key>``, with no endpoint or credentials in it (the store id
kept beside the URL says which endpoint and keys to use).

Uploads of known size below ``s3_store_large_object_size`` are one PUT;
anything larger, or of unknown size and larger than one part, is a multipart
upload whose parts are sent ``s3_store_thread_pools`` at a time. The upload is
aborted as soon as anything fails, and ``cleanup`` aborts the ones a crash left
open. Reads longer than 8 MiB are ranged GETs of 8 MiB, as many at a time.

Worst-case memory per upload, with P = the part size (``s3_store_large_object
_chunk_size``, grown for objects over ``s3_store_max_parts`` × P), T = thread
pools and L = ``s3_store_large_object_size``::

    max(L, (T + 1) × P) + one input chunk

(T parts being sent and one being read, each in a buffer the next parts
reuse; a single PUT holds the object), and (T + 1) × 8 MiB per download
(T ranges on their way, one being sent on). With the defaults (L = P =
12 MiB, T = 3) that is 48 MiB up, 32 MiB down.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import http.client
import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar
from urllib.parse import urlsplit

import boto3
import urllib3.exceptions
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from oslo_config import cfg

from ims import errors
from ims.drivers.stores._parts import ChunkReader, MiB, PartLimits, read_ranges, upload_parts
from ims.drivers.stores.base import ObjectBucket, Store, StoredObject

LOG = logging.getLogger(__name__)

READ_CHUNK = 4 * MiB
#: Reads longer than this are fetched as ranges of this size, several at once.
READ_RANGE = 8 * MiB
#: AWS S3's documented multipart limits.
S3_LIMITS = PartLimits(min_size=5 * MiB, max_size=5 * 1024 * MiB, max_parts=10_000)
#: Timeouts (s) and attempts per request; a dead endpoint fails within seconds.
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60
MAX_ATTEMPTS = 3

# Everything the S3 stack can raise for a store problem. OSError covers raw
# socket errors that escape during streaming.
_FOREIGN = (BotoCoreError, ClientError, urllib3.exceptions.HTTPError, http.client.HTTPException,
            OSError)  # fmt: skip
_NOT_FOUND = {"NoSuchKey", "NotFound", "404", "NoSuchBucket"}
_FULL = {"EntityTooLarge", "QuotaExceeded", "InsufficientStorage", "413", "507"}
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "401"}


class S3Store(Store):
    """A bucket (optionally a key prefix in it) on an S3 endpoint."""

    TYPE = "s3"
    OPTS: ClassVar[list[cfg.Opt]] = [
        cfg.StrOpt(
            "s3_store_host",
            help="The S3 endpoint URL. Possible values: an URL such as "
            "https://s3.example.com or http://127.0.0.1:8080; a bare host name means "
            "https. Related options: s3_store_bucket_url_format, s3_store_cacert.",
        ),
        cfg.StrOpt(
            "s3_store_region_name",
            default="us-east-1",
            help="The region the requests are signed for (SigV4). Possible values: "
            "the endpoint's region name; most non-AWS endpoints accept us-east-1. "
            "Related options: s3_store_create_bucket_on_put (a new bucket is created "
            "in this region).",
        ),
        cfg.StrOpt(
            "s3_store_access_key",
            help="The access key id. Possible values: the key id issued by the S3 "
            "service (for Swift s3api with tempauth: account:user). Related options: "
            "s3_store_secret_key.",
        ),
        cfg.StrOpt(
            "s3_store_secret_key",
            secret=True,
            help="The secret key. It never appears in stored image locations. "
            "Possible values: the secret issued with s3_store_access_key. Related "
            "options: s3_store_access_key.",
        ),
        cfg.StrOpt(
            "s3_store_bucket",
            help="The bucket that holds the images. Possible values: a valid bucket "
            "name (3-63 characters: lower case letters, digits, dots, hyphens). "
            "Related options: s3_store_create_bucket_on_put, s3_store_prefix.",
        ),
        cfg.StrOpt(
            "s3_store_prefix",
            default="",
            help="A key prefix for every object of this store, so that several stores "
            "can share a bucket. Possible values: empty, or a path such as images/ "
            "(a trailing / is added). Related options: s3_store_bucket.",
        ),
        cfg.BoolOpt(
            "s3_store_create_bucket_on_put",
            default=False,
            help="Create the bucket on the first upload if it does not exist. When "
            "false, a missing bucket stops the service at start-up. Possible values: "
            "true, false. Related options: s3_store_bucket, s3_store_region_name.",
        ),
        cfg.StrOpt(
            "s3_store_bucket_url_format",
            default="auto",
            choices=[
                ("auto", "let the client choose (virtual where the name allows it)"),
                ("path", "https://host/bucket/key (Swift s3api, MinIO, Ceph)"),
                ("virtual", "https://bucket.host/key (AWS)"),
            ],
            help="How the bucket is put into request URLs. Possible values: see "
            "choices. Related options: s3_store_host.",
        ),
        cfg.IntOpt(
            "s3_store_large_object_size",
            default=12,
            min=5,
            max=5 * 1024,
            help="Size in MiB from which an upload of known size is sent as a "
            "multipart upload; smaller ones are one PUT held in memory. Uploads of "
            "unknown size go multipart once they exceed one part. Possible values: "
            "5 to 5120 (Glance's default, 100, holds up to 100 MiB per upload). "
            "Related options: s3_store_large_object_chunk_size.",
        ),
        cfg.IntOpt(
            "s3_store_large_object_chunk_size",
            default=12,
            min=5,
            max=5 * 1024,
            help="Size in MiB of each multipart part. It grows automatically for "
            "objects that would need more than s3_store_max_parts parts. Memory per "
            "upload is at most (s3_store_thread_pools + 1) times this. Larger parts "
            "cost the service less (Swift's s3api spends ~30 ms of proxy CPU per "
            "part). Possible values: 5 to 5120. Related options: "
            "s3_store_large_object_size, s3_store_thread_pools, s3_store_max_parts.",
        ),
        cfg.IntOpt(
            "s3_store_max_parts",
            default=S3_LIMITS.max_parts,
            min=1,
            max=S3_LIMITS.max_parts,
            help="The most parts the endpoint accepts in one multipart upload. Parts "
            "grow so that an image fits: to the size divided by this when the size is "
            "known, doubling after every tenth of this when it is not. Possible "
            "values: 1 to 10000; AWS, Ceph RGW and MinIO take 10000, Swift's s3api "
            "1000 unless its max_upload_part_num says otherwise. Related options: "
            "s3_store_large_object_chunk_size.",
        ),
        cfg.IntOpt(
            "s3_store_thread_pools",
            default=3,
            min=1,
            help="How many parts of one upload are sent, and how many 8 MiB ranges of "
            "one download are fetched, at the same time. Each one in flight holds "
            "its part or range in memory. Possible values: 1 or more (Glance's "
            "defaults, 10 threads of 10 MiB parts, hold about 110 MiB per upload). "
            "Related options: s3_store_large_object_chunk_size.",
        ),
        cfg.StrOpt(
            "s3_store_cacert",
            help="A CA bundle file to verify the endpoint's TLS certificate with. "
            "Possible values: a path; unset means the system CAs. Related options: "
            "s3_store_verify.",
        ),
        cfg.BoolOpt(
            "s3_store_verify",
            default=True,
            help="Verify the endpoint's TLS certificate. Turn off only for tests. "
            "Possible values: true, false. Related options: s3_store_cacert.",
        ),
    ]

    def configure(self) -> None:
        opts = self.options
        for name in ("s3_store_host", "s3_store_bucket", "s3_store_access_key"):
            if not getattr(opts, name):
                raise errors.ConfigError(reason=f"[{self.store_id}] {name} is required")
        if opts.s3_store_secret_key is None:
            raise errors.ConfigError(reason=f"[{self.store_id}] s3_store_secret_key is required")
        host = opts.s3_store_host
        self.endpoint = host if "://" in host else f"https://{host}"
        self.bucket = opts.s3_store_bucket
        prefix = opts.s3_store_prefix.strip("/")
        self.prefix = f"{prefix}/" if prefix else ""
        self.region = opts.s3_store_region_name
        self.create_bucket = opts.s3_store_create_bucket_on_put
        self.large_object_size = opts.s3_store_large_object_size * MiB
        self.part_size = opts.s3_store_large_object_chunk_size * MiB
        self.threads = opts.s3_store_thread_pools
        self.limits = dataclasses.replace(S3_LIMITS, max_parts=opts.s3_store_max_parts)
        self._active: set[str] = set()  # upload ids this process is writing
        self._active_lock = threading.Lock()
        self._bucket_ready = False
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=opts.s3_store_access_key,
            aws_secret_access_key=opts.s3_store_secret_key,
            verify=(opts.s3_store_cacert or True) if opts.s3_store_verify else False,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": opts.s3_store_bucket_url_format},
                # NOTE(ims): newer botocore sends CRC32 trailers over https,
                # which several S3 implementations (Swift s3api) reject.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
                connect_timeout=CONNECT_TIMEOUT,
                read_timeout=READ_TIMEOUT,
                # One connection per part in flight, for a few concurrent uploads.
                max_pool_connections=max(10, 4 * self.threads),
            ),
        )
        try:
            self._check_bucket()
        except errors.IMSError as ex:
            raise errors.ConfigError(reason=f"[{self.store_id}] {ex}") from ex

    # -- errors --------------------------------------------------------------

    @contextlib.contextmanager
    def _mapped(self, location: str | None = None, source: ChunkReader | None = None):
        """Translate S3 client errors into ims.errors, once, at the boundary.

        ``location`` turns "not found" into DataNotFound. When the caller's
        input (``source``) failed, its own exception wins over whatever the
        client made of the broken upload.
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
        if not isinstance(ex, ClientError):
            return errors.StoreUnavailable(store=self.store_id, reason=str(ex) or repr(ex))
        code = str(ex.response.get("Error", {}).get("Code", ""))
        status = str(ex.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in _NOT_FOUND or status == "404":
            if location is not None:
                return errors.DataNotFound(location=location)
            return errors.StoreUnavailable(
                store=self.store_id, reason=f"{code or status} in bucket {self.bucket}"
            )
        if code in _FULL or status in _FULL:
            return errors.StorageFull(store=self.store_id)
        if code in _DENIED or status in _DENIED:
            return errors.StoreUnavailable(store=self.store_id, reason=f"access denied ({code})")
        message = ex.response.get("Error", {}).get("Message", "")
        return errors.StoreUnavailable(store=self.store_id, reason=f"{code or status} {message}")

    # -- locations -----------------------------------------------------------

    def url_prefix(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _key(self, url: str) -> str:
        parts = urlsplit(url)
        key = parts.path.lstrip("/")
        # APPSEC(ims): only keys of this store, never another bucket or prefix.
        if (
            parts.scheme != "s3"
            or parts.netloc != self.bucket
            or not key.startswith(self.prefix)
            or "/" in key[len(self.prefix) :]
            or key == self.prefix
        ):
            raise errors.DataNotFound(location=url)
        return key

    # -- bucket --------------------------------------------------------------

    def _check_bucket(self) -> None:
        with self._mapped():
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as ex:
                status = ex.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status != 404:
                    raise
                if not self.create_bucket:
                    raise errors.StoreUnavailable(
                        store=self.store_id, reason=f"bucket {self.bucket} does not exist"
                    ) from None
                return
        self._bucket_ready = True

    def _ensure_bucket(self) -> None:
        if self._bucket_ready or not self.create_bucket:
            return
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self.client.create_bucket(**kwargs)
        except ClientError as ex:
            code = ex.response.get("Error", {}).get("Code")
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        self._bucket_ready = True

    # -- writes --------------------------------------------------------------

    def add(
        self,
        image_id: str,
        chunks: Iterable[bytes],
        size_hint: int | None = None,
        owner: str | None = None,
    ) -> StoredObject:
        key = f"{self.prefix}{image_id}"
        size = self._put_key(key, chunks, size_hint, f"Image data for {image_id}")
        return StoredObject(url=self._url(key), size=size)

    def _put_key(self, key: str, chunks: Iterable[bytes], size_hint: int | None, what: str) -> int:
        reader = ChunkReader(chunks)
        with self._mapped(source=reader):
            self._ensure_bucket()
            if self._exists(key):
                raise errors.Duplicate(what=what)
            if size_hint is not None and size_hint >= self.large_object_size:
                multipart = True
            else:
                # Known small size: hold it for one PUT. Unknown size: hold one
                # part at most, so memory stays within the multipart bound.
                limit = self.large_object_size if size_hint is not None else self.part_size
                multipart = reader.peek(limit) >= limit
            if multipart:
                self._add_multipart(key, reader, size_hint)
            else:
                # Copied chunk by chunk, each let go once copied: held once, not twice.
                body = bytearray(reader.peek(limit))
                reader.readinto(body)
                self.client.put_object(Bucket=self.bucket, Key=key, Body=body)
        return reader.consumed

    def _exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as ex:
            if ex.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise
        return True

    def _add_multipart(self, key: str, reader: ChunkReader, size_hint: int | None) -> None:
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        # The abort is armed from the moment the upload exists.
        with self._active_lock:
            self._active.add(upload_id)
        try:

            def send(number: int, data: bytearray) -> dict[str, Any]:
                resp = self.client.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
                )
                return {"PartNumber": number, "ETag": resp["ETag"]}

            parts = upload_parts(
                reader,
                self.limits.planner(self.part_size, size_hint),
                send,
                self.threads,
                self.limits.max_parts,
                lambda: errors.StorageFull(store=self.store_id),
            )
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            self._abort_quietly(key, upload_id)
            raise
        finally:
            with self._active_lock:
                self._active.discard(upload_id)

    def _abort_quietly(self, key: str, upload_id: str) -> bool:
        """Abort an upload; on failure log it and leave it to ``cleanup``."""
        try:
            with self._mapped():
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except errors.IMSError as ex:
            LOG.warning("Could not abort upload %s of %s (cleanup will): %s", upload_id, key, ex)
            return False
        return True

    def _uploads(self, prefix: str) -> Iterator[tuple[str, str]]:
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        for page in pages:
            for upload in page.get("Uploads", []):
                yield upload["Key"], upload["UploadId"]

    # -- reads ---------------------------------------------------------------

    def get(self, url: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        return self._get_key(self._key(url), url, offset, length)

    def _get_key(self, key: str, url: str, offset: int, length: int | None) -> Iterator[bytes]:
        if length == 0:
            self._size_key(key, url)
            return iter(())
        if length is None or length > READ_RANGE:
            total = self._size_key(key, url)
            stop = total if length is None else min(total, offset + length)
            if stop - offset > READ_RANGE:
                return self._read_ranges(key, url, offset, stop)
        kwargs: dict[str, Any] = {}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            kwargs["Range"] = f"bytes={offset}-{end}"
        with self._mapped(url):
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=key, **kwargs)["Body"]
            except ClientError as ex:
                # Reading past the end yields nothing, as a file would.
                if ex.response.get("Error", {}).get("Code") != "InvalidRange":
                    raise
                return iter(())
        return self._stream(body, url)

    def _read_ranges(self, key: str, url: str, start: int, stop: int) -> Iterator[bytes]:
        def fetch(first: int, end: int) -> bytes:
            with self._mapped(url):
                body = self.client.get_object(
                    Bucket=self.bucket, Key=key, Range=f"bytes={first}-{end - 1}"
                )["Body"]
                with contextlib.closing(body):
                    return body.read()

        return read_ranges(
            fetch, start, stop, READ_RANGE, self.threads, functools.partial(self._short, url)
        )

    def _stream(self, body: Any, url: str) -> Iterator[bytes]:
        with self._mapped(url):
            try:
                yield from body.iter_chunks(READ_CHUNK)
            finally:
                body.close()

    def get_size(self, url: str) -> int:
        return self._size_key(self._key(url), url)

    def _size_key(self, key: str, url: str) -> int:
        with self._mapped(url):
            return self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]

    # -- removal -------------------------------------------------------------

    def delete(self, url: str) -> None:
        self._delete_key(self._key(url), url)

    def _delete_key(self, key: str, url: str) -> None:
        with self._mapped(url):
            aborted = False
            for upload_key, upload_id in self._uploads(key):
                if upload_key == key:
                    aborted = self._abort_quietly(key, upload_id) or aborted
            try:
                self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as ex:
                status = ex.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if aborted and status == 404:
                    return  # only an unfinished upload was there
                raise
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def cleanup(self) -> int:
        """Abort the multipart uploads under this store's prefix left by dead writers.

        Uploads this process is still writing are spared; run it when no other
        process writes to the same bucket and prefix (for example at start-up).
        """
        aborted = 0
        with self._mapped():
            for key, upload_id in list(self._uploads(self.prefix)):
                with self._active_lock:
                    if upload_id in self._active:
                        continue
                if self._abort_quietly(key, upload_id):
                    aborted += 1
        return aborted

    def discard_partial(self, image_id: str, owner: str | None = None) -> int:
        """Abort the multipart uploads of ``image_id`` other writers left open."""
        key = self._key(self.url_prefix() + image_id)
        aborted = 0
        with self._mapped():
            for upload_key, upload_id in list(self._uploads(key)):
                with self._active_lock:
                    if upload_key != key or upload_id in self._active:
                        continue
                if self._abort_quietly(key, upload_id):
                    aborted += 1
        return aborted

    def describe(self) -> dict[str, object]:
        return {
            "endpoint": self.endpoint,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "large_object_size": self.large_object_size,
            "large_object_chunk_size": self.part_size,
        }

    def open_bucket(self, bucket: str) -> ObjectBucket:
        """Another bucket on the same endpoint, through the same client and keys."""
        if bucket == self.bucket:
            raise errors.Forbidden(f"Bucket {bucket} holds the images of store {self.store_id}")
        view = copy.copy(self)  # shares the client and the upload bookkeeping
        view.bucket = bucket
        view.prefix = ""
        view.create_bucket = False
        view._bucket_ready = True
        return _S3Bucket(view)


class _S3Bucket(ObjectBucket):
    """Keys of one bucket, named by users (folders are ``/`` in the key)."""

    def __init__(self, view: S3Store) -> None:
        super().__init__(view.bucket)
        self.view = view

    def size(self, name: str) -> int:
        return self.view._size_key(name, f"{self.bucket}:{name}")

    def get(self, name: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        return self.view._get_key(name, f"{self.bucket}:{name}", offset, length)

    def put(self, name: str, chunks: Iterable[bytes], size_hint: int | None = None) -> int:
        return self.view._put_key(name, chunks, size_hint, f"Object {self.bucket}:{name}")

    def delete(self, name: str) -> None:
        self.view._delete_key(name, f"{self.bucket}:{name}")
