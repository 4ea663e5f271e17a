"""Odd input on the native API that once answered 500 or a non-IMS error body.

Each was found while writing docs/api/ims-native.yaml and driving the app
with it (tests/unit/test_openapi_native.py); these pin them down one by one.
"""

from __future__ import annotations

import pytest

from tests.conftest import Client


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
