"""Engines and sessions, with SQLite made safe for several writers."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from ims import errors


def create_engine(
    url: str, pool_size: int = 10, max_overflow: int = 20, pool_timeout: int = 30
) -> sa.Engine:
    """Create an engine for any SQLAlchemy URL.

    SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` so that concurrent
    writers queue instead of deadlocking on lock upgrades.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(parsed.database)), exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _make_sqlite_safe(engine)
        return engine
    return sa.create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        pool_pre_ping=True,
    )


def _make_sqlite_safe(engine: sa.Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        # NOTE(ims): take control of transactions from pysqlite so that
        # BEGIN IMMEDIATE below is what actually starts them.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """An engine and its session factory."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._factory = sessionmaker(engine, expire_on_commit=False)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """Yield a session in a transaction; commit on success, roll back on error.

        Integrity errors come out as ``ims.errors.Duplicate``.
        """
        with self._factory() as session:
            try:
                with session.begin():
                    yield session
            except exc.IntegrityError as ex:
                raise errors.Duplicate(what="A record with the same key") from ex
            except exc.OperationalError as ex:
                raise errors.Unavailable(f"Database unavailable: {ex.orig}") from ex
