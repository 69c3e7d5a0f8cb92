"""Where the erasing sweep's time goes, and what it would cost with parts of it left out.

    python3 run.py bench -m bench.sweep_floor [--backends sqlite,postgres] [--repeats 3]

Builds the benchmark suite's store (`--size small`: 4,000 subjects, 400 records due at the
review, `bench.suite.fact_lines`) once per backend, then on a fresh copy of it for each run
sweeps as the suite's "sweep, erasing" row does (`Ledger.sweep` after 20 idle sweeps) and
times its parts. Beside it, on another fresh copy, the suite's baseline: a bare
`vault.destroy` of the same keys in the sweep's batches.

The what-if variants leave out, by patching the run's own objects, what the product must
do and the benchmark target cannot pay for; they are measurements of a floor, never modes
of the product:

  as built          the sweep as it runs
  no marks          without marking the doomed keys before the events are saved (the
                    record-before-destroy order's crash marks; also what keeps another
                    writer from sealing new data under a key about to be destroyed)
  no catch-up       without the projection catch-up after the sweep (views current when
                    the sweep returns)
  no marks, no catch-up, no VACUUM
                    also without PostgreSQL's VACUUM of the key table (destroyed key rows
                    leave its live files); on SQLite the same as the row above

Each variant prints its median time, the median bare destroy and the ratio the suite
compares with 0.25 (erasures/s over bare destroys/s).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

from bench import suite
from bench.sweep_bench import (
    ADOPTED,
    INGESTED_AT,
    NOTHING_DUE_AT,
    POLICY,
    REVIEW_AT,
    SWEPT_BY,
    is_due,
    machine,
)
from lifecycle.aggregates.data_subject import DataSubject, key_scope
from lifecycle.services import sweep
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import DATABASE_URL_ENV, HOME_ENV, MASTER_KEY_ENV, load_settings
from lifecycle.store.vault import data_keys

VARIANTS = ("as built", "no marks", "no catch-up", "no marks, no catch-up, no VACUUM")
IDLE_SWEEPS = 20  # as the suite runs before its erasing sweep (a warm process)


class Stores:
    """The built store and its fresh copies, on one backend."""

    def __init__(self, backend: str, tmp: Path, admin_url: str) -> None:
        self.backend = backend
        self.tmp = tmp
        self.admin_url = admin_url
        self.base_url = admin_url.rsplit("/", 1)[0]
        self.copies = 0

    def _admin(self, sql: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql)

    def env(self, home: Path, database: str | None) -> dict[str, str]:
        env = {HOME_ENV: str(home), MASTER_KEY_ENV: suite.MASTER_KEY}
        if database is not None:
            env[DATABASE_URL_ENV] = f"{self.base_url}/{database}"
        return env

    def build(self, lines: list[str]) -> None:
        database = None
        if self.backend == "postgres":
            database = "lifecycle_floor_built"
            self._admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            self._admin(f'CREATE DATABASE "{database}"')
        with Ledger(load_settings(self.env(self.tmp / "built", database))) as ledger:
            ledger.adopt_policy(POLICY, ADOPTED)
            report = ledger.ingest(lines, INGESTED_AT)
            assert report.accepted == len(lines) and not report.rejected, report
        if database is not None:
            with psycopg.connect(f"{self.base_url}/{database}", autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")

    @contextmanager
    def copy(self) -> Iterator[dict[str, str]]:
        self.copies += 1
        home = self.tmp / f"copy-{self.copies}"
        shutil.copytree(self.tmp / "built", home)
        database = None
        if self.backend == "postgres":
            database = f"lifecycle_floor_copy_{self.copies}"
            self._admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            self._admin(f'CREATE DATABASE "{database}" TEMPLATE "lifecycle_floor_built"')
        try:
            yield self.env(home, database)
        finally:
            shutil.rmtree(home, ignore_errors=True)
            if database is not None:
                self._admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    def close(self) -> None:
        if self.backend == "postgres":
            self._admin('DROP DATABASE IF EXISTS "lifecycle_floor_built" WITH (FORCE)')


def timed_parts(ledger: Ledger, spent: dict[str, float]) -> None:
    """Adds each part's time (ms) to `spent` as the sweep runs (the run's own objects)."""
    def wrap(owner: Any, name: str, label: str) -> None:
        inner: Callable[..., Any] = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[label] += (time.perf_counter() - began) * 1000
        setattr(owner, name, timed)

    wrap(ledger.projections, "catch_up", "projection catch-ups")
    wrap(ledger.vault, "mark_doomed", "marking doomed keys")
    wrap(ledger.store, "save", "saving events")
    wrap(ledger.vault, "destroy_all", "destroying keys")
    wrap(ledger.vault, "reclaim", "VACUUM (PostgreSQL)")
    wrap(sweep.Sweeper, "_sweep_subject", "deciding")


def leave_out(ledger: Ledger, variant: str) -> None:
    """The what-if: patches this run's objects only."""
    if "no marks" in variant:
        ledger.vault.mark_doomed = lambda *args, **kwargs: None  # type: ignore[method-assign]
    if "no catch-up" in variant:
        catch_up = ledger.projections.catch_up
        calls = [0]

        def first_only(*args: Any, **kwargs: Any) -> int:
            calls[0] += 1  # the one before the sweep stays (it brings the schedule up)
            return catch_up(*args, **kwargs) if calls[0] == 1 else 0
        ledger.projections.catch_up = first_only  # type: ignore[method-assign]
    if "no VACUUM" in variant:
        ledger.vault.reclaim = lambda *args, **kwargs: None  # type: ignore[method-assign]


def erasing_sweep(stores: Stores, variant: str) -> tuple[float, dict[str, float]]:
    with stores.copy() as env, Ledger(load_settings(env)) as ledger:
        for _ in range(IDLE_SWEEPS):
            ledger.sweep(NOTHING_DUE_AT, SWEPT_BY)
        spent: dict[str, float] = defaultdict(float)
        leave_out(ledger, variant)
        timed_parts(ledger, spent)
        original = sweep.Sweeper._sweep_subject
        began = time.perf_counter()
        try:
            report = ledger.sweep(REVIEW_AT, SWEPT_BY)
        finally:
            sweep.Sweeper._sweep_subject = original  # type: ignore[method-assign]
        total = (time.perf_counter() - began) * 1000
        assert len(report.erased) == suite.SIZES["small"].due, len(report.erased)
        return total, dict(spent)


def bare_destroy(stores: Stores) -> float:
    size = suite.SIZES["small"]
    due = [str(DataSubject.create_id(suite.reference(n))) for n in range(size.subjects)
           if is_due(n, size.subjects, size.due)]
    with stores.copy() as env, Ledger(load_settings(env)) as ledger:
        with ledger.vault.engine.connect() as conn:
            key_of = dict(conn.execute(
                sa.select(data_keys.c.subject_id, data_keys.c.key_id)
                .where(data_keys.c.scope == key_scope("newsletter"))
                .where(data_keys.c.destroyed_at.is_(None))).all())
        batches = [[key_of[s] for s in due[i:i + sweep.BATCH_SUBJECTS]]
                   for i in range(0, len(due), sweep.BATCH_SUBJECTS)]
        began = time.perf_counter()
        destroyed = sum(ledger.vault.destroy(keys, REVIEW_AT, "benchmark baseline")
                        for keys in batches)
        seconds = (time.perf_counter() - began) * 1000
        assert destroyed == size.due, destroyed
        return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--postgres-url", default=suite.DEFAULT_POSTGRES_URL)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    size = suite.SIZES["small"]
    lines = list(suite.fact_lines(0, size.subjects, size.subjects, size.due))
    print(f"machine: {machine()}")
    print(f"store: {size.subjects:,} subjects, {len(lines):,} facts, {size.due} records due; "
          f"sweep batches of {sweep.BATCH_SUBJECTS}; {args.repeats} runs of each, "
          "each on a fresh copy")
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory(prefix="lifecycle-floor-") as tmp:
            stores = Stores(backend, Path(tmp), args.postgres_url)
            try:
                stores.build(lines)
                bare = statistics.median(bare_destroy(stores) for _ in range(args.repeats))
                print(f"[{backend}] bare vault.destroy of the {size.due} keys: median "
                      f"{bare:.1f} ms; the target (ratio >= 0.25) allows {4 * bare:.0f} ms")
                for variant in VARIANTS:
                    runs = [erasing_sweep(stores, variant) for _ in range(args.repeats)]
                    total = statistics.median(t for t, _ in runs)
                    parts = {label: statistics.median(p.get(label, 0.0) for _, p in runs)
                             for label in runs[0][1]}
                    shown = ", ".join(f"{label} {ms:.1f}" for label, ms in parts.items()
                                      if ms >= 0.05)
                    print(f"[{backend}] {variant:<34} median {total:6.1f} ms "
                          f"[{min(t for t, _ in runs):.1f}-{max(t for t, _ in runs):.1f}]"
                          f"  ratio {bare / total:.2f}   ({shown}; ms)")
            finally:
                stores.close()
    print("ratio: (erasures/s of the sweep) / (destroys/s of the bare vault.destroy), "
          "as the suite's row; the target is 0.25")


if __name__ == "__main__":
    main()
