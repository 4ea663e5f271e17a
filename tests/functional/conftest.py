"""Fixtures that run the real ims-api (and a real Keystone) as child processes.

- ``make_ims``: start an IMSServer with any configuration; stopped after the test.
- ``keystone``: one real Keystone per session, its catalog's ``image`` endpoint
  pointing at the port reserved for ``ims_keystone``.
- ``ims_keystone``: one keystone-mode ims-api per session on that port.

When a test fails, the logs of the servers still running are attached to its
report, so the server side of a failure is visible in the pytest output.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.functional.servers import LIVE_SERVERS, IMSServer, KeystoneServer, free_port

MakeIMS = Callable[..., IMSServer]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for server in list(LIVE_SERVERS):
            state = "running" if server.alive else "DEAD"
            report.sections.append(
                (f"{server.name} log ({state}, {server.log_path})", server.log_text(8000))
            )


@pytest.fixture
def make_ims(tmp_path: Path) -> Iterator[MakeIMS]:
    """Start ims-api servers for one test: make_ims(auth_strategy, extra_conf)."""
    started: list[IMSServer] = []

    def build(
        auth_strategy: str = "noauth", extra_conf: dict[str, dict[str, str]] | None = None
    ) -> IMSServer:
        server = IMSServer(tmp_path, auth_strategy, extra_conf).start()
        started.append(server)
        return server

    yield build
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def ims_noauth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IMSServer]:
    """One noauth ims-api with the embedded defaults, shared by a module."""
    server = IMSServer(tmp_path_factory.mktemp("ims-noauth"), "noauth").start()
    yield server
    server.stop()


def _need_keystone() -> None:
    # In CI a missing Keystone must fail loudly; elsewhere it may skip.
    if importlib.util.find_spec("keystone") is None:
        if os.environ.get("CI"):
            pytest.fail("keystone is not installed (pip install keystone)")
        pytest.skip("keystone is not installed (pip install keystone)")


@pytest.fixture(scope="session")
def ims_keystone_port() -> int:
    """The port of the session's keystone-mode ims-api, known before the catalog."""
    return free_port()


@pytest.fixture(scope="session")
def keystone(
    tmp_path_factory: pytest.TempPathFactory, ims_keystone_port: int
) -> Iterator[KeystoneServer]:
    """A real Keystone for the whole session, with demo/alt/reader users."""
    _need_keystone()
    server = KeystoneServer(
        tmp_path_factory.mktemp("keystone"), image_url=f"http://127.0.0.1:{ims_keystone_port}"
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ims_keystone(
    tmp_path_factory: pytest.TempPathFactory, keystone: KeystoneServer, ims_keystone_port: int
) -> Iterator[IMSServer]:
    """ims-api with auth_strategy=keystone, the catalog's image endpoint."""
    server = IMSServer(
        tmp_path_factory.mktemp("ims-keystone"),
        "keystone",
        keystone.authtoken_conf(),
        port=ims_keystone_port,
    ).start()
    yield server
    server.stop()
