"""Attacks on the marks of doomed keys (`KeyVault.mark_doomed`: one upsert) with real
processes on real stores, SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from lifecycle.store.vault import doomed_keys
from tests.processes import keyed_store, run_together

MASTER_KEY = base64.b64encode(bytes(range(128, 160))).decode()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    return keyed_store(request.param, tmp_path, MASTER_KEY,
                       lambda: request.getfixturevalue("postgres_database"))


_MARKER = """
import sys, time
from datetime import UTC, datetime, timedelta
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import load_settings
from lifecycle.store.vault import Shred
writer, start, rounds, size = int(sys.argv[1]), float(sys.argv[2]), *map(int, sys.argv[3:5])
errors = []
with Ledger(load_settings()) as ledger:
    for turn in range(rounds):
        keys = [f"{turn:04d}{k:028d}" for k in range(size)]
        if writer % 2:
            keys.reverse()
        # One subject per key (a sweep's batch: hundreds of one-key erasures).
        shreds = [Shred(f"00000000-0000-0000-0000-{int(key[4:]):012d}", [key],
                        datetime(2024, 3, 10, tzinfo=UTC) + timedelta(seconds=writer),
                        f"sweeper-{writer}") for key in keys]
        while time.time() < start + turn * 0.4:
            time.sleep(0.001)
        try:
            ledger.vault.mark_doomed(shreds, datetime.now(UTC))
        except Exception as error:
            errors.append(type(error).__name__)
print(",".join(errors))
"""


def test_marks_of_the_same_keys_in_opposite_orders_at_once_all_complete(
        store: Settings) -> None:
    """Rule: two runs marking the same doomed keys at the same moment, in opposite orders
    (two writers erasing the same subjects, met in other orders), both complete: no mark
    fails (PostgreSQL detected a deadlock when each upserted the keys in its own order,
    and the run stopped before saving its erasures), and every key keeps exactly one
    mark, one writer's whole (subject, time and author together)."""
    with Ledger(store):
        pass  # the schema, before the writers race to create it
    rounds, size = 10, 2000
    start = time.time() + 4
    outputs = run_together(store, [["-c", _MARKER, str(w), str(start), str(rounds),
                                    str(size)] for w in range(2)], timeout=240)
    for output in outputs:
        assert output.returncode == 0, output.stderr
        assert output.stdout.strip() == "", output.stdout
    with Ledger(store) as ledger, ledger.vault.engine.connect() as conn:
        rows = conn.execute(sa.select(doomed_keys)).all()
    assert len(rows) == rounds * size
    for row in rows:
        assert row.erased_by in ("sweeper-0", "sweeper-1")
        writer = int(row.erased_by[-1])
        assert row.erased_at.second == writer
        assert row.subject_id.endswith(f"{int(row.key_id[4:]):012d}")


def test_a_marking_undone_to_break_a_deadlock_is_redone(postgres_database: str,
                                                        tmp_path: Path) -> None:
    """Rule: marks of doomed keys that PostgreSQL undoes to break a deadlock (another
    transaction held a key's mark the marking waited for, and waited for one it held) are
    written again, not reported as an error (the erasure's events would not be saved):
    once the other transaction is gone, every key holds the marking's mark."""
    import threading
    from datetime import UTC, datetime
    from typing import Any

    import psycopg

    from lifecycle.store.vault import Shred

    settings = keyed_store("postgres", tmp_path, MASTER_KEY, lambda: postgres_database)
    outcome: dict[str, Any] = {}
    subject = "00000000-0000-0000-0000-000000000001"
    with Ledger(settings) as ledger:
        other = psycopg.connect(postgres_database)
        try:
            insert = ("INSERT INTO lifecycle_doomed_keys (key_id, subject_id, erased_at, "
                      "erased_by, marked_at) VALUES (%s, 'other', now(), 'other', now())")
            other.execute(insert, ("key-b",))

            def mark() -> None:
                try:
                    ledger.vault.mark_doomed(
                        [Shred(subject, ["key-b", "key-a"], datetime(2024, 1, 1, tzinfo=UTC),
                               "sweeper")], datetime.now(UTC))
                except Exception as error:  # noqa: BLE001 - what the test reports
                    outcome["error"] = error

            thread = threading.Thread(target=mark)
            thread.start()
            time.sleep(0.5)  # the marking holds key-a and waits for key-b
            other.execute(insert, ("key-a",))
            other.rollback()
            thread.join(timeout=60)
        finally:
            other.close()
        assert "error" not in outcome, outcome
        with ledger.vault.engine.connect() as conn:
            rows = conn.execute(sa.select(doomed_keys.c.key_id, doomed_keys.c.subject_id,
                                          doomed_keys.c.erased_by)).all()
        assert sorted(tuple(r) for r in rows) == [("key-a", subject, "sweeper"),
                                                  ("key-b", subject, "sweeper")]
