"""The job tests again on PostgreSQL and MariaDB, where row locks do the work."""

from __future__ import annotations

import pytest

from tests import dbservers
from tests.unit.test_jobs import *  # noqa: F403

# The server-backed fixture replaces the SQLite one the imported tests use.
database_url = dbservers.database_url  # noqa: F811

pytestmark = pytest.mark.real
