"""Remembered chain links under real concurrent writers (review of the chained recorders'
link cache): several `lifecycle ingest` processes, each saving the same subjects in many
small batches (so each process continues links it remembers from its own batches while the
others move the same subjects on), store every fact once and leave a chain that
`lifecycle audit verify` passes, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lifecycle.services.backup import PG_DUMP_FILE, libpq_env
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import fact, lines
from tests.processes import keyed_store, lifecycle, run_together

CONFIG = Path(__file__).resolve().parents[1] / "config"
HQIP = CONFIG / "hqip.toml"
MASTER_KEY = base64.b64encode(bytes(range(32))).decode()
WRITERS = 3
SUBJECTS = 6
FACTS_PER_SUBJECT = 150
# Runs the CLI with ingest batches of a few lines: a subject is saved once per batch.
SMALL_BATCHES = ("import sys, runpy, lifecycle.services.ingest as ingest; "
                 "ingest.BATCH_LINES = 4; sys.argv = ['lifecycle', *sys.argv[1:]]; "
                 "runpy.run_module('lifecycle', run_name='__main__')")


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    return keyed_store(request.param, tmp_path, MASTER_KEY,
                       lambda: request.getfixturevalue("postgres_database"))


def interleaved() -> list[list[dict[str, Any]]]:
    """Activity facts for the same few subjects, dealt round-robin to the writers."""
    files: list[list[dict[str, Any]]] = [[] for _ in range(WRITERS)]
    for k in range(FACTS_PER_SUBJECT):
        for n in range(SUBJECTS):
            at = f"2024-{1 + k % 12:02d}-{1 + k % 28:02d}T{n:02d}:{k % 60:02d}:00+00:00"
            files[(n + k) % WRITERS].append(fact("activity", f"member:{n}", at,
                                                 id=f"cc-{n}-{k}"))
    return files


def test_writers_saving_the_same_subjects_in_many_batches_leave_a_verified_chain(
        store: Settings, tmp_path: Path) -> None:
    """Concurrent processes each continuing subject links they remember from their own
    earlier batches, while the others advance the same subjects: every fact stored once,
    and `audit verify` passes (no link continued from a stale remembered one)."""
    with Ledger(store) as ledger:
        ledger.adopt_policy(HQIP, datetime(2023, 1, 1, tzinfo=UTC))
    files = interleaved()
    paths = []
    for index, facts in enumerate(files):
        path = tmp_path / f"writer-{index}.jsonl"
        path.write_text("\n".join(lines(facts)) + "\n", encoding="utf-8")
        paths.append(path)
    outputs = run_together(store, [["-c", SMALL_BATCHES, "ingest", str(path), "--json"]
                                   for path in paths], timeout=120)
    for output in outputs:
        assert output.returncode == 0, output.stderr
    reports = [json.loads(output.stdout) for output in outputs]
    assert sum(r["accepted"] for r in reports) == SUBJECTS * FACTS_PER_SUBJECT
    verified = lifecycle(store, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def restore_in_place(store: Settings, backup: Path) -> None:
    """Puts the store back as `backup` holds it, under whoever has it open (SQLite: the
    backup's pages copied onto the live files; PostgreSQL: pg_restore --clean)."""
    if store.database_url is None:
        for name in ("events.sqlite", "keys.sqlite", "views.sqlite"):
            if (backup / name).exists():
                with closing(sqlite3.connect(backup / name)) as src, \
                        closing(sqlite3.connect(store.home / name)) as dst:
                    src.backup(dst)
        return
    env = {**os.environ, **libpq_env(store.database_url)}
    result = subprocess.run(["pg_restore", "--clean", "--if-exists", "--no-owner",
                             "--dbname", env["PGDATABASE"], str(backup / PG_DUMP_FILE)],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_a_writer_open_across_a_restore_continues_links_the_store_holds(
        store: Settings, tmp_path: Path) -> None:
    """A writer that stays open while its store is put back to an older backup, after
    which another process stores different events where the lost ones were, continues each
    subject from the link the store now holds, never from one it remembers from before the
    restore: `audit verify` passes afterwards."""
    at = datetime(2023, 1, 1, tzinfo=UTC)
    now = datetime(2025, 6, 1, tzinfo=UTC)

    def activity(n: int) -> str:
        return json.dumps({"id": f"rs-{n}", "type": "activity", "subject": "member:1",
                           "at": f"2024-01-{n:02d}T09:00:00+00:00"})

    with Ledger(store) as ledger:
        ledger.adopt_policy(HQIP, at)
        assert ledger.ingest([activity(1)], now).ok
        backup = tmp_path / "backup"
        taken = lifecycle(store, "backup", str(backup))
        assert taken.returncode == 0, taken.stderr
        assert ledger.ingest([activity(2)], now).ok   # remembered by this writer
        restore_in_place(store, backup)             # activity 2 is lost
        other = tmp_path / "other.jsonl"
        other.write_text(activity(3) + "\n", encoding="utf-8")
        written = lifecycle(store, "ingest", str(other))  # stored where activity 2 was
        assert written.returncode == 0, written.stderr
        ledger.ingest([activity(4)], now)
    verified = lifecycle(store, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
