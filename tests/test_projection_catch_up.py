"""How the projection runner catches up: batching, fresh aggregates, bulk row writes."""

from __future__ import annotations

import gc
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from lifecycle.ledger import Ledger
from lifecycle.projections import runner, tables
from lifecycle.projections.bulk import insert_rows
from lifecycle.samples import generate_facts
from tests.test_projections_and_sweeps import snapshot_views

CONFIG = Path(__file__).resolve().parents[1] / "config"
ADOPTED = datetime(2023, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_small_batches_build_the_same_rows_as_one_big_batch(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows do not depend on batching: when a subject's events span many small batches
    (some creating it, some changing it), the views equal a rebuild in one batch."""
    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    ledger.ingest([json.dumps(f) for f in generate_facts("hqip", 30)], NOW)
    ledger.sweep(datetime(2025, 7, 1, tzinfo=UTC), NOW)
    ledger.projections.rebuild()
    one_batch = snapshot_views(ledger)
    monkeypatch.setattr(runner, "BATCH", 7)
    monkeypatch.setattr(runner, "WRITE_BATCH", 20)
    head = ledger.projections.head()
    assert head > 20 * 10  # many write batches
    assert ledger.projections.rebuild() == head
    assert snapshot_views(ledger) == one_batch


def test_catch_up_restores_the_garbage_collector(ledger: Ledger) -> None:
    """The cyclic collector is paused only while a catch-up runs, and left as found."""
    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    ledger.ingest([json.dumps(f) for f in generate_facts("hqip", 3)], NOW)
    assert gc.isenabled()
    ledger.projections.rebuild()
    assert gc.isenabled()
    gc.disable()
    try:
        ledger.projections.rebuild()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_bulk_inserted_rows_read_back_as_inserted(ledger: Ledger) -> None:
    """Rows written by the bulk path (COPY on PostgreSQL, executemany on SQLite) read back
    with the same values, types and time zones as the ordinary SQLAlchemy insert."""
    when = datetime(2024, 3, 10, 10, 30, 15, 123456, tzinfo=timezone(timedelta(hours=1)))
    row = {"subject_id": "s-1", "seq": 0, "recipient": "Clarity \\ Marketing\t\"Ltd\"",
           "role": "processor", "purpose": "direct-marketing", "basis": "consent",
           "country": "GB", "safeguard": None, "at": when,
           "records": ["newsletter", "a\\b\nc"], "categories": []}
    ordinary = {**row, "subject_id": "s-2"}
    with ledger.views.begin() as conn:
        insert_rows(conn, tables.disclosures, [row])
        conn.execute(tables.disclosures.insert(), [ordinary])
    with ledger.views.connect() as conn:
        read = {r.subject_id: r._asdict() for r in conn.execute(sa.select(tables.disclosures))}
    assert read["s-1"] == row
    assert {**read["s-2"], "subject_id": "s-1"} == read["s-1"]
    assert read["s-1"]["at"].tzinfo is not None
    if ledger.views.dialect.name == "sqlite":  # stored text identical, byte for byte
        with ledger.views.connect() as conn:
            stored = dict(conn.exec_driver_sql(
                "SELECT subject_id, at FROM lifecycle_disclosures").all())
        assert stored["s-1"] == stored["s-2"] == "2024-03-10 09:30:15.123456"
