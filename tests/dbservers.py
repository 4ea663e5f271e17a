"""Fresh PostgreSQL and MariaDB databases for tests, from the IMS_TEST_* URLs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

BACKENDS = {"postgresql": "IMS_TEST_POSTGRES_URL", "mysql": "IMS_TEST_MYSQL_URL"}


@pytest.fixture(params=sorted(BACKENDS))
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Yield the URL of a new, empty database; drop it afterwards."""
    server = os.environ.get(BACKENDS[request.param])
    if not server:
        pytest.skip(f"{BACKENDS[request.param]} is not set")
    name = f"ims_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    yield make_url(server).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        if request.param == "postgresql":
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            )
        conn.exec_driver_sql(f"DROP DATABASE {name}")
    admin.dispose()
