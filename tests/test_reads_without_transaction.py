"""PostgreSQL reads on autocommit connections (`reads_of`, `LockLightPostgresRecorder.reading`)
leave the pools as writers need them and fail with the errors the transaction path raised."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from eventsourcing.persistence import PersistenceError, ProgrammingError

from lifecycle.domain.errors import KeyDestroyed
from lifecycle.services.ledger import Ledger
from lifecycle.store.event_store import chained_recorder
from lifecycle.store.settings import Settings
from lifecycle.store.vault import open_vault


def _settings(tmp_path: Path, url: str) -> Settings:
    home = tmp_path / "lifecycle-data"
    return Settings(home=home, database_url=url, master_key=None,
                    master_key_file=home / "master.key")


def test_a_write_after_autocommit_reads_is_one_transaction(postgres_database: str,
                                                          tmp_path: Path) -> None:
    """A connection the views' autocommit reads used goes back to the shared pool in
    transaction mode: `engine.begin()` on the plain engine, on that very connection, is one
    transaction (a failure after its first row rolls both rows back)."""
    with Ledger(_settings(tmp_path, postgres_database)) as ledger:
        assert ledger.view_reads.pool is ledger.views.pool
        with ledger.views.begin() as conn:
            conn.execute(sa.text("CREATE TABLE probe (id integer PRIMARY KEY)"))
        ledger.retention_of("nobody")  # reads through view_reads
        with ledger.view_reads.connect() as conn:
            used = conn.connection.dbapi_connection
            assert used is not None and used.autocommit
        held = [ledger.views.connect() for _ in range(ledger.views.pool.checkedin())]
        try:
            for conn in held:
                assert not conn.connection.dbapi_connection.autocommit  # type: ignore[union-attr]
            again = [conn for conn in held if conn.connection.dbapi_connection is used]
            assert len(again) == 1
            with pytest.raises(sa.exc.IntegrityError), again[0].begin():
                again[0].execute(sa.text("INSERT INTO probe VALUES (1)"))
                again[0].execute(sa.text("INSERT INTO probe VALUES (2)"))
                again[0].execute(sa.text("INSERT INTO probe VALUES (1)"))
        finally:
            for conn in held:
                conn.close()
        with ledger.view_reads.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM probe")).scalar_one() == 0


def test_a_failed_recorder_read_raises_the_store_error(postgres_database: str,
                                                      tmp_path: Path) -> None:
    """A read on the recorder's autocommit path fails with the event store's own error class
    (as `datastore.transaction` did: the CLI and desk map PersistenceError to one line), and
    the connection it failed on serves the next read and the next write."""
    with Ledger(_settings(tmp_path, postgres_database)) as ledger:
        recorder = chained_recorder(ledger.store)
        with pytest.raises(ProgrammingError) as raised, recorder.reading() as curs:
            curs.execute("SELECT * FROM no_such_table")
        assert isinstance(raised.value, PersistenceError)
        assert recorder.lowest_position() == 1
        assert recorder.chain_heads() == (0, 0, 0)
        with pytest.raises(ProgrammingError), \
                recorder.datastore.transaction(commit=True) as curs:
            curs.execute("CREATE TABLE probe_rows (id integer PRIMARY KEY)")
            curs.execute("SELECT * FROM no_such_table")
        with recorder.reading() as curs:
            curs.execute("SELECT to_regclass('probe_rows') AS found")
            row = curs.fetchone()
            assert row is not None and row["found"] is None


def test_the_key_check_sees_an_erasure_committed_elsewhere(postgres_database: str,
                                                          tmp_path: Path) -> None:
    """A long-running reader that checks its keys on every open (its check now an autocommit
    read) refuses a value once another vault has committed the key's destruction, though it
    had the key unwrapped in memory; its own writes afterwards still store whole."""
    settings = _settings(tmp_path, postgres_database)
    now = datetime(2026, 1, 5, tzinfo=timezone.utc)
    reader, eraser = open_vault(settings), open_vault(settings)
    try:
        reader.check_destroyed_on_open = True
        key_id = reader.key_for("subject-1", "contact", now)
        reader.flush()
        sealed = reader.seal(key_id, "value")
        assert reader.open(sealed) == "value"
        assert eraser.destroy([key_id], now, "test") == 1
        with pytest.raises(KeyDestroyed):
            reader.open(sealed)
        other = reader.key_for("subject-2", "contact", now)
        reader.flush()
        assert eraser.open(eraser.seal(other, "kept")) == "kept"
    finally:
        reader.engine.dispose()
        eraser.engine.dispose()
