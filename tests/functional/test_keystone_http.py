"""Plain HTTP against the keystone-mode ims-api: tokens, roles and project scope.

Real Keystone tokens of the session's users (demo: member, demo-reader:
reader of the same project, alt: member of another project, admin).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests

from tests.functional.servers import IMSServer, KeystoneServer

pytestmark = pytest.mark.real

REQUEST_ID = re.compile(r"^req-[0-9a-f-]{36}$")


class TokenApi:
    def __init__(self, server: IMSServer, token: str | None) -> None:
        self.url = server.url
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/json"
        if token is not None:
            self.session.headers["X-Auth-Token"] = token

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        resp = self.session.request(method, self.url + path, timeout=60, **kw)
        assert REQUEST_ID.match(resp.headers.get("x-openstack-request-id", "")), dict(resp.headers)
        assert resp.status_code < 500, resp.text
        return resp


@pytest.fixture(scope="module")
def as_user(keystone: KeystoneServer, ims_keystone: IMSServer) -> dict[str, TokenApi]:
    return {
        name: TokenApi(ims_keystone, keystone.token(keystone.users[name]))
        for name in ("admin", "demo", "alt", "reader")
    }


def test_no_or_bad_token_is_401_with_request_id(
    keystone: KeystoneServer, ims_keystone: IMSServer
) -> None:
    for token in (None, "bogus", ""):
        resp = TokenApi(ims_keystone, token).request("GET", "/v2/images")
        assert resp.status_code == 401, (token, resp.text)
        assert keystone.auth_url in resp.headers.get("WWW-Authenticate", "")


def test_version_discovery_needs_no_token(ims_keystone: IMSServer) -> None:
    anonymous = TokenApi(ims_keystone, None)
    assert anonymous.request("GET", "/").status_code == 300
    assert anonymous.request("GET", "/versions").status_code == 200
    for native in ("/v1", "/v1.1/", "/v2", "/v2.1"):
        resp = anonymous.request("GET", native)
        assert resp.status_code == 200, (native, resp.text)
        assert resp.json()["version"]["id"].startswith("v"), native
    assert anonymous.request("GET", "/v1/cloudimages/quota").status_code == 401
    assert anonymous.request("GET", "/v2/cloudimages").status_code == 401


def test_roles_and_project_scope(as_user: dict[str, TokenApi], keystone: KeystoneServer) -> None:
    demo, reader, alt, admin = (as_user[n] for n in ("demo", "reader", "alt", "admin"))
    created = demo.request(
        "POST",
        "/v2/images",
        json={"name": "scoped", "disk_format": "raw", "container_format": "bare"},
    )
    assert created.status_code == 201, created.text
    image = created.json()
    assert image["owner"] == keystone.users["demo"].project_id
    path = f"/v2/images/{image['id']}"

    # The reader of the same project sees it but may not change anything.
    assert reader.request("GET", path).status_code == 200
    assert reader.request("DELETE", path).status_code == 403
    refused = reader.request(
        "POST", "/v2/images", json={"name": "x", "disk_format": "raw", "container_format": "bare"}
    )
    assert refused.status_code == 403
    # Another project does not see it at all.
    assert alt.request("GET", path).status_code == 404
    # Only an admin makes an image public.
    patch = {"Content-Type": "application/openstack-images-v2.1-json-patch"}
    public = [{"op": "replace", "path": "/visibility", "value": "public"}]
    assert demo.request("PATCH", path, json=public, headers=patch).status_code == 403
    assert admin.request("PATCH", path, json=public, headers=patch).status_code == 200
    assert alt.request("GET", path).status_code == 200
    assert alt.request("DELETE", path).status_code == 403
    assert demo.request("DELETE", path).status_code == 204
