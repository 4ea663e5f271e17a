"""Sharing: members, their answers and who may do what."""

from __future__ import annotations


def test_member_life_cycle(api):
    owner, other, admin = api["owner"], api["other"], api["admin"]
    image = owner.create(name="s")
    base = f"/v2/images/{image['id']}/members"
    resp = owner.post(base, {"member": "p2"})
    assert resp.status_code == 200
    assert resp.json["status"] == "pending" and resp.json["member_id"] == "p2"
    assert resp.json["schema"] == "/v2/schemas/member"
    assert owner.post(base, {"member": "p2"}).status_code == 409
    # the member now sees the image, and only its own membership
    assert other.get(f"/v2/images/{image['id']}").status_code == 200
    assert [m["member_id"] for m in other.get(base).json["members"]] == ["p2"]
    assert other.get(f"{base}/p2").json["status"] == "pending"
    # only the member answers; the owner may not
    assert owner.put(f"{base}/p2", json={"status": "accepted"}).status_code == 403
    assert other.put(f"{base}/p2", json={"status": "maybe"}).status_code == 400
    resp = other.put(f"{base}/p2", json={"status": "accepted"})
    assert resp.status_code == 200 and resp.json["status"] == "accepted"
    # the member may not add or remove members
    assert other.post(base, {"member": "p3"}).status_code == 403
    assert other.delete(f"{base}/p2").status_code == 403
    assert admin.get(f"{base}/p2").status_code == 200
    assert owner.delete(f"{base}/p2").status_code == 204
    assert owner.delete(f"{base}/p2").status_code == 404
    assert other.get(f"/v2/images/{image['id']}").status_code == 404


def test_only_shared_images_have_members(api):
    image = api["owner"].create(visibility="private")
    resp = api["owner"].post(f"/v2/images/{image['id']}/members", {"member": "p2"})
    assert resp.status_code == 403
    assert api["owner"].get(f"/v2/images/{image['id']}/members").status_code == 403


def test_member_bad_bodies(api):
    image = api["owner"].create()
    base = f"/v2/images/{image['id']}/members"
    assert api["owner"].post(base, {"memberx": "p2"}).status_code == 400
    assert api["owner"].post(base, {"member": 5}).status_code == 400
    assert api["owner"].post(base, {"member": "x" * 256}).status_code == 400
    assert api["owner"].get(f"{base}/nobody").status_code == 404


def test_member_quota(clients):
    api = clients(image_member_quota=1)
    image = api["owner"].create()
    base = f"/v2/images/{image['id']}/members"
    assert api["owner"].post(base, {"member": "p2"}).status_code == 200
    assert api["owner"].post(base, {"member": "p3"}).status_code == 413


def test_stranger_sees_nothing(api):
    image = api["owner"].create()
    base = f"/v2/images/{image['id']}/members"
    api["owner"].post(base, {"member": "p2"})
    stranger = api["owner"].__class__(api["owner"]._client, "p7", "member")
    assert stranger.get(base).status_code == 404
    assert stranger.get(f"{base}/p2").status_code == 404
    assert stranger.put(f"{base}/p2", json={"status": "accepted"}).status_code == 404
