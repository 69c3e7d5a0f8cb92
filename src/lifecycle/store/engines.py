"""SQLAlchemy engines for lifecycle's own tables, with per-store SQLite pragmas."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from lifecycle.store.settings import create_private_file


def create_store_engine(url: str, metadata: sa.MetaData, sqlite_pragmas: Sequence[str],
                        create_tables: bool = True) -> sa.Engine:
    """An engine whose SQLite connections run `sqlite_pragmas`; creates the tables (unless
    `create_tables` is false: the caller does) and a SQLite file, mode 0600."""
    # SQLite: every connection waits up to 30 s for a lock, from its very first statement
    # (the pragmas below take locks too).
    engine = sa.create_engine(url, connect_args=(
        {"timeout": 30} if url.startswith("sqlite") else {}))
    if engine.dialect.name == "sqlite":
        if engine.url.database and engine.url.database != ":memory:":
            create_private_file(Path(engine.url.database))
        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            for pragma in ("busy_timeout=30000", *sqlite_pragmas):
                cursor.execute(f"PRAGMA {pragma}")
            cursor.close()
    if create_tables:
        metadata.create_all(engine)
    return engine


def reads_of(engine: sa.Engine) -> sa.Engine:
    """The engine for reads that change nothing: on PostgreSQL its connections run each
    statement on its own (no BEGIN and ROLLBACK round trips around a read; under READ
    COMMITTED a read transaction gives no snapshot beyond its statement anyway); on SQLite
    the engine itself."""
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine
