"""Tempest's image API tests (tempest.api.image) against ims-api and a real Keystone.

Slow (a few minutes): select with ``-m real`` or run the module directly.
Fails when any test fails that tests/tempest/run_tempest.py does not list in
KNOWN_FAILURES with its reason, or when a known failure starts passing (so
the list is kept true).

Two runs: every image test against the session's ims-api (format
enforcement on, so Tempest skips its listing tests), then only the listing
tests against an ims-api that accepts mislabelled data, which they upload.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.functional.servers import IMSServer, KeystoneServer
from tests.tempest import run_tempest

LISTING_TESTS = r"^tempest\.api\.image\.v2\.test_images\.ListUserImagesTest"


def _need_tempest() -> None:
    if importlib.util.find_spec("tempest") is None:
        if os.environ.get("CI"):
            pytest.fail("tempest is not installed (pip install tempest)")
        pytest.skip("tempest is not installed")


def _check(result: run_tempest.Result, tmp_path: Path) -> None:
    print(result.summary())
    assert result.passed, f"no Tempest test passed; see {tmp_path / 'tempest-run.log'}"
    unexpected = {t: r for t, r in result.failed.items() if not run_tempest.known_failure(t)}
    assert not unexpected, result.summary()
    fixed = [
        prefix
        for prefix in run_tempest.KNOWN_FAILURES
        if not any(t.startswith(prefix) for t in result.failed)
        and any(t.startswith(prefix) for t in result.passed)
    ]
    assert not fixed, f"now passing, remove from KNOWN_FAILURES: {fixed}"


@pytest.mark.real
@pytest.mark.slow
@pytest.mark.timeout(run_tempest.RUN_TIMEOUT + 300)
def test_tempest_image_api(
    keystone: KeystoneServer, ims_keystone: IMSServer, tmp_path: Path
) -> None:
    _need_tempest()
    _check(run_tempest.run(tmp_path, keystone), tmp_path)


@pytest.mark.real
@pytest.mark.slow
@pytest.mark.timeout(run_tempest.RUN_TIMEOUT + 300)
def test_tempest_listing_without_format_enforcement(
    keystone: KeystoneServer,
    ims_keystone: IMSServer,
    make_ims: Callable[..., IMSServer],
    tmp_path: Path,
) -> None:
    _need_tempest()
    lenient = make_ims("keystone", {**keystone.authtoken_conf(), **run_tempest.LENIENT_FORMATS})
    keystone.set_image_endpoint(lenient.url)
    try:
        result = run_tempest.run(tmp_path, keystone, regex=LISTING_TESTS, format_enforcement=False)
    finally:
        keystone.set_image_endpoint(ims_keystone.url)
    assert len(result.passed) >= 17, result.summary()
    _check(result, tmp_path)
