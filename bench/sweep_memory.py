"""Peak memory of a sweep that erases many records at once (issue 11: under 500 MB for
100,000 due records).

    python3 run.py bench bench/sweep_memory.py [--subjects 20000 --records 5]
                                                [--database-url postgresql://...]

A store of --subjects subjects, each with --records direct-marketing records (one data key
each), every subject unsubscribed on 2024-03-10: at the 2025-07-01 contact-database
review every record is due (rule marketing-13m-after-unsubscribe), subjects x records in
all. The store is built by `Ledger.ingest` in one process; the sweep (`Ledger.sweep` as
the daemon calls it: catch-up, sweep, catch-up) runs in a fresh process of its own
(spawned, so it shares no pages with the builder), which reports its peak resident set
(VmHWM: imports, opening the store and the sweep; the process never held more).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from bench.sweep_bench import (
    ADOPTED,
    FIRST_DAY,
    INGESTED_AT,
    POLICY,
    REVIEW_AT,
    SWEPT_BY,
    UNSUBSCRIBED_AT,
    settings_for,
)
from lifecycle.services.ledger import Ledger

PEAK_TARGET_MB = 500.0


def memory_facts(subjects: int, records: int) -> Iterator[str]:
    """Per subject: marketing consent, `records` marketing records, then unsubscribed."""
    for n in range(subjects):
        subject = f"member:{n}"
        start = FIRST_DAY + timedelta(days=n % 365, minutes=n % 1440)
        first = start.isoformat()
        yield json.dumps({"id": f"{subject}/c", "type": "consent-given", "subject": subject,
                          "at": first, "purpose": "direct-marketing", "method": "web-form"})
        for r in range(records):
            yield json.dumps({
                "id": f"{subject}/r{r}", "type": "collected", "subject": subject,
                "at": (start + timedelta(minutes=r + 1)).isoformat(), "record": f"list-{r}",
                "category": "contact", "purpose": "direct-marketing", "basis": "consent",
                "source": "data-subject", "data": {"email": f"m{n}.{r}@example.org"}})
        yield json.dumps({"id": f"{subject}/u", "type": "unsubscribed", "subject": subject,
                          "at": UNSUBSCRIBED_AT, "channel": "email-link"})


@dataclass
class MemoryResult:
    due: int
    ingest_s: float
    erased: int
    sweep_s: float
    peak_mb: float
    before_mb: float  # the process's peak before the sweep (imports, opening the store)


def _vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _build(home: str, database_url: str | None, subjects: int, records: int) -> float:
    with Ledger(settings_for(Path(home), database_url)) as ledger:
        ledger.adopt_policy(POLICY, ADOPTED)
        started = time.perf_counter()
        report = ledger.ingest(memory_facts(subjects, records), INGESTED_AT)
        elapsed = time.perf_counter() - started
        assert report.ok and report.accepted == subjects * (records + 2), report.as_dict()
        ledger.projections.catch_up()
    return elapsed


def _sweep(home: str, database_url: str | None) -> tuple[int, float, float, float]:
    with Ledger(settings_for(Path(home), database_url)) as ledger:
        ledger.projections.catch_up()
        before = _vm_hwm_mb()
        started = time.perf_counter()
        report = ledger.sweep(REVIEW_AT, SWEPT_BY)
        elapsed = time.perf_counter() - started
        return len(report.erased), elapsed, _vm_hwm_mb(), before


def measure(home: Path, subjects: int, records: int,
            database_url: str | None = None) -> MemoryResult:
    """Builds the store at `home` (and `database_url`, if given) and sweeps it, each in a
    process of its own; the caller removes the store afterwards."""
    home.mkdir(parents=True, exist_ok=True)
    spawn = mp.get_context("spawn")
    with spawn.Pool(1) as pool:
        ingest_s = pool.apply(_build, (str(home), database_url, subjects, records))
    with spawn.Pool(1) as pool:
        erased, sweep_s, peak, before = pool.apply(_sweep, (str(home), database_url))
    assert erased == subjects * records, (erased, subjects * records)
    return MemoryResult(subjects * records, ingest_s, erased, sweep_s, peak, before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=20_000)
    parser.add_argument("--records", type=int, default=5, help="due records per subject")
    parser.add_argument("--database-url", default=None,
                        help="an empty PostgreSQL database (default: embedded SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sweep-memory-") as tmp:
        result = measure(Path(tmp) / "store", args.subjects, args.records, args.database_url)
    print(f"sweep of {result.due:,} due records: {result.erased:,} erased in "
          f"{result.sweep_s:.1f} s ({result.erased / result.sweep_s:,.0f}/s); peak RSS "
          f"{result.peak_mb:,.0f} MB (before the sweep {result.before_mb:,.0f} MB; target < "
          f"{PEAK_TARGET_MB:.0f} MB); store built in {result.ingest_s:.1f} s")


if __name__ == "__main__":
    main()
