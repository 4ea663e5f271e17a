"""Odd input on the native API that once answered 500 or a non-IMS error body.

Each was found while writing docs/api/ims-native.yaml and driving the app
with it (tests/unit/test_openapi_native.py); these pin them down one by one.
"""

from __future__ import annotations

import pytest

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
