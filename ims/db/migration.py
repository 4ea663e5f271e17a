"""Run alembic migrations programmatically (no alembic.ini to find)."""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

_HERE = os.path.join(os.path.dirname(__file__), "migrations")


def _config(engine: sa.Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", _HERE)
    config.attributes["engine"] = engine
    return config


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision``."""
    command.upgrade(_config(engine), revision)


def current(engine: sa.Engine) -> str | None:
    """Return the schema's current revision."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head(engine: sa.Engine) -> str | None:
    """Return the newest revision the code knows."""
    return ScriptDirectory.from_config(_config(engine)).get_current_head()
