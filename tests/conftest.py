"""Shared fixtures: an in-process IMS app on a temporary state directory."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from falcon import testing

from ims import conf as ims_conf
from ims.api.app import Services, build_services, create_app
from tests.real.swift_server import SwiftServer, missing_requirements

PATCH = "application/openstack-images-v2.1-json-patch"
PATCH_V20 = "application/openstack-images-v2.0-json-patch"


class Client:
    """A TestClient that speaks as one project with some roles (noauth)."""

    def __init__(self, client: testing.TestClient, project: str | None, roles: str) -> None:
        self._client = client
        self.headers = {"X-Roles": roles}
        if project:
            self.headers["X-Project-Id"] = project
            self.headers["X-User-Id"] = f"user-{project}"

    def _h(self, extra: dict[str, str] | None) -> dict[str, str]:
        return {**self.headers, **(extra or {})}

    def get(self, path: str, headers: dict[str, str] | None = None, **kw: Any) -> Any:
        return self._client.simulate_get(path, headers=self._h(headers), **kw)

    def post(
        self, path: str, body: Any = None, headers: dict[str, str] | None = None, **kw: Any
    ) -> Any:
        return self._client.simulate_post(path, json=body, headers=self._h(headers), **kw)

    def put(self, path: str, headers: dict[str, str] | None = None, **kw: Any) -> Any:
        return self._client.simulate_put(path, headers=self._h(headers), **kw)

    def delete(self, path: str, headers: dict[str, str] | None = None) -> Any:
        return self._client.simulate_delete(path, headers=self._h(headers))

    def patch(self, path: str, ops: Any, media: str = PATCH) -> Any:
        return self._client.simulate_patch(
            path, body=json.dumps(ops), headers=self._h({"Content-Type": media})
        )

    def create(self, **body: Any) -> dict[str, Any]:
        body.setdefault("disk_format", "raw")
        body.setdefault("container_format", "bare")
        resp = self.post("/v2/images", body)
        assert resp.status_code == 201, resp.text
        return resp.json

    def upload(self, image_id: str, data: bytes) -> Any:
        return self.put(
            f"/v2/images/{image_id}/file",
            body=data,
            headers={"Content-Type": "application/octet-stream"},
        )


@pytest.fixture
def make_app(tmp_path: Any) -> Iterator[Callable[..., Any]]:
    made: list[Services] = []

    def build(conf_text: str = "", **overrides: Any) -> Any:
        args = []
        if conf_text:
            path = tmp_path / "ims.conf"
            path.write_text(conf_text.replace("$TMP", str(tmp_path)))
            args = ["--config-file", str(path)]
        conf = ims_conf.load(args)
        conf.set_override("state_path", str(tmp_path / "state"))
        # Job threads only where a test asks for them; stopped when the test ends.
        overrides.setdefault("jobs__api_workers", 0)
        for key, value in overrides.items():
            group, _, name = key.rpartition("__")
            conf.set_override(name, value, group=group or None)
        services = build_services(conf)
        made.append(services)
        return create_app(conf, services)

    yield build
    for services in made:
        if services.job_runner is not None:
            services.job_runner.stop()


@pytest.fixture
def clients(make_app: Callable[..., Any]) -> Callable[..., dict[str, Client]]:
    def build(**overrides: Any) -> dict[str, Client]:
        client = testing.TestClient(make_app(**overrides))
        return {
            "admin": Client(client, "adminproject", "admin"),
            "owner": Client(client, "p1", "member"),
            "other": Client(client, "p2", "member"),
            "reader": Client(client, "p1", "reader"),
        }

    return build


@pytest.fixture
def api(clients: Callable[..., dict[str, Client]]) -> dict[str, Client]:
    return clients()


@pytest.fixture(scope="session")
def swift_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwiftServer]:
    """A real Swift (s3api + tempauth) on loopback, shared by the whole session.

    Here rather than in tests/real, so that the functional tests (Tempest's
    multistore run) use the same server.
    """
    reason = missing_requirements()
    if reason:
        pytest.skip(
            f"needs a local Swift: {reason} (apt-get install swift swift-proxy "
            "swift-account swift-container swift-object memcached)"
        )
    server = SwiftServer()
    server.start(tmp_path_factory.mktemp("swift"))
    try:
        yield server
    finally:
        server.stop()
