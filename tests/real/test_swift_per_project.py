"""Swift with a container per project, against a real Swift."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest
import swiftclient

from ims import errors
from ims.drivers.stores.swift import SwiftStore
from tests.real import store_backends as backends
from tests.real.store_backends import LARGE, MiB, chunked
from tests.real.swift_server import SwiftServer

pytestmark = pytest.mark.real


def per_project_store(server: SwiftServer, container: str, on: bool = True) -> SwiftStore:
    options = backends.swift_options(
        server, container, swift_store_container_per_project=on, **LARGE["swift"]
    )
    # The base container need not exist: per-project containers are made on demand.
    options["swift_store_create_container_on_put"] = False
    store = backends.build(SwiftStore, "swift", options)
    assert isinstance(store, SwiftStore)
    return store


def names(conn: swiftclient.Connection, container: str) -> list[str]:
    return sorted(backends.container_names(conn, container))


@pytest.fixture
def base() -> str:
    return f"ims-{uuid.uuid4().hex[:12]}"


def test_each_project_gets_its_own_container(swift_up: SwiftServer, base: str) -> None:
    store = per_project_store(swift_up, base)
    conn = backends.swift_connection(swift_up)
    alice, bob = uuid.uuid4().hex, uuid.uuid4().hex
    small, large = os.urandom(1000), os.urandom(11 * MiB)
    ids = {name: str(uuid.uuid4()) for name in ("a-small", "a-large", "b-small", "internal")}

    stored = {
        "a-small": store.add(ids["a-small"], [small], len(small), owner=alice),
        "a-large": store.add(ids["a-large"], chunked(large), None, owner=alice),
        "b-small": store.add(ids["b-small"], [small], len(small), owner=bob),
        "internal": store.add(ids["internal"], [small], len(small)),
    }

    assert stored["a-small"].url == f"swift://{base}_{alice}/{ids['a-small']}"
    assert store.url_for(ids["a-large"], alice) == stored["a-large"].url
    assert names(conn, f"{base}_{alice}") == sorted([ids["a-small"], ids["a-large"]])
    assert len(names(conn, f"{base}_{alice}_segments")) == 3
    assert names(conn, f"{base}_{bob}") == [ids["b-small"]]
    assert names(conn, base) == [ids["internal"]]
    assert b"".join(store.get(stored["a-large"].url)) == large
    assert b"".join(store.get(stored["a-large"].url, 5 * MiB, 10)) == large[5 * MiB : 5 * MiB + 10]
    assert store.get_size(stored["b-small"].url) == len(small)

    for obj in stored.values():
        store.delete(obj.url)
    for container in (base, f"{base}_{alice}", f"{base}_{alice}_segments", f"{base}_{bob}"):
        assert names(conn, container) == []


def test_images_stay_readable_when_the_option_changes(swift_up: SwiftServer, base: str) -> None:
    project = uuid.uuid4().hex
    data = os.urandom(4096)
    per_project = per_project_store(swift_up, base)
    theirs = per_project.add(str(uuid.uuid4()), [data], len(data), owner=project)
    shared = backends.build(
        SwiftStore, "swift", backends.swift_options(swift_up, base, **LARGE["swift"])
    )
    assert isinstance(shared, SwiftStore)
    ours = shared.add(str(uuid.uuid4()), [data], len(data), owner=project)
    assert ours.url.startswith(f"swift://{base}/")

    for store in (shared, per_project):
        for obj in (theirs, ours):
            assert store.owns(obj.url)
            assert b"".join(store.get(obj.url)) == data
    shared.delete(theirs.url)
    per_project.delete(ours.url)
    with pytest.raises(errors.DataNotFound):
        per_project.get_size(theirs.url)


@pytest.mark.parametrize("project", ["under_score", "segments", "a/b", "x" * 200, "ünï"])
def test_unusual_project_ids_are_hashed(swift_up: SwiftServer, base: str, project: str) -> None:
    store = per_project_store(swift_up, base)
    stored = store.add(str(uuid.uuid4()), [b"data"], 4, owner=project)
    digest = hashlib.sha256(project.encode()).hexdigest()[:40]
    assert stored.url.startswith(f"swift://{base}_~{digest}/")
    assert b"".join(store.get(stored.url)) == b"data"
    store.delete(stored.url)


def test_foreign_containers_are_not_this_stores(swift_up: SwiftServer, base: str) -> None:
    store = per_project_store(swift_up, base)
    project = uuid.uuid4().hex
    stored = store.add(str(uuid.uuid4()), [b"data"], 4, owner=project)
    image_id = stored.url.rsplit("/", 1)[1]
    for url in (
        f"swift://{base}_{project}_segments/{image_id}",
        f"swift://other_{project}/{image_id}",
        f"swift://{base}x_{project}/{image_id}",
        f"swift://{base}_a_b/{image_id}",
    ):
        assert not store.owns(url)
        with pytest.raises(errors.DataNotFound):
            store.get_size(url)
    for bucket in (base, f"{base}_{project}", f"{base}_{project}_segments"):
        with pytest.raises(errors.Forbidden):
            store.open_bucket(bucket)
    store.delete(stored.url)


def test_cleanup_and_discard_reach_project_containers(swift_up: SwiftServer, base: str) -> None:
    store = per_project_store(swift_up, base)
    conn = backends.swift_connection(swift_up)
    alice, bob = uuid.uuid4().hex, uuid.uuid4().hex
    # A finished large image of alice's: its segments are claimed and stay.
    kept = store.add(str(uuid.uuid4()), chunked(os.urandom(11 * MiB)), None, owner=alice)
    claimed = names(conn, f"{base}_{alice}_segments")

    def orphan(project: str, image_id: str) -> str:
        """Segments a killed writer left behind (no manifest claims them)."""
        segments = f"{base}_{project}_segments"
        conn.put_container(segments)
        token = uuid.uuid4().hex
        for number in range(2):
            conn.put_object(segments, f"{image_id}/{token}/{number:08d}", b"x" * 100)
        return token

    dead_a, dead_b, dead_c = (str(uuid.uuid4()) for _ in range(3))
    orphan(alice, dead_a)
    orphan(bob, dead_b)
    orphan(bob, dead_c)

    assert store.discard_partial(dead_b, bob) == 1
    assert [n.split("/")[0] for n in names(conn, f"{base}_{bob}_segments")] == [dead_c] * 2
    # Whatever the option says now, cleanup looks in every project's container.
    plain = backends.build(SwiftStore, "swift", backends.swift_options(swift_up, base))
    assert plain.cleanup() == 2
    assert names(conn, f"{base}_{alice}_segments") == claimed
    assert names(conn, f"{base}_{bob}_segments") == []
    store.delete(kept.url)
    assert names(conn, f"{base}_{alice}_segments") == []


def test_describe_says_per_project(swift_up: SwiftServer, base: str) -> None:
    assert per_project_store(swift_up, base).describe()["container_per_project"] is True


def test_a_base_name_without_room_for_project_ids_is_refused(swift_up: SwiftServer) -> None:
    with pytest.raises(errors.ConfigError, match="too long"):
        per_project_store(swift_up, "c" * 119)


def test_a_base_container_named_like_segments_still_works(swift_up: SwiftServer) -> None:
    base = f"ims-{uuid.uuid4().hex[:8]}_segments"
    store = per_project_store(swift_up, base)
    project = uuid.uuid4().hex
    for owner in (None, project):
        stored = store.add(str(uuid.uuid4()), [b"data"], 4, owner=owner)
        assert b"".join(store.get(stored.url)) == b"data"
        store.delete(stored.url)
    assert not store.owns(f"swift://{base}_{project}_segments/{uuid.uuid4()}")
