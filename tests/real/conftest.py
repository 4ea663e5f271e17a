"""Fixtures for tests against real servers (``swift_server`` is in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.real.swift_server import SwiftServer


@pytest.fixture
def swift_up(swift_server: SwiftServer) -> Iterator[SwiftServer]:
    """The Swift server, with its proxy running before and after the test."""
    swift_server.ensure_proxy()
    try:
        yield swift_server
    finally:
        swift_server.ensure_proxy()
