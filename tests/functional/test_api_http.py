"""Plain HTTP against a real ims-api under gunicorn (noauth): edges and bad input.

Nothing here runs in-process: requests and raw sockets go through gunicorn,
so chunked bodies, Content-Length, disconnects and header handling are the
server's real ones. Bad input must give a 4xx, never a 500.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.functional.servers import IMSServer

PATCH_V21 = "application/openstack-images-v2.1-json-patch"
PATCH_V20 = "application/openstack-images-v2.0-json-patch"
OCTET = "application/octet-stream"
REQUEST_ID = re.compile(r"^req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MiB = 1024 * 1024


def identity(project: str = "p1", roles: str = "member") -> dict[str, str]:
    """noauth identity headers."""
    return {"X-Project-Id": project, "X-User-Id": f"user-{project}", "X-Roles": roles}


class Api:
    """requests against one server, as one noauth identity."""

    def __init__(self, server: IMSServer, project: str = "p1", roles: str = "member") -> None:
        self.server = server
        self.url = server.url
        self.session = requests.Session()
        self.session.headers.update(identity(project, roles))
        self.session.headers["Accept"] = "application/json"

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        resp = self.session.request(method, self.url + path, timeout=60, **kw)
        assert REQUEST_ID.match(resp.headers.get("x-openstack-request-id", "")), (
            method,
            path,
            dict(resp.headers),
        )
        assert resp.status_code < 500, (method, path, resp.status_code, resp.text)
        return resp

    def as_(self, project: str, roles: str = "member") -> Api:
        """The same server, another identity."""
        return Api(self.server, project, roles)

    def create(self, **body: Any) -> dict[str, Any]:
        body.setdefault("disk_format", "raw")
        body.setdefault("container_format", "bare")
        resp = self.request("POST", "/v2/images", json=body)
        assert resp.status_code == 201, resp.text
        return resp.json()

    def show(self, image_id: str) -> dict[str, Any]:
        resp = self.request("GET", f"/v2/images/{image_id}")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def upload(self, image_id: str, data: Any, **headers: str) -> requests.Response:
        """PUT image data.

        Pass ``Connection="close"`` when the upload is expected to be refused
        before its body is read: gunicorn answers keep-alive, then drops the
        connection when over 64 KiB of body are left unread, and a client that
        reuses it at once gets "connection aborted".
        """
        return self.request(
            "PUT",
            f"/v2/images/{image_id}/file",
            data=data,
            headers={"Content-Type": OCTET, **headers},
        )


@pytest.fixture(scope="module")
def server(ims_noauth: IMSServer) -> IMSServer:
    return ims_noauth


@pytest.fixture
def api(server: IMSServer) -> Api:
    return Api(server)


@pytest.fixture
def active_image(api: Api) -> tuple[dict[str, Any], bytes]:
    data = bytes(range(256)) * 64  # 16 KiB of known bytes
    image = api.create(name="with-data")
    resp = api.upload(image["id"], data)
    assert resp.status_code == 204, resp.text
    return api.show(image["id"]), data


def wait_for_status(api: Api, image_id: str, status: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    shown = api.show(image_id)
    while shown["status"] != status and time.monotonic() < deadline:
        time.sleep(0.2)
        shown = api.show(image_id)
    assert shown["status"] == status, shown
    return shown


def files_of(store: Path, image_id: str) -> list[str]:
    """Files in the store directory that belong to ``image_id`` (partial ones too)."""
    if not store.exists():
        return []
    return [p.name for p in store.iterdir() if image_id in p.name]


def wait_no_files(store: Path, image_id: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while files_of(store, image_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert files_of(store, image_id) == []


# -- discovery and request ids ------------------------------------------------


def test_root_is_300_and_versions_200(api: Api) -> None:
    root = api.request("GET", "/")
    assert root.status_code == 300
    versions = api.request("GET", "/versions")
    assert versions.status_code == 200
    ids = [v["id"] for v in versions.json()["versions"]]
    assert "v2.0" in ids and all(v.startswith("v2.") for v in ids)
    assert root.json() == versions.json()


def test_request_id_is_echoed_when_well_formed(api: Api) -> None:
    wanted = f"req-{uuid.uuid4()}"
    resp = api.request("GET", "/v2/images", headers={"X-OpenStack-Request-ID": wanted})
    assert resp.headers["x-openstack-request-id"] == wanted
    bogus = api.request("GET", "/v2/images", headers={"X-OpenStack-Request-ID": "x" * 300})
    assert bogus.headers["x-openstack-request-id"] != "x" * 300


def test_unknown_paths_are_404_not_500(api: Api) -> None:
    for path in ("/v2/nothing", "/v2/images/x/y/z", "/v3/images", "/v2/images/%ff%fe"):
        resp = api.request("GET", path)
        assert resp.status_code in (300, 404), (path, resp.status_code)


# -- bad input never yields a 500 ---------------------------------------------

_BAD_CREATES = [
    pytest.param(b'{"name": "x"', 400, id="truncated-json"),
    pytest.param(b"not json at all", 400, id="not-json"),
    pytest.param(b"", 400, id="empty-body"),
    pytest.param(b"\xff\xfe\x00garbage", 400, id="not-utf8"),
    pytest.param(b"[]", 400, id="array-not-object"),
    pytest.param(b"null", 400, id="null"),
    pytest.param(b'"just a string"', 400, id="string"),
    pytest.param(json.dumps({"min_ram": "x"}).encode(), 400, id="min_ram-string"),
    pytest.param(json.dumps({"min_disk": -1}).encode(), 400, id="min_disk-negative"),
    pytest.param(json.dumps({"min_disk": 2**70}).encode(), 400, id="min_disk-huge"),
    pytest.param(json.dumps({"tags": "notalist"}).encode(), 400, id="tags-string"),
    pytest.param(json.dumps({"tags": [1, 2]}).encode(), 400, id="tags-ints"),
    pytest.param(json.dumps({"tags": ["t" * 256]}).encode(), 400, id="tag-too-long"),
    pytest.param(json.dumps({"name": "n" * 300}).encode(), 400, id="name-300"),
    pytest.param(json.dumps({"name": 42}).encode(), 400, id="name-int"),
    pytest.param(json.dumps({"id": "not-a-uuid"}).encode(), 400, id="id-not-uuid"),
    pytest.param(json.dumps({"disk_format": "floppy"}).encode(), 400, id="bad-disk-format"),
    pytest.param(json.dumps({"container_format": "box"}).encode(), 400, id="bad-container"),
    pytest.param(json.dumps({"visibility": "everyone"}).encode(), 400, id="bad-visibility"),
    pytest.param(json.dumps({"protected": "yes"}).encode(), 400, id="protected-string"),
    pytest.param(json.dumps({"k" * 256: "v"}).encode(), 400, id="key-too-long"),
    pytest.param(json.dumps({"extra": {"nested": 1}}).encode(), 400, id="extra-not-string"),
    pytest.param(json.dumps({"status": "active"}).encode(), 403, id="read-only-status"),
    pytest.param(json.dumps({"os_glance_x": "1"}).encode(), 403, id="reserved-prefix"),
    pytest.param(b'{"a": ' + b"[" * 100_000, 400, id="deeply-nested"),
]


@pytest.mark.parametrize(("body", "expected"), _BAD_CREATES)
def test_bad_create_bodies(api: Api, body: bytes, expected: int) -> None:
    resp = api.request(
        "POST", "/v2/images", data=body, headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == expected, resp.text


def test_json_body_over_the_cap_is_413(api: Api) -> None:
    # [api] max_request_body_size defaults to 1 MiB.
    body = json.dumps({"name": "x", "big": "y" * (MiB + 10)}).encode()
    # Refused before the body is read: see Api.upload about Connection: close.
    headers = {"Content-Type": "application/json", "Connection": "close"}
    resp = api.request("POST", "/v2/images", data=body, headers=headers)
    assert resp.status_code == 413
    chunked = api.request(
        "POST",
        "/v2/images",
        data=iter([body[i : i + 65536] for i in range(0, len(body), 65536)]),
        headers=headers,
    )
    assert chunked.status_code == 413


def test_json_body_sent_chunked_works(api: Api) -> None:
    body = json.dumps({"name": "chunked-json", "disk_format": "raw", "container_format": "bare"})
    resp = api.request(
        "POST",
        "/v2/images",
        data=iter([body[:10].encode(), body[10:].encode()]),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["name"] == "chunked-json"


def test_create_with_wrong_content_type_is_415(api: Api) -> None:
    resp = api.request(
        "POST", "/v2/images", data=b'{"name": "x"}', headers={"Content-Type": "text/plain"}
    )
    assert resp.status_code == 415


_BAD_LISTS = [
    "sort_key=bogus",
    "sort_key=name&sort_dir=sideways",
    "sort=name:up",
    "sort=nonsense:asc",
    "sort=name&sort_key=name",
    "sort_key=name&sort_key=size&sort_dir=asc&sort_dir=desc&sort_dir=asc",
    f"marker={uuid.uuid4()}",
    "marker=not-a-uuid",
    "limit=x",
    "limit=-1",
    "size_min=abc",
    "size_max=1.5",
    "size_min=99999999999999999999999999",
    "created_at=gt:notadate",
    "updated_at=between:2020-01-01",
    "visibility=bogus",
    "member_status=maybe",
    "os_hidden=maybe",
    "protected=perhaps",
    "name=in:%22unterminated",
    "changes-since=2020-01-01T00:00:00Z",
    "limit=1&limit=2",
]


@pytest.mark.parametrize("query", _BAD_LISTS)
def test_bad_list_parameters_are_400(api: Api, query: str) -> None:
    resp = api.request("GET", f"/v2/images?{query}")
    assert resp.status_code == 400, (query, resp.status_code, resp.text)


def test_base_columns_filter_exactly(api: Api, active_image: tuple[dict[str, Any], bytes]) -> None:
    """Glance filters on any image column: ?size=, ?min_ram= (Tempest lists by size)."""
    image, _ = active_image
    found = api.request("GET", f"/v2/images?size={image['size']}").json()["images"]
    assert image["id"] in {i["id"] for i in found}
    assert {i["size"] for i in found} == {image["size"]}
    api.create(name="needs-ram", min_ram=77)
    by_ram = api.request("GET", "/v2/images?min_ram=77").json()["images"]
    assert {i["name"] for i in by_ram} == {"needs-ram"}
    for bad in ("size=abc", "min_disk=-1", "virtual_size=1e3"):
        assert api.request("GET", f"/v2/images?{bad}").status_code == 400, bad


def test_marker_must_be_visible(server: IMSServer) -> None:
    owner, other = Api(server, "p-marker"), Api(server, "p-other")
    private = owner.create(name="private-marker", visibility="private")
    assert owner.request("GET", f"/v2/images?marker={private['id']}").status_code == 200
    assert other.request("GET", f"/v2/images?marker={private['id']}").status_code == 400


def test_empty_image_id_is_404(api: Api) -> None:
    """``/v2/images/`` is an image with an empty id, not the collection (Tempest)."""
    assert api.request("GET", "/v2/images/").status_code == 404
    assert api.request("DELETE", "/v2/images/").status_code == 404
    assert api.request("DELETE", "/v2/images").status_code == 405
    assert api.request("GET", "/v2/images").status_code == 200


def test_image_ids_that_are_not_uuids_are_404(api: Api) -> None:
    for method in ("GET", "DELETE"):
        assert api.request(method, "/v2/images/not-a-uuid").status_code == 404
    assert api.request("GET", "/v2/images/not-a-uuid/file").status_code == 404
    assert api.request("GET", "/v2/images/not-a-uuid/members").status_code == 404


# -- PATCH ----------------------------------------------------------------------


def test_patch_wrong_content_type_is_415_with_accept_patch(api: Api) -> None:
    image = api.create(name="p")
    for ctype in ("application/json", "application/json-patch+json", None):
        headers = {"Content-Type": ctype} if ctype else {}
        resp = api.request(
            "PATCH",
            f"/v2/images/{image['id']}",
            data=json.dumps([{"op": "replace", "path": "/name", "value": "x"}]),
            headers=headers,
        )
        assert resp.status_code == 415, (ctype, resp.text)
        accept_patch = resp.headers.get("Accept-Patch", "")
        assert PATCH_V21 in accept_patch and PATCH_V20 in accept_patch


def _patch(api: Api, image_id: str, ops: Any, media: str = PATCH_V21) -> requests.Response:
    raw = ops if isinstance(ops, bytes) else json.dumps(ops).encode()
    return api.request(
        "PATCH", f"/v2/images/{image_id}", data=raw, headers={"Content-Type": media}
    )


def test_patch_both_media_types(api: Api) -> None:
    image = api.create(name="before")
    old = _patch(api, image["id"], [{"replace": "/name", "value": "draft4"}], PATCH_V20)
    assert old.status_code == 200, old.text
    assert old.json()["name"] == "draft4"
    old = _patch(api, image["id"], [{"add": "/colour", "value": "red"}], PATCH_V20)
    assert old.status_code == 200 and old.json()["colour"] == "red"
    new = _patch(
        api,
        image["id"],
        [
            {"op": "replace", "path": "/name", "value": "draft10"},
            {"op": "remove", "path": "/colour"},
        ],
    )
    assert new.status_code == 200, new.text
    assert new.json()["name"] == "draft10" and "colour" not in new.json()
    assert api.show(image["id"])["name"] == "draft10"


_BAD_PATCHES = [
    pytest.param(b"[{", PATCH_V21, 400, id="malformed"),
    pytest.param(b"", PATCH_V21, 400, id="empty"),
    pytest.param({"op": "replace", "path": "/name", "value": "x"}, PATCH_V21, 400, id="object"),
    pytest.param([{"op": "move", "path": "/name", "value": "x"}], PATCH_V21, 400, id="bad-op"),
    pytest.param([{"op": "replace", "path": "name", "value": "x"}], PATCH_V21, 400, id="no-/"),
    pytest.param([{"op": "replace", "path": "//x", "value": "x"}], PATCH_V21, 400, id="//"),
    pytest.param([{"op": "replace", "path": "/a/b", "value": "x"}], PATCH_V21, 400, id="deep"),
    pytest.param([{"op": "replace", "path": "/~2", "value": "x"}], PATCH_V21, 400, id="tilde"),
    pytest.param([{"op": "replace", "path": "/name"}], PATCH_V21, 400, id="no-value"),
    pytest.param([{"op": "replace", "path": 7, "value": "x"}], PATCH_V21, 400, id="path-int"),
    pytest.param(["replace"], PATCH_V21, 400, id="op-not-object"),
    pytest.param([{"op": "replace", "path": "/min_ram", "value": "x"}], PATCH_V21, 400, id="ram"),
    pytest.param([{"op": "replace", "path": "/name", "value": "n" * 300}], PATCH_V21, 400, id="n"),
    pytest.param([{"op": "replace", "path": "/tags", "value": "t"}], PATCH_V21, 400, id="tags"),
    pytest.param([{"op": "add", "path": "/x", "value": 5}], PATCH_V21, 400, id="extra-int"),
    pytest.param(
        [{"op": "replace", "path": "/status", "value": "active"}], PATCH_V21, 403, id="read-only"
    ),  # fmt: skip
    pytest.param([{"op": "remove", "path": "/name"}], PATCH_V21, 403, id="remove-base"),
    pytest.param([{"op": "remove", "path": "/missing"}], PATCH_V21, 409, id="remove-missing"),
    pytest.param([{"replace": "/name", "add": "/x", "value": "v"}], PATCH_V20, 400, id="two-ops"),
    pytest.param([{"op": "replace", "path": "/name", "value": "x"}], PATCH_V20, 400, id="mixed"),
]


@pytest.mark.parametrize(("ops", "media", "expected"), _BAD_PATCHES)
def test_bad_patches(api: Api, ops: Any, media: str, expected: int) -> None:
    image = api.create(name="patch-me")
    resp = _patch(api, image["id"], ops, media)
    assert resp.status_code == expected, resp.text


def test_bad_member_and_tag_requests(api: Api) -> None:
    image = api.create(name="share", visibility="shared")
    path = f"/v2/images/{image['id']}"
    for body in (b"{", b"[]", b'{"member": 5}', b'{"nomember": "p2"}', b'{"member": ""}'):
        resp = api.request(
            "POST", f"{path}/members", data=body, headers={"Content-Type": "application/json"}
        )
        assert resp.status_code == 400, (body, resp.text)
    assert api.request("POST", f"{path}/members", json={"member": "p2"}).status_code == 200
    other = api.as_("p2")
    for body in (b'{"status": "maybe"}', b'{"status": 1}', b"{}"):
        resp = other.request(
            "PUT", f"{path}/members/p2", data=body, headers={"Content-Type": "application/json"}
        )
        assert resp.status_code == 400, (body, resp.text)
    assert api.request("PUT", f"{path}/tags/{'t' * 256}").status_code == 400
    assert api.request("DELETE", f"{path}/tags/absent").status_code == 404


# -- upload ---------------------------------------------------------------------


def test_upload_wrong_content_type_is_415(api: Api) -> None:
    image = api.create(name="u")
    for ctype in ("application/json", "text/plain"):
        resp = api.request(
            "PUT",
            f"/v2/images/{image['id']}/file",
            data=b"x" * 10,
            headers={"Content-Type": ctype},
        )
        assert resp.status_code == 415
    resp = api.request("PUT", f"/v2/images/{image['id']}/file", data=b"x" * 10)
    assert resp.status_code == 415
    assert api.show(image["id"])["status"] == "queued"


def test_chunked_upload_sets_size_and_hashes(server: IMSServer, api: Api) -> None:
    image = api.create(name="chunked")
    parts = [bytes([i]) * (100_000 + i) for i in range(12)]
    data = b"".join(parts)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request(
        "PUT",
        f"/v2/images/{image['id']}/file",
        body=iter(parts),
        headers={**identity(), "Content-Type": OCTET, "Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    resp = conn.getresponse()
    assert resp.status == 204, resp.read()
    conn.close()
    shown = api.show(image["id"])
    assert shown["status"] == "active"
    assert shown["size"] == len(data)
    assert shown["checksum"] == hashlib.md5(data).hexdigest()
    assert shown["os_hash_algo"] == "sha512"
    assert shown["os_hash_value"] == hashlib.sha512(data).hexdigest()
    got = api.request("GET", f"/v2/images/{image['id']}/file")
    assert got.content == data


def test_upload_twice_is_409(api: Api, active_image: tuple[dict[str, Any], bytes]) -> None:
    image, data = active_image
    assert api.upload(image["id"], data).status_code == 409


def test_upload_size_header_mismatch_is_400(api: Api) -> None:
    image = api.create(name="mismatch")
    resp = api.upload(image["id"], b"x" * 100, **{"x-openstack-image-size": "99"})
    assert resp.status_code == 400
    assert api.show(image["id"])["status"] == "queued"
    bad = api.upload(image["id"], b"x" * 100, **{"x-openstack-image-size": "lots"})
    assert bad.status_code == 400


def test_client_disconnect_mid_upload(server: IMSServer, api: Api) -> None:
    """Headers promise 10 MiB, 1 MiB arrives, the socket closes."""
    image = api.create(name="abandoned")
    head = (
        f"PUT /v2/images/{image['id']}/file HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Content-Length: {10 * MiB}\r\n"
        "X-Project-Id: p1\r\nX-Roles: member\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head)
        sock.sendall(b"\x01" * MiB)
        # Let the server start writing before the client goes away.
        deadline = time.monotonic() + 10
        while api.show(image["id"])["status"] != "saving" and time.monotonic() < deadline:
            time.sleep(0.05)
    shown = wait_for_status(api, image["id"], "queued")
    assert shown["size"] is None and shown["checksum"] is None
    wait_no_files(server.store_dir, image["id"])
    # The image is usable again.
    assert api.upload(image["id"], b"\x02" * 1000).status_code == 204
    assert api.show(image["id"])["status"] == "active"


# -- download -------------------------------------------------------------------


def _read_response(sock_file: Any) -> tuple[int, dict[str, str], bytes]:
    status = int(sock_file.readline().split()[1])
    headers = {}
    while (line := sock_file.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = sock_file.read(int(headers.get("content-length", "0")))
    return status, headers, body


@pytest.mark.parametrize("size", [3000, 3 * MiB])
def test_upload_then_pipelined_request_on_one_connection(
    api: Api, server: IMSServer, size: int
) -> None:
    """Body bytes sent with the headers, and a next request sent right behind the body
    (in the same packet for the small body), are each read once: the upload is exact
    and the next request is answered."""
    image = api.create(name="pipelined")
    data = (bytes(range(256)) * (size // 256 + 1))[:size]
    upload = (
        f"PUT /v2/images/{image['id']}/file HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Content-Length: {len(data)}\r\n"
        "X-Project-Id: p1\r\nX-Roles: member\r\n\r\n"
    ).encode()
    follow = (
        f"GET /v2/images/{image['id']} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        "X-Project-Id: p1\r\nX-Roles: member\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        if size < 4096:
            sock.sendall(upload + data + follow)
        else:
            sock.sendall(upload + data[:1000])
            time.sleep(0.2)
            sock.sendall(data[1000:] + follow)
        with sock.makefile("rb") as replies:
            status, _, _ = _read_response(replies)
            assert status == 204
            status, _, body = _read_response(replies)
            assert status == 200, body
            shown = json.loads(body)
    assert shown["status"] == "active"
    assert shown["size"] == len(data)
    assert shown["checksum"] == hashlib.md5(data).hexdigest()
    assert api.request("GET", f"/v2/images/{image['id']}/file").content == data


def test_download_without_data_is_204(api: Api) -> None:
    image = api.create(name="empty")
    resp = api.request("GET", f"/v2/images/{image['id']}/file")
    assert resp.status_code == 204
    assert resp.content == b""


def test_download_whole_and_ranges(api: Api, active_image: tuple[dict[str, Any], bytes]) -> None:
    image, data = active_image
    path = f"/v2/images/{image['id']}/file"
    whole = api.request("GET", path)
    assert whole.status_code == 200
    assert whole.content == data
    assert whole.headers["Content-MD5"] == hashlib.md5(data).hexdigest()
    assert whole.headers["Content-Type"] == OCTET
    assert int(whole.headers["Content-Length"]) == len(data)

    part = api.request("GET", path, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206
    assert part.content == data[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    tail = api.request("GET", path, headers={"Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == data[-5:]
    open_end = api.request("GET", path, headers={"Range": f"bytes={len(data) - 3}-"})
    assert open_end.status_code == 206 and open_end.content == data[-3:]
    past = api.request("GET", path, headers={"Range": f"bytes={len(data) + 10}-"})
    assert past.status_code == 416
    for bad in ("bytes=abc", "bytes=5-1", "pages=1-2"):
        assert api.request("GET", path, headers={"Range": bad}).status_code == 416, bad
    assert api.request("GET", path, headers={"Range": "bytes=0-1,5-6"}).status_code == 400


def test_deactivated_image_download(
    server: IMSServer, api: Api, active_image: tuple[dict[str, Any], bytes]
) -> None:
    image, data = active_image
    path = f"/v2/images/{image['id']}"
    assert api.request("POST", f"{path}/actions/deactivate").status_code == 204
    assert api.show(image["id"])["status"] == "deactivated"
    assert api.request("GET", f"{path}/file").status_code == 403
    admin = api.as_("admin-project", "admin")
    got = admin.request("GET", f"{path}/file")
    assert got.status_code == 200 and got.content == data
    assert api.request("POST", f"{path}/actions/reactivate").status_code == 204
    assert api.request("GET", f"{path}/file").status_code == 200


def test_images_you_may_not_see_are_404(
    api: Api, active_image: tuple[dict[str, Any], bytes]
) -> None:
    image, _ = active_image
    path = f"/v2/images/{image['id']}"
    assert api.request("PATCH", path, data=b"[]", headers={"Content-Type": PATCH_V21}).ok
    private = _patch(
        api, image["id"], [{"op": "replace", "path": "/visibility", "value": "private"}]
    )
    assert private.status_code == 200
    stranger = api.as_("p-stranger")
    assert stranger.request("GET", path).status_code == 404
    assert stranger.request("GET", f"{path}/file").status_code == 404
    assert stranger.request("DELETE", path).status_code == 404
    assert stranger.request("GET", f"{path}/members").status_code == 404
    assert stranger.request("PUT", f"{path}/tags/x").status_code == 404
    assert stranger.request("POST", f"{path}/actions/deactivate").status_code == 404
    denied = _patch(stranger, image["id"], [{"op": "replace", "path": "/name", "value": "x"}])
    assert denied.status_code == 404
    assert image["id"] not in {
        i["id"] for i in stranger.request("GET", "/v2/images").json()["images"]
    }
    reader = api.as_("p1", "reader")
    assert reader.request("GET", path).status_code == 200
    assert reader.request("DELETE", path).status_code == 403


# -- size cap and quota (their own server) ------------------------------------


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IMSServer]:
    server = IMSServer(
        tmp_path_factory.mktemp("ims-limited"),
        "noauth",
        {"DEFAULT": {"image_size_cap": "1MB", "user_storage_quota": "1536KB"}},
    ).start()
    yield server
    server.stop()


def test_image_size_cap_declared_and_chunked(limited: IMSServer) -> None:
    api = Api(limited, "p-cap")
    too_big = b"\x03" * (MiB + 1)
    image = api.create(name="over-cap")
    resp = api.upload(image["id"], too_big, Connection="close")
    assert resp.status_code == 413, resp.text
    assert wait_for_status(api, image["id"], "queued")["size"] is None
    chunked = api.upload(
        image["id"], iter([too_big[:600_000], too_big[600_000:]]), Connection="close"
    )
    assert chunked.status_code == 413, chunked.text
    assert wait_for_status(api, image["id"], "queued")["size"] is None
    wait_no_files(limited.store_dir, image["id"])
    exact = api.upload(image["id"], too_big[:MiB])
    assert exact.status_code == 204, exact.text


def test_user_storage_quota(limited: IMSServer) -> None:
    api = Api(limited, "p-quota")
    first = api.create(name="q1")
    assert api.upload(first["id"], b"\x04" * 900_000).status_code == 204
    second = api.create(name="q2")
    resp = api.upload(second["id"], b"\x05" * 900_000, Connection="close")
    assert resp.status_code == 413, resp.text
    assert wait_for_status(api, second["id"], "queued")["size"] is None
    chunked = api.upload(
        second["id"], iter([b"\x05" * 450_000, b"\x05" * 450_000]), Connection="close"
    )
    assert chunked.status_code == 413, chunked.text
    wait_no_files(limited.store_dir, second["id"])
    # Another project has its own quota.
    other = Api(limited, "p-quota-2")
    third = other.create(name="q3")
    assert other.upload(third["id"], b"\x06" * 900_000).status_code == 204
    # Deleting frees the space.
    assert api.request("DELETE", f"/v2/images/{first['id']}").status_code == 204
    assert api.upload(second["id"], b"\x05" * 900_000).status_code == 204
