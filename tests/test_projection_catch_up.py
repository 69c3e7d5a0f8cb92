"""How the projection runner catches up: batching, fresh aggregates, bulk row writes."""

from __future__ import annotations

import gc
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from lifecycle.services.ledger import Ledger
from lifecycle.projections import runner, tables
from lifecycle.projections.bulk import insert_rows
from lifecycle.services.samples import generate_facts
from lifecycle.store.settings import Settings
from tests.facts_builder import fact, lines
from tests.policies import CONFIG, revised_policy
from tests.read_models import snapshot_views

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


def schedule_policies(ledger: Ledger) -> set[str]:
    with ledger.views.connect() as conn:
        return set(conn.execute(sa.select(tables.schedule.c.policy)).scalars())


def test_a_policy_adopted_later_replans_every_subject(ledger: Ledger, tmp_path: Path) -> None:
    """After a new policy is adopted, every scheduled record (not only those of subjects
    that changed since) is planned under it, exactly as a rebuild plans it."""
    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    ledger.ingest([json.dumps(f) for f in generate_facts("hqip", 20)], NOW)
    ledger.projections.catch_up()
    assert schedule_policies(ledger) == {"hqip@2023-11#1"}
    ledger.adopt_policy(revised_policy(tmp_path), datetime(2024, 6, 1, tzinfo=UTC))
    ledger.projections.catch_up()
    assert schedule_policies(ledger) == {"hqip@2024-06#2"}
    incremental = snapshot_views(ledger)
    ledger.projections.rebuild()
    assert snapshot_views(ledger) == incremental


def test_a_policy_another_process_adopted_is_used_for_later_events(
        backend: Settings, tmp_path: Path) -> None:
    """A long-running process (the daemon) plans records under the policy adopted and
    projected by another process meanwhile, not under the one it read first."""
    facts = [json.dumps(f) for f in generate_facts("hqip", 20)]
    with Ledger(backend) as daemon, Ledger(backend) as other:
        daemon.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
        daemon.ingest(facts[:len(facts) // 2], NOW)
        daemon.projections.catch_up()
        other.adopt_policy(revised_policy(tmp_path), datetime(2024, 6, 1, tzinfo=UTC))
        other.projections.catch_up()
        daemon.ingest(facts[len(facts) // 2:], NOW)
        daemon.projections.catch_up()
        assert schedule_policies(daemon) == {"hqip@2024-06#2"}


def test_a_rebuild_in_another_process_does_not_make_a_catch_up_skip_events(
        backend: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """While one process catches up, another rebuilds a projection (moving its position
    back); the catch-up leaves that projection to the rebuild, which ends with every row."""
    monkeypatch.setattr(runner, "BATCH", 10)
    monkeypatch.setattr(runner, "WRITE_BATCH", 10)
    with Ledger(backend) as first, Ledger(backend) as second:
        first.ingest(lines([fact("activity", f"member:{n}", "2024-01-01T00:00:00Z")
                            for n in range(60)]), NOW)
        batches_seen = 0

        def second_catches_up(batches: int) -> None:
            done = 0

            def count(_: int) -> None:
                nonlocal done
                done += 1
                if done >= batches:
                    raise StopIteration

            try:
                second.projections.catch_up(on_progress=count)
            except StopIteration:
                pass

        def interleave(_: int) -> None:
            nonlocal batches_seen
            batches_seen += 1
            if batches_seen == 2:  # the second process starts rebuilding `subjects`
                with second.views.begin() as conn:
                    conn.execute(tables.subjects.delete())
                    conn.execute(tables.positions.delete()
                                 .where(tables.positions.c.name == "subjects"))
            if batches_seen == 3:  # ... and has done two of its batches
                second_catches_up(2)

        first.projections.catch_up(on_progress=interleave)
        second_catches_up(100)  # the rebuild finishes
        with first.views.connect() as conn:
            subjects = conn.execute(
                sa.select(sa.func.count()).select_from(tables.subjects)).scalar_one()
        assert subjects == 60
        assert first.projections.positions()["subjects"] == first.projections.head()
