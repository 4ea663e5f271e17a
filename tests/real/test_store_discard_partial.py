"""Store.discard_partial: a dead writer's unfinished upload of one image goes, nothing else.

Jobs call it before writing an image again (ims.core.imaging, ims.core.imports).
The dead writer is played by the backend's own client: a partial file, an
open S3 multipart upload with a part in it, Swift segments no manifest claims.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from ims.drivers.stores.base import Store
from ims.drivers.stores.filesystem import FilesystemStore
from ims.drivers.stores.s3 import S3Store
from ims.drivers.stores.swift import SwiftStore
from tests.real import store_backends as backends
from tests.real.store_backends import LARGE, MiB, chunked, contents

pytestmark = pytest.mark.real


@pytest.fixture(params=backends.DRIVERS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def server(kind: str, request: pytest.FixtureRequest) -> Any:
    return None if kind == "filesystem" else request.getfixturevalue("swift_up")


def die_mid_upload(store: Store, server: Any, image_id: str) -> None:
    """Leave what a writer of ``image_id`` killed mid-upload leaves."""
    if isinstance(store, FilesystemStore):
        path = os.path.join(store.datadir, f".partial-{image_id}-{uuid.uuid4().hex}")
        with open(path, "wb") as out:
            out.write(os.urandom(MiB))
    elif isinstance(store, S3Store):
        client = backends.s3_client(server)
        key = store.prefix + image_id
        upload = client.create_multipart_upload(Bucket=store.bucket, Key=key)
        client.upload_part(
            Bucket=store.bucket,
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=1,
            Body=os.urandom(5 * MiB),
        )
    elif isinstance(store, SwiftStore):
        conn = backends.swift_connection(server)
        token = uuid.uuid4().hex
        for number in (1, 2):
            conn.put_object(store.segments, f"{image_id}/{token}/{number:08d}", os.urandom(MiB))
    else:  # pragma: no cover - a new driver needs its own dead writer here
        raise TypeError(store)


def test_discard_partial_removes_only_the_dead_upload(
    kind: str, server: Any, tmp_path: Path
) -> None:
    store = backends.make_store(kind, server, tmp_path, **LARGE[kind])
    data = os.urandom(12 * MiB)
    mine, other = str(uuid.uuid4()), str(uuid.uuid4())
    # Finished large objects, of this image and of another: they stay.
    done = store.add(mine, chunked(data), len(data))
    store.add(other, chunked(data), len(data))
    before = contents(store, server)

    die_mid_upload(store, server, mine)
    die_mid_upload(store, server, other)
    assert contents(store, server) != before
    assert store.discard_partial(mine) == 1
    assert store.discard_partial(mine) == 0
    assert store.discard_partial(str(uuid.uuid4())) == 0

    assert b"".join(store.get(done.url)) == data
    # Only the other image's dead upload is left beside the finished objects.
    assert store.discard_partial(other) == 1
    assert contents(store, server) == before
