"""The Image API v2 image records, driven in-process through the real app."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import PATCH_V20


def test_versions(api):
    resp = api["owner"].get("/")
    assert resp.status_code == 300
    ids = [v["id"] for v in resp.json["versions"]]
    assert "v2.0" in ids and "v2.17" in ids
    assert resp.json["versions"][0]["status"] == "CURRENT"
    assert api["owner"].get("/versions").status_code == 200
    assert api["owner"].get("/v2.5/images").status_code == 200
    assert api["owner"].get("/v3/images").status_code == 300


def test_create_defaults_and_show(api):
    image = api["owner"].create(name="cirros", os_distro="cirros", tags=["a", "b", "a"])
    assert image["status"] == "queued"
    assert image["visibility"] == "shared"
    assert image["owner"] == "p1"
    assert sorted(image["tags"]) == ["a", "b"]
    assert image["os_distro"] == "cirros"
    for key in ("checksum", "size", "virtual_size", "os_hash_value"):
        assert image[key] is None
    shown = api["reader"].get(f"/v2/images/{image['id']}")
    assert shown.status_code == 200
    assert shown.json == image
    assert shown.headers["x-openstack-request-id"].startswith("req-")


def test_create_with_id_and_duplicate(api):
    image_id = str(uuid.uuid4())
    assert api["owner"].create(id=image_id)["id"] == image_id
    assert api["owner"].post("/v2/images", {"id": image_id}).status_code == 409
    assert api["owner"].post("/v2/images", {"id": "not-a-uuid"}).status_code == 400


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"status": "active"}, 403),
        ({"checksum": "x"}, 403),
        ({"os_glance_foo": "x"}, 403),
        ({"self": "x"}, 403),
        ({"deleted": True}, 403),
        ({"visibility": "public"}, 403),
        ({"owner": "someone-else"}, 403),
        ({"__imagetype": "gold"}, 403),
        ({"__isregistered": "true"}, 403),
        ({"min_ram": -1}, 400),
        ({"min_ram": "x"}, 400),
        ({"name": "x" * 256}, 400),
        ({"tags": "notalist"}, 400),
        ({"disk_format": "floppy"}, 400),
        ({"visibility": "everyone"}, 400),
        ({"custom": 5}, 400),
        ({"x" * 256: "v"}, 400),
        ([1, 2], 400),
    ],
)
def test_create_refusals(api, body, status):
    resp = api["owner"].post("/v2/images", body)
    assert resp.status_code == status, resp.text
    assert resp.json["code"].startswith(str(status))


def test_create_bad_bodies(api):
    owner = api["owner"]
    resp = owner.post(
        "/v2/images",
        body=None,
        headers={"Content-Type": "application/json"},
    )
    assert resp.status_code == 400
    resp = owner._client.simulate_post(
        "/v2/images",
        body=b"{not json",
        headers={**owner.headers, "Content-Type": "application/json"},
    )
    assert resp.status_code == 400
    resp = owner._client.simulate_post(
        "/v2/images", body=b"<xml/>", headers={**owner.headers, "Content-Type": "text/xml"}
    )
    assert resp.status_code == 415
    big = b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    resp = owner._client.simulate_post(
        "/v2/images", body=big, headers={**owner.headers, "Content-Type": "application/json"}
    )
    assert resp.status_code == 413


def test_admin_may_publicize_and_set_owner(api):
    image = api["admin"].create(visibility="public", owner="p9")
    assert image["visibility"] == "public" and image["owner"] == "p9"
    assert api["other"].get(f"/v2/images/{image['id']}").status_code == 200


def test_invisible_image_is_404(api):
    image = api["owner"].create(visibility="private")
    for who in ("other",):
        assert api[who].get(f"/v2/images/{image['id']}").status_code == 404
        assert api[who].delete(f"/v2/images/{image['id']}").status_code == 404
        ops = [{"op": "replace", "path": "/name", "value": "x"}]
        assert api[who].patch(f"/v2/images/{image['id']}", ops).status_code == 404
    assert api["admin"].get(f"/v2/images/{image['id']}").status_code == 200
    assert api["owner"].get(f"/v2/images/{uuid.uuid4()}").status_code == 404


def test_reader_cannot_write(api):
    image = api["owner"].create()
    assert api["reader"].post("/v2/images", {"name": "x"}).status_code == 403
    ops = [{"op": "replace", "path": "/name", "value": "x"}]
    assert api["reader"].patch(f"/v2/images/{image['id']}", ops).status_code == 403
    assert api["reader"].delete(f"/v2/images/{image['id']}").status_code == 403


def test_patch_both_dialects(api):
    image = api["owner"].create(name="a", foo="1")
    path = f"/v2/images/{image['id']}"
    resp = api["owner"].patch(
        path,
        [
            {"op": "replace", "path": "/name", "value": "b"},
            {"op": "add", "path": "/bar", "value": "2"},
            {"op": "remove", "path": "/foo"},
            {"op": "add", "path": "/a~1b~0c", "value": "slash"},
            {"op": "replace", "path": "/tags", "value": ["t1", "t2"]},
            {"op": "replace", "path": "/min_ram", "value": 512},
            {"op": "replace", "path": "/protected", "value": True},
        ],
    )
    assert resp.status_code == 200, resp.text
    doc = resp.json
    assert doc["name"] == "b" and doc["bar"] == "2" and "foo" not in doc
    assert doc["a/b~c"] == "slash"
    assert sorted(doc["tags"]) == ["t1", "t2"]
    assert doc["min_ram"] == 512 and doc["protected"] is True
    resp = api["owner"].patch(path, [{"replace": "/name", "value": "c"}], media=PATCH_V20)
    assert resp.status_code == 200 and resp.json["name"] == "c"
    # draft-4 add of an existing property conflicts; draft-10 add overwrites
    resp = api["owner"].patch(path, [{"add": "/bar", "value": "3"}], media=PATCH_V20)
    assert resp.status_code == 409
    resp = api["owner"].patch(path, [{"op": "add", "path": "/bar", "value": "3"}])
    assert resp.status_code == 200 and resp.json["bar"] == "3"


@pytest.mark.parametrize(
    ("ops", "status"),
    [
        ([{"op": "replace", "path": "/status", "value": "active"}], 403),
        ([{"op": "replace", "path": "/size", "value": 5}], 403),
        ([{"op": "add", "path": "/os_glance_x", "value": "1"}], 403),
        ([{"op": "remove", "path": "/name"}], 403),
        ([{"op": "replace", "path": "/visibility", "value": "public"}], 403),
        ([{"op": "replace", "path": "/owner", "value": "p2"}], 403),
        ([{"op": "add", "path": "/__imagetype", "value": "market"}], 403),
        ([{"op": "add", "path": "/__image_size", "value": "1"}], 403),
        ([{"op": "replace", "path": "/missing", "value": "x"}], 409),
        ([{"op": "remove", "path": "/missing"}], 409),
        ([{"op": "replace", "path": "/min_disk", "value": "big"}], 400),
        ([{"op": "replace", "path": "/name"}], 400),
        ([{"op": "move", "path": "/name", "value": "x"}], 400),
        ([{"op": "add", "path": "/a/b", "value": "x"}], 400),
        ([{"op": "add", "path": "a", "value": "x"}], 400),
        ([{"op": "add", "path": "//a", "value": "x"}], 400),
        ([{"op": "add", "path": "/a~2", "value": "x"}], 400),
        ([{"op": "add", "path": "/prop", "value": 7}], 400),
        ({"op": "add"}, 400),
        (["x"], 400),
    ],
)
def test_patch_refusals(api, ops, status):
    image = api["owner"].create(name="n")
    resp = api["owner"].patch(f"/v2/images/{image['id']}", ops)
    assert resp.status_code == status, resp.text


def test_patch_wrong_media_type(api):
    image = api["owner"].create()
    resp = api["owner"].patch(f"/v2/images/{image['id']}", [], media="application/json")
    assert resp.status_code == 415
    assert "openstack-images-v2.1-json-patch" in resp.headers["accept-patch"]


def test_format_change_only_while_queued(api):
    image = api["owner"].create(disk_format="raw")
    path = f"/v2/images/{image['id']}"
    ops = [{"op": "replace", "path": "/disk_format", "value": "qcow2"}]
    assert api["owner"].patch(path, ops).status_code == 200
    assert api["owner"].upload(image["id"], b"\0" * 1024).status_code in (204, 415)


def test_protected_delete_and_delete(api):
    image = api["owner"].create(protected=True)
    path = f"/v2/images/{image['id']}"
    assert api["owner"].delete(path).status_code == 403
    api["owner"].patch(path, [{"op": "replace", "path": "/protected", "value": False}])
    assert api["owner"].delete(path).status_code == 204
    assert api["owner"].get(path).status_code == 404
    assert api["owner"].delete(path).status_code == 404


def test_tags(api):
    image = api["owner"].create()
    base = f"/v2/images/{image['id']}/tags"
    assert api["owner"].put(f"{base}/one").status_code == 204
    assert api["owner"].put(f"{base}/one").status_code == 204
    assert api["owner"].get(f"/v2/images/{image['id']}").json["tags"] == ["one"]
    assert api["owner"].delete(f"{base}/one").status_code == 204
    assert api["owner"].delete(f"{base}/one").status_code == 404
    assert api["owner"].put(f"/v2/images/{uuid.uuid4()}/tags/x").status_code == 404
    assert api["owner"].put(f"{base}/{'x' * 256}").status_code == 400


def test_tag_quota(clients):
    api = clients(image_tag_quota=2)
    image = api["owner"].create(tags=["a", "b"])
    assert api["owner"].put(f"/v2/images/{image['id']}/tags/c").status_code == 413
    assert api["owner"].post("/v2/images", {"tags": ["a", "b", "c"]}).status_code == 413


def test_property_quota(clients):
    api = clients(image_property_quota=1)
    image = api["owner"].create(a="1")
    ops = [{"op": "add", "path": "/b", "value": "2"}]
    assert api["owner"].patch(f"/v2/images/{image['id']}", ops).status_code == 413


def test_deactivate_rules(api):
    image = api["owner"].create()
    path = f"/v2/images/{image['id']}/actions"
    assert api["owner"].post(f"{path}/deactivate").status_code == 403  # queued
    assert api["owner"].upload(image["id"], b"x" * 4096).status_code == 204
    assert api["owner"].post(f"{path}/deactivate").status_code == 204
    assert api["owner"].post(f"{path}/deactivate").status_code == 204
    assert api["owner"].get(f"/v2/images/{image['id']}").json["status"] == "deactivated"
    assert api["owner"].get(f"/v2/images/{image['id']}/file").status_code == 403
    assert api["admin"].get(f"/v2/images/{image['id']}/file").status_code == 200
    assert api["owner"].post(f"{path}/reactivate").status_code == 204
    assert api["owner"].get(f"/v2/images/{image['id']}/file").status_code == 200


def test_unknown_route_and_method(api):
    assert api["owner"].get("/v2/nothing").status_code == 404
    resp = api["owner"]._client.simulate_request("PUT", "/v2/images", headers=api["owner"].headers)
    assert resp.status_code == 405
