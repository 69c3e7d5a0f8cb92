"""Attack on the sweep's patched views (sweepview): a subject whose only new events are
erasures by retention has its stored document patched and its notification rows added.
Rule: whatever came before (late facts dated before stored ones, records collected again
under an erased record's name and erased a second time, shares by name and by category,
restrictions placed and lifted, legal holds placed and released, acknowledgements of
retention erasures, erasure requests), after every sweep and catch-up the views are row
for row what `projections rebuild` gives. Random programs (seeded), on both backends.
"""

from __future__ import annotations

import json
import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact
from tests.read_models import snapshot_views

HQIP = Path(__file__).resolve().parents[1] / "config" / "hqip.toml"
START = datetime(2022, 1, 1, tzinfo=UTC)
NOW = datetime(2030, 1, 1, tzinfo=UTC)
SUBJECTS = 10
RECORDS = ["ev-a", "ev-b", "sv-a", "sv-b"]


def program(seed: int, months: int) -> list[list[dict[str, Any]]]:
    """A batch of facts per month: most dated in that month, some late (months before)."""
    rng = random.Random(seed)
    batches = []
    counter = 0
    acked: list[str] = []  # record names collected so far (acknowledgements name them)
    for month in range(months):
        batch = []
        for _ in range(rng.randrange(2, 9)):
            counter += 1
            back = rng.choice([0, 0, 0, 1, 3, 12])
            at = START + timedelta(days=30 * max(0, month - back) + rng.randrange(28),
                                   minutes=rng.randrange(1440))
            subject = f"member:{rng.randrange(SUBJECTS)}"
            # mostly new names; sometimes a name used before (refused as existing)
            record = (rng.choice(RECORDS) if rng.random() < 0.2
                      else f"{rng.choice(RECORDS)}-{counter}")
            events = record.startswith("ev")
            kind = rng.choices(
                ["collected", "shared", "restricted", "lifted", "hold", "release", "ack",
                 "activity", "erasure"], [8, 4, 0.6, 1, 0.6, 1, 3, 1, 0.3])[0]
            if kind == "restricted" and subject >= "member:3":  # some never restricted
                kind = "activity"
            if kind == "ack" and rng.random() < 0.5 and acked:
                record = rng.choice(acked)
            ident = f"s{seed}-{counter}"
            when = at.isoformat()
            if kind == "collected":
                item = collected(subject, when, record, {"v": f"x{counter}"}, id=ident,
                                 purpose="events" if events else "surveys-feedback",
                                 basis="contract" if events else "legitimate-interests")
            elif kind == "shared":
                item = fact("shared", subject, when, id=ident, recipient="Clarity Marketing",
                            role="processor", purpose="events", basis="contract",
                            country="GB", **({"records": [record]} if rng.random() < 0.6
                                             else {"categories": ["contact"]}))
            elif kind == "restricted":
                item = fact("restricted", subject, when, id=ident,
                            scope=rng.choice(["all", "events"]), reason="contested-accuracy")
            elif kind == "lifted":
                item = fact("restriction-lifted", subject, when, id=ident,
                            scope=rng.choice(["all", "events"]))
            elif kind == "hold":
                item = fact("legal-hold-placed", subject, when, id=ident, hold=f"h{counter % 3}",
                            scope=rng.choice(["all", "events"]), reason="litigation")
            elif kind == "release":
                item = fact("legal-hold-released", subject, when, id=ident,
                            hold=f"h{rng.randrange(3)}")
            elif kind == "ack":
                item = fact("erasure-acknowledged", subject, when, id=ident,
                            recipient="Clarity Marketing", erasure=f"retention:{record}")
            elif kind == "activity":
                item = fact("activity", subject, when, id=ident)
            else:  # sometimes under a name a retention erasure also takes
                item = fact("erasure-requested", subject, when, id=ident,
                            request=(f"retention:{record}" if rng.random() < 0.3
                                     else f"ER-{counter}"))
            batch.append(item)
            if kind == "collected":
                acked.append(record)
        batches.append(batch)
    return batches


def run_program(settings: Settings, seed: int, months: int) -> None:
    with Ledger(settings) as ledger:
        ledger.adopt_policy(HQIP, datetime(2020, 1, 1, tzinfo=UTC))
        erased = 0
        for month, batch in enumerate(program(seed, months)):
            ledger.ingest([json.dumps(f) for f in batch], NOW)
            ledger.projections.catch_up()
            at = START + timedelta(days=30 * month + 29)
            report = ledger.sweep(at, NOW)
            erased += len(getattr(report, "erased", []) or [])
            ledger.projections.catch_up()
        incremental = snapshot_views(ledger)
        ledger.projections.rebuild()
        rebuilt = snapshot_views(ledger)
    for name in rebuilt:
        assert incremental[name] == rebuilt[name], (seed, name)


@pytest.mark.parametrize("seed", range(8))
def test_sweeps_between_late_facts_leave_views_a_rebuild_gives_sqlite(
        sqlite_settings: Settings, seed: int) -> None:
    """(module docstring) SQLite."""
    run_program(sqlite_settings, seed, 30 + seed * 3)


@pytest.mark.parametrize("seed", [int(s) for s in os.environ.get(
    "ATTACK_SEEDS", "100 101 102").split()])
def test_sweeps_between_late_facts_leave_views_a_rebuild_gives(
        backend: Settings, seed: int) -> None:
    """(module docstring) Both backends."""
    run_program(backend, seed, 36)


def run_two_writers(settings: Settings, seed: int, months: int) -> None:
    """The program's batches, sweeps and catch-ups dealt at random to two ledgers on one
    store (two processes: each its own runner and cache, one moving the shared views past
    events the other's cache never applied)."""
    rng = random.Random(seed)
    with Ledger(settings) as first, Ledger(settings) as second:
        first.adopt_policy(HQIP, datetime(2020, 1, 1, tzinfo=UTC))
        ledgers = [first, second]
        for month, batch in enumerate(program(seed, months)):
            rng.choice(ledgers).ingest([json.dumps(f) for f in batch], NOW)
            if rng.random() < 0.5:
                rng.choice(ledgers).projections.catch_up()
            rng.choice(ledgers).sweep(START + timedelta(days=30 * month + 29), NOW)
            if rng.random() < 0.5:
                rng.choice(ledgers).projections.catch_up()
        first.projections.catch_up()
        second.projections.catch_up()
        incremental = snapshot_views(first)
        first.projections.rebuild()
        rebuilt = snapshot_views(first)
    for name in rebuilt:
        assert incremental[name] == rebuilt[name], (seed, name)


@pytest.mark.parametrize("seed", [int(s) for s in os.environ.get(
    "ATTACK_SEEDS", "300 301 302").split()])
def test_two_processes_sweeping_and_writing_leave_views_a_rebuild_gives(
        backend: Settings, seed: int) -> None:
    """(module docstring) Two ledgers (processes) taking turns at random, both backends."""
    run_two_writers(backend, seed, 36)
