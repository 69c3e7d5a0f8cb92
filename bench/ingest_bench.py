"""Ingest benchmark: lifecycle facts/s on SQLite vs a bare eventsourcing Application.

    python3 run.py bench bench/ingest_bench.py [--facts 100000]

The baseline, measured in the same run: an eventsourcing Application on the same native
SQLite module, the library's AES cipher on, one event per fact, saved in the same batch
size. The ratio is lifecycle facts/s over baseline events/s (target >= 0.5).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eventsourcing.application import Application
from eventsourcing.cryptography import AESCipher
from eventsourcing.domain import Aggregate, event
from eventsourcing.utils import get_topic

from bench.unchained import UnchainedPostgresRecorder
from lifecycle.store.event_store import persistence_env
from lifecycle.services.ingest import BATCH_LINES
from lifecycle.services.ledger import Ledger
from lifecycle.services.samples import generate_facts
from lifecycle.store.settings import Settings


class BareSubject(Aggregate):
    @event("Registered")
    def __init__(self, reference: str) -> None:
        self.reference = reference

    @event("FactRecorded")
    def record(self, fact: dict[str, Any]) -> None:
        pass


def make_facts(count: int) -> list[str]:
    """HQIP sample facts (about 12 per subject), cut to `count`; a prefix of the
    time-ordered sample is itself valid."""
    facts = generate_facts("hqip", count // 11 + 1, seed=7)[:count]
    assert len(facts) == count, "generate more subjects"
    return [json.dumps(f) for f in facts]


def bench_lifecycle(lines: list[str], home: Path, database_url: str | None = None) -> float:
    """Seconds for `Ledger.ingest` of `lines` into a new store: SQLite under `home`, or the
    (empty) PostgreSQL database at `database_url`."""
    settings = Settings(home=home, database_url=database_url, master_key=None,
                        master_key_file=home / "master.key")
    with Ledger(settings) as ledger:
        started = time.perf_counter()
        report = ledger.ingest(lines, datetime.now(UTC))
        elapsed = time.perf_counter() - started
    assert report.accepted == len(lines), (report.accepted, report.rejected[:3])
    return elapsed


def bench_bare(lines: list[str], home: Path, database_url: str | None = None) -> float:
    """Seconds for the bare baseline: SQLite file under `home`, or the (empty) PostgreSQL
    database at `database_url` (lifecycle's own connection settings for it)."""
    os.environ.pop("PERSISTENCE_MODULE", None)
    if database_url is None:
        store_env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                     "SQLITE_DBNAME": str(home / "bare.sqlite")}
    else:
        store_env = persistence_env(Settings(home=home, database_url=database_url,
                                             master_key=None,
                                             master_key_file=home / "master.key"))
        # The lock-light recorder, without the audit chain (the baseline stores no chain).
        store_env["APPLICATION_RECORDER_TOPIC"] = get_topic(UnchainedPostgresRecorder)
    app: Application[Any] = Application(env={
        **store_env,
        "CIPHER_TOPIC": "eventsourcing.cryptography:AESCipher",
        "CIPHER_KEY": AESCipher.create_key(32),
    })
    started = time.perf_counter()
    subjects: dict[str, BareSubject] = {}
    batch: dict[str, BareSubject] = {}
    for n, line in enumerate(lines, 1):
        fact = json.loads(line)
        subject = subjects.get(fact["subject"])
        if subject is None:
            subject = subjects[fact["subject"]] = BareSubject(fact["subject"])
        subject.record(fact)
        batch[fact["subject"]] = subject
        if n % BATCH_LINES == 0:
            app.save(*batch.values())
            batch = {}
    if batch:
        app.save(*batch.values())
    elapsed = time.perf_counter() - started
    app.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--facts", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3,
                        help="alternating runs of each; medians are compared")
    args = parser.parse_args()
    lines = make_facts(args.facts)
    bare_times: list[float] = []
    our_times: list[float] = []
    for run in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            bare_times.append(bench_bare(lines, Path(tmp)))
            our_times.append(bench_lifecycle(lines, Path(tmp) / "home"))
        print(f"run {run + 1}: lifecycle {our_times[-1]:.2f} s, bare {bare_times[-1]:.2f} s, "
              f"ratio {bare_times[-1] / our_times[-1]:.2f}")
    ours, bare = statistics.median(our_times), statistics.median(bare_times)
    ours_rate, bare_rate = len(lines) / ours, len(lines) / bare
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    print(f"facts: {len(lines)}, runs: {args.repeat} (medians)")
    print(f"lifecycle ingest (SQLite): {ours_rate:,.0f} facts/s ({ours:.2f} s)")
    print(f"bare eventsourcing + AES:  {bare_rate:,.0f} events/s ({bare:.2f} s)")
    print(f"ratio: {ours_rate / bare_rate:.2f} (target >= 0.5)")


if __name__ == "__main__":
    main()
