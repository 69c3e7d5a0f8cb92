"""Projections rebuild to the same rows; sweeps survive SIGKILL and erase exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from lifecycle.store.vault import data_keys, doomed_keys
from lifecycle.services.ledger import Ledger
from lifecycle.projections import tables
from lifecycle.services.samples import generate_facts
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact, lines
from tests.read_models import snapshot_views

CONFIG = Path(__file__).resolve().parents[1] / "config"
ADOPTED = datetime(2023, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)




def test_rebuilt_projections_equal_the_incrementally_built_ones(ledger: Ledger) -> None:
    """A rebuild from zero gives exactly the rows that incremental catch-up built."""
    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    facts = [json.dumps(f) for f in generate_facts("hqip", 120)]
    for start in range(0, len(facts), 300):  # several ingests, catch-up after each
        ledger.ingest(facts[start:start + 300], NOW)
        ledger.projections.catch_up()
    ledger.sweep(datetime(2025, 7, 1, tzinfo=UTC), NOW)
    incremental = snapshot_views(ledger)
    assert incremental["lifecycle_subjects"] and incremental["lifecycle_retention_schedule"]
    ledger.projections.rebuild()
    assert snapshot_views(ledger) == incremental
    assert all(st.lag == 0 for st in ledger.projections.status())


def test_rebuilding_one_projection_leaves_the_others(ledger: Ledger) -> None:
    """Rebuilding one named projection replays it alone and gives the same rows."""
    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    ledger.ingest([json.dumps(f) for f in generate_facts("hqip", 40)], NOW)
    ledger.projections.catch_up()
    before = snapshot_views(ledger)
    ledger.projections.rebuild(["retention-schedule"])
    assert snapshot_views(ledger) == before


def test_a_store_from_before_the_suppression_listings_gets_them_built(
        backend: Settings) -> None:
    """Opening a store whose views still have a retired suppression table (one subject
    per hash; then the listings in force only, without lifted ones) drops it and its
    position, and builds the suppression listings from the log."""
    with Ledger(backend) as ledger:
        ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
        ledger.ingest([json.dumps(f) for f in generate_facts("hqip", 60)], NOW)
        ledger.projections.catch_up()
        suppressed = ledger.suppressed_hashes()
        listings = ledger.suppression_listings()
        assert suppressed
        head = ledger.projections.head()
        with ledger.views.begin() as conn:  # the views as earlier versions left them
            conn.execute(tables.suppression.delete())
            conn.execute(tables.positions.delete()
                         .where(tables.positions.c.name == "suppression-listings"))
            conn.execute(sa.text("CREATE TABLE lifecycle_suppression (email_hash "
                                 "VARCHAR(64) PRIMARY KEY, subject_id VARCHAR(36))"))
            conn.execute(sa.text("CREATE TABLE lifecycle_suppression_list (email_hash "
                                 "VARCHAR(64), subject_id VARCHAR(36), since TIMESTAMP, "
                                 "PRIMARY KEY (email_hash, subject_id))"))
            for name in ("suppression", "suppression-list"):
                conn.execute(tables.positions.insert().values(name=name, position=head))
    with Ledger(backend) as reopened:
        for table in ("lifecycle_suppression", "lifecycle_suppression_list"):
            assert not sa.inspect(reopened.views).has_table(table)
        with reopened.views.connect() as conn:
            names = set(conn.execute(sa.select(tables.positions.c.name)).scalars())
        assert not names & {"suppression", "suppression-list"}
        reopened.projections.catch_up()
        assert reopened.suppressed_hashes() == suppressed
        assert reopened.suppression_listings() == listings


def test_projection_status_shows_lag_until_caught_up(ledger: Ledger) -> None:
    """New events show as lag until the projections catch up."""
    ledger.ingest(lines([collected("m:1", "2024-01-01T00:00:00Z", "r", {"a": 1})]), NOW)
    assert {st.lag for st in ledger.projections.status()} == {2}
    ledger.projections.catch_up()
    assert {st.lag for st in ledger.projections.status()} == {0}


def test_a_sweep_with_nothing_due_changes_nothing(ledger: Ledger) -> None:
    """A sweep before anything falls due records no event."""
    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    ledger.ingest([json.dumps(f) for f in generate_facts("hqip", 30)], NOW)
    head = ledger.projections.head()
    report = ledger.sweep(datetime(2023, 1, 2, tzinfo=UTC), NOW)
    assert (report.erased, report.reviews) == ([], [])
    assert ledger.projections.head() == head


def test_a_dry_run_reports_but_changes_nothing(ledger: Ledger) -> None:
    """`sweep --dry-run` lists what is due and records nothing."""
    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    unsubscribers(ledger, 3)
    head = ledger.projections.head()
    report = ledger.sweep(datetime(2025, 7, 1, tzinfo=UTC), NOW, dry_run=True)
    assert len(report.erased) == 3
    assert ledger.projections.head() == head
    assert len(ledger.sweep(datetime(2025, 7, 1, tzinfo=UTC), NOW).erased) == 3


def unsubscribers(ledger: Ledger, count: int) -> None:
    facts = []
    for n in range(count):
        subject = f"subscriber:{n}"
        facts += [
            collected(subject, "2023-05-02T09:00:00Z", "signup", {"email": f"p{n}@e.org"}),
            fact("consent-given", subject, "2023-05-02T09:00:00Z", purpose="direct-marketing"),
            fact("unsubscribed", subject, "2024-03-10T10:00:00Z"),
        ]
    report = ledger.ingest(lines(facts), NOW)
    assert report.accepted == len(facts), report.rejected[:3]


def test_a_sweep_killed_part_way_erases_each_item_exactly_once(backend: Settings) -> None:
    """A sweep killed with SIGKILL and run again leaves every due item erased exactly once."""
    due = 150
    with Ledger(backend) as ledger:
        ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
        unsubscribers(ledger, due)
        ledger.projections.catch_up()
    env = {**os.environ, "LIFECYCLE_HOME": str(backend.home), "LIFECYCLE_SWEEP_BATCH": "1"}
    env.pop("LIFECYCLE_MASTER_KEY", None)
    env.pop("LIFECYCLE_MASTER_KEY_FILE", None)
    if backend.database_url:
        env["LIFECYCLE_DATABASE_URL"] = backend.database_url
    else:
        env.pop("LIFECYCLE_DATABASE_URL", None)
    command = [sys.executable, "-m", "lifecycle", "sweep", "--at", "2025-07-01T00:00:00+01:00"]
    engine = sa.create_engine(backend.vault_url)
    victim = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    reached = 0  # keys the sweep has marked for destruction (batches past step 2) or destroyed
    while time.monotonic() < deadline and victim.poll() is None:
        with engine.connect() as conn:
            reached = conn.execute(sa.select(sa.func.count()).select_from(data_keys).where(
                data_keys.c.destroyed_at.is_not(None)
                | data_keys.c.key_id.in_(sa.select(doomed_keys.c.key_id)))).scalar_one()
        if reached >= 10:
            break
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert 10 <= reached < due, "the sweep must be killed part-way"
    rerun = subprocess.run([*command, "--json"], env=env, capture_output=True, text=True,
                           timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    with Ledger(backend) as ledger:
        counts = []
        for n in range(due):
            events = [e["event"] for e in ledger.history(f"subscriber:{n}")]
            counts.append(events.count("RetentionExpired"))
        assert counts == [1] * due
        with ledger.vault.engine.connect() as conn:
            live = conn.execute(sa.select(sa.func.count()).select_from(data_keys)
                                .where(data_keys.c.destroyed_at.is_(None))).scalar_one()
        assert live == 0
        with ledger.views.connect() as conn:
            pending = conn.execute(sa.select(sa.func.count()).select_from(tables.schedule)
                                   .where(tables.schedule.c.done.is_(False))
                                   .where(tables.schedule.c.action == "erase")).scalar_one()
        assert pending == 0
    engine.dispose()
