"""The native API's OpenAPI document (docs/api/ims-native.yaml) against the app.

The document is validated as OpenAPI, then schemathesis drives every
operation of it against the in-process WSGI app (noauth, as a member
project and as an admin) with valid and invalid input, and checks that no
answer is a 5xx and that every answer - status, content type, body - is
what the document says. The app is seeded so that the path parameters can
hit real images, members, tags and jobs; jobs are run by hand, none in the
background. Generation is derandomized, so a run is repeatable.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
import schemathesis
import sqlalchemy as sa
import yaml
from falcon import testing
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ims import conf as ims_conf
from ims.api.app import Services, build_services, create_app
from ims.db.job_models import Job
from tests.conftest import PATCH, Client

DOC = Path(__file__).resolve().parents[2] / "docs" / "api" / "ims-native.yaml"
OWNER = "p1"
BUCKET = f"{OWNER}-images"
#: The document's example image id, seeded so that the examples hit an image.
ACTIVE = "5c3b4e0a-5c54-4b11-9d0f-2b2f3c6e7a01"
SHARED = "7d0c1c55-1f0e-4c1e-8f4f-3b8a44d0c002"
QUEUED = "9a1e2f3b-4c5d-4e6f-8a9b-0c1d2e3f4a03"
IDENTITIES = {
    "member": {"X-Project-Id": OWNER, "X-User-Id": "user-p1", "X-Roles": "member"},
    "admin": {"X-Project-Id": "adminproject", "X-User-Id": "admin", "X-Roles": "admin"},
}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
CONF = """
[DEFAULT]
enabled_backends = main:filesystem, far:filesystem
show_image_direct_url = true
show_multiple_locations = true
[glance_store]
default_backend = main
[main]
filesystem_store_datadir = $TMP/main
[far]
filesystem_store_datadir = $TMP/far
[imaging]
object_store = obs
object_store_type = filesystem
regions = region-two:far
max_running_jobs = 100000
max_cross_region_copies = 100000
[obs]
filesystem_store_datadir = $TMP/obs
[jobs]
api_workers = 0
[native]
private_image_quota = -1
"""
#: Per phase and mode; enough to reach the error paths of every field,
#: bounded so that the run stays well under two minutes.
SETTINGS = {
    "generation": {
        "mode": "all",
        "max-examples": 8,
        "deterministic": True,
        "database": "none",
        "with-security-parameters": False,
    },
    "phases": {"stateful": {"enabled": False}},
    # The /v2.1/ variants share the handlers of their v1/v2 twins: no need to
    # walk every field's boundaries twice.
    "operations": [
        {"include-path-regex": "^/v2\\.1/", "phases": {"coverage": {"enabled": False}}}
    ],
    "suppress-health-check": ["all"],
    "seed": 20240505,
}

# The Image API's JSON-patch media type is JSON to schemathesis.
schemathesis.serializer.alias("application/openstack-images-v2.1-json-patch", "application/json")


def load_document() -> dict[str, Any]:
    return yaml.safe_load(DOC.read_text(encoding="utf-8"))


def load_schema(raw: dict[str, Any]) -> Any:
    config = schemathesis.Config.from_dict(SETTINGS)
    return schemathesis.openapi.from_dict(copy.deepcopy(raw), config=config)


def _run_jobs(services: Services) -> None:
    while (claimed := services.jobs.claim("seed")) is not None:
        services.jobs.run(claimed)


def seed(tmp: Path) -> tuple[Any, dict[str, list[str]]]:
    """An app with images, members, tags and finished jobs; the ids to aim at."""
    conf_path = tmp / "ims.conf"
    conf_path.write_text(CONF.replace("$TMP", str(tmp)))
    conf = ims_conf.load(["--config-file", str(conf_path)])
    conf.set_override("state_path", str(tmp / "state"))
    services = build_services(conf)
    app = create_app(conf, services)
    client = testing.TestClient(app)
    owner = Client(client, OWNER, "member")
    other = Client(client, "p2", "member")
    bucket = tmp / "obs" / BUCKET
    bucket.mkdir(parents=True)
    for name in ("centos7.qcow2", "centos7.raw", "data1.qcow2", "doomed.raw"):
        (bucket / name).write_bytes(b"\0" * 65536)

    for image_id, name in ((ACTIVE, "centos7"), (SHARED, "shared-one")):
        owner.create(id=image_id, name=name, __os_version="CentOS 7.6 64bit", visibility="private")
        assert owner.upload(image_id, b"\0" * 65536).status_code == 204
    owner.create(id=QUEUED, name="registered", visibility="private")
    resp = owner.put(
        "/v1/cloudimages/tags",
        json={"image_id": ACTIVE, "image_tag": {"key": "env", "value": "prod"}},
    )
    assert resp.status_code == 204, resp.text
    assert (
        owner.patch(
            f"/v2/cloudimages/{ACTIVE}", [{"op": "add", "path": "/team", "value": "web"}], PATCH
        ).status_code
        == 200
    )

    jobs = []
    share = {"images": [SHARED], "projects": ["p2"]}
    jobs.append(owner.post("/v1/cloudimages/members", share).json["job_id"])
    _run_jobs(services)
    answer = {"images": [SHARED], "project_id": "p2", "status": "accepted"}
    jobs.append(other.put("/v1/cloudimages/members", json=answer).json["job_id"])
    body = {
        "name": "made",
        "image_url": f"{BUCKET}:centos7.raw",
        "min_disk": 40,
        "data_images": [{"name": "doomed", "image_url": f"{BUCKET}:doomed.raw", "min_disk": 1}],
    }
    resp = owner.post("/v2/cloudimages/action", body)
    assert resp.status_code == 200, resp.text
    jobs.append(resp.json["job_id"])
    (bucket / "doomed.raw").unlink()  # the data image's job fails: FAIL with sub-jobs
    _run_jobs(services)
    resp = owner.post(f"/v1/cloudimages/{ACTIVE}/copy", {"name": "waiting"})
    jobs.append(resp.json["job_id"])  # stays INIT: no job threads
    with services.db.session() as session:
        statuses = set(session.scalars(sa.select(Job.status)))
    assert statuses == {"SUCCESS", "FAIL", "INIT"}, statuses

    known = {
        "image_id": [ACTIVE, SHARED, QUEUED],
        "project_id": [OWNER, "adminproject"],
        "job_id": jobs,
        "member_id": ["p2"],
        "key": ["env", "team", "action"],
        "minor": ["0", "1", "9"],
    }
    return app, known


#: Ids in the seeded app, by path parameter name (filled by the fixture).
KNOWN: dict[str, list[str]] = {}
#: The same for body fields.
KNOWN_BODY: dict[str, list[Any]] = {
    "image_url": [f"{BUCKET}:centos7.qcow2", f"{BUCKET}:centos7.raw"],
    "bucket_url": [f"{BUCKET}:out-{n}.vhd" for n in range(3)],
    "image_id": [ACTIVE, SHARED],
    "images": [[ACTIVE], [SHARED], [ACTIVE, SHARED]],
    "projects": [["p2"], ["p2", "p3"]],
    "project_id": [OWNER],
    "region": ["region-two"],
}


def aim_at_known(context: Any, params: dict[str, Any] | None) -> Any:
    """Make path parameters ids the seeded app has, most of the time."""
    if not params:
        return st.just(params)
    options = {
        name: st.sampled_from([*KNOWN.get(name, []), value]) for name, value in params.items()
    }
    return st.fixed_dictionaries(options)


def aim_body_at_known(context: Any, body: Any) -> Any:
    """Make the ids and files a body names ones the seeded app has, now and then."""
    if not isinstance(body, dict):
        return st.just(body)
    options = {
        name: st.sampled_from([value, *KNOWN_BODY[name]])
        for name, value in body.items()
        if name in KNOWN_BODY
    }
    if not options:
        return st.just(body)
    return st.fixed_dictionaries(options).map(lambda picked: {**body, **picked})


def test_document_is_valid_openapi() -> None:
    raw = load_document()
    load_schema(raw).validate()
    assert raw["openapi"].startswith("3.1")
    broken = copy.deepcopy(raw)
    broken["paths"]["/v2/cloudimages"]["get"]["responses"]["200"] = {"content": {}}
    with pytest.raises(Exception, match="description"):
        load_schema(broken).validate()


#: The CJK ranges names and tags may use (ideographs, extension A).
CJK = "\u3400-\u4dbf\u4e00-\u9fff"


def narrow_cjk(node: Any) -> Any:
    """The document with its request patterns' CJK ranges cut to 64 ideographs.

    Hypothesis builds a regex strategy a character at a time, so those ranges
    cost half a second per build and hundreds of builds; the narrowed
    patterns accept a subset of the same strings, and responses are checked
    against schemas without them.
    """
    if isinstance(node, dict):
        return {
            k: v.replace(CJK, "\u4e00-\u4e3f") if k == "pattern" else narrow_cjk(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [narrow_cjk(item) for item in node]
    return node


api = load_schema(narrow_cjk(load_document()))
api.hook("flatmap_path_parameters")(aim_at_known)
api.hook("flatmap_body")(aim_body_at_known)


@pytest.fixture(scope="module")
def seeded_app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    app, known = seed(tmp_path_factory.mktemp("openapi"))
    KNOWN.clear()
    KNOWN.update(known)
    return app


@api.parametrize()
def test_app_conforms_to_document(case: Any, seeded_app: Any) -> None:
    member = case.call_and_validate(headers=IDENTITIES["member"], checks=CHECKS, app=seeded_app)
    # A 400 is the input's fault whoever sends it; anything else may depend on who asks.
    if member.status_code != 400:
        case.call_and_validate(headers=IDENTITIES["admin"], checks=CHECKS, app=seeded_app)


def test_a_wrong_document_fails(seeded_app: Any) -> None:
    """The conformance checks do catch a response the document gets wrong."""
    raw = load_document()
    raw["components"]["schemas"]["Image"]["properties"]["min_disk"] = {"type": "string"}
    schema = load_schema(raw)
    schema.app = seeded_app
    operation = schema["/v2/cloudimages"]["GET"]
    case = operation.Case(query={"id": ACTIVE})
    with pytest.raises(schemathesis.errors.FailureGroup) as failed:
        case.call_and_validate(headers=IDENTITIES["member"], checks=CHECKS)
    assert "Response violates schema" in str(failed.value.exceptions[0])
