"""Tempest's image API tests (tempest.api.image) against ims-api and a real Keystone.

Slow (minutes): select with ``-m real`` or run the module directly. Fails
when any test fails that tests/tempest/run_tempest.py does not list in
KNOWN_FAILURES with its reason, or when a known failure starts passing (so
the list is kept true).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from tests.functional.servers import IMSServer, KeystoneServer
from tests.tempest import run_tempest


@pytest.mark.real
@pytest.mark.slow
@pytest.mark.timeout(run_tempest.RUN_TIMEOUT + 300)
def test_tempest_image_api(
    keystone: KeystoneServer, ims_keystone: IMSServer, tmp_path: Path
) -> None:
    if importlib.util.find_spec("tempest") is None:
        if os.environ.get("CI"):
            pytest.fail("tempest is not installed (pip install tempest)")
        pytest.skip("tempest is not installed")
    result = run_tempest.run(tmp_path, keystone)
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
