"""S3 and Swift store configuration: checked at start-up, secrets kept secret."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from oslo_config import cfg

from ims import errors
from ims.drivers.stores.base import Store
from ims.drivers.stores.s3 import S3Store
from ims.drivers.stores.swift import SwiftStore


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build(cls: type[Store], **options: Any) -> Store:
    conf = cfg.ConfigOpts()
    conf.register_opts(cls.OPTS, group="obj")
    conf([])
    for name, value in options.items():
        conf.set_override(name, value, group="obj")
    return cls(conf, "obj")


S3_OK = {
    "s3_store_host": "http://127.0.0.1:1",
    "s3_store_access_key": "key",
    "s3_store_secret_key": "s3cr3t",
    "s3_store_bucket": "images",
}
SWIFT_OK = {
    "swift_store_auth_version": "3",
    "swift_store_auth_address": "http://127.0.0.1:1/v3",
    "swift_store_user": "glance",
    "swift_store_key": "s3cr3t",
    "swift_store_project_name": "service",
}


@pytest.mark.parametrize("missing", sorted(S3_OK))
def test_s3_requires(missing: str) -> None:
    options = {**S3_OK, missing: None}
    with pytest.raises(errors.ConfigError, match=missing):
        build(S3Store, **options).configure()


@pytest.mark.parametrize("missing", sorted(SWIFT_OK))
def test_swift_requires(missing: str) -> None:
    options = {**SWIFT_OK, missing: None}
    with pytest.raises(errors.ConfigError):
        build(SwiftStore, **options).configure()


def test_secrets_are_marked_secret() -> None:
    secret = {opt.name for cls in (S3Store, SwiftStore) for opt in cls.OPTS if opt.secret}
    assert secret == {"s3_store_secret_key", "swift_store_key"}


def test_every_option_has_help() -> None:
    for cls in (S3Store, SwiftStore):
        assert all(opt.help for opt in cls.OPTS), cls


def test_s3_part_size_has_the_service_minimum() -> None:
    with pytest.raises(ValueError):
        build(S3Store, **S3_OK, s3_store_large_object_chunk_size=4)


def test_s3_unreachable_endpoint_stops_startup() -> None:
    store = build(S3Store, **{**S3_OK, "s3_store_host": f"http://127.0.0.1:{closed_port()}"})
    with pytest.raises(errors.ConfigError) as info:
        store.configure()
    assert "s3cr3t" not in str(info.value)


def test_swift_keystone_unreachable_stops_startup() -> None:
    address = f"http://127.0.0.1:{closed_port()}/v3"
    store = build(SwiftStore, **{**SWIFT_OK, "swift_store_auth_address": address})
    with pytest.raises(errors.ConfigError) as info:
        store.configure()
    assert "s3cr3t" not in str(info.value)
    assert isinstance(info.value.__cause__, errors.StoreUnavailable)


def test_swift_tempauth_unreachable_stops_startup() -> None:
    store = build(
        SwiftStore,
        swift_store_auth_version="1",
        swift_store_auth_address=f"http://127.0.0.1:{closed_port()}/auth/v1.0",
        swift_store_user="test:tester",
        swift_store_key="s3cr3t",
    )
    with pytest.raises(errors.ConfigError) as info:
        store.configure()
    assert "s3cr3t" not in str(info.value)
