"""What writing the audit chain with the events costs: ingest with and without it, and verify.

    PYTHONPATH=src:. python -m bench.chain_bench [--size small] [--backends sqlite,postgres]

For each backend, `Ledger.ingest` of the suite's facts (same sizes as `python -m bench`)
into fresh stores, three sides per repeat (each side first in turn), medians compared:

  chained     the shipped recorder: chain rows and one signed checkpoint per batch, in the
              batch's transaction;
  unchained   the same recorder with the chain switched off (a subclass defined here whose
              `_pending` returns None: nothing is hashed, linked, signed or written);
  bare        ingest_bench's bare eventsourcing Application + AES cipher, the same facts
              as one event each, the same batches (the suite's ingest baseline).

Then, on the last chained store, `lifecycle.services.audit.verify` against a bare read-and-decode
of the same log in verify's page size (`recorder.select_notifications` +
`mapper.to_domain_event`), alternating, medians compared.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eventsourcing.utils import get_topic

from bench.ingest_bench import bench_bare
from bench.suite import (
    DEFAULT_POSTGRES_URL,
    SIZES,
    PostgresBackend,
    SQLiteBackend,
    bare_pass,
    fact_lines,
)
from bench.unchained import UnchainedPostgresRecorder, UnchainedSQLiteRecorder
from lifecycle.services import audit, event_store
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings


@contextmanager
def chain_switched_off() -> Iterator[None]:
    original = event_store.persistence_env

    def unchained(settings: Settings) -> dict[str, str]:
        env = original(settings)
        kind = UnchainedSQLiteRecorder if settings.database_url is None \
            else UnchainedPostgresRecorder
        env["APPLICATION_RECORDER_TOPIC"] = get_topic(kind)
        return env

    event_store.persistence_env = unchained  # type: ignore[assignment]
    try:
        yield
    finally:
        event_store.persistence_env = original  # type: ignore[assignment]


CPU: dict[str, list[float]] = {}  # this process's CPU seconds per ingest, by side


def ingest_seconds(settings: Settings, lines: list[str], side: str) -> float:
    """Wall seconds of one `Ledger.ingest`; its CPU seconds (this process, not a database
    server) go to CPU[side]: steadier than wall time on a busy machine."""
    from datetime import UTC, datetime

    with Ledger(settings) as ledger:
        started, cpu = time.perf_counter(), time.process_time()
        report = ledger.ingest(lines, datetime(2025, 6, 1, tzinfo=UTC))
        elapsed = time.perf_counter() - started
        CPU.setdefault(side, []).append(time.process_time() - cpu)
    assert report.accepted == len(lines), (report.accepted, report.rejected[:3])
    return elapsed


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def run(backend: Any, lines: list[str], repeats: int, log: Callable[[str], None]) -> None:
    sides: dict[str, list[float]] = {"chained": [], "unchained": [], "bare": []}
    kept = None
    order = ["chained", "unchained", "bare"]
    for n in range(repeats):
        for side in order[n % 3:] + order[:n % 3]:  # each side in each slot in turn
            store = backend.new_store(f"{side}{n}")
            settings = store.settings()
            if side == "bare":
                store.home.mkdir(parents=True, exist_ok=True)
                seconds = bench_bare(lines, store.home, store.database_url)
            elif side == "unchained":
                with chain_switched_off():
                    seconds = ingest_seconds(settings, lines, side)
            else:
                seconds = ingest_seconds(settings, lines, side)
            sides[side].append(seconds)
            log(f"[{backend.name}] run {n + 1} {side}: {len(lines) / seconds:,.0f} facts/s")
            if side == "chained" and kept is None:
                kept = store
            else:
                backend.drop(store)
    rate = {side: len(lines) / statistics.median(s) for side, s in sides.items()}
    log(f"[{backend.name}] ingest medians: chained {rate['chained']:,.0f}, unchained "
        f"{rate['unchained']:,.0f}, bare {rate['bare']:,.0f} facts/s; chained/unchained "
        f"{rate['chained'] / rate['unchained']:.2f}, chained/bare "
        f"{rate['chained'] / rate['bare']:.2f}, unchained/bare "
        f"{rate['unchained'] / rate['bare']:.2f}")
    cpu = {side: statistics.median(CPU.pop(side)) for side in ("chained", "unchained")}
    log(f"[{backend.name}] ingest CPU in this process (medians): chained {cpu['chained']:.2f} "
        f"s, unchained {cpu['unchained']:.2f} s: the chain adds "
        f"{cpu['chained'] / cpu['unchained'] - 1:+.1%} "
        f"({(cpu['chained'] - cpu['unchained']) / len(lines) * 1e6:.1f} us per fact)")
    assert kept is not None
    with Ledger(kept.settings()) as ledger:
        head = int(ledger.store.recorder.max_notification_id() or 0)
        bare_pass(ledger, audit.PAGE)  # warm the page cache
        verify_s, decode_s = [], []
        for _ in range(max(3, repeats)):
            decoded, seconds = timed(lambda: bare_pass(ledger, audit.PAGE))
            assert decoded == head
            decode_s.append(seconds)
            report, seconds = timed(lambda: audit.verify(ledger.store, ledger.views))
            assert report.ok and report.events_checked == head, report.render()[:5]
            verify_s.append(seconds)
    verify_rate = head / statistics.median(verify_s)
    decode_rate = head / statistics.median(decode_s)
    log(f"[{backend.name}] verify {verify_rate:,.0f} events/s ({report.checkpoints} "
        f"checkpoints), bare read-and-decode {decode_rate:,.0f} events/s; ratio "
        f"{verify_rate / decode_rate:.2f} ({head:,} events)")
    backend.drop(kept)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    size = SIZES[args.size]
    lines = list(fact_lines(0, size.subjects, size.subjects, size.due))
    print(f"{len(lines):,} facts, {size.subjects:,} subjects, {args.repeats} repeats",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="lifecycle-chain-bench-") as tmp:
        for name in args.backends.split(","):
            backend = SQLiteBackend(Path(tmp)) if name == "sqlite" else \
                PostgresBackend(Path(tmp), args.postgres_url)
            try:
                run(backend, lines, args.repeats, lambda text: print(text, flush=True))
            finally:
                backend.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
