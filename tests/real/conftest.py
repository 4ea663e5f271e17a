"""Fixtures for tests against real servers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.real.swift_server import SwiftServer, missing_requirements


@pytest.fixture(scope="session")
def swift_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwiftServer]:
    """A real Swift (s3api + tempauth) on loopback, shared by the whole session."""
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


@pytest.fixture
def swift_up(swift_server: SwiftServer) -> Iterator[SwiftServer]:
    """The Swift server, with its proxy running before and after the test."""
    swift_server.ensure_proxy()
    try:
        yield swift_server
    finally:
        swift_server.ensure_proxy()
