"""Metadata definitions API v2: CRUD, visibility, protection and bad input."""

from __future__ import annotations

import json
import urllib.parse

import jsonschema
import pytest

NS = "/v2/metadefs/namespaces"
SCHEMA_NAMES = {
    "namespace": "namespace",
    "namespaces": "namespaces",
    "resource_type": "resource_type_association",
    "resource_types": "resource_type_associations",
    "object": "object",
    "objects": "objects",
    "property": "property",
    "properties": "properties",
    "tag": "tag",
    "tags": "tags",
}


def _ns(client, name="ns1", **body):
    body = {"namespace": name, **body}
    resp = client.post(NS, body)
    assert resp.status_code == 201, resp.text
    return resp.json


def _schema(client, name):
    return client.get(f"/v2/schemas/metadefs/{name}").json


def _valid(client, schema_name, doc):
    """Validate ``doc`` as glanceclient does, against the published schema."""
    jsonschema.Draft4Validator(_schema(client, schema_name)).validate(doc)


# -- schemas -----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCHEMA_NAMES))
def test_schema_documents(api, name):
    resp = api["reader"].get(f"/v2/schemas/metadefs/{name}")
    assert resp.status_code == 200
    assert resp.json["name"] == SCHEMA_NAMES[name]
    jsonschema.Draft4Validator.check_schema(resp.json)


def test_unknown_schema_is_404(api):
    assert api["reader"].get("/v2/schemas/metadefs/nothing").status_code == 404
    assert api["reader"].get("/v2/schemas/image").status_code == 200


# -- namespaces --------------------------------------------------------------


def test_namespace_life_cycle_as_tempest_does(api):
    admin = api["admin"]
    types = admin.get("/v2/metadefs/resource_types").json["resource_types"]
    assert "OS::Glance::Image" in {t["name"] for t in types}
    rt = types[0]["name"]
    created = _ns(
        admin,
        "tempest-ns",
        visibility="public",
        description="Tempest",
        display_name="tempest-ns",
        resource_type_associations=[{"name": rt}],
        protected=True,
    )
    assert created["self"] == f"{NS}/tempest-ns"
    assert created["schema"] == "/v2/schemas/metadefs/namespace"
    assert created["owner"] == "adminproject"
    _valid(admin, "namespace", {k: v for k, v in created.items() if k != "self"})
    listed = admin.get(NS).json
    assert "tempest-ns" in [n["namespace"] for n in listed["namespaces"]]
    assert listed["schema"] == "/v2/schemas/metadefs/namespaces"
    shown = admin.get(f"{NS}/tempest-ns").json
    assert shown["visibility"] == "public"
    assert [a["name"] for a in shown["resource_type_associations"]] == [rt]
    assert admin.delete(f"{NS}/tempest-ns").status_code == 403
    resp = admin.put(
        f"{NS}/tempest-ns",
        json={
            "namespace": "tempest-ns",
            "description": "Tempest",
            "visibility": "private",
            "display_name": "tempest-ns",
            "protected": False,
        },
    )
    assert resp.status_code == 200
    assert resp.json["visibility"] == "private" and resp.json["protected"] is False
    assert admin.delete(f"{NS}/tempest-ns").status_code == 204
    assert admin.get(f"{NS}/tempest-ns").status_code == 404


def test_namespace_defaults_and_no_nulls(api):
    created = _ns(api["admin"], "bare")
    assert created["visibility"] == "private" and created["protected"] is False
    assert None not in created.values()
    assert "description" not in created and "properties" not in created


def test_create_with_contents_and_prefixes(api):
    admin = api["admin"]
    _ns(
        admin,
        "full",
        resource_type_associations=[
            {"name": "OS::Nova::Flavor", "prefix": "hw:"},
            {"name": "OS::Glance::Image", "prefix": "hw_", "properties_target": "image"},
        ],
        properties={"cpu_policy": {"title": "CPU policy", "type": "string", "enum": ["a"]}},
        objects=[
            {
                "name": "CPU",
                "required": ["cores"],
                "properties": {"cores": {"title": "Cores", "type": "integer", "minimum": 1}},
            }
        ],
        tags=[{"name": "t1"}, {"name": "t2"}],
    )
    doc = admin.get(f"{NS}/full").json
    _valid(admin, "namespace", {k: v for k, v in doc.items() if k != "self"})
    assert doc["properties"] == {
        "cpu_policy": {"title": "CPU policy", "type": "string", "enum": ["a"]}
    }
    assert doc["objects"][0]["self"] == f"{NS}/full/objects/CPU"
    assert sorted(t["name"] for t in doc["tags"]) == ["t1", "t2"]
    flavor = admin.get(f"{NS}/full", params={"resource_type": "OS::Nova::Flavor"}).json
    assert list(flavor["properties"]) == ["hw:cpu_policy"]
    assert list(flavor["objects"][0]["properties"]) == ["hw:cores"]
    # an unassociated resource type changes nothing
    plain = admin.get(f"{NS}/full", params={"resource_type": "OS::Nova::Server"}).json
    assert list(plain["properties"]) == ["cpu_policy"]


def test_namespace_duplicates_are_409(api):
    admin = api["admin"]
    _ns(admin, "dup")
    assert admin.post(NS, {"namespace": "dup"}).status_code == 409
    assert (
        admin.post(NS, {"namespace": "n2", "tags": [{"name": "a"}, {"name": "a"}]}).status_code
        == 409
    )
    objects = [{"name": "o"}, {"name": "o"}]
    assert admin.post(NS, {"namespace": "n2", "objects": objects}).status_code == 409
    links = [{"name": "OS::Glance::Image"}, {"name": "OS::Glance::Image"}]
    assert (
        admin.post(NS, {"namespace": "n2", "resource_type_associations": links}).status_code == 409
    )
    assert admin.get(f"{NS}/n2").status_code == 404


def test_namespace_rename_and_partial_update(api):
    admin = api["admin"]
    _ns(admin, "old", description="keep me", tags=[{"name": "t"}])
    _ns(admin, "taken")
    assert admin.put(f"{NS}/old", json={"namespace": "taken"}).status_code == 409
    resp = admin.put(f"{NS}/old", json={"namespace": "new", "display_name": "New"})
    assert resp.status_code == 200
    assert resp.json["description"] == "keep me" and resp.json["display_name"] == "New"
    assert admin.get(f"{NS}/old").status_code == 404
    assert [t["name"] for t in admin.get(f"{NS}/new/tags").json["tags"]] == ["t"]
    # what glanceclient sends back after a GET is accepted (contents ignored)
    doc = admin.get(f"{NS}/new").json
    for key in ("self", "schema", "created_at", "updated_at"):
        doc.pop(key)
    doc["description"] = "changed"
    resp = admin.put(f"{NS}/new", json=doc)
    assert resp.status_code == 200 and resp.json["description"] == "changed"
    assert admin.put(f"{NS}/nothing", json={"namespace": "nothing"}).status_code == 404


def test_delete_removes_contents(api):
    admin = api["admin"]
    body = {"properties": {"p": {"title": "P", "type": "string"}}, "tags": [{"name": "t"}]}
    _ns(admin, "gone", objects=[{"name": "o"}], **body)
    assert admin.delete(f"{NS}/gone").status_code == 204
    _ns(admin, "gone")
    assert admin.get(f"{NS}/gone/objects").json["objects"] == []
    assert admin.get(f"{NS}/gone/properties").json["properties"] == {}
    assert admin.get(f"{NS}/gone/tags").json["tags"] == []
    assert admin.delete(f"{NS}/gone").status_code == 204
    assert admin.delete(f"{NS}/gone").status_code == 404


# -- listing -----------------------------------------------------------------


def test_list_pages_sort_and_filters(api):
    admin = api["admin"]
    for i in range(5):
        _ns(admin, f"page-{i}", visibility="public" if i % 2 else "private")
    admin.post(f"{NS}/page-3/resource_types", {"name": "OS::Cinder::Volume"})
    names = []
    url = f"{NS}?limit=2&sort_key=namespace&sort_dir=asc"
    while url:
        path, _, query = url.partition("?")
        body = admin.get(path, query_string=query).json
        assert len(body["namespaces"]) <= 2
        names += [n["namespace"] for n in body["namespaces"]]
        url = body.get("next")
    assert names == [f"page-{i}" for i in range(5)]
    desc = admin.get(NS, params={"sort_key": "namespace", "sort_dir": "desc"}).json
    assert [n["namespace"] for n in desc["namespaces"]] == [f"page-{i}" for i in range(4, -1, -1)]
    public = admin.get(NS, params={"visibility": "public"}).json["namespaces"]
    assert sorted(n["namespace"] for n in public) == ["page-1", "page-3"]
    linked = admin.get(NS, params={"resource_types": "OS::Cinder::Volume,OS::Nova::Flavor"})
    assert [n["namespace"] for n in linked.json["namespaces"]] == ["page-3"]
    assert linked.json["namespaces"][0]["resource_type_associations"][0]["name"] == (
        "OS::Cinder::Volume"
    )


def test_list_empty_parameters_count_as_absent(api):
    _ns(api["admin"], "only")
    resp = api["admin"].get(NS, query_string="visibility=&marker=&limit=&resource_types=")
    assert resp.status_code == 200
    assert [n["namespace"] for n in resp.json["namespaces"]] == ["only"]


@pytest.mark.parametrize(
    "query",
    [
        "limit=x",
        "limit=-1",
        "sort_key=owner",
        "sort_dir=up",
        "visibility=shared",
        "marker=nowhere",
        "limit=1&limit=2",
    ],
)
def test_list_bad_parameters_are_400(api, query):
    assert api["admin"].get(NS, query_string=query).status_code == 400


# -- visibility and rights ---------------------------------------------------


def test_visibility_and_rights(api):
    admin, owner, other, reader = api["admin"], api["owner"], api["other"], api["reader"]
    _ns(admin, "p1-private", owner="p1", objects=[{"name": "o"}])
    _ns(admin, "public", visibility="public", owner="p2", tags=[{"name": "t"}])
    _ns(admin, "admin-private")
    seen = {n["namespace"] for n in owner.get(NS).json["namespaces"]}
    assert seen == {"p1-private", "public"}
    seen = {n["namespace"] for n in other.get(NS).json["namespaces"]}
    assert seen == {"public"}
    assert reader.get(f"{NS}/p1-private/objects/o").status_code == 200
    assert other.get(f"{NS}/p1-private").status_code == 404
    assert other.get(f"{NS}/p1-private/objects").status_code == 404
    assert other.get(f"{NS}/p1-private/objects/o").status_code == 404
    assert other.delete(f"{NS}/p1-private").status_code == 404
    assert other.get(f"{NS}/public/tags/t").status_code == 200
    # writes are for admins only, whoever owns the namespace
    assert owner.post(NS, {"namespace": "mine"}).status_code == 403
    assert owner.post(f"{NS}/p1-private/objects", {"name": "x"}).status_code == 403
    assert owner.delete(f"{NS}/p1-private/objects/o").status_code == 403
    assert reader.put(f"{NS}/p1-private", json={"namespace": "p1-private"}).status_code == 403
    assert other.post(f"{NS}/public/tags/new").status_code == 403
    assert other.delete(f"{NS}/public").status_code == 403
    assert admin.get(f"{NS}/admin-private").status_code == 200


def test_ownerless_namespace_is_visible_to_all(clients):
    api = clients()
    anonymous_admin = api["admin"]
    anonymous_admin.headers.pop("X-Project-Id")
    _ns(anonymous_admin, "system")
    assert api["other"].get(f"{NS}/system").status_code == 200


# -- protection --------------------------------------------------------------


def test_protected_namespace_keeps_its_contents(api):
    admin = api["admin"]
    _ns(
        admin,
        "locked",
        protected=True,
        resource_type_associations=[{"name": "OS::Glance::Image"}],
        properties={"p": {"title": "P", "type": "string"}},
        objects=[{"name": "o"}],
        tags=[{"name": "t"}],
    )
    for path in (
        "",
        "/objects",
        "/objects/o",
        "/properties",
        "/properties/p",
        "/tags",
        "/tags/t",
        "/resource_types/OS::Glance::Image",
    ):
        assert admin.delete(f"{NS}/locked{path}").status_code == 403, path
    # adding and changing are still allowed
    assert admin.post(f"{NS}/locked/tags/t2").status_code == 201
    assert admin.put(f"{NS}/locked/objects/o", json={"name": "o2"}).status_code == 200


# -- objects -----------------------------------------------------------------


def test_objects_crud(api):
    admin = api["admin"]
    _ns(admin)
    base = f"{NS}/ns1/objects"
    body = {
        "name": "obj",
        "description": "d",
        "required": ["a"],
        "properties": {"a": {"title": "A", "type": "string", "maxLength": 5}},
    }
    resp = admin.post(base, body)
    assert resp.status_code == 201
    assert resp.json["self"] == f"{base}/obj"
    _valid(admin, "object", resp.json)
    assert admin.post(base, {"name": "obj"}).status_code == 409
    assert admin.get(f"{base}/obj").json["properties"]["a"]["maxLength"] == 5
    listed = admin.get(base).json
    assert [o["name"] for o in listed["objects"]] == ["obj"]
    _valid(admin, "objects", listed)
    admin.post(base, {"name": "other"})
    assert admin.put(f"{base}/obj", json={"name": "other"}).status_code == 409
    resp = admin.put(f"{base}/obj", json={"name": "renamed"})
    assert resp.status_code == 200 and resp.json["name"] == "renamed"
    assert resp.json["description"] == "d" and resp.json["required"] == ["a"]
    assert admin.get(f"{base}/obj").status_code == 404
    assert admin.put(f"{base}/obj", json={"name": "x"}).status_code == 404
    assert admin.delete(f"{base}/renamed").status_code == 204
    assert admin.delete(f"{base}/renamed").status_code == 404
    assert [o["name"] for o in admin.get(base).json["objects"]] == ["other"]
    assert admin.delete(base).status_code == 204
    assert admin.get(base).json["objects"] == []
    assert admin.get(f"{NS}/nothing/objects").status_code == 404


def test_objects_and_tags_unpaged_by_default(clients):
    admin = clients(api__limit_param_default=2)["admin"]
    _ns(admin)
    for name in ("a", "b", "c"):
        admin.post(f"{NS}/ns1/objects", {"name": name})
        admin.post(f"{NS}/ns1/tags/{name}")
    for kind in ("objects", "tags"):
        body = admin.get(f"{NS}/ns1/{kind}").json
        assert len(body[kind]) == 3 and "next" not in body


def test_objects_and_tags_page(api):
    admin = api["admin"]
    _ns(admin)
    for name in ("c", "a", "b"):
        admin.post(f"{NS}/ns1/objects", {"name": name})
        admin.post(f"{NS}/ns1/tags/{name}")
    for kind in ("objects", "tags"):
        first = admin.get(f"{NS}/ns1/{kind}", params={"limit": 2, "sort_key": "name"}).json
        assert [o["name"] for o in first[kind]] == ["c", "b"]
        query = urllib.parse.urlsplit(first["next"]).query
        rest = admin.get(f"{NS}/ns1/{kind}", query_string=query).json
        assert [o["name"] for o in rest[kind]] == ["a"] and "next" not in rest
        bad = admin.get(f"{NS}/ns1/{kind}", params={"marker": "zz"})
        assert bad.status_code == 400


# -- properties --------------------------------------------------------------


def test_properties_crud_as_tempest_does(api):
    admin = api["admin"]
    rt = admin.get("/v2/metadefs/resource_types").json["resource_types"][0]["name"]
    _ns(admin)
    assert admin.post(f"{NS}/ns1/resource_types", {"name": rt}).status_code == 201
    enum = ["xen", "qemu", "kvm"]
    base = f"{NS}/ns1/properties"
    resp = admin.post(base, {"title": "t1", "name": rt, "type": "string", "enum": enum})
    assert resp.status_code == 201 and resp.json["title"] == "t1"
    _valid(admin, "property", resp.json)
    assert admin.get(f"{base}/{rt}").json["name"] == rt
    resp = admin.put(f"{base}/{rt}", json={"title": "t2", "type": "string", "name": rt})
    assert resp.status_code == 200 and resp.json["title"] == "t2"
    assert "enum" not in resp.json  # a PUT replaces the whole definition
    listed = admin.get(base).json
    _valid(admin, "properties", listed)
    assert listed["properties"] == {rt: {"name": rt, "title": "t2", "type": "string"}}
    assert admin.delete(f"{base}/{rt}").status_code == 204
    assert admin.get(base).json["properties"] == {}
    assert admin.delete(f"{base}/{rt}").status_code == 404


def test_property_rules(api):
    admin = api["admin"]
    _ns(admin, resource_type_associations=[{"name": "OS::Nova::Flavor", "prefix": "hw:"}])
    base = f"{NS}/ns1/properties"
    assert admin.post(base, {"name": "cpu", "title": "C", "type": "integer"}).status_code == 201
    assert admin.post(base, {"name": "cpu", "title": "C", "type": "integer"}).status_code == 409
    admin.post(base, {"name": "mem", "title": "M", "type": "integer"})
    renamed = admin.put(f"{base}/cpu", json={"name": "mem", "title": "C", "type": "integer"})
    assert renamed.status_code == 409
    by_type = {"resource_type": "OS::Nova::Flavor"}
    resp = admin.get(f"{base}/hw:cpu", params=by_type)
    assert resp.status_code == 200 and resp.json["name"] == "hw:cpu"
    assert admin.get(f"{base}/cpu", params=by_type).status_code == 404
    assert (
        admin.get(f"{base}/hw:cpu", params={"resource_type": "OS::Nova::Server"}).status_code
        == 404
    )
    assert admin.delete(base).status_code == 204
    assert admin.get(base).json["properties"] == {}


# -- tags --------------------------------------------------------------------


def test_tags_as_tempest_does(api):
    admin = api["admin"]
    _ns(admin)
    base = f"{NS}/ns1/tags"
    tags = [{"name": "sample-tag1"}, {"name": "sample-tag2"}, {"name": "sample-tag3"}]
    resp = admin.post(base, {"tags": tags})
    assert resp.status_code == 201
    assert [t["name"] for t in resp.json["tags"]] == [t["name"] for t in tags]
    listed = admin.get(base).json["tags"]
    assert sorted(t["name"] for t in listed) == [t["name"] for t in tags]
    _valid(admin, "tags", {"tags": listed})
    resp = admin.post(f"{base}/single")
    assert resp.status_code == 201 and resp.json["name"] == "single"
    _valid(admin, "tag", resp.json)
    assert admin.post(f"{base}/single").status_code == 409
    assert admin.get(f"{base}/single").json["name"] == "single"
    resp = admin.put(f"{base}/single", json={"name": "renamed"})
    assert resp.status_code == 200 and resp.json["name"] == "renamed"
    assert admin.put(f"{base}/renamed", json={"name": "sample-tag1"}).status_code == 409
    assert admin.delete(f"{base}/renamed").status_code == 204
    assert admin.delete(f"{base}/renamed").status_code == 404
    assert admin.delete(base).status_code == 204
    assert admin.get(base).json["tags"] == []


def test_tags_replace_or_append(api):
    admin = api["admin"]
    _ns(admin, tags=[{"name": "old"}])
    base = f"{NS}/ns1/tags"

    def names():
        return sorted(t["name"] for t in admin.get(base).json["tags"])

    assert admin.post(base, {"tags": [{"name": "a"}]}).status_code == 201
    assert names() == ["a"]
    append = {"X-Openstack-Append": "True"}
    assert admin.post(base, {"tags": [{"name": "b"}]}, headers=append).status_code == 201
    assert names() == ["a", "b"]
    assert admin.post(base, {"tags": [{"name": "a"}]}, headers=append).status_code == 409
    dup = {"tags": [{"name": "c"}, {"name": "c"}]}
    assert admin.post(base, dup).status_code == 409
    assert names() == ["a", "b"]
    resp = admin.post(base, {"tags": []}, headers={"X-Openstack-Append": "False"})
    assert resp.status_code == 201 and names() == []


# -- resource types ----------------------------------------------------------


def test_resource_type_associations(api):
    admin, reader = api["admin"], api["reader"]
    types = reader.get("/v2/metadefs/resource_types").json["resource_types"]
    _valid(admin, "resource_type", types[0])
    _ns(admin, visibility="public")
    base = f"{NS}/ns1/resource_types"
    resp = admin.post(base, {"name": "OS::Glance::Image", "prefix": "img_"})
    assert resp.status_code == 201 and resp.json["prefix"] == "img_"
    assert admin.post(base, {"name": "OS::Glance::Image"}).status_code == 409
    # an unknown resource type comes into being, as in Glance
    assert admin.post(base, {"name": "OS::Custom::Thing"}).status_code == 201
    names = {t["name"] for t in reader.get("/v2/metadefs/resource_types").json["resource_types"]}
    assert "OS::Custom::Thing" in names
    listed = reader.get(base).json["resource_type_associations"]
    assert [a["name"] for a in listed] == ["OS::Custom::Thing", "OS::Glance::Image"]
    _valid(admin, "resource_types", {"resource_type_associations": listed})
    assert reader.post(base, {"name": "OS::Nova::Server"}).status_code == 403
    assert admin.delete(f"{base}/OS::Glance::Image").status_code == 204
    assert admin.delete(f"{base}/OS::Glance::Image").status_code == 404
    assert admin.delete(f"{base}/OS::Never::Seen").status_code == 404
    assert [a["name"] for a in reader.get(base).json["resource_type_associations"]] == [
        "OS::Custom::Thing"
    ]


# -- bad input ---------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        [],
        "ns",
        {},
        {"namespace": ""},
        {"namespace": "x" * 81},
        {"namespace": "a/b"},
        {"namespace": 5},
        {"namespace": "n", "visibility": "shared"},
        {"namespace": "n", "protected": "yes"},
        {"namespace": "n", "description": "d" * 501},
        {"namespace": "n", "unknown": 1},
        {"namespace": "n", "properties": {"p": {"title": "P"}}},
        {"namespace": "n", "properties": {"p": {"title": "P", "type": "date"}}},
        {"namespace": "n", "properties": {"p": {"title": "P", "type": "string", "bad": 1}}},
        {"namespace": "n", "properties": {"p": {"title": "P", "type": "string", "pattern": "("}}},
        {"namespace": "n", "properties": {"p": {"title": "P", "type": "string", "maxLength": -1}}},
        {"namespace": "n", "objects": [{"description": "no name"}]},
        {"namespace": "n", "objects": [{"name": "x" * 81}]},
        {"namespace": "n", "tags": [{"name": ""}]},
        {"namespace": "n", "tags": [{"name": "t" * 256}]},
        {"namespace": "n", "resource_type_associations": [{"prefix": "p"}]},
        {"namespace": "n", "resource_type_associations": [{"name": "r" * 81}]},
    ],
)
def test_bad_namespace_bodies_are_400(api, body):
    resp = api["admin"].post(NS, body)
    assert resp.status_code == 400, resp.text


@pytest.mark.parametrize("value", ["1e400", "-1e400", "NaN", "[" * 40 + "]" * 40])
def test_unstorable_values_are_400(api, value):
    body = (
        '{"namespace": "n", "properties": {"p": {"title": "t", "type": "number", '
        f'"default": {value}}}}}}}'
    )
    headers = {"Content-Type": "application/json"}
    assert api["admin"].post(NS, body=body, headers=headers).status_code == 400
    assert api["admin"].get(f"{NS}/n").status_code == 404


def test_bad_child_bodies_are_400(api):
    admin = api["admin"]
    _ns(admin)
    cases = [
        ("post", "objects", {"description": "no name"}),
        ("post", "objects", {"name": "o", "required": "a"}),
        ("post", "properties", {"name": "p", "type": "string"}),
        ("post", "properties", {"name": "p", "title": "P", "type": "string", "items": 1}),
        ("post", "properties", {"name": "p" * 256, "title": "P", "type": "string"}),
        ("post", "tags", {"tags": "a"}),
        ("post", "tags", {"tags": [{"nom": "a"}]}),
        ("post", "tags", {"tags": [], "more": 1}),
        ("post", "resource_types", {"prefix": "x"}),
        ("put", "tags/none", {"nom": "b"}),
    ]
    for method, path, body in cases:
        if method == "post":
            resp = admin.post(f"{NS}/ns1/{path}", body)
        else:
            resp = admin.put(f"{NS}/ns1/{path}", json=body)
        assert resp.status_code == 400, (path, body, resp.text)


def test_malformed_and_oversized_bodies(clients):
    admin = clients(api__max_request_body_size=2048)["admin"]
    _ns(admin)
    resp = admin.put(f"{NS}/ns1", body="{not json", headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    assert (
        admin.put(f"{NS}/ns1", body="", headers={"Content-Type": "application/json"}).status_code
        == 400
    )
    huge = json.dumps({"namespace": "n", "description": "d" * 4000})
    resp = admin.put(f"{NS}/ns1", body=huge, headers={"Content-Type": "application/json"})
    assert resp.status_code == 413
    resp = admin.put(f"{NS}/ns1", body="{}", headers={"Content-Type": "text/plain"})
    assert resp.status_code == 415
    assert admin.put(f"{NS}/ns1", json={"display_name": "no namespace"}).status_code == 400


def test_read_only_attributes_are_403(api):
    admin = api["admin"]
    _ns(admin)
    assert admin.post(NS, {"namespace": "n", "self": "/x"}).status_code == 403
    assert admin.put(f"{NS}/ns1", json={"namespace": "ns1", "created_at": "x"}).status_code == 403
    assert admin.post(f"{NS}/ns1/objects", {"name": "o", "schema": "x"}).status_code == 403


def test_tag_name_in_path_is_checked(api):
    admin = api["admin"]
    _ns(admin)
    assert admin.post(f"{NS}/ns1/tags/{'t' * 256}").status_code == 400
    assert admin.post(f"{NS}/ns1/tags/%20").status_code == 400
