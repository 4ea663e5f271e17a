"""The API's listing, member and record tests again, on PostgreSQL and MariaDB.

The databases come from IMS_TEST_POSTGRES_URL / IMS_TEST_MYSQL_URL (server
URLs; each test gets a fresh database that is dropped afterwards).
"""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from ims import conf as ims_conf
from ims.api.app import create_app
from tests.unit.test_glance_images import *  # noqa: F403
from tests.unit.test_glance_listing import *  # noqa: F403
from tests.unit.test_glance_members import *  # noqa: F403

pytestmark = pytest.mark.real

BACKENDS = {"postgresql": "IMS_TEST_POSTGRES_URL", "mysql": "IMS_TEST_MYSQL_URL"}


@pytest.fixture(params=sorted(BACKENDS))
def database_url(request):
    server = os.environ.get(BACKENDS[request.param])
    if not server:
        pytest.skip(f"{BACKENDS[request.param]} is not set")
    name = f"ims_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    url = make_url(server).set(database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as conn:
        if request.param == "postgresql":
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            )
        conn.exec_driver_sql(f"DROP DATABASE {name}")
    admin.dispose()


@pytest.fixture
def make_app(tmp_path, database_url):
    def build(**overrides):
        conf = ims_conf.load([])
        conf.set_override("state_path", str(tmp_path / "state"))
        conf.set_override("connection", database_url, group="database")
        for key, value in overrides.items():
            group, _, name = key.rpartition("__")
            conf.set_override(name, value, group=group or None)
        return create_app(conf)

    return build
