"""CPU per 1,000 facts of a 1-writer ingest, beside the bare baseline's, on a fixed input.

    PYTHONPATH=src:. python -m bench.ingest_cpu [--subjects 2000] [--runs 3]
                                                [--postgres-url URL] [--profile FILE]

On a shared machine a wall-clock ratio swings with the load; CPU time barely does, and a
1-writer ingest spends nearly all its wall time on a CPU or waiting for one. The input is
the suite's facts for the first `--subjects` subjects (9 each: 18,000 by default), into a
new store with the suite's policy adopted; only `Ledger.ingest` is timed
(`time.process_time`). The bare baseline is `ingest_bench.bench_bare` on the same lines.
Runs alternate; each prints its own figures. With `--postgres-url` each run gets a scratch
database on that server (created, then dropped); the figures are the client's CPU.
`--profile FILE` writes a cProfile of the first lifecycle run (CPU-time timer).
"""

from __future__ import annotations

import argparse
import cProfile
import tempfile
import time
import uuid
from pathlib import Path

from bench import ingest_bench
from bench.suite import ADOPTED, INGESTED_AT, POLICY, fact_lines
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings


def scratch_database(admin_url: str) -> tuple[str, str]:
    import psycopg

    name = f"lifecycle_ingest_cpu_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, f"{admin_url.rsplit('/', 1)[0]}/{name}"


def drop_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def lifecycle_cpu(lines: list[str], home: Path, database_url: str | None,
                  profile: str | None = None) -> float:
    settings = Settings(home=home, database_url=database_url, master_key=None,
                        master_key_file=home / "master.key")
    with Ledger(settings) as ledger:
        ledger.adopt_policy(POLICY, ADOPTED)
        profiler = cProfile.Profile(time.process_time) if profile else None
        started = time.process_time()
        if profiler:
            profiler.enable()
        report = ledger.ingest(lines, INGESTED_AT)
        if profiler:
            profiler.disable()
        cpu = time.process_time() - started
        if profiler and profile:
            profiler.dump_stats(profile)
    assert report.accepted == len(lines), (report.accepted, report.rejected[:3])
    return cpu


def bare_cpu(lines: list[str], home: Path, database_url: str | None) -> float:
    started = time.process_time()
    ingest_bench.bench_bare(lines, home, database_url)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--profile", default=None)
    args = parser.parse_args()
    lines = list(fact_lines(0, args.subjects, args.subjects, args.subjects // 10))
    per_k = 1000 / len(lines)
    backend = "postgres" if args.postgres_url else "sqlite"
    for run in range(args.runs):
        figures = {}
        for side in ("bare", "lifecycle"):
            with tempfile.TemporaryDirectory() as tmp:
                home = Path(tmp) / "home"
                home.mkdir()
                name, url = (scratch_database(args.postgres_url) if args.postgres_url
                             else (None, None))
                try:
                    figures[side] = (bare_cpu(lines, home, url) if side == "bare" else
                                     lifecycle_cpu(lines, home, url,
                                                   args.profile if run == 0 else None))
                finally:
                    if name is not None and args.postgres_url:
                        drop_database(args.postgres_url, name)
        print(f"run {run + 1} ({backend}, {len(lines):,} facts): lifecycle "
              f"{figures['lifecycle'] * per_k * 1000:.1f} ms CPU per 1,000 facts, bare "
              f"{figures['bare'] * per_k * 1000:.1f} ms; CPU ratio "
              f"{figures['bare'] / figures['lifecycle']:.2f}", flush=True)


if __name__ == "__main__":
    main()
