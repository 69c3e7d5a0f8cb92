"""DSAR export and audit verify benchmark: one subject's export in a large and a small store,
and `audit verify` against a bare read-and-decode of the same notification log.

    python3 run.py bench bench/dsar_audit_bench.py [--subjects 100000 --small-subjects 1000
                                                    --events-per-subject 10 --exports 200]
    # quick run: --subjects 2000 --small-subjects 200 --exports 50 --audit-runs 1

Builds two stores on the embedded SQLite default, HQIP policy (config/hqip.toml) adopted on
2023-01-01: L, --subjects subjects (1,000,000 events by default), and S, --small-subjects
subjects (10,000 events), with the same shape per subject (10 events by default): the
Registered event, consent-given, a direct-marketing and a service-communications record
(`collected`), activity and rectifications, a share with a declared processor, and an access
request (which also opens the request's own case aggregate, one event). The base facts come
from bench/sweep_bench.py's `subject_facts`; everything goes through `Ledger.ingest`.
The read models are not built: neither an export nor the audit chain reads them.

Measured, in one warm process:
  1. `Ledger.dsar_export(reference, as_of)` for --exports subjects drawn at random (fixed
     --seed) from each store, after --warmup exports; L and S alternate, one export each,
     so both see the same load. p50 and p95 on each; ratios p50(L)/p50(S) and
     p95(L)/p95(S) (target <= 1.5: an export replays one subject, whatever the store size);
  2. on L (chained as it was ingested: the chain is written with the events): --audit-runs
     alternating runs of `lifecycle.services.audit.verify` and of the baseline, a bare read-and-decode
     of the same notification log (`recorder.select_notifications` in pages of 10,000,
     each notification through `mapper.to_domain_event`); events/s of each (medians) and
     the ratio verify / bare (target >= 0.5). For information: a pass that only reads the
     pages, without decoding.
Everything lives in a temporary directory that is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sweep_bench import (  # noqa: E402  (a sibling script, not a package)
    ADOPTED,
    INGESTED_AT,
    POLICY,
    machine,
    settings_for,
    subject_facts,
    verdict,
)

from lifecycle.services.audit import VerifyReport, verify  # noqa: E402
from lifecycle.services.ledger import Ledger  # noqa: E402

AS_OF = datetime(2025, 6, 1, tzinfo=UTC)     # after every fact of every subject
PAGE = 10_000                               # notifications per page, as `verify` reads them
EXPORT_RATIO_TARGET = 1.5
VERIFY_RATIO_TARGET = 0.5
EXTRA_FACTS = 2        # the share and the access request, added to sweep_bench's facts
CASE_EVENTS = 1        # the access request's RequestCase aggregate (Received)


# -- the facts ------------------------------------------------------------------------------

def dsar_subject_facts(n: int, per_subject: int) -> list[dict[str, object]]:
    """One subject with `per_subject` stored events: sweep_bench's subject (Registered,
    consent, two records, activity and rectifications), plus a share and an access request
    (whose case is an aggregate of its own, one more event)."""
    facts = subject_facts(n, per_subject - EXTRA_FACTS - CASE_EVENTS, False)
    subject = str(facts[0]["subject"])
    start = datetime.fromisoformat(str(facts[0]["at"]))
    facts.append({"id": f"{subject}/share", "type": "shared", "subject": subject,
                  "at": (start + timedelta(days=1, hours=1)).isoformat(),
                  "recipient": "Clarity Marketing", "role": "processor",
                  "purpose": "direct-marketing", "basis": "consent",
                  "records": ["newsletter"], "country": "GB"})
    facts.append({"id": f"{subject}/dsar", "type": "access-requested", "subject": subject,
                  "at": (start + timedelta(days=60)).isoformat(),
                  "request": f"dsar-{n}", "kind": "access"})
    return facts


def fact_lines(subjects: int, per_subject: int) -> Iterator[str]:
    for n in range(subjects):
        for item in dsar_subject_facts(n, per_subject):
            yield json.dumps(item)


# -- the stores -----------------------------------------------------------------------------

def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class Store:
    name: str
    subjects: int
    home: Path
    events: int = 0
    facts: int = 0
    ingest_s: float = 0.0
    size_mb: float = 0.0
    export_ms: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return statistics.median(self.export_ms)

    @property
    def p95(self) -> float:
        return percentile(self.export_ms, 95)


def build(store: Store, per_subject: int) -> None:
    with Ledger(settings_for(store.home)) as ledger:
        ledger.adopt_policy(POLICY, ADOPTED)
        started = time.perf_counter()
        report = ledger.ingest(fact_lines(store.subjects, per_subject), INGESTED_AT)
        store.ingest_s = time.perf_counter() - started
        assert report.ok and report.duplicates == 0, report.as_dict()
        store.facts = report.accepted
        store.events = int(ledger.store.recorder.max_notification_id() or 0)
    store.size_mb = sum(p.stat().st_size for p in store.home.iterdir()) / 1e6


# -- 1. export latency ----------------------------------------------------------------------

def reference(n: int) -> str:
    return f"subscriber:{n}"


def check_export(document: dict[str, object], ref: str) -> None:
    """The export is the real thing: the subject, both records opened, the request's
    statutory deadline, the share."""
    assert document["subject"] == ref, document["subject"]
    records = document["records"]
    assert isinstance(records, list) and len(records) == 2, records
    assert all(isinstance(r["data"], dict) for r in records), "values must open"
    requests = document["requests"]
    assert isinstance(requests, list) and len(requests) == 1, requests
    assert requests[0]["deadline"], "the access request has a deadline"


def measure_exports(large: Store, small: Store, exports: int, warmup: int,
                    seed: int) -> None:
    rng = random.Random(seed)
    picks = {s.name: rng.sample(range(s.subjects), min(exports + warmup, s.subjects))
             for s in (large, small)}
    with Ledger(settings_for(large.home)) as on_l, Ledger(settings_for(small.home)) as on_s:
        pairs = ((large, on_l), (small, on_s))
        for store, ledger in pairs:
            check_export(ledger.dsar_export(reference(picks[store.name][0]), AS_OF),
                         reference(picks[store.name][0]))
        for i in range(warmup):
            for store, ledger in pairs:
                ledger.dsar_export(reference(picks[store.name][i]), AS_OF)
        for i in range(exports):
            for store, ledger in pairs:
                chosen = picks[store.name]
                ref = reference(chosen[(warmup + i) % len(chosen)])
                started = time.perf_counter()
                ledger.dsar_export(ref, AS_OF)
                store.export_ms.append((time.perf_counter() - started) * 1000)


# -- 2. audit verify against a bare read-and-decode ----------------------------------------

@dataclass
class Audit:
    verified: int = 0
    verify_s: list[float] = field(default_factory=list)
    decoded: int = 0
    bare_s: list[float] = field(default_factory=list)
    verify_cpu_s: list[float] = field(default_factory=list)  # process CPU time, for
    bare_cpu_s: list[float] = field(default_factory=list)    # reading under load
    read_s: float = 0.0

    @property
    def verify_rate(self) -> float:
        return self.verified / statistics.median(self.verify_s)

    @property
    def bare_rate(self) -> float:
        return self.decoded / statistics.median(self.bare_s)

    @property
    def cpu_ratio(self) -> float:
        return statistics.median(self.bare_cpu_s) / statistics.median(self.verify_cpu_s)


def bare_pass(ledger: Ledger, decode: bool = True) -> int:
    """Pages through the notification log as `verify` does; decodes every event."""
    recorder, mapper = ledger.store.recorder, ledger.store.mapper
    start = count = 0
    while True:
        page = recorder.select_notifications(start, PAGE, inclusive_of_start=False)
        if not page:
            return count
        if decode:
            for notification in page:
                mapper.to_domain_event(notification)
        count += len(page)
        start = page[-1].id


def timed(fn: Callable[[], int]) -> tuple[int, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def timed_cpu(fn: Callable[[], object]) -> tuple[object, float, float]:
    """The result, wall seconds and this process's CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def measure_audit(store: Store, runs: int, log: Callable[[str], None]) -> Audit:
    audit = Audit()
    with Ledger(settings_for(store.home)) as ledger:
        bare_pass(ledger)  # warm the process and the page cache
        for run in range(1, runs + 1):
            decoded, seconds, cpu = timed_cpu(lambda: bare_pass(ledger))
            assert isinstance(decoded, int)
            audit.decoded = decoded
            audit.bare_s.append(seconds)
            audit.bare_cpu_s.append(cpu)
            report, seconds_v, cpu_v = timed_cpu(lambda: verify(ledger.store, ledger.views))
            assert isinstance(report, VerifyReport)
            audit.verify_s.append(seconds_v)
            audit.verify_cpu_s.append(cpu_v)
            assert report.ok, report.render()[:10]
            assert report.events_checked == decoded == store.events, \
                (report.events_checked, decoded, store.events)
            audit.verified = report.events_checked
            log(f"{store.name}: run {run}: verify {audit.verify_s[-1]:.1f} s "
                f"({report.events_checked / audit.verify_s[-1]:,.0f} events/s), bare "
                f"read-and-decode {seconds:.1f} s ({decoded / seconds:,.0f} events/s), "
                f"ratio {seconds / audit.verify_s[-1]:.2f} (CPU time: verify {cpu_v:.1f} s, "
                f"bare {cpu:.1f} s, ratio {cpu / cpu_v:.2f})")
        _, audit.read_s = timed(lambda: bare_pass(ledger, decode=False))
    return audit


# -- report ---------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=100_000, help="subjects in L")
    parser.add_argument("--small-subjects", type=int, default=1_000, help="subjects in S")
    parser.add_argument("--events-per-subject", type=int, default=10)
    parser.add_argument("--exports", type=int, default=200, help="timed exports per store")
    parser.add_argument("--warmup", type=int, default=20, help="untimed exports per store")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--audit-runs", type=int, default=3,
                        help="alternating runs of verify and of the bare baseline")
    parser.add_argument("--tmp", type=Path, default=None,
                        help="parent of the temporary directory (default: system temp)")
    args = parser.parse_args()
    if args.events_per_subject < 7:
        parser.error("--events-per-subject must be at least 7")

    def log(text: str) -> None:
        print(text, flush=True)

    log(f"machine: {machine()}")
    log(f"stores: L {args.subjects:,} subjects, S {args.small_subjects:,} subjects, "
        f"{args.events_per_subject} events each; exports as of {AS_OF.isoformat()}")
    with tempfile.TemporaryDirectory(prefix="dsar-audit-bench-", dir=args.tmp) as tmp:
        small = Store("S", args.small_subjects, Path(tmp) / "S")
        large = Store("L", args.subjects, Path(tmp) / "L")
        for store in (small, large):
            build(store, args.events_per_subject)
            log(f"{store.name}: built {store.events:,} events ({store.facts:,} facts) in "
                f"{store.ingest_s:.1f} s ({store.facts / store.ingest_s:,.0f} facts/s); "
                f"{store.size_mb:,.0f} MB")
        measure_exports(large, small, args.exports, args.warmup, args.seed)
        for store in (large, small):
            log(f"{store.name}: {len(store.export_ms)} exports: p50 {store.p50:.2f} ms, "
                f"p95 {store.p95:.2f} ms, max {max(store.export_ms):.2f} ms")
        shutil.rmtree(small.home)
        audit = measure_audit(large, args.audit_runs, log)

    p50_ratio, p95_ratio = large.p50 / small.p50, large.p95 / small.p95
    verify_ratio = audit.verify_rate / audit.bare_rate
    log("")
    log("| store | subjects | events | ingest (facts/s) | export p50 (ms) | export p95 (ms) "
        "| exports timed |")
    log("|---|---:|---:|---:|---:|---:|---:|")
    for s in (large, small):
        log(f"| {s.name} | {s.subjects:,} | {s.events:,} | {s.facts / s.ingest_s:,.0f} | "
            f"{s.p50:.2f} | {s.p95:.2f} | {len(s.export_ms)} |")
    log("")
    log(f"| on L ({large.events:,} events) | time (s) | events/s |")
    log("|---|---:|---:|")
    log(f"| audit verify, median of {len(audit.verify_s)} | "
        f"{statistics.median(audit.verify_s):.1f} | {audit.verify_rate:,.0f} |")
    log(f"| bare read-and-decode (baseline), median of {len(audit.bare_s)} | "
        f"{statistics.median(audit.bare_s):.1f} | {audit.bare_rate:,.0f} |")
    log(f"| read only, no decode (informative) | {audit.read_s:.1f} | "
        f"{audit.decoded / audit.read_s:,.0f} |")
    log("")
    log(f"export p50 L/S: {large.p50:.2f} / {small.p50:.2f} = {p50_ratio:.2f} "
        f"(target <= {EXPORT_RATIO_TARGET}): {verdict(p50_ratio <= EXPORT_RATIO_TARGET)}")
    log(f"export p95 L/S: {large.p95:.2f} / {small.p95:.2f} = {p95_ratio:.2f} "
        f"(target <= {EXPORT_RATIO_TARGET}): {verdict(p95_ratio <= EXPORT_RATIO_TARGET)}")
    log(f"audit verify / bare read-and-decode: {audit.verify_rate:,.0f} / "
        f"{audit.bare_rate:,.0f} events/s = {verify_ratio:.2f} "
        f"(target >= {VERIFY_RATIO_TARGET}): {verdict(verify_ratio >= VERIFY_RATIO_TARGET)}")
    log(f"  the same in process CPU time (informative, less sensitive to other load): "
        f"{audit.cpu_ratio:.2f}; per run (wall): "
        f"{', '.join(f'{b / v:.2f}' for b, v in zip(audit.bare_s, audit.verify_s))}")


if __name__ == "__main__":
    main()
