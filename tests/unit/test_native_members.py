"""Batch sharing jobs, recipients' answers and the v1 member queries."""

from __future__ import annotations

import datetime

import pytest
import sqlalchemy as sa

from ims.db.job_models import Job
from tests.unit.native_support import ims_error, wait_job

DATA = b"\x02" * 4096


@pytest.fixture
def api(native):
    return native()[0]


def active(client, **body):
    image = client.create(**body)
    assert client.upload(image["id"], DATA).status_code == 204
    return image


def batch(client, method, body):
    return client._client.simulate_request(
        method, "/v1/cloudimages/members", json=body, headers=client.headers
    )


def run(client, project, method, body):
    resp = batch(client, method, body)
    assert resp.status_code == 200, resp.text
    assert set(resp.json) == {"job_id"}
    return wait_job(client, project, resp.json["job_id"])


def ids(client, query):
    resp = client.get("/v2/cloudimages", query_string=query)
    assert resp.status_code == 200, resp.text
    return [i["id"] for i in resp.json["images"]]


def test_share_accept_and_see(api):
    owner, other, third = api["owner"], api["other"], api["third"]
    one = active(owner, name="one", visibility="private")
    two = active(owner, name="two")
    body = {"images": [one["id"], two["id"]], "projects": ["p2", "p3"]}
    job = run(owner, "p1", "POST", body)
    assert job["status"] == "SUCCESS", job
    assert job["job_type"] == "batchAddMembers"
    assert len(job["entities"]["results"]) == 4
    assert {r["status"] for r in job["entities"]["results"]} == {"success"}
    # the private image became shared in the Glance view, members pending
    glance = owner.get(f"/v2/images/{one['id']}").json
    assert glance["visibility"] == "shared"
    members = owner.get(f"/v2/images/{one['id']}/members").json["members"]
    assert sorted((m["member_id"], m["status"]) for m in members) == [
        ("p2", "pending"),
        ("p3", "pending"),
    ]
    # pending images show only when asked for
    assert ids(other, "") == []
    pending = "member_status=pending&visibility=shared&__imagetype=shared"
    assert sorted(ids(other, pending)) == sorted([one["id"], two["id"]])
    # the recipient accepts one of them
    job = run(
        other, "p2", "PUT", {"images": [one["id"]], "project_id": "p2", "status": "accepted"}
    )
    assert job["status"] == "SUCCESS", job
    assert job["entities"]["results"] == [
        {"image_id": one["id"], "project_id": "p2", "status": "success"}
    ]
    accepted = "member_status=accepted&visibility=shared&__imagetype=shared"
    assert ids(other, accepted) == [one["id"]]
    assert ids(other, "") == [one["id"]]
    (seen,) = other.get("/v2/cloudimages", query_string=f"id={one['id']}").json["images"]
    (mine,) = owner.get("/v2/cloudimages", query_string=f"id={one['id']}").json["images"]
    assert seen["__imagetype"] == mine["__imagetype"] == "shared"
    assert seen["owner"] == mine["owner"] == "p1"
    # and rejects the other; it hides again but can be accepted later
    body = {"images": [two["id"]], "project_id": "p2", "status": "rejected"}
    assert run(other, "p2", "PUT", body)["status"] == "SUCCESS"
    assert ids(other, "member_status=rejected&__imagetype=shared") == [two["id"]]
    assert two["id"] not in ids(other, "")
    body["status"] = "accepted"
    assert run(other, "p2", "PUT", body)["status"] == "SUCCESS"
    assert two["id"] in ids(other, "")
    # the third project still only has pending offers
    assert ids(third, "") == []


def test_member_queries(api):
    owner, other, third = api["owner"], api["other"], api["third"]
    image = active(owner, name="m")
    projects = ["p2", "p3", "p4", "p5"]
    assert run(owner, "p1", "POST", {"images": [image["id"]], "projects": projects})["status"] == (
        "SUCCESS"
    )
    base = f"/v1/p1/cloudimages/{image['id']}/members"
    resp = owner.get(base)
    assert resp.status_code == 200
    body = resp.json
    assert [m["member_id"] for m in body["members"]] == projects
    assert body["schema"] == "/v2/schemas/members"
    assert body["page_info"] == {"current_count": 4}
    member = body["members"][0]
    assert set(member) >= {
        "status",
        "created_at",
        "updated_at",
        "image_id",
        "member_id",
        "schema",
        "member_type",
    }
    assert member["member_type"] == "project" and member["schema"] == "/v2/schemas/member"
    page = owner.get(base, query_string="limit=3").json
    assert [m["member_id"] for m in page["members"]] == ["p2", "p3", "p4"]
    assert page["page_info"] == {"current_count": 3, "next_marker": "p4"}
    page = owner.get(base, query_string="limit=3&marker=p4").json
    assert [m["member_id"] for m in page["members"]] == ["p5"]
    assert "next_marker" not in page["page_info"]
    ims_error(owner.get(base, query_string="marker=p9"), "IMG.0001")
    ims_error(owner.get(base, query_string="limit=x"), "IMG.0001")
    ims_error(owner.get(base, query_string="limit=-2"), "IMG.0001")
    assert owner.get(f"{base}/p3").json["member_id"] == "p3"
    # a recipient sees only itself, through its own project path
    mine = f"/v1/p2/cloudimages/{image['id']}/members"
    assert [m["member_id"] for m in other.get(mine).json["members"]] == ["p2"]
    assert other.get(f"{mine}/p2").json["status"] == "pending"
    ims_error(other.get(f"{mine}/p3"), "IMG.0027", status=404)
    # another project's path, or an image one cannot see, is 404
    ims_error(other.get(base), "IMG.0027", status=404)
    ims_error(other.get(f"{base}/p2"), "IMG.0027", status=404)
    hidden = active(owner, name="h", visibility="private")
    ims_error(third.get(f"/v1/p3/cloudimages/{hidden['id']}/members"), "IMG.0027", 404)
    # a private image without members simply has none
    assert owner.get(f"/v1/p1/cloudimages/{hidden['id']}/members").json["members"] == []


def test_stop_sharing(api):
    owner, other = api["owner"], api["other"]
    image = active(owner, name="s")
    body = {"images": [image["id"]], "projects": ["p2"]}
    assert run(owner, "p1", "POST", body)["status"] == "SUCCESS"
    assert run(owner, "p1", "DELETE", body)["status"] == "SUCCESS"
    assert other.get(f"/v2/images/{image['id']}").status_code == 404
    (mine,) = owner.get("/v2/cloudimages", query_string=f"id={image['id']}").json["images"]
    assert mine["__imagetype"] == "private" and mine["visibility"] == "shared"
    job = run(owner, "p1", "DELETE", body)
    assert job["status"] == "FAIL" and job["error_code"] == "IMG.0027"
    assert job["entities"]["results"][0]["status"] == "failed"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ([], "IMG.0007"),
        ({}, "IMG.0001"),
        ({"images": "x", "projects": ["p2"]}, "IMG.0001"),
        ({"images": [], "projects": ["p2"]}, "IMG.0001"),
        ({"images": [1], "projects": ["p2"]}, "IMG.0001"),
        ({"images": ["x" * 37], "projects": ["p2"]}, "IMG.0001"),
        ({"images": ["ID"], "projects": []}, "IMG.0001"),
        ({"images": ["ID"], "projects": ["x" * 256]}, "IMG.0001"),
        ({"images": ["ID"], "projects": [f"p{i}" for i in range(101)]}, "IMG.0001"),
        ({"images": ["ID"], "projects": ["p2"], "domains": ["d1"]}, "IMG.0001"),
        ({"images": ["ID"], "projects": ["p1"]}, "IMG.0076"),
    ],
)
def test_bad_share_requests(api, body, code):
    owner = api["owner"]
    image = active(owner, name="b")
    if isinstance(body, dict) and body.get("images") == ["ID"]:
        body["images"] = [image["id"]]
    ims_error(batch(owner, "POST", body), code)


def test_what_cannot_be_shared(api):
    owner, other, admin = api["owner"], api["other"], api["admin"]
    public = active(admin, name="pub", visibility="public")
    market = active(admin, name="mkt", visibility="public", __productcode="pc")
    for image in (public, market):
        resp = batch(admin, "POST", {"images": [image["id"]], "projects": ["p2"]})
        ims_error(resp, "IMG.0089")
    encrypted = active(owner, name="enc", __system__cmkid="kms-key")
    ims_error(batch(owner, "POST", {"images": [encrypted["id"]], "projects": ["p2"]}), "IMG.0098")
    queued = owner.create(name="q")
    ims_error(batch(owner, "POST", {"images": [queued["id"]], "projects": ["p2"]}), "IMG.0046")
    hidden = active(owner, name="h", visibility="private")
    ims_error(
        batch(other, "POST", {"images": [hidden["id"]], "projects": ["p3"]}), "IMG.0027", 404
    )
    ims_error(
        batch(other, "DELETE", {"images": [hidden["id"]], "projects": ["p3"]}), "IMG.0027", 404
    )
    # a recipient may see the image but not share it on, nor unshare it
    shared = active(owner, name="s")
    assert run(owner, "p1", "POST", {"images": [shared["id"]], "projects": ["p2"]})["status"] == (
        "SUCCESS"
    )
    ims_error(
        batch(other, "POST", {"images": [shared["id"]], "projects": ["p3"]}), "IMG.0047", 403
    )
    ims_error(
        batch(other, "DELETE", {"images": [shared["id"]], "projects": ["p2"]}), "IMG.0047", 403
    )


def test_bad_answers(api):
    owner, other, third = api["owner"], api["other"], api["third"]
    image = active(owner, name="a")
    assert run(owner, "p1", "POST", {"images": [image["id"]], "projects": ["p2"]})["status"] == (
        "SUCCESS"
    )
    good = {"images": [image["id"]], "project_id": "p2", "status": "accepted"}
    ims_error(batch(other, "PUT", {**good, "status": "maybe"}), "IMG.0001")
    ims_error(batch(other, "PUT", {**good, "project_id": None}), "IMG.0001")
    ims_error(batch(other, "PUT", {**good, "vault_id": 5}), "IMG.0001")
    ims_error(batch(other, "PUT", {**good, "project_id": "p3"}), "IMG.0047", 403)
    ims_error(batch(third, "PUT", {**good, "project_id": "p3"}), "IMG.0027", 404)
    # the owner is no member: its answer fails in the job
    job = run(owner, "p1", "PUT", {**good, "project_id": "p1"})
    assert job["status"] == "FAIL" and job["entities"]["results"][0]["status"] == "failed"
    assert run(other, "p2", "PUT", {**good, "vault_id": "v-1"})["status"] == "SUCCESS"


def test_member_limit_per_image(native):
    api = native(native__max_image_members=2)[0]
    owner = api["owner"]
    image = active(owner, name="l")
    job = run(owner, "p1", "POST", {"images": [image["id"]], "projects": ["p2", "p3", "p4"]})
    assert job["status"] == "FAIL" and job["error_code"] == "IMG.0088"
    statuses = [r["status"] for r in job["entities"]["results"]]
    assert statuses == ["success", "success", "failed"]
    assert job["entities"]["results"][2]["error_code"] == "IMG.0088"
    assert len(owner.get(f"/v2/images/{image['id']}/members").json["members"]) == 2
    # whole images have their own, smaller limit
    api = native(native__max_whole_image_members=1)[0]
    whole = active(api["owner"], name="w", __whole_image="true")
    job = run(api["owner"], "p1", "POST", {"images": [whole["id"]], "projects": ["p2", "p3"]})
    assert job["status"] == "FAIL" and job["error_code"] == "IMG.0088"


def test_shared_image_quota(native):
    owner = native(native__shared_image_quota=1)[0]["owner"]
    first, second = active(owner, name="1"), active(owner, name="2")
    assert run(owner, "p1", "POST", {"images": [first["id"]], "projects": ["p2"]})["status"] == (
        "SUCCESS"
    )
    # more members of an already shared image are fine; a second image is not
    assert run(owner, "p1", "POST", {"images": [first["id"]], "projects": ["p3"]})["status"] == (
        "SUCCESS"
    )
    job = run(owner, "p1", "POST", {"images": [second["id"]], "projects": ["p2"]})
    assert job["status"] == "FAIL" and job["error_code"] == "IMG.0088"
    quota = owner.get("/v1/cloudimages/quota").json["quotas"]["resources"]
    by_type = {r["type"]: r for r in quota}
    assert by_type["image_shared"]["used"] == 1 and by_type["image_member"]["used"] == 2


def test_jobs_are_idempotent_when_rerun(native):
    api, services = native(api_workers=0)
    owner = api["owner"]
    one, two = active(owner, name="1"), active(owner, name="2")
    resp = batch(owner, "POST", {"images": [one["id"], two["id"]], "projects": ["p2", "p3"]})
    job_id = resp.json["job_id"]
    services.jobs.run(services.jobs.claim("first-worker"))
    assert owner.get(f"/v1/p1/jobs/{job_id}").json["status"] == "SUCCESS"
    # the worker "died" before it could record anything: the job runs again
    with services.db.session() as session:
        session.execute(
            sa.update(Job)
            .where(Job.id == job_id)
            .values(
                status="RUNNING",
                entities={},
                heartbeat_at=datetime.datetime(2000, 1, 1),
            )
        )
    claimed = services.jobs.claim("second-worker")
    assert claimed[0].id == job_id and claimed[0].attempts == 2
    services.jobs.run(claimed)
    job = owner.get(f"/v1/p1/jobs/{job_id}").json
    assert job["status"] == "SUCCESS", job
    assert len(job["entities"]["results"]) == 4
    for image in (one, two):
        members = owner.get(f"/v2/images/{image['id']}/members").json["members"]
        assert sorted(m["member_id"] for m in members) == ["p2", "p3"]
    # a resumed unshare accepts members that are already gone
    resp = batch(owner, "DELETE", {"images": [one["id"]], "projects": ["p2"]})
    delete_id = resp.json["job_id"]
    services.jobs.run(services.jobs.claim("w"))
    with services.db.session() as session:
        session.execute(
            sa.update(Job)
            .where(Job.id == delete_id)
            .values(status="RUNNING", entities={}, heartbeat_at=datetime.datetime(2000, 1, 1))
        )
    services.jobs.run(services.jobs.claim("w2"))
    assert owner.get(f"/v1/p1/jobs/{delete_id}").json["status"] == "SUCCESS"


def test_glance_and_ims_members_are_the_same(api):
    owner, other = api["owner"], api["other"]
    image = active(owner, name="g")
    assert owner.post(f"/v2/images/{image['id']}/members", {"member": "p2"}).status_code == 200
    listed = owner.get(f"/v1/p1/cloudimages/{image['id']}/members").json["members"]
    assert [m["member_id"] for m in listed] == ["p2"]
    body = {"images": [image["id"]], "project_id": "p2", "status": "accepted"}
    assert run(other, "p2", "PUT", body)["status"] == "SUCCESS"
    member = other.get(f"/v2/images/{image['id']}/members/p2").json
    assert member["status"] == "accepted"
