"""The API's listing and member tests again, on PostgreSQL and MariaDB.

The databases come from IMS_TEST_POSTGRES_URL / IMS_TEST_MYSQL_URL (server
URLs; each test gets a fresh database that is dropped afterwards).
"""

from __future__ import annotations

import pytest

from ims import conf as ims_conf
from ims.api.app import create_app
from tests import dbservers
from tests.unit.test_glance_listing import *  # noqa: F403
from tests.unit.test_glance_members import *  # noqa: F403

# The server-backed fixture replaces the SQLite one the imported tests use.
database_url = dbservers.database_url  # noqa: F811

pytestmark = pytest.mark.real


@pytest.fixture
def make_app(tmp_path, database_url):  # noqa: F811
    url = database_url

    def build(**overrides):
        conf = ims_conf.load([])
        conf.set_override("state_path", str(tmp_path / "state"))
        conf.set_override("connection", url, group="database")
        # No job threads: they would outlive the database dropped after the test.
        overrides.setdefault("jobs__api_workers", 0)
        for key, value in overrides.items():
            group, _, name = key.rpartition("__")
            conf.set_override(name, value, group=group or None)
        return create_app(conf)

    return build
