"""Fixtures of the unit tests beyond the ones in tests/conftest.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from falcon import testing

from ims import conf as ims_conf
from ims.api.app import Services, build_services, create_app
from tests.conftest import Client


@pytest.fixture
def native(tmp_path: Path) -> Iterator[Callable[..., tuple[dict[str, Client], Services]]]:
    """Build apps (each with its own database) whose job threads stop with the test."""
    built: list[Services] = []

    def build(api_workers: int = 1, **overrides: Any) -> tuple[dict[str, Client], Services]:
        conf = ims_conf.load([])
        # Each app its own database, so no runner takes another app's jobs.
        conf.set_override("state_path", str(tmp_path / f"state{len(built)}"))
        conf.set_override("poll_interval", 0.05, group="jobs")
        conf.set_override("api_workers", api_workers, group="jobs")
        for key, value in overrides.items():
            group, _, name = key.rpartition("__")
            conf.set_override(name, value, group=group or None)
        services = build_services(conf)
        built.append(services)
        client = testing.TestClient(create_app(conf, services))
        clients = {
            "admin": Client(client, "adminproject", "admin"),
            "owner": Client(client, "p1", "member"),
            "other": Client(client, "p2", "member"),
            "third": Client(client, "p3", "member"),
        }
        return clients, services

    yield build
    for services in built:
        if services.job_runner is not None:
            services.job_runner.stop()
        services.db.engine.dispose()
