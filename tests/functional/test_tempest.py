"""Tempest's image API tests (tempest.api.image) against ims-api and a real Keystone.

Slow (a few minutes): select with ``-m real`` or run the module directly.
Fails when any test fails that tests/tempest/run_tempest.py does not list in
KNOWN_FAILURES with its reason, or when a known failure starts passing (so
the list is kept true).

Three runs: every image test against the session's ims-api (format
enforcement on, so Tempest skips its listing tests); only the listing tests
against an ims-api that accepts mislabelled data, which they upload; and the
store and import tests against an ims-api with two stores, a filesystem one
and an S3 one on the session's real Swift (s3api).
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.functional.servers import IMSServer, KeystoneServer
from tests.real.swift_server import SwiftServer
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


#: Tempest store/import tests that must run (not skip) with two stores.
MULTISTORE_MUST_PASS = (
    "test_images.ImportImagesTest.test_image_glance_direct_import",
    "test_images.MultiStoresImportImagesTest.test_glance_direct_import_image_to_all_stores",
    "test_images.MultiStoresImportImagesTest.test_glance_direct_import_image_to_specific_stores",
    "test_images.StoreWeightTest.test_store_weight_order",
    "admin.test_images.ImportCopyImagesTest.test_image_copy_image_import",
    "admin.test_images.MultiStoresImagesTest.test_delete_image_from_specific_store",
    "test_images_negative.ImportImagesNegativeTest.test_image_web_download_import_with_bad_url",
)


@pytest.mark.real
@pytest.mark.slow
@pytest.mark.timeout(run_tempest.RUN_TIMEOUT + 300)
def test_tempest_multistore(
    keystone: KeystoneServer,
    ims_keystone: IMSServer,
    make_ims: Callable[..., IMSServer],
    swift_server: SwiftServer,
    tmp_path: Path,
) -> None:
    _need_tempest()
    bucket = f"ims-tempest-{uuid.uuid4().hex[:8]}"
    conf = run_tempest.multistore_conf(tmp_path / "file-store", swift_server, bucket)
    multistore = make_ims("keystone", {**keystone.authtoken_conf(), **conf})
    keystone.set_image_endpoint(multistore.url)
    try:
        result = run_tempest.run(
            tmp_path, keystone, regex=run_tempest.MULTISTORE_REGEX, multistore=True
        )
    finally:
        keystone.set_image_endpoint(ims_keystone.url)
    missing = [
        name
        for name in MULTISTORE_MUST_PASS
        if f"tempest.api.image.v2.{name}" not in result.passed
    ]
    assert not missing, f"did not pass: {missing}\n{result.summary()}"
    _check(result, tmp_path)
