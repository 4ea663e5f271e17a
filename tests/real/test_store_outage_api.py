"""The store's server dies during an upload through the Image API.

A real ims-api with an S3 store (Swift's s3api) and a Swift store, both on
the loopback Swift. The client sends 40 MiB with Content-Length; once 12 MiB
are out, the Swift proxy is killed. The client gets a clear 503 (never a
500), the image is back to queued, and once the proxy is back and
``ims-manage store cleanup`` has run, nothing of the upload is left in the
backend (read with the backends' own clients).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.functional.servers import IMSServer, clean_env
from tests.real import store_backends as backends
from tests.real.store_backends import MiB
from tests.real.swift_server import SwiftServer

pytestmark = pytest.mark.real

TOTAL = 40 * MiB
KILL_AT = 12 * MiB
HEADERS = {"X-Project-Id": "p1", "X-User-Id": "u1", "X-Roles": "member"}


@pytest.fixture(scope="module")
def ims(
    swift_server: SwiftServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[IMSServer]:
    tag = uuid.uuid4().hex[:8]  # s3api buckets are containers: the names must differ
    swift_server.ensure_proxy()
    s3 = {**backends.s3_options(swift_server, f"out-s3-{tag}"), **backends.LARGE["s3"]}
    swift = {**backends.swift_options(swift_server, f"out-swift-{tag}"), **backends.LARGE["swift"]}
    server = IMSServer(
        tmp_path_factory.mktemp("ims-outage"),
        extra_conf={
            "DEFAULT": {"enabled_backends": "s3:s3, swift:swift"},
            "glance_store": {"default_backend": "swift"},
            "s3": {key: str(value) for key, value in s3.items()},
            "swift": {key: str(value) for key, value in swift.items()},
        },
    ).start()
    try:
        yield server
    finally:
        server.stop()


def leftovers(ims: IMSServer, server: SwiftServer, kind: str) -> list[str]:
    """What the backend holds for this store, read with its own client."""
    conn = backends.swift_connection(server)
    if kind == "swift":
        container = ims.conf["swift"]["swift_store_container"]
        return [
            *backends.container_names(conn, container),
            *backends.container_names(conn, f"{container}_segments"),
        ]
    bucket = ims.conf["s3"]["s3_store_bucket"]
    uploads = backends.s3_client(server).list_multipart_uploads(Bucket=bucket)
    return [
        *backends.container_names(conn, bucket),
        *backends.container_names(conn, f"{bucket}+segments"),
        *(upload["Key"] for upload in uploads.get("Uploads", [])),
    ]


def upload_while_killing(ims: IMSServer, server: SwiftServer, image_id: str, kind: str) -> Any:
    """PUT the file, killing the proxy on the way; return (status, parsed body)."""
    sock = socket.create_connection(("127.0.0.1", ims.port), timeout=120)
    head = (
        f"PUT /v2/images/{image_id}/file HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {TOTAL}\r\n"
        f"X-Image-Meta-Store: {kind}\r\n"
        + "".join(f"{key}: {value}\r\n" for key, value in HEADERS.items())
        + "\r\n"
    ).encode()
    piece = os.urandom(MiB)

    def send() -> None:
        try:
            sock.sendall(head)
            for sent in range(0, TOTAL, MiB):
                if sent == KILL_AT:
                    server.stop_proxy()
                sock.sendall(piece)
        except OSError:
            pass  # IMS answered early and stopped reading: that is allowed

    sender = threading.Thread(target=send)
    sender.start()
    try:
        resp = http.client.HTTPResponse(sock, method="PUT")
        resp.begin()
        body = resp.read()
    finally:
        sender.join()
        sock.close()
    return resp.status, json.loads(body) if body else None


@pytest.mark.parametrize("kind", backends.OBJECT_DRIVERS)
def test_store_dies_during_upload(ims: IMSServer, swift_up: SwiftServer, kind: str) -> None:
    resp = requests.post(
        f"{ims.url}/v2/images",
        json={"name": "outage", "disk_format": "raw", "container_format": "bare"},
        headers=HEADERS,
        timeout=30,
    )
    assert resp.status_code == 201, resp.text
    image_id = resp.json()["id"]

    status, body = upload_while_killing(ims, swift_up, image_id, kind)
    assert status == 503, body
    image = requests.get(f"{ims.url}/v2/images/{image_id}", headers=HEADERS, timeout=30).json()
    assert image["status"] == "queued"
    assert image.get("stores") is None and image["size"] is None

    swift_up.start_proxy()
    result = subprocess.run(
        [sys.executable, "-m", "ims.cmd.manage", "--config-file", str(ims.conf_path)]
        + ["store", "cleanup"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert leftovers(ims, swift_up, kind) == []

    # The store works again: the same image uploads and becomes active.
    data = os.urandom(6 * MiB)
    resp = requests.put(
        f"{ims.url}/v2/images/{image_id}/file",
        data=data,
        headers={
            **HEADERS,
            "Content-Type": "application/octet-stream",
            "X-Image-Meta-Store": kind,
        },
        timeout=120,
    )
    assert resp.status_code == 204, resp.text
    image = requests.get(f"{ims.url}/v2/images/{image_id}", headers=HEADERS, timeout=30).json()
    assert image["status"] == "active" and image["stores"] == kind
