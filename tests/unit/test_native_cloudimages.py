"""GET/PATCH /v2/cloudimages, derived __ properties, OS list, quotas, versions."""

from __future__ import annotations

import urllib.parse

import pytest

from ims import errors
from ims.context import RequestContext, expand_roles
from ims.core import os_versions
from ims.core.native_quotas import QuotaService, enforce_private_image_quota
from tests.unit.native_support import ims_error, wait_job

DATA = b"\x01" * 4096
EP = "4f4c1bd4-3c1b-4a55-9f60-1f2b5f0b6a11"


def active(client, **body):
    image = client.create(**body)
    assert client.upload(image["id"], DATA).status_code == 204
    return client.get(f"/v2/images/{image['id']}").json


def listed(client, query=""):
    resp = client.get("/v2/cloudimages", query_string=query)
    assert resp.status_code == 200, resp.text
    return resp.json["images"]


def names(client, query=""):
    return sorted(i["name"] for i in listed(client, query))


@pytest.fixture
def api(native):
    return native()[0]


# -- the view and its consistency with the Glance view ------------------------


def test_imageinfo_matches_glance_view_and_derives_os(api):
    owner = api["owner"]
    image = active(owner, name="centos", __os_version="CentOS 7.9 64bit", __description="d")
    glance = owner.get(f"/v2/images/{image['id']}").json
    (native,) = listed(owner, f"id={image['id']}")
    for key, value in glance.items():
        assert native[key] == value, key
    assert native["__imagetype"] == "private"  # shared visibility, no members
    assert native["__isregistered"] == "true"
    assert native["__image_size"] == str(glance["size"]) == str(len(DATA))
    assert (native["__os_type"], native["__platform"], native["__os_bit"]) == (
        "Linux",
        "CentOS",
        "64",
    )
    assert native["enterprise_project_id"] == "0" and native["deleted"] is False


def test_unknown_os_version_shows_stored_values_and_derivation_wins(api):
    owner = api["owner"]
    owner.create(name="mine", __os_version="MyOS 1", __os_type="Other", __platform="Other")
    owner.create(name="win", __os_version="Windows Server 2019 Datacenter 64bit", __platform="X")
    by_name = {i["name"]: i for i in listed(owner)}
    assert by_name["mine"]["__platform"] == "Other" and "__os_bit" not in by_name["mine"]
    assert by_name["win"]["__platform"] == "Windows" and by_name["win"]["__os_type"] == "Windows"
    # filters follow the same rule as the view
    assert names(owner, "__platform=Other") == ["mine"]
    assert names(owner, "__platform=X") == []
    assert names(owner, "__platform=Windows") == ["win"]
    assert names(owner, "__os_type=Windows") == ["win"]


def test_image_types_are_derived_consistently(api):
    owner, other, admin = api["owner"], api["other"], api["admin"]
    active(admin, name="gold", visibility="public", protected=True)
    active(admin, name="market", visibility="public", __productcode="pc-1")
    active(owner, name="private", visibility="private")
    active(owner, name="unshared")  # Glance's default visibility, no members
    shared = active(owner, name="shared", visibility="private")
    job = owner.post("/v1/cloudimages/members", {"images": [shared["id"]], "projects": ["p2"]})
    assert wait_job(owner, "p1", job.json["job_id"])["status"] == "SUCCESS"
    assert owner.get(f"/v2/images/{shared['id']}").json["visibility"] == "shared"
    for kind, expected in {
        "gold": ["gold"],
        "market": ["market"],
        "private": ["private", "unshared"],
        "shared": ["shared"],
    }.items():
        assert names(owner, f"__imagetype={kind}") == expected, kind
    # each image shows the type the filters put it under
    for image in listed(owner):
        assert image["__imagetype"] == {"unshared": "private"}.get(image["name"], image["name"])
    # the recipient sees "shared" too, once it has an answer to filter on
    assert names(other, "member_status=pending&visibility=shared&__imagetype=shared") == ["shared"]
    (seen,) = listed(other, "member_status=pending&__imagetype=shared")
    assert seen["__imagetype"] == "shared" and seen["owner"] == "p1"
    # the documented idioms
    assert names(owner, "__imagetype=gold&visibility=public&protected=true") == ["gold"]
    assert names(owner, "owner=p1") == ["private", "shared", "unshared"]


# -- every filter -------------------------------------------------------------


@pytest.fixture
def catalogue(api):
    owner, admin = api["owner"], api["admin"]
    made = {
        "a": active(
            owner,
            name="a",
            visibility="private",
            protected=True,
            min_ram=512,
            min_disk=40,
            tags=["env=prod", "team.blue", "plain"],
            __os_version="Ubuntu 20.04 server 64bit",
            __support_kvm="true",
            __support_s4l="true",
            __whole_image="true",
            __system__cmkid="key-1",
            virtual_env_type="FusionCompute",
            architecture="x86_64",
            enterprise_project_id=EP,
        ),
        "b": owner.create(
            name="b",
            container_format="ovf",
            disk_format="qcow2",
            __os_version="Windows 7 Enterprise 32bit",
            virtual_env_type="DataImage",
            architecture="aarch64",
            enterprise_project_id="0",
        ),
        "c": active(owner, name="c", tags=["env=dev"], __support_xen="true"),
        "pub": active(admin, name="pub", visibility="public", __os_version="Other(64 bit)"),
    }
    return made


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["a", "b", "c", "pub"]),
        ("__isregistered=true", ["a", "c", "pub"]),
        ("__isregistered=false", ["b"]),
        ("__whole_image=true", ["a"]),
        ("__whole_image=false", ["b", "c", "pub"]),
        ("__system__cmkid=key-1", ["a"]),
        ("__os_type=Windows", ["b"]),
        ("__os_type=Linux", ["a"]),
        ("__os_type=Other", ["pub"]),
        ("__platform=Ubuntu", ["a"]),
        ("__os_bit=32", ["b"]),
        ("__os_bit=64", ["a", "pub"]),
        ("__support_kvm=true", ["a"]),
        ("__support_xen=true", ["c"]),
        ("__support_s4l=true&virtual_env_type=FusionCompute", ["a"]),
        ("protected=true", ["a"]),
        ("protected=false", ["b", "c", "pub"]),
        ("visibility=private", ["a"]),
        ("visibility=public", ["pub"]),
        ("owner=p1", ["a", "b", "c"]),
        ("status=queued", ["b"]),
        ("name=c", ["c"]),
        ("container_format=ovf", ["b"]),
        ("disk_format=qcow2", ["b"]),
        ("min_ram=512", ["a"]),
        ("min_disk=40", ["a"]),
        ("min_disk=0", ["b", "c", "pub"]),
        ("tag=env=prod", ["a"]),
        ("tag=env=dev", ["c"]),
        ("tag=team=blue", ["a"]),  # a legacy "a.b" tag is queried as a=b
        ("tag=plain", ["a"]),
        ("tag=env=prod&tag=plain", ["a"]),
        ("tag=env=prod&tag=env=dev", []),
        ("virtual_env_type=DataImage", ["b"]),
        ("architecture=x86", ["a"]),
        ("architecture=arm", ["b"]),
        (f"enterprise_project_id={EP}", ["a"]),
        ("enterprise_project_id=0", ["b", "c", "pub"]),
        ("enterprise_project_id=all_granted_eps", ["a", "b", "c", "pub"]),
        ("flavor_id=s3.small.1", ["a", "b", "c", "pub"]),
        ("created_at=gt:2000-01-01T00:00:00Z", ["a", "b", "c", "pub"]),
        ("created_at=lt:2000-01-01T00:00:00Z", []),
        ("updated_at=gte:2000-01-01T00:00:00Z", ["a", "b", "c", "pub"]),
        ("updated_at=lte:2999-01-01T00:00:00Z", ["a", "b", "c", "pub"]),
        ("created_at=neq:2000-01-01T00:00:00Z", ["a", "b", "c", "pub"]),
        ("custom_prop=nothing", []),
    ],
)
def test_every_filter(api, catalogue, query, expected):
    assert names(api["owner"], query) == expected


def test_filter_on_exact_times_and_members(api, catalogue):
    owner, other = api["owner"], api["other"]
    created = catalogue["c"]["created_at"]
    assert "c" in names(owner, f"created_at=eq:{created}")
    assert "c" not in names(owner, f"created_at=neq:{created}")
    assert other.get("/v2/cloudimages", query_string=f"id={catalogue['a']['id']}").json == {
        "images": []
    }
    assert names(other) == ["pub"]
    assert names(other, "member_status=accepted") == ["pub"]


def test_paging_and_sorting(api):
    owner = api["owner"]
    for name in ("n1", "n2", "n3", "n4", "n5"):
        owner.create(name=name)
    first = listed(owner, "sort_key=name&sort_dir=asc&limit=2")
    assert [i["name"] for i in first] == ["n1", "n2"]
    rest = listed(owner, f"sort_key=name&sort_dir=asc&limit=2&marker={first[-1]['id']}")
    assert [i["name"] for i in rest] == ["n3", "n4"]
    assert [i["name"] for i in listed(owner, "sort_key=name")] == ["n5", "n4", "n3", "n2", "n1"]
    assert len(listed(owner, "limit=0")) == 0
    assert len(listed(owner, "sort_key=size&sort_dir=desc")) == 5


def test_limit_defaults_and_bounds(native):
    owner = native(native__list_limit_default=2, native__list_limit_max=3)[0]["owner"]
    for name in ("x1", "x2", "x3", "x4"):
        owner.create(name=name)
    assert len(listed(owner)) == 2
    assert len(listed(owner, "limit=100000")) == 3


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("__imagetype=silver", "IMG.0024"),
        ("__os_type=BeOS", "IMG.0056"),
        ("__os_bit=16", "IMG.0001"),
        ("__isregistered=maybe", "IMG.0001"),
        ("__whole_image=1", "IMG.0001"),
        ("min_ram=lots", "IMG.0055"),
        ("min_disk=-1", "IMG.0055"),
        ("min_disk=99999999999999999999", "IMG.0055"),
        ("architecture=mips", "IMG.0212"),
        ("visibility=community", "IMG.0001"),
        ("member_status=maybe", "IMG.0001"),
        ("protected=maybe", "IMG.0001"),
        ("created_at=2018-10-28T10:00:00Z", "IMG.0001"),
        ("created_at=after:2018-10-28T10:00:00Z", "IMG.0001"),
        ("created_at=gt:yesterday", "IMG.0001"),
        ("enterprise_project_id=my-project", "IMG.0001"),
        ("limit=ten", "IMG.0001"),
        ("limit=-1", "IMG.0001"),
        ("sort_key=owner_name", "IMG.0001"),
        ("sort_dir=up", "IMG.0001"),
        ("marker=00000000-0000-0000-0000-000000000000", "IMG.0027"),
        ("id=a&id=b", "IMG.0001"),
        ("name=" + "x" * 300, "IMG.0001"),
        ("&".join(f"tag=k{i}=v" for i in range(11)), "IMG.0001"),
    ],
)
def test_bad_filters_are_ims_errors(api, query, code):
    ims_error(api["owner"].get("/v2/cloudimages", query_string=query), code)


def test_marker_of_an_invisible_image_is_refused(api):
    hidden = api["owner"].create(name="hidden", visibility="private")
    resp = api["other"].get("/v2/cloudimages", query_string=f"marker={hidden['id']}")
    ims_error(resp, "IMG.0027")


# -- PATCH ----------------------------------------------------------------------


def patch(client, image_id, ops):
    return client.patch(f"/v2/cloudimages/{image_id}", ops, media="application/json")


def test_patch_documented_paths_and_user_properties(api):
    owner = api["owner"]
    image = active(owner, name="old", foo="1")
    resp = patch(
        owner,
        image["id"],
        [
            {"op": "replace", "path": "/name", "value": "new name_1.0"},
            {"op": "add", "path": "/__description", "value": "about"},
            {"op": "add", "path": "/__support_kvm", "value": "true"},
            {"op": "add", "path": "/__is_config_init", "value": True},
            {"op": "replace", "path": "/min_ram", "value": 1024},
            {"op": "add", "path": "/max_ram", "value": "4096"},
            {"op": "add", "path": "/hw_firmware_type", "value": "uefi"},
            {"op": "add", "path": "/hw_vif_multiqueue_enabled", "value": "true"},
            {"op": "add", "path": "/enterprise_project_id", "value": EP},
            {"op": "add", "path": "/__support_kvm_gpu_type", "value": "V100"},
            {"op": "remove", "path": "/__support_kvm"},
            {"op": "replace", "path": "/foo", "value": "2"},
            {"op": "add", "path": "/bar", "value": 3},
            {"op": "remove", "path": "/nothing_here"},
        ],
    )
    assert resp.status_code == 200, resp.text
    body = resp.json
    assert body["name"] == "new name_1.0" and body["min_ram"] == 1024
    assert body["__description"] == "about" and body["max_ram"] == "4096"
    assert body["__is_config_init"] == "true" and "__support_kvm" not in body
    assert body["foo"] == "2" and body["bar"] == "3" and body["enterprise_project_id"] == EP
    assert body["__imagetype"] == "private" and body["__isregistered"] == "true"
    glance = owner.get(f"/v2/images/{image['id']}").json
    assert {k: body[k] for k in glance} == glance
    resp = patch(owner, image["id"], [{"op": "remove", "path": "/foo"}])
    assert resp.status_code == 200 and "foo" not in resp.json


@pytest.mark.parametrize(
    ("ops", "code"),
    [
        ([{"op": "replace", "path": "/name", "value": "x" * 129}], "IMG.0002"),
        ([{"op": "replace", "path": "/name", "value": "bad<name>"}], "IMG.0003"),
        ([{"op": "replace", "path": "/name", "value": " padded"}], "IMG.0003"),
        ([{"op": "replace", "path": "/name", "value": ""}], "IMG.0013"),
        ([{"op": "remove", "path": "/name"}], "IMG.0001"),
        ([{"op": "add", "path": "/__description", "value": "x" * 1025}], "IMG.0004"),
        ([{"op": "add", "path": "/__description", "value": "a<b"}], "IMG.0001"),
        ([{"op": "add", "path": "/hw_firmware_type", "value": "efi"}], "IMG.0141"),
        ([{"op": "replace", "path": "/min_ram", "value": -1}], "IMG.0055"),
        ([{"op": "replace", "path": "/min_ram", "value": "x"}], "IMG.0055"),
        (
            [
                {"op": "replace", "path": "/min_ram", "value": 4096},
                {"op": "add", "path": "/max_ram", "value": 1024},
            ],
            "IMG.0055",
        ),
        ([{"op": "add", "path": "/__support_kvm", "value": "yes"}], "IMG.0001"),
        ([{"op": "add", "path": "/__support_xen_gpu_type", "value": "K80"}], "IMG.0001"),
        (
            [
                {"op": "add", "path": "/__support_xen", "value": "true"},
                {"op": "add", "path": "/__support_xen_gpu_type", "value": "M60_vGPU"},
            ],
            "IMG.0001",
        ),
        ([{"op": "add", "path": "/enterprise_project_id", "value": "ep"}], "IMG.0001"),
        ([{"op": "replace", "path": "/visibility", "value": "public"}], "IMG.0001"),
        ([{"op": "replace", "path": "/protected", "value": True}], "IMG.0001"),
        ([{"op": "add", "path": "/__imagetype", "value": "gold"}], "IMG.0001"),
        ([{"op": "add", "path": "/__os_bit", "value": "32"}], "IMG.0001"),
        ([{"op": "add", "path": "/virtual_env_type", "value": "Ironic"}], "IMG.0001"),
        ([{"op": "add", "path": "/tags", "value": ["x"]}], "IMG.0001"),
        ([{"op": "add", "path": "/status", "value": "killed"}], "IMG.0001"),
        ([{"op": "add", "path": "/a/b", "value": "x"}], "IMG.0001"),
        ([{"op": "add", "path": "name", "value": "x"}], "IMG.0001"),
        ([{"op": "move", "path": "/name", "value": "x"}], "IMG.0001"),
        ([{"op": "add", "path": "/name"}], "IMG.0001"),
        ([{"op": "add", "path": "/user", "value": {"nested": 1}}], "IMG.0001"),
        ([{"op": "add", "path": "/user", "value": "x" * 256}], "IMG.0001"),
        ([], "IMG.0001"),
        ({"op": "add"}, "IMG.0001"),
        (["op"], "IMG.0001"),
    ],
)
def test_patch_refusals(api, ops, code):
    owner = api["owner"]
    image = active(owner, name="p")
    ims_error(patch(owner, image["id"], ops), code)
    assert owner.get(f"/v2/images/{image['id']}").json["name"] == "p"


def test_patch_rules_of_state_kind_and_ownership(api):
    owner, other = api["owner"], api["other"]
    queued = owner.create(name="q")
    ims_error(
        patch(owner, queued["id"], [{"op": "replace", "path": "/name", "value": "x"}]), "IMG.0046"
    )
    data = active(owner, name="d", virtual_env_type="DataImage")
    ims_error(
        patch(owner, data["id"], [{"op": "replace", "path": "/min_ram", "value": 1}]), "IMG.0001"
    )
    resp = patch(owner, data["id"], [{"op": "add", "path": "/__description", "value": "ok"}])
    assert resp.status_code == 200
    private = active(owner, name="private", visibility="private")
    op = [{"op": "replace", "path": "/name", "value": "stolen"}]
    ims_error(patch(other, private["id"], op), "IMG.0027", status=404)
    shared = active(owner, name="shared", visibility="private")
    job = owner.post("/v1/cloudimages/members", {"images": [shared["id"]], "projects": ["p2"]})
    assert wait_job(owner, "p1", job.json["job_id"])["status"] == "SUCCESS"
    ims_error(patch(other, shared["id"], op), "IMG.0047", status=403)
    ims_error(patch(owner, "nope", op), "IMG.0027", status=404)
    resp = owner._client.simulate_patch(
        f"/v2/cloudimages/{private['id']}",
        body="{not json",
        headers={**owner.headers, "Content-Type": "application/json"},
    )
    ims_error(resp, "IMG.0001")
    resp = owner._client.simulate_patch(
        f"/v2/cloudimages/{private['id']}",
        body="[]",
        headers={**owner.headers, "Content-Type": "text/plain"},
    )
    assert resp.status_code == 400 and "error" in resp.json


# -- OS list, quotas, versions --------------------------------------------------


def test_os_version_list_is_the_derivation_table(api):
    resp = api["owner"].get("/v1/cloudimages/os_version")
    assert resp.status_code == 200
    groups = resp.json
    assert {g["platform"] for g in groups} >= {"Windows", "CentOS", "Ubuntu", "Other"}
    for group in groups:
        for entry in group["version_list"]:
            assert set(entry) == {"platform", "os_version_key", "os_version", "os_bit", "os_type"}
            derived = os_versions.derived(entry["os_version"])
            assert derived["__platform"] == entry["platform"] == group["platform"]
            assert derived["__os_bit"] == str(entry["os_bit"])
            assert derived["__os_type"] == entry["os_type"]
    arm = api["owner"].get("/v1/cloudimages/os_version", query_string="tag=arm").json
    assert arm and all("ARM" in e["os_version"] for g in arm for e in g["version_list"])
    both = api["owner"].get("/v1/cloudimages/os_version", query_string="tag=arm&tag=bms").json
    assert both == []
    ims_error(api["owner"].get("/v1/cloudimages/os_version", query_string="tag=ppc"), "IMG.0001")


def test_quota_reports_usage(native):
    api = native(native__private_image_quota=3, native__shared_image_quota=2)[0]
    owner = api["owner"]
    owner.create(name="one")
    owner.create(name="two")
    resp = owner.get("/v1/cloudimages/quota")
    assert resp.status_code == 200
    resources = {r["type"]: r for r in resp.json["quotas"]["resources"]}
    assert resources["image"] == {"type": "image", "used": 2, "quota": 3, "min": 1, "max": 1000}
    assert resources["image_shared"]["used"] == 0 and resources["image_shared"]["quota"] == 2
    assert resources["image_member"]["quota"] == 128
    other = api["other"].get("/v1/cloudimages/quota").json["quotas"]["resources"]
    assert other[0]["used"] == 0


def test_private_image_quota_check_for_native_creation(native):
    api, services = native(native__private_image_quota=2)
    for name in ("a", "b"):
        api["owner"].create(name=name)
    quotas = QuotaService(services.conf, services.db, services.policy)
    ctx = RequestContext(project_id="p1", roles=expand_roles(["member"]))
    with pytest.raises(errors.QuotaExceeded) as caught:
        quotas.check_private_images(ctx)
    assert caught.value.kwargs["ims_code"] == "IMG.0015"
    quotas.check_private_images(RequestContext(project_id="p2", roles=expand_roles(["member"])))
    quotas.check_private_images(ctx, adding=0)
    with services.db.session() as session:
        with pytest.raises(errors.QuotaExceeded):
            enforce_private_image_quota(services.conf, session, "p1", adding=1)


def test_version_entries(api):
    client = api["owner"]
    for path, version in (("/v1", "v1.1"), ("/v1.0", "v1.0"), ("/v1.1", "v1.1")):
        resp = client.get(path)
        assert resp.status_code == 200, path
        entry = resp.json["version"]
        assert entry["id"] == version and entry["status"] == "DEPRECATED"
        assert entry["links"][0]["rel"] == "self" and entry["links"][0]["href"].endswith("/v1/")
    assert client.get("/v2.0").json["version"]["id"] == "v2.0"
    current = client.get("/v2").json["version"]
    assert (
        current["status"] == "CURRENT"
        and current["id"] == client.get("/versions").json["versions"][0]["id"]
    )
    # Glance's discovery and negotiation are untouched
    assert client.get("/").status_code == 300
    assert client.get("/v1.5").status_code == 300
    assert client.get("/v3").status_code == 300
    assert client.get("/v2.1/images").status_code == 200
    assert client.get("/v2.0/images").status_code == 200


def test_native_paths_answer_ims_errors_never_500(api):
    owner = api["owner"]
    for path in ("/v2/cloudimages/nope", "/v1/p1/cloudimages/nope/members"):
        resp = owner.get(path)
        assert resp.status_code in (404, 405), (path, resp.text)
    resp = owner.get("/v2/cloudimages", query_string=urllib.parse.urlencode({"\x00": "x"}))
    assert resp.status_code < 500
