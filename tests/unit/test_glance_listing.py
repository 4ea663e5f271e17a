"""Listing: visibility rules, filters, sorting and pagination."""

from __future__ import annotations

import urllib.parse

import pytest


@pytest.fixture
def populated(api):
    owner, other, admin = api["owner"], api["other"], api["admin"]
    made = {
        "priv": owner.create(name="priv", visibility="private", size_tag="s", tags=["t1"]),
        "shared": owner.create(name="shared", os_distro="ubuntu", tags=["t1", "t2"]),
        "comm": owner.create(name="comm", visibility="community"),
        "hidden": owner.create(name="hidden", os_hidden=True),
        "pub": admin.create(name="pub", visibility="public", disk_format="qcow2"),
        "other_priv": other.create(name="other_priv", visibility="private"),
        "other_comm": other.create(name="other_comm", visibility="community"),
        "other_shared": other.create(name="other_shared"),
    }
    return made


def names(resp):
    assert resp.status_code == 200, resp.text
    return sorted(image["name"] for image in resp.json["images"])


def test_default_visibility(api, populated):
    assert names(api["owner"].get("/v2/images")) == ["comm", "priv", "pub", "shared"]
    assert names(api["other"].get("/v2/images")) == [
        "other_comm",
        "other_priv",
        "other_shared",
        "pub",
    ]
    assert len(api["admin"].get("/v2/images").json["images"]) == 7  # hidden excluded


def test_visibility_filters(api, populated):
    owner = api["owner"]
    assert names(owner.get("/v2/images?visibility=public")) == ["pub"]
    assert names(owner.get("/v2/images?visibility=private")) == ["priv"]
    assert names(owner.get("/v2/images?visibility=community")) == ["comm", "other_comm"]
    assert names(owner.get("/v2/images?visibility=all")) == [
        "comm",
        "other_comm",
        "priv",
        "pub",
        "shared",
    ]
    assert owner.get("/v2/images?visibility=bogus").status_code == 400
    assert names(owner.get("/v2/images?os_hidden=true")) == ["hidden"]
    assert owner.get("/v2/images?os_hidden=maybe").status_code == 400


def test_shared_and_member_status(api, populated):
    owner, other = api["owner"], api["other"]
    image_id = populated["shared"]["id"]
    assert owner.post(f"/v2/images/{image_id}/members", {"member": "p2"}).status_code == 200
    assert "shared" not in names(other.get("/v2/images"))
    assert "shared" in names(other.get("/v2/images?member_status=pending"))
    assert "shared" in names(other.get("/v2/images?member_status=all"))
    other.put(f"/v2/images/{image_id}/members/p2", json={"status": "accepted"})
    assert "shared" in names(other.get("/v2/images"))
    assert "shared" in names(other.get("/v2/images?visibility=shared"))
    assert other.get("/v2/images?member_status=maybe").status_code == 400


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("name=shared", ["shared"]),
        ("name=in:priv,shared", ["priv", "shared"]),
        ('name=in:"priv",comm', ["comm", "priv"]),
        ("disk_format=qcow2", ["pub"]),
        ("os_distro=ubuntu", ["shared"]),
        ("size_tag=s", ["priv"]),
        ("tag=t1", ["priv", "shared"]),
        ("tag=t1&tag=t2", ["shared"]),
        ("status=queued&visibility=private", ["priv"]),
        ("protected=false&name=comm", ["comm"]),
        ("owner=p1&visibility=private", ["priv"]),
        ("created_at=gte:2000-01-01T00:00:00Z&name=comm", ["comm"]),
        ("created_at=lt:2000-01-01T00:00:00Z", []),
        ("size_min=1", []),
    ],
)
def test_filters(api, populated, query, expected):
    assert names(api["owner"].get(f"/v2/images?{query}")) == expected


@pytest.mark.parametrize(
    "query",
    [
        "limit=x",
        "limit=-1",
        "marker=nope",
        "sort_key=bogus",
        "sort_dir=sideways",
        "sort=name:up",
        "sort=bogus:asc",
        "sort=name&sort_key=name",
        "size_min=x",
        "created_at=gt:notadate",
        'name=in:"unterminated',
        "changes-since=2000-01-01",
        "sort_key=name&sort_key=id&sort_dir=asc&sort_dir=desc&sort_dir=asc",
        "name=neq:x",
        "name=like:x",
        "status=like:active",
        "disk_format=a:b",
    ],
)
def test_bad_listing_params(api, populated, query):
    resp = api["owner"].get(f"/v2/images?{query}")
    assert resp.status_code == 400, (query, resp.text)


def test_eq_operator_lets_a_value_hold_a_colon(api):
    api["owner"].create(name="ubuntu:24.04")
    resp = api["owner"].get("/v2/images?name=eq:ubuntu:24.04")
    assert [i["name"] for i in resp.json["images"]] == ["ubuntu:24.04"]
    assert api["owner"].get("/v2/images?name=ubuntu:24.04").status_code == 400


def test_sorting(api, populated):
    resp = api["owner"].get("/v2/images?sort_key=name&sort_dir=asc")
    assert [i["name"] for i in resp.json["images"]] == ["comm", "priv", "pub", "shared"]
    resp = api["owner"].get("/v2/images?sort=name:desc")
    assert [i["name"] for i in resp.json["images"]] == ["shared", "pub", "priv", "comm"]
    resp = api["owner"].get("/v2/images?sort=disk_format:asc,name")
    assert [i["name"] for i in resp.json["images"]] == ["pub", "shared", "priv", "comm"]


@pytest.mark.parametrize(
    "sort", ["sort_key=name&sort_dir=asc", "sort=created_at:desc", "sort_key=size&sort_key=name"]
)
def test_pagination_walks_everything_once(api, populated, sort):
    seen = []
    url = f"/v2/images?limit=1&{sort}"
    while url:
        parsed = urllib.parse.urlsplit(url)
        resp = api["owner"].get(parsed.path, query_string=parsed.query)
        assert resp.status_code == 200, resp.text
        seen += [i["name"] for i in resp.json["images"]]
        url = resp.json.get("next")
        assert len(seen) < 10
    assert sorted(seen) == ["comm", "priv", "pub", "shared"]
    assert (
        "marker"
        not in api["owner"]
        .get(f"/v2/images?{sort}&marker={populated['priv']['id']}")
        .json["first"]
    )


def test_limit_clipped(clients):
    api = clients(api__api_limit_max=2)
    for i in range(3):
        api["owner"].create(name=f"i{i}")
    resp = api["owner"].get("/v2/images?limit=100")
    assert len(resp.json["images"]) == 2 and "next" in resp.json
