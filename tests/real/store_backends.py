"""Build configured stores for the real-server tests and look inside their backends."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import boto3
import swiftclient
from botocore.config import Config
from oslo_config import cfg

from ims.drivers.stores.base import Store
from ims.drivers.stores.filesystem import FilesystemStore
from ims.drivers.stores.s3 import S3Store
from ims.drivers.stores.swift import SwiftStore
from tests.real.swift_server import SwiftServer

DRIVERS = ("filesystem", "s3", "swift")
OBJECT_DRIVERS = ("s3", "swift")
MiB = 1024 * 1024


def build(cls: type[Store], store_id: str, options: dict[str, Any]) -> Store:
    """Register ``cls.OPTS`` under ``store_id``, set ``options`` and configure."""
    conf = cfg.ConfigOpts()
    conf.register_opts(cls.OPTS, group=store_id)
    conf([])
    for name, value in options.items():
        conf.set_override(name, value, group=store_id)
    store = cls(conf, store_id)
    store.configure()
    return store


def s3_options(server: SwiftServer, bucket: str, **extra: Any) -> dict[str, Any]:
    return {
        "s3_store_host": server.endpoint,
        "s3_store_access_key": server.user,
        "s3_store_secret_key": server.key,
        "s3_store_region_name": server.region,
        "s3_store_bucket": bucket,
        "s3_store_bucket_url_format": "path",
        "s3_store_create_bucket_on_put": True,
        **extra,
    }


def swift_options(server: SwiftServer, container: str, **extra: Any) -> dict[str, Any]:
    return {
        "swift_store_auth_version": "1",
        "swift_store_auth_address": server.auth_url,
        "swift_store_user": server.user,
        "swift_store_key": server.key,
        "swift_store_container": container,
        "swift_store_create_container_on_put": True,
        **extra,
    }


# Names shared by the tests: a small "large object" setting per driver, so that
# a 12 MiB image really goes multipart / SLO in 5 MiB pieces.
LARGE = {
    "filesystem": {},
    "s3": {
        "s3_store_large_object_size": 5,
        "s3_store_large_object_chunk_size": 5,
        "s3_store_thread_pools": 2,
    },
    "swift": {
        "swift_store_large_object_size": 5,
        "swift_store_large_object_chunk_size": 5,
        "swift_store_thread_pools": 2,
    },
}


def make_store(kind: str, server: SwiftServer | None, tmp_path: Path, **extra: Any) -> Store:
    """Return a configured store of ``kind`` in a fresh directory/bucket/container."""
    name = f"ims-{uuid.uuid4().hex[:12]}"
    if kind == "filesystem":
        options = {"filesystem_store_datadir": str(tmp_path / name), **extra}
        return build(FilesystemStore, "fs", options)
    assert server is not None
    if kind == "s3":
        return build(S3Store, "s3", s3_options(server, name, **extra))
    if kind == "swift":
        return build(SwiftStore, "swift", swift_options(server, name, **extra))
    raise ValueError(kind)


def swift_connection(server: SwiftServer) -> swiftclient.Connection:
    return swiftclient.Connection(
        authurl=server.auth_url, user=server.user, key=server.key, retries=0
    )


def s3_client(server: SwiftServer) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.user,
        aws_secret_access_key=server.key,
        region_name=server.region,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def container_names(conn: swiftclient.Connection, container: str) -> list[str]:
    try:
        _, listing = conn.get_container(container, full_listing=True)
    except swiftclient.ClientException as ex:
        if ex.http_status == 404:
            return []
        raise
    return [entry["name"] for entry in listing]


def contents(store: Store, server: SwiftServer | None) -> list[str]:
    """Everything in the store's backend: objects, segments, open uploads, temp files.

    Read with the services' own clients, not through the driver.
    """
    if isinstance(store, FilesystemStore):
        return sorted(os.listdir(store.datadir))
    assert server is not None
    conn = swift_connection(server)
    if isinstance(store, S3Store):
        client = s3_client(server)
        found = [f"object:{name}" for name in container_names(conn, store.bucket)]
        # s3api keeps multipart parts in "<bucket>+segments".
        found += [f"part:{n}" for n in container_names(conn, f"{store.bucket}+segments")]
        try:
            uploads = client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
        except client.exceptions.NoSuchBucket:
            uploads = []
        found += [f"upload:{u['Key']}" for u in uploads]
        return sorted(found)
    if isinstance(store, SwiftStore):
        found = [f"object:{name}" for name in container_names(conn, store.container)]
        found += [f"segment:{name}" for name in container_names(conn, store.segments)]
        return sorted(found)
    raise TypeError(store)


def chunked(data: bytes, size: int = 1024 * 1024) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]
