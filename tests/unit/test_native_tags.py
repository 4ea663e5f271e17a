"""IMS tags (v1 and v2) stored as the image's Glance tags."""

from __future__ import annotations

import pytest

from ims.core import kvtags
from tests.unit.native_support import ims_error


@pytest.fixture
def api(native):
    return native()[0]


def glance_tags(client, image_id):
    return sorted(client.get(f"/v2/images/{image_id}").json["tags"])


def tags_of(client, image_id, project="p1"):
    resp = client.get(f"/v2/{project}/images/{image_id}/tags")
    assert resp.status_code == 200, resp.text
    return sorted((t["key"], t["value"]) for t in resp.json["tags"])


def post(client, path, body):
    return client.post(path, body)


def test_parse_and_spellings():
    assert kvtags.parse("k=v") == ("k", "v")
    assert kvtags.parse("k=v.w=x") == ("k", "v.w=x")
    assert kvtags.parse("a.b") == ("a", "b")
    assert kvtags.parse("a.b=c") == ("a.b", "c")
    assert kvtags.parse("plain") == ("plain", "")
    assert kvtags.spellings("k", "v") == ["k=v", "k.v"]
    assert kvtags.spellings("k", "") == ["k=", "k.", "k"]
    assert kvtags.spellings("a.b", "c") == ["a.b=c"]
    assert kvtags.spellings("k", "a=b") == ["k=a=b"]
    for key, value in (("k", "v"), ("k", ""), ("a.b", "c"), ("k", "1.2")):
        assert all(kvtags.parse(t) == (key, value) for t in kvtags.spellings(key, value))


def test_v2_upsert_show_and_delete(api):
    owner = api["owner"]
    image = owner.create(name="t", tags=["legacy.one", "plain"])
    base = f"/v2/p1/images/{image['id']}/tags"
    assert post(owner, base, {"tag": {"key": "env", "value": "prod"}}).status_code == 204
    assert glance_tags(owner, image["id"]) == ["env=prod", "legacy.one", "plain"]
    assert tags_of(owner, image["id"]) == [("env", "prod"), ("legacy", "one"), ("plain", "")]
    # upsert: one tag per key, the new value wins; the same call twice is a no-op
    for _ in range(2):
        assert post(owner, base, {"tag": {"key": "env", "value": "dev"}}).status_code == 204
    assert glance_tags(owner, image["id"]) == ["env=dev", "legacy.one", "plain"]
    # a v2 upsert of a legacy key replaces the legacy spelling
    assert post(owner, base, {"tag": {"key": "legacy", "value": "two"}}).status_code == 204
    assert glance_tags(owner, image["id"]) == ["env=dev", "legacy=two", "plain"]
    # key-only and Chinese tags; values may hold dots
    assert post(owner, base, {"tag": {"key": "标签_1", "value": ""}}).status_code == 204
    assert post(owner, base, {"tag": {"key": "ver", "value": "1.2-rc_3"}}).status_code == 204
    assert ("标签_1", "") in tags_of(owner, image["id"])
    assert ("ver", "1.2-rc_3") in tags_of(owner, image["id"])
    resp = owner.delete(f"{base}/env")
    assert resp.status_code == 204
    ims_error(owner.delete(f"{base}/env"), "IMG.0027", status=404)
    assert owner.delete(f"{base}/%E6%A0%87%E7%AD%BE_1").status_code == 204
    assert owner.delete(f"{base}/plain").status_code == 204
    assert glance_tags(owner, image["id"]) == ["legacy=two", "ver=1.2-rc_3"]


@pytest.mark.parametrize(
    "tag",
    [
        {"key": "", "value": "v"},
        {"key": "k" * 37, "value": "v"},
        {"key": "a.b", "value": "v"},
        {"key": "a=b", "value": "v"},
        {"key": "sp ace", "value": "v"},
        {"key": "k", "value": "v" * 44},
        {"key": "k", "value": "a=b"},
        {"key": "k", "value": 5},
        {"key": 5, "value": "v"},
        "k=v",
        None,
    ],
)
def test_bad_tags(api, tag):
    owner = api["owner"]
    image = owner.create(name="t")
    resp = post(owner, f"/v2/p1/images/{image['id']}/tags", {"tag": tag})
    ims_error(resp, "IMG.0115")
    assert glance_tags(owner, image["id"]) == []


def test_limits(native):
    owner = native(native__max_image_tags=3)[0]["owner"]
    image = owner.create(name="t")
    base = f"/v2/p1/images/{image['id']}/tags"
    for key in ("a", "b", "c"):
        assert post(owner, base, {"tag": {"key": key, "value": "1"}}).status_code == 204
    ims_error(post(owner, base, {"tag": {"key": "d", "value": "1"}}), "IMG.0116", 400)
    # changing an existing key is no growth
    assert post(owner, base, {"tag": {"key": "a", "value": "2"}}).status_code == 204
    resp = post(owner, f"{base}/action", {"action": "create", "tags": [{"key": "e"}]})
    ims_error(resp, "IMG.0116", 400)
    owner = native()[0]["owner"]
    image = owner.create(name="ten")
    base = f"/v2/p1/images/{image['id']}/tags"
    many = [{"key": f"k{i}", "value": "v"} for i in range(10)]
    assert post(owner, f"{base}/action", {"action": "create", "tags": many}).status_code == 204
    ims_error(post(owner, base, {"tag": {"key": "k10", "value": "v"}}), "IMG.0116", 400)


def test_batch_action(api):
    owner = api["owner"]
    image = owner.create(name="t", tags=["keep"])
    base = f"/v2/p1/images/{image['id']}/tags/action"
    tags = [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}, {"key": "c"}]
    for _ in range(2):  # idempotent
        assert post(owner, base, {"action": "create", "tags": tags}).status_code == 204
    assert glance_tags(owner, image["id"]) == ["a=1", "b=2", "c=", "keep"]
    # delete: a value narrows the match; without one the key goes
    body = {"action": "delete", "tags": [{"key": "a", "value": "9"}, {"key": "b"}]}
    assert post(owner, base, body).status_code == 204
    assert glance_tags(owner, image["id"]) == ["a=1", "c=", "keep"]
    body = {"action": "delete", "tags": [{"key": "a", "value": "1"}, {"key": "gone"}]}
    assert post(owner, base, body).status_code == 204
    assert glance_tags(owner, image["id"]) == ["c=", "keep"]
    dup = {"action": "create", "tags": [{"key": "x", "value": "1"}, {"key": "x", "value": "2"}]}
    ims_error(post(owner, base, dup), "IMG.0115")
    ims_error(post(owner, base, {"action": "upsert", "tags": tags}), "IMG.0001")
    ims_error(post(owner, base, {"action": "create", "tags": []}), "IMG.0115")
    ims_error(post(owner, base, {"action": "create", "tags": ["a"]}), "IMG.0115")
    long_key = {"action": "delete", "tags": [{"key": "k" * 128}]}
    ims_error(post(owner, base, long_key), "IMG.0115")
    resp = post(owner, f"/v2/p1/images/{image['id']}/tags/other", {"action": "create"})
    ims_error(resp, "IMG.0027", status=404)


def test_v1_put_and_list(api):
    owner, other = api["owner"], api["other"]
    one = owner.create(name="one", tags=["old.x"])
    two = owner.create(name="two")
    resp = owner.put("/v1/cloudimages/tags", json={"image_id": one["id"], "tag": "old.y"})
    assert resp.status_code == 204, resp.text
    assert glance_tags(owner, one["id"]) == ["old=y"]
    body = {"image_id": two["id"], "image_tag": {"key": "k", "value": "v"}}
    assert owner.put("/v1/cloudimages/tags", json=body).status_code == 204
    body = {"image_id": two["id"], "tag": "solo"}
    assert owner.put("/v1/cloudimages/tags", json=body).status_code == 204
    assert glance_tags(owner, two["id"]) == ["k=v", "solo="]
    resp = owner.get("/v1/cloudimages/tags")
    assert resp.status_code == 200 and resp.json["tags"] == ["k=v", "old=y", "solo="]
    assert owner.get("/v1/cloudimages/tags", query_string="name=one").json["tags"] == ["old=y"]
    page = owner.get("/v1/cloudimages/tags", query_string="limit=2&page=2").json
    assert page["tags"] == ["solo="]
    assert other.get("/v1/cloudimages/tags").json["tags"] == []
    for bad, code in (
        ({"image_id": one["id"]}, "IMG.0115"),
        ({"image_id": one["id"], "tag": "a.b", "image_tag": {"key": "a"}}, "IMG.0115"),
        ({"image_id": one["id"], "tag": 5}, "IMG.0115"),
        ({"image_id": one["id"], "tag": "bad key.v"}, "IMG.0115"),
        ({"tag": "a.b"}, "IMG.0066"),
        ([], "IMG.0007"),
    ):
        ims_error(owner.put("/v1/cloudimages/tags", json=bad), code)
    ims_error(owner.get("/v1/cloudimages/tags", query_string="page=0"), "IMG.0001")
    ims_error(owner.get("/v1/cloudimages/tags", query_string="__imagetype=x"), "IMG.0024")
    body = {"image_id": one["id"], "tag": "k.v"}
    ims_error(other.put("/v1/cloudimages/tags", json=body), "IMG.0027", status=404)


def test_project_tags(api):
    owner, other = api["owner"], api["other"]
    owner.create(name="1", tags=["env=prod", "team.a", "solo"])
    owner.create(name="2", tags=["env=dev", "env.test"])
    resp = owner.get("/v2/p1/images/tags")
    assert resp.status_code == 200
    got = {t["key"]: sorted(t["values"]) for t in resp.json["tags"]}
    assert got == {"env": ["dev", "prod", "test"], "team": ["a"], "solo": [""]}
    assert other.get("/v2/p2/images/tags").json["tags"] == []
    ims_error(other.get("/v2/p1/images/tags"), "IMG.0027", status=404)


def test_isolation_and_shared_images(api):
    owner, other = api["owner"], api["other"]
    private = owner.create(name="p", visibility="private", tags=["k=v"])
    for path in (
        f"/v2/p2/images/{private['id']}/tags",
        f"/v2/p1/images/{private['id']}/tags",
    ):
        ims_error(other.get(path), "IMG.0027", status=404)
        ims_error(post(other, path, {"tag": {"key": "x", "value": "y"}}), "IMG.0027", 404)
    ims_error(other.delete(f"/v2/p2/images/{private['id']}/tags/k"), "IMG.0027", 404)
    shared = owner.create(name="s", tags=["k=v"])
    assert owner.post(f"/v2/images/{shared['id']}/members", {"member": "p2"}).status_code == 200
    assert tags_of(other, shared["id"], "p2") == [("k", "v")]
    path = f"/v2/p2/images/{shared['id']}/tags"
    ims_error(post(other, path, {"tag": {"key": "x", "value": "y"}}), "IMG.0047", 403)
    ims_error(other.delete(f"{path}/k"), "IMG.0047", 403)
    assert glance_tags(owner, shared["id"]) == ["k=v"]


def test_tags_and_cloudimages_filters_agree(api):
    owner = api["owner"]
    image = owner.create(name="f")
    post(owner, f"/v2/p1/images/{image['id']}/tags", {"tag": {"key": "role", "value": "db"}})
    found = owner.get("/v2/cloudimages", query_string="tag=role=db").json["images"]
    assert [i["id"] for i in found] == [image["id"]]
    assert found[0]["tags"] == ["role=db"]
    assert (
        owner.get("/v2/images", query_string="tag=role=db").json["images"][0]["id"]
        == (image["id"])
    )


def resources(client, body, project="p1"):
    resp = post(client, f"/v2/{project}/images/resource_instances/action", body)
    assert resp.status_code == 200, resp.text
    return resp.json


def test_resource_instances(api):
    owner, other = api["owner"], api["other"]
    made = {
        "a": owner.create(name="alpha", tags=["env=prod", "team=db"]),
        "b": owner.create(name="beta", tags=["env=dev", "team.web"]),
        "c": owner.create(name="gamma_1"),
        "d": owner.create(name="delta", tags=["env="]),
    }
    other.create(name="foreign", tags=["env=prod"])

    def names(body):
        found = resources(owner, {"action": "filter", **body})
        assert found["total_count"] == len(found["resources"])
        return sorted(r["resource_name"] for r in found["resources"])

    assert names({}) == ["alpha", "beta", "delta", "gamma_1"]
    assert names({"tags": [{"key": "env", "values": ["prod"]}]}) == ["alpha"]
    assert names({"tags": [{"key": "env", "values": []}]}) == ["alpha", "beta", "delta"]
    assert names({"tags": [{"key": "env", "values": [""]}]}) == ["delta"]
    assert names({"tags": [{"key": "env"}, {"key": "team", "values": ["web"]}]}) == ["beta"]
    any_of = [{"key": "team", "values": ["db"]}, {"key": "env", "values": ["dev"]}]
    assert names({"tags_any": any_of}) == ["alpha", "beta"]
    assert names({"not_tags": [{"key": "env"}, {"key": "team"}]}) == ["delta", "gamma_1"]
    assert names({"not_tags_any": [{"key": "team"}, {"key": "env", "values": [""]}]}) == [
        "gamma_1"
    ]
    assert names({"without_any_tag": True, "tags": [{"key": "env"}]}) == ["gamma_1"]
    assert names({"matches": [{"key": "resource_name", "value": "_"}]}) == ["gamma_1"]
    matches = [{"key": "resource_id", "value": made["a"]["id"]}]
    assert names({"matches": matches}) == ["alpha"]
    count = resources(owner, {"action": "count", "tags": [{"key": "env"}]})
    assert count == {"total_count": 3}
    page = resources(owner, {"action": "filter", "limit": "2", "offset": "1"})
    assert page["total_count"] == 4 and len(page["resources"]) == 2
    (one,) = resources(owner, {"action": "filter", "matches": matches})["resources"]
    assert one["resource_id"] == made["a"]["id"]
    assert sorted(one["tags"], key=lambda t: t["key"]) == [
        {"key": "env", "value": "prod"},
        {"key": "team", "value": "db"},
    ]
    assert one["resource_detail"] == {"status": "queued"}
    assert resources(other, {"action": "count"}, "p2") == {"total_count": 1}
    resp = post(other, "/v2/p1/images/resource_instances/action", {"action": "count"})
    ims_error(resp, "IMG.0027", 404)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"action": "list"}, "IMG.0001"),
        ({}, "IMG.0001"),
        ([], "IMG.0007"),
        ({"action": "filter", "limit": "0"}, "IMG.0001"),
        ({"action": "filter", "limit": "1001"}, "IMG.0001"),
        ({"action": "filter", "limit": "ten"}, "IMG.0001"),
        ({"action": "filter", "offset": "-1"}, "IMG.0001"),
        ({"action": "filter", "without_any_tag": "yes"}, "IMG.0001"),
        ({"action": "filter", "tags": [{"key": f"k{i}"} for i in range(11)]}, "IMG.0001"),
        ({"action": "filter", "tags": [{"key": "k", "values": ["v"] * 11}]}, "IMG.0001"),
        ({"action": "filter", "tags": [{"key": "k" * 128}]}, "IMG.0115"),
        ({"action": "filter", "tags": [{"key": "k", "values": ["v" * 256]}]}, "IMG.0115"),
        ({"action": "filter", "tags": [{"key": "k"}, {"key": "k"}]}, "IMG.0115"),
        ({"action": "filter", "tags": "k"}, "IMG.0001"),
        ({"action": "filter", "tags": ["k"]}, "IMG.0001"),
        ({"action": "filter", "matches": [{"key": "owner", "value": "x"}]}, "IMG.0001"),
        ({"action": "filter", "matches": [{"key": "resource_name", "value": 1}]}, "IMG.0001"),
        ({"action": "filter", "matches": "x"}, "IMG.0001"),
    ],
)
def test_bad_resource_queries(api, body, code):
    resp = post(api["owner"], "/v2/p1/images/resource_instances/action", body)
    ims_error(resp, code)


def test_malformed_bodies_are_ims_errors(api):
    owner = api["owner"]
    image = owner.create(name="m")
    for path in (
        f"/v2/p1/images/{image['id']}/tags",
        f"/v2/p1/images/{image['id']}/tags/action",
        "/v2/p1/images/resource_instances/action",
    ):
        resp = owner._client.simulate_post(
            path, body="{oops", headers={**owner.headers, "Content-Type": "application/json"}
        )
        ims_error(resp, "IMG.0001")
        resp = owner._client.simulate_post(
            path,
            body="x" * (1024 * 1024 + 10),
            headers={**owner.headers, "Content-Type": "application/json"},
        )
        assert resp.status_code == 413 and "error" in resp.json
