"""Sweep benchmark: retention sweeps on a large and a small store with the same number due.

    python3 run.py bench bench/sweep_bench.py [--subjects 100000 --small-subjects 10000
                                               --events-per-subject 10 --due 1000]

Builds two stores on the embedded SQLite default, HQIP policy adopted on 2023-01-01:
L (large), --subjects subjects x --events-per-subject events (1,000,000 by default), and
S (small), --small-subjects subjects, the same shape. In each, exactly --due subjects
(spread evenly through the store) unsubscribed on 2024-03-10, so their direct-marketing
record falls due at the 2025-07-01 contact-database review (rule
marketing-13m-after-unsubscribe); nobody else has anything due before 2029 (every
subject also holds a service-communications record, reviewed six years after collection,
so the schedule has a row per subject). Facts go through `Ledger.ingest`, and the
projections are caught up before anything is timed.

Measured on each store, with `Ledger.sweep` as the daemon calls it (catch-up, sweep,
catch-up), in a warm process:
  1. a sweep with nothing due (at 2025-01-02): median and p95 of --runs runs
     (target on L: median < 50 ms);
  2. the sweep that erases the --due items (at 2025-07-01T00:00+01:00): it can only run
     once per store, so the closed store is copied --repeats times and swept on each copy;
     median wall time (and the part spent in projection catch-up) and erasures/s;
  3. the ratio of (2) on L to (2) on S (target <= 1.5: the cost follows the number due,
     not the size of the store).
Everything lives in a temporary directory that is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from lifecycle.services.ledger import Ledger
from lifecycle.projections import tables
from lifecycle.store.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "config" / "hqip.toml"
ADOPTED = datetime(2023, 1, 1, tzinfo=UTC)
INGESTED_AT = datetime(2024, 6, 1, tzinfo=UTC)
UNSUBSCRIBED_AT = "2024-03-10T12:00:00+00:00"
NOTHING_DUE_AT = datetime(2025, 1, 2, tzinfo=UTC)
REVIEW_AT = datetime(2025, 7, 1, tzinfo=timezone(timedelta(hours=1)))  # 00:00 BST
SWEPT_BY = datetime(2025, 7, 1, 6, tzinfo=UTC)  # the sweep's `now` (when it ran)
FIRST_DAY = datetime(2023, 1, 15, 9, tzinfo=UTC)

LARGE_TARGET_MS = 50.0
RATIO_TARGET = 1.5


# -- the facts ------------------------------------------------------------------------------

def is_due(n: int, subjects: int, due: int) -> bool:
    """Exactly `due` subjects, spread evenly through the store."""
    step = subjects // due
    return n % step == 0 and n // step < due


def subject_facts(n: int, per_subject: int, due: bool) -> list[dict[str, object]]:
    """The facts of one subject: `per_subject` events with the Registered event."""
    subject = f"subscriber:{n}"
    start = FIRST_DAY + timedelta(days=n % 365, minutes=n % 1440)

    def at(day: int) -> str:
        return (start + timedelta(days=day)).isoformat()

    def fact(k: int, type_: str, when: str, **fields: object) -> dict[str, object]:
        return {"id": f"{subject}/{k}", "type": type_, "subject": subject, "at": when,
                **fields}

    facts = [
        fact(1, "consent-given", at(0), purpose="direct-marketing", method="web-form"),
        fact(2, "collected", at(0), record="newsletter", category="contact",
             purpose="direct-marketing", basis="consent", source="data-subject",
             data={"email": f"person{n}@example.org", "name": f"Person {n}"}),
        fact(3, "collected", at(0), record="account", category="contact",
             purpose="service-communications", basis="legal-obligation",
             source="data-subject", data={"email": f"person{n}@example.org"}),
    ]
    fillers = per_subject - 1 - len(facts)  # Registered is the subject's first event
    for k in range(fillers):
        day = 1 + 2 * k
        if due and k == fillers - 1:
            facts.append(fact(4 + k, "unsubscribed", UNSUBSCRIBED_AT, channel="email-link"))
        elif k % 2 == 0:
            facts.append(fact(4 + k, "activity", at(day), record="newsletter"))
        else:
            facts.append(fact(4 + k, "rectified", at(day), record="newsletter",
                              data={"name": f"Person {n} ({k})"}))
    return facts


def fact_lines(subjects: int, per_subject: int, due: int) -> Iterator[str]:
    for n in range(subjects):
        for item in subject_facts(n, per_subject, is_due(n, subjects, due)):
            yield json.dumps(item)


# -- the stores -----------------------------------------------------------------------------

def settings_for(home: Path, database_url: str | None = None) -> Settings:
    """The embedded SQLite store under `home`, or PostgreSQL at `database_url`."""
    return Settings(home=home, database_url=database_url, master_key=None,
                    master_key_file=home / "master.key")


@dataclass
class StoreResult:
    name: str
    subjects: int
    events: int = 0
    facts: int = 0
    ingest_s: float = 0.0
    catch_up_s: float = 0.0
    schedule_rows: int = 0
    size_mb: float = 0.0
    idle_first_ms: float = 0.0
    idle_ms: list[float] = field(default_factory=list)
    erase_ms: list[float] = field(default_factory=list)
    erase_catch_up_ms: list[float] = field(default_factory=list)
    erased: int = 0

    @property
    def idle_median(self) -> float:
        return statistics.median(self.idle_ms)

    @property
    def idle_p95(self) -> float:
        ordered = sorted(self.idle_ms)
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]

    @property
    def erase_median(self) -> float:
        return statistics.median(self.erase_ms)


def build(result: StoreResult, home: Path, per_subject: int, due: int,
          database_url: str | None = None) -> None:
    with Ledger(settings_for(home, database_url)) as ledger:
        ledger.adopt_policy(POLICY, ADOPTED)
        counted = 0

        def count(n: int) -> None:
            nonlocal counted
            counted += n

        started = time.perf_counter()
        report = ledger.ingest(fact_lines(result.subjects, per_subject, due), INGESTED_AT,
                               on_progress=count)
        result.ingest_s = time.perf_counter() - started
        assert report.ok and report.duplicates == 0, report.as_dict()
        result.facts = report.accepted
        started = time.perf_counter()
        ledger.projections.catch_up()
        result.catch_up_s = time.perf_counter() - started
        result.events = ledger.projections.head()
        with ledger.views.connect() as conn:
            result.schedule_rows = conn.execute(
                sa.select(sa.func.count()).select_from(tables.schedule)).scalar_one()
    result.size_mb = sum(p.stat().st_size for p in home.iterdir()) / 1e6


def timed_sweep(ledger: Ledger, at: datetime) -> tuple[float, int, int]:
    started = time.perf_counter()
    report = ledger.sweep(at, SWEPT_BY)
    elapsed_ms = (time.perf_counter() - started) * 1000
    return elapsed_ms, len(report.erased), len(report.reviews) + len(report.paused)


def measure_idle(result: StoreResult, home: Path, runs: int,
                 database_url: str | None = None) -> None:
    """Sweeps with nothing due, in one warm process (the daemon's steady state)."""
    with Ledger(settings_for(home, database_url)) as ledger:
        first, erased, other = timed_sweep(ledger, NOTHING_DUE_AT)
        assert (erased, other) == (0, 0), "nothing may be due at 2025-01-02"
        result.idle_first_ms = first
        for _ in range(runs):
            ms, erased, other = timed_sweep(ledger, NOTHING_DUE_AT)
            assert (erased, other) == (0, 0)
            result.idle_ms.append(ms)


def time_catch_ups(ledger: Ledger) -> list[float]:
    """Records the time of each projection catch-up inside `Ledger.sweep` (ms)."""
    spent: list[float] = []
    catch_up = ledger.projections.catch_up

    def timed(*args: Any, **kwargs: Any) -> int:
        started = time.perf_counter()
        try:
            return catch_up(*args, **kwargs)
        finally:
            spent.append((time.perf_counter() - started) * 1000)

    ledger.projections.catch_up = timed  # type: ignore[method-assign]
    return spent


def measure_erasing(result: StoreResult, home: Path, due: int, repeats: int) -> None:
    """The erasing sweep, once on each fresh copy of the closed store."""
    for rep in range(repeats):
        copy = home.with_name(f"{home.name}-copy{rep}")
        shutil.copytree(home, copy)
        os.sync()  # keep the copy's write-back out of the timed sweep's fsyncs
        try:
            with Ledger(settings_for(copy)) as ledger:
                ledger.sweep(NOTHING_DUE_AT, SWEPT_BY, dry_run=True)  # warm the process
                catch_ups = time_catch_ups(ledger)
                ms, erased, other = timed_sweep(ledger, REVIEW_AT)
                result.erase_catch_up_ms.append(sum(catch_ups))
                assert (erased, other) == (due, 0), (erased, other)
                again, erased_again, _ = timed_sweep(ledger, REVIEW_AT)
                assert erased_again == 0, "a second sweep at the same time erases nothing"
        finally:
            shutil.rmtree(copy)
        result.erase_ms.append(ms)
        result.erased = erased


# -- report ---------------------------------------------------------------------------------

def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{platform.platform()}; {cpu}; {os.cpu_count()} CPUs; Python "
            f"{platform.python_version()}; SQLite {sqlite3.sqlite_version}; "
            f"eventsourcing {version('eventsourcing')}; SQLAlchemy {version('sqlalchemy')}")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=100_000, help="subjects in L")
    parser.add_argument("--small-subjects", type=int, default=10_000, help="subjects in S")
    parser.add_argument("--events-per-subject", type=int, default=10)
    parser.add_argument("--due", type=int, default=1000, help="subjects due in each store")
    parser.add_argument("--runs", type=int, default=30, help="sweeps with nothing due")
    parser.add_argument("--repeats", type=int, default=5,
                        help="erasing sweeps, each on a fresh copy of the store")
    parser.add_argument("--tmp", type=Path, default=None,
                        help="parent of the temporary directory (default: system temp)")
    args = parser.parse_args()
    if args.events_per_subject < 5:
        parser.error("--events-per-subject must be at least 5")
    if not 0 < args.due <= min(args.subjects, args.small_subjects):
        parser.error("--due must be between 1 and the number of subjects in each store")

    print(f"machine: {machine()}")
    print(f"stores: L {args.subjects:,} subjects, S {args.small_subjects:,} subjects, "
          f"{args.events_per_subject} events each, {args.due:,} due at "
          f"{REVIEW_AT.isoformat()}", flush=True)
    results: list[StoreResult] = []
    with tempfile.TemporaryDirectory(prefix="sweep-bench-", dir=args.tmp) as tmp:
        for name, subjects in (("L", args.subjects), ("S", args.small_subjects)):
            result = StoreResult(name, subjects)
            home = Path(tmp) / name
            build(result, home, args.events_per_subject, args.due)
            print(f"{name}: built {result.events:,} events ({result.facts:,} facts) in "
                  f"{result.ingest_s:.1f} s ingest ({result.facts / result.ingest_s:,.0f} "
                  f"facts/s, {result.events / result.ingest_s:,.0f} events/s) + "
                  f"{result.catch_up_s:.1f} s projection catch-up "
                  f"({result.events / result.catch_up_s:,.0f} events/s); "
                  f"{result.schedule_rows:,} schedule rows; {result.size_mb:,.0f} MB",
                  flush=True)
            measure_idle(result, home, args.runs)
            print(f"{name}: nothing due: median {result.idle_median:.1f} ms, p95 "
                  f"{result.idle_p95:.1f} ms (first in process {result.idle_first_ms:.1f} ms)",
                  flush=True)
            measure_erasing(result, home, args.due, args.repeats)
            print(f"{name}: erasing sweep ({args.due:,} erased): "
                  f"{', '.join(f'{ms:.0f}' for ms in result.erase_ms)} ms, of which "
                  f"projection catch-up "
                  f"{', '.join(f'{ms:.0f}' for ms in result.erase_catch_up_ms)} ms",
                  flush=True)
            shutil.rmtree(home)
            results.append(result)

    large, small = results
    ratio = large.erase_median / small.erase_median
    print()
    print("| store | subjects | events | ingest facts/s | catch-up events/s | nothing due "
          "median / p95 (ms) | erasing sweep median [min-max] (ms) | erasures/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r.name} | {r.subjects:,} | {r.events:,} | {r.facts / r.ingest_s:,.0f} | "
              f"{r.events / r.catch_up_s:,.0f} | {r.idle_median:.1f} / {r.idle_p95:.1f} | "
              f"{r.erase_median:,.0f} [{min(r.erase_ms):,.0f}-{max(r.erase_ms):,.0f}] "
              f"(n={len(r.erase_ms)}) | {r.erased / (r.erase_median / 1000):,.0f} |")
    print()
    print(f"nothing-due sweep on L: median {large.idle_median:.1f} ms "
          f"(target < {LARGE_TARGET_MS:.0f} ms): {verdict(large.idle_median < LARGE_TARGET_MS)}")
    print(f"erasing-sweep ratio L/S for {args.due:,} due: {ratio:.2f} "
          f"(target <= {RATIO_TARGET}): {verdict(ratio <= RATIO_TARGET)}")


if __name__ == "__main__":
    main()
