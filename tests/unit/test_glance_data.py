"""Upload and download: hashing, checks, ranges, caps and failure recovery."""

from __future__ import annotations

import hashlib
import io
import os
import struct

import pytest

from ims.disk import registry

DATA = os.urandom(3 * 1024 * 1024 + 17)


def _qcow2_header(size: int, backing: bool = False) -> bytes:
    """A small qcow2 made by IMS's own writer, optionally given a backing file."""
    raw = registry.get("raw").open(io.BytesIO(b"data" * 1024 + b"\0" * (size - 4096)))
    out = io.BytesIO()
    registry.get("qcow2").write(raw, out)
    body = bytearray(out.getvalue())
    if backing:
        name = b"/etc/passwd"
        body[8:16] = struct.pack(">Q", len(body))
        body[16:20] = struct.pack(">I", len(name))
        body += name
    return bytes(body)


def _image_file(tmp_path, image_id):
    root = tmp_path / "state" / "images"
    return [p for p in os.listdir(root) if image_id in p] if root.exists() else []


def test_upload_download_round_trip(api, tmp_path):
    owner = api["owner"]
    image = owner.create(name="r", disk_format="raw")
    resp = owner.upload(image["id"], DATA)
    assert resp.status_code == 204, resp.text
    doc = owner.get(f"/v2/images/{image['id']}").json
    assert doc["status"] == "active"
    assert doc["size"] == len(DATA) == doc["virtual_size"]
    assert doc["checksum"] == hashlib.md5(DATA).hexdigest()
    assert doc["os_hash_algo"] == "sha512"
    assert doc["os_hash_value"] == hashlib.sha512(DATA).hexdigest()
    got = owner.get(f"/v2/images/{image['id']}/file")
    assert got.status_code == 200
    assert got.content == DATA
    assert got.headers["content-md5"] == doc["checksum"]
    assert got.headers["content-type"] == "application/octet-stream"
    # a second upload is refused: the image is not queued any more
    assert owner.upload(image["id"], b"again").status_code == 409


@pytest.mark.parametrize(
    ("header", "status", "expected"),
    [
        ("bytes=0-9", 206, (0, DATA[:10])),
        ("bytes=10-", 206, (10, DATA[10:])),
        ("bytes=-5", 206, (len(DATA) - 5, DATA[-5:])),
        (f"bytes=5-{len(DATA) + 100}", 206, (5, DATA[5:])),
        (f"bytes={len(DATA)}-", 416, None),
        ("bytes=9-2", 416, None),
        ("bytes=a-b", 416, None),
        ("bytes=0-1,4-5", 400, None),
    ],
)
def test_ranges(api, header, status, expected):
    owner = api["owner"]
    image = owner.create()
    owner.upload(image["id"], DATA)
    resp = owner.get(f"/v2/images/{image['id']}/file", headers={"Range": header})
    assert resp.status_code == status, resp.text
    if expected is not None:
        first, content = expected
        assert resp.content == content
        last = first + len(content) - 1
        assert resp.headers["content-range"] == f"bytes {first}-{last}/{len(DATA)}"


def test_no_data_is_204(api):
    image = api["owner"].create()
    assert api["owner"].get(f"/v2/images/{image['id']}/file").status_code == 204


def test_upload_needs_octet_stream_and_formats(api):
    owner = api["owner"]
    image = owner.create()
    resp = owner.put(
        f"/v2/images/{image['id']}/file", body=b"x", headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 415
    bare = owner.post("/v2/images", {"name": "noformats"}).json
    assert owner.upload(bare["id"], b"x").status_code == 400
    assert owner.get(f"/v2/images/{bare['id']}").json["status"] == "queued"


def test_size_cap_is_413_and_image_stays_queued(clients, tmp_path):
    api = clients(image_size_cap="1048576")
    image = api["owner"].create()
    assert api["owner"].upload(image["id"], DATA).status_code == 413
    assert api["owner"].get(f"/v2/images/{image['id']}").json["status"] == "queued"
    assert _image_file(tmp_path, image["id"]) == []


def test_storage_quota(clients):
    api = clients(user_storage_quota="4MB")
    first = api["owner"].create()
    assert api["owner"].upload(first["id"], DATA).status_code == 204
    second = api["owner"].create()
    resp = api["owner"].upload(second["id"], DATA)
    assert resp.status_code == 413 and "Quota" in resp.text
    usage = api["owner"].get("/v2/info/usage").json["usage"]
    assert usage["image_size_total"] == {"limit": 4 * 1024 * 1024, "usage": len(DATA)}


def test_declared_size_mismatch(api):
    owner = api["owner"]
    image = owner.create()
    resp = owner.put(
        f"/v2/images/{image['id']}/file",
        body=b"x" * 100,
        headers={"Content-Type": "application/octet-stream", "x-openstack-image-size": "50"},
    )
    assert resp.status_code == 400
    assert owner.get(f"/v2/images/{image['id']}").json["status"] == "queued"


def test_format_mismatch_is_415(api, tmp_path):
    owner = api["owner"]
    image = owner.create(disk_format="qcow2")
    resp = owner.upload(image["id"], b"plain bytes, not qcow2" * 100)
    assert resp.status_code == 415, resp.text
    assert owner.get(f"/v2/images/{image['id']}").json["status"] == "queued"
    assert _image_file(tmp_path, image["id"]) == []


def test_qcow2_upload_sets_virtual_size(api):
    owner = api["owner"]
    image = owner.create(disk_format="qcow2")
    data = _qcow2_header(1 << 22)
    assert registry.detect(io.BytesIO(data)) == "qcow2"
    resp = owner.upload(image["id"], data)
    assert resp.status_code == 204, resp.text
    doc = owner.get(f"/v2/images/{image['id']}").json
    assert doc["virtual_size"] == 1 << 22 and doc["size"] == len(data)


def test_qcow2_with_backing_file_is_refused(api, tmp_path):
    owner = api["owner"]
    image = owner.create(disk_format="qcow2")
    resp = owner.upload(image["id"], _qcow2_header(1 << 22, backing=True))
    assert resp.status_code == 415
    assert "backing" in resp.text.lower()
    assert owner.get(f"/v2/images/{image['id']}").json["status"] == "queued"


def test_mismatch_allowed_when_not_enforced(clients):
    api = clients(image_format__require_image_format_match=False)
    image = api["owner"].create(disk_format="vmdk")
    assert api["owner"].upload(image["id"], b"random" * 1000).status_code == 204


def test_raw_declared_rich_content_allowed(api):
    image = api["owner"].create(disk_format="raw")
    assert api["owner"].upload(image["id"], _qcow2_header(1 << 20)).status_code == 204


def test_delete_removes_data(api, tmp_path):
    owner = api["owner"]
    image = owner.create()
    owner.upload(image["id"], b"abc" * 1000)
    assert _image_file(tmp_path, image["id"])
    assert owner.delete(f"/v2/images/{image['id']}").status_code == 204
    assert _image_file(tmp_path, image["id"]) == []


def test_other_project_cannot_upload(api):
    image = api["owner"].create()
    assert api["other"].upload(image["id"], b"x").status_code == 404
    shared = api["owner"].create()
    api["owner"].post(f"/v2/images/{shared['id']}/members", {"member": "p2"})
    assert api["other"].upload(shared["id"], b"x").status_code == 403
