"""The key vault's schema is brought up to date once per vault, under a lock: two processes
that open a vault written before master-key epochs at the same moment both open it, the
epoch column is added once, and later opens neither inspect nor alter the tables. Real
processes, SQLite and PostgreSQL.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from lifecycle.store.vault import create_vault_engine, data_keys
from lifecycle.store.settings import Settings
from tests.processes import env_for

# Opens the vault's engine (as `lifecycle backup` and every Ledger do) at a given moment.
OPEN_AT = """
import sys, time
from lifecycle.store.vault import create_vault_engine
from lifecycle.store.settings import load_settings
url = load_settings().vault_url
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
create_vault_engine(url).dispose()
print("opened", flush=True)
"""


def older_vault(settings: Settings) -> None:
    """A vault as a version before master-key epochs wrote it: data keys with no epoch
    column (and none of the tables that came later)."""
    if settings.database_url is None:
        settings.ensure_home()
    engine = sa.create_engine(settings.vault_url)
    old = sa.MetaData()
    sa.Table(data_keys.name, old,
             *(sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
               for c in data_keys.columns if c.name != "epoch"))
    old.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {data_keys.name} (key_id, subject_id, scope, "
                             "wrapped, created_at) VALUES ('k1', 's1', 'record:a', :w, :at)"),
                     {"w": b"x" * 40, "at": datetime(2024, 1, 1, tzinfo=UTC)})
    engine.dispose()


def columns(settings: Settings) -> list[str]:
    engine = sa.create_engine(settings.vault_url)
    try:
        return [c["name"] for c in sa.inspect(engine).get_columns(data_keys.name)]
    finally:
        engine.dispose()


def test_two_processes_opening_an_older_vault_at_once_both_open_it(backend: Settings) -> None:
    """Two processes open a vault without the epoch column at the same instant (three
    rounds, a fresh older vault each): both open it, the column is there once, and the
    older key reads as epoch 0."""
    for round_ in range(3):
        if round_:
            reset(backend)
        older_vault(backend)
        at = time.time() + 2.0
        openers = [subprocess.Popen([sys.executable, "-c", OPEN_AT, str(at)],
                                    env=env_for(backend), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for _ in range(2)]
        for opener in openers:
            out, err = opener.communicate(timeout=60)
            assert opener.returncode == 0, err[-2000:]
            assert out.strip() == "opened"
        assert columns(backend).count("epoch") == 1
        engine = sa.create_engine(backend.vault_url)
        with engine.connect() as conn:
            assert conn.execute(sa.select(data_keys.c.epoch)).scalars().all() == [0]
        engine.dispose()


def reset(settings: Settings) -> None:
    """Drops every vault table (the next round starts from an older vault again)."""
    engine = sa.create_engine(settings.vault_url)
    meta = sa.MetaData()
    meta.reflect(engine)
    meta.drop_all(engine)
    engine.dispose()


def test_the_migration_runs_once(backend: Settings) -> None:
    """The first open migrates an older vault; every later open reads one marker row and
    runs no DDL and no schema inspection."""
    older_vault(backend)
    create_vault_engine(backend.vault_url).dispose()
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", seen)
    try:
        create_vault_engine(backend.vault_url).dispose()
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", seen)
    schema_work = [s for s in statements
                   if any(word in s.upper() for word in
                          ("ALTER", "CREATE", "TABLE_INFO", "PG_CATALOG", "PG_CLASS",
                           "SQLITE_MASTER", "INFORMATION_SCHEMA"))]
    assert schema_work == [], schema_work
    assert columns(backend).count("epoch") == 1
