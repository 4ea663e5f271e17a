"""Odd input on the native API that once answered 500 or a non-IMS error body.

Each was found while writing docs/api/ims-native.yaml and driving the app
with it (tests/unit/test_openapi_native.py); these pin them down one by one.
"""

from __future__ import annotations

import pytest

from ims.core import os_versions
from tests.conftest import PATCH, Client


@pytest.mark.parametrize(
    "path",
    [
        "/v2/cloudimages?created_at=lt:9999-12-31T23:59:59-01:00",
        "/v2/cloudimages?updated_at=gt:0001-01-01T00:00:00%2B01:00",
        "/v1/cloudimages/tags?created_at=eq:9999-12-31T23:59:59-12:00",
    ],
)
def test_a_time_filter_out_of_range_is_a_400(api: dict[str, Client], path: str) -> None:
    resp = api["owner"].get(path)
    assert resp.status_code == 400, resp.text
    assert resp.json["error"]["code"] == "IMG.0001"


@pytest.mark.parametrize("number", ["1e400", "-1e400", "Infinity", "NaN"])
def test_json_numbers_that_are_not_finite_are_a_400(api: dict[str, Client], number: str) -> None:
    owner = api["owner"]
    image = owner.create(name="n")
    assert owner.upload(image["id"], b"\0" * 512).status_code == 204
    patch = f'[{{"op": "add", "path": "/min_ram", "value": {number}}}]'
    query = f'{{"action": "filter", "limit": {number}}}'
    for method, path, body, media in (
        ("PATCH", f"/v2/cloudimages/{image['id']}", patch, PATCH),
        ("POST", "/v2/p1/images/resource_instances/action", query, "application/json"),
    ):
        resp = owner._client.simulate_request(
            method, path, body=body, headers={**owner.headers, "Content-Type": media}
        )
        assert resp.status_code == 400, (path, resp.text)
        assert resp.json["error"]["code"] == "IMG.0001"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("DELETE", "/v2/p1/images/0c1d2e3f-0000-4000-8000-000000000000/tags/a/b", 404),
        ("GET", "/v1/p1/jobs/a/b", 404),
        ("PATCH", "/v2/cloudimages/action", 405),
        ("POST", "/v1/cloudimages/job/file", 405),
    ],
)
def test_falcon_errors_on_native_paths_have_the_ims_body(
    api: dict[str, Client], method: str, path: str, status: int
) -> None:
    resp = api["owner"]._client.simulate_request(
        method, path, body="[]", headers={**api["owner"].headers, "Content-Type": PATCH}
    )
    assert resp.status_code == status, resp.text
    assert set(resp.json) == {"error"}
    assert resp.json["error"]["code"].startswith("IMG.")
    assert resp.json["error"]["message"]
    if status == 405:
        assert resp.headers["allow"]


def test_a_bug_on_a_native_path_is_a_500_with_the_ims_body(
    api: dict[str, Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(tags: list[str]) -> list[dict]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(os_versions, "catalogue", broken)
    resp = api["owner"].get("/v1/cloudimages/os_version")
    assert resp.status_code == 500
    assert resp.json["error"]["code"] == "IMG.0001"
    assert "a bug" not in resp.text


def test_glance_paths_keep_the_glance_error_body(api: dict[str, Client]) -> None:
    resp = api["owner"].get("/v2/images/x/nothing", headers={"Accept": "application/json"})
    assert resp.status_code == 404
    assert resp.json["code"] == "404 Not Found"
