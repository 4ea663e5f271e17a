"""The Swift store logging in with Keystone v3, against a real Keystone and a real Swift.

The Swift proxy here validates tokens with keystonemiddleware (authtoken +
keystoneauth), and the store finds it in Keystone's catalog, as in a cloud.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import swiftclient

from ims import errors
from ims.drivers.stores.swift import SwiftStore
from tests.functional.servers import REGION, KeystoneServer
from tests.real import store_backends as backends
from tests.real.store_backends import LARGE, MiB, chunked
from tests.real.swift_server import SwiftServer, missing_keystone_middleware

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def keystone_swift(keystone: KeystoneServer, swift_server: SwiftServer) -> Iterator[str]:
    """The Keystone proxy's base URL, registered as the catalog's object-store."""
    reason = missing_keystone_middleware()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    service = keystone.users["service"]
    base = swift_server.start_keystone_proxy(
        keystone.auth_url,
        {
            "username": service.username,
            "password": service.password,
            "project_name": service.project_name,
        },
    )
    keystone.set_endpoint("object-store", "swift", f"{base}/v1/AUTH_%(tenant_id)s")
    yield base


def v3_store(keystone: KeystoneServer, user: str, container: str, **extra: Any) -> SwiftStore:
    creds = keystone.users[user]
    options = {
        "swift_store_auth_version": "3",
        "swift_store_auth_address": keystone.auth_url,
        "swift_store_user": creds.username,
        "swift_store_key": creds.password,
        "swift_store_project_name": creds.project_name,
        "swift_store_region": REGION,
        "swift_store_container": container,
        "swift_store_create_container_on_put": True,
        **extra,
    }
    store = backends.build(SwiftStore, "swift", options)
    assert isinstance(store, SwiftStore)
    return store


def test_v3_store_round_trip(keystone: KeystoneServer, keystone_swift: str) -> None:
    demo = keystone.users["demo"]
    container = f"ims-{uuid.uuid4().hex[:12]}"
    store = v3_store(keystone, "demo", container, **LARGE["swift"])
    small, large = os.urandom(100_000), os.urandom(11 * MiB)
    one = store.add(str(uuid.uuid4()), [small], len(small))
    slo = store.add(str(uuid.uuid4()), chunked(large), None)
    assert b"".join(store.get(one.url)) == small
    assert b"".join(store.get(slo.url, 6 * MiB, 100)) == large[6 * MiB : 6 * MiB + 100]
    assert store.get_size(slo.url) == len(large)

    # The objects are in the demo project's own account, seen with a demo token.
    own = swiftclient.Connection(
        preauthurl=f"{keystone_swift}/v1/AUTH_{demo.project_id}",
        preauthtoken=keystone.token(demo),
        retries=0,
    )
    _, listing = own.get_container(container)
    assert sorted(entry["name"] for entry in listing) == sorted(
        [one.url.rsplit("/", 1)[1], slo.url.rsplit("/", 1)[1]]
    )
    for stored in (one, slo):
        store.delete(stored.url)
    assert own.get_container(container)[1] == []
    assert own.get_container(f"{container}_segments")[1] == []


def test_v3_reader_cannot_use_a_store(keystone: KeystoneServer, keystone_swift: str) -> None:
    # keystoneauth only lets operator roles (admin, member) into an account.
    with pytest.raises(errors.ConfigError, match="access denied"):
        v3_store(keystone, "reader", f"ims-{uuid.uuid4().hex[:12]}")


def test_v3_wrong_password(keystone: KeystoneServer, keystone_swift: str) -> None:
    creds = keystone.users["demo"]
    with pytest.raises(errors.ConfigError, match="access denied"):
        backends.build(
            SwiftStore,
            "swift",
            {
                "swift_store_auth_version": "3",
                "swift_store_auth_address": keystone.auth_url,
                "swift_store_user": creds.username,
                "swift_store_key": "wrong",
                "swift_store_project_name": creds.project_name,
                "swift_store_container": "any",
            },
        )
