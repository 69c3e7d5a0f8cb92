"""Benchmark suite: every benchmark on SQLite and on PostgreSQL, one table.

    python3 run.py bench -m bench [--size small|medium] [--backends sqlite,postgres]
                                  [--postgres-url postgresql://postgres@127.0.0.1:5432/postgres]

`run.py bench` puts the repository on PYTHONPATH, so `-m bench` works from any directory.
For each backend the suite builds its stores from scratch (a temporary directory for
SQLite; scratch databases created with `CREATE DATABASE` on the PostgreSQL server, dropped
afterwards) and measures, each beside a baseline measured in the same run:

  ingest, 1 writer    `Ledger.ingest` of every fact in one process, facts/s (wall time);
                      baseline: ingest_bench's bare eventsourcing Application + AES cipher,
                      the same facts as one event each, the same batches, same backend;
                      run before each pair of 1- and 4-writer runs, its median taken.
  ingest, 4 writers   4 processes, each `Ledger.ingest` of a quarter of the facts, on
                      disjoint subjects (contiguous ranges of subject numbers), all with one
                      master key (LIFECYCLE_MASTER_KEY) against one store. facts/s = total
                      facts / wall time (first writer's start to last writer's end, after a
                      barrier: process start-up and imports are not timed). Baseline: the
                      1-writer run. Target on PostgreSQL: >= 1.6 (2 cores: 2.0 is the
                      ceiling). On SQLite (one writer at a time per file) no target.
  projection catch-up `Ledger.rebuild_projections()` (every projection from zero, shared
                      among processes as the CLI does it), events/s; baseline: a bare
                      read-and-decode of the same notification log in the runner's page size
                      (`recorder.select_notifications` + `mapper.to_domain_event`); one
                      untimed run of each first. Target >= 0.5.
  DSAR export         `Ledger.dsar_export` of random subjects, p50 and p95 (ms); baseline:
                      a bare `store.events.get(id)` of the same subjects (alternating).
  audit verify        `lifecycle.services.audit.verify` (every event, chain row and checkpoint
                      signature; the chain is written with the events), events/s;
                      baseline: bare read-and-decode in
                      verify's page size. Target >= 0.5 (from the audit issue).
  sweep, nothing due  `Ledger.sweep` as the daemon calls it (catch-up, sweep, catch-up), median
                      ms; baseline: two of its round trips, bare (a projection catch-up
                      with nothing to do + the due-index probe `sweep.due_items`); the
                      sweep also reads the policy register, catches up again and records
                      its run, so the ratio includes those.
                      Target < 50 ms (from the retention issue).
  sweep, erasing      the sweep that erases the due records, erasures/s; baseline: the bare
                      vault destroy of the same records' keys, in the sweep's batches, on the
                      twin store (the 4-writer store holds the same facts). Target >= 0.25
                      (issue 11).
  sweep, peak memory  `bench.sweep_memory`: a store where Size.memory_subjects x
                      Size.memory_records records fall due together (100,000 at small and
                      medium), built by one process; the sweep runs in a fresh process and
                      reports its peak RSS (VmHWM), MB. Target < 500 MB (issue 11).
  key rotation        `bench.rotation_bench.measure`: Size.rotation_keys live data keys
                      (50,000; 2,000 at tiny) re-wrapped by `lifecycle.services.rotation.rotate`,
                      keys/s; baseline: bare AES-GCM unwrap and wrap of the same keys in
                      memory. Target >= 0.3 (issue 14). 1,000,000 keys: by hand,
                      `python -m bench.rotation_bench --by-hand`.

`--only ingest` runs the ingest rows alone (bare baseline, 1 and 4 writers).
`--only sweep` runs the two sweep rows and the memory row alone (one 1-writer and one
4-writer ingest build the stores they need; nothing else is measured). `--no-memory`
leaves the memory row out (it builds and sweeps a store of its own: minutes).

After the ingest runs the two kept stores are settled (`VACUUM ANALYZE` on PostgreSQL, as
after any bulk load), so autovacuum does not work through them during the timed runs.

Sizes: see SIZES (printed with the results; `--size tiny` is a smoke test). The machine is
shared: the load average is printed before and after each backend, and for each ingest run
where the writers' time went (on a CPU, waiting for a CPU, blocked; from /proc) and, on
PostgreSQL, what the store's server backends were doing (pg_stat_activity, every 50 ms).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import multiprocessing as mp
import os
import queue
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from eventsourcing.persistence import IntegrityError

from bench import ingest_bench, rotation_bench, sweep_memory
from bench.sweep_bench import (
    ADOPTED,
    INGESTED_AT,
    NOTHING_DUE_AT,
    POLICY,
    REVIEW_AT,
    SWEPT_BY,
    is_due,
    machine,
    subject_facts,
    time_catch_ups,
)
from lifecycle.services import audit
from lifecycle.aggregates.data_subject import DataSubject, key_scope
from lifecycle.store.vault import data_keys
from lifecycle.services.ledger import Ledger
from lifecycle.projections import runner
from lifecycle.store.settings import (
    DATABASE_URL_ENV,
    HOME_ENV,
    MASTER_KEY_ENV,
    Settings,
    load_settings,
)
from lifecycle.services.sweep import BATCH_SUBJECTS, due_items

MASTER_KEY = base64.b64encode(hashlib.sha256(b"lifecycle benchmark suite").digest()).decode()
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
AS_OF = datetime(2025, 6, 1, tzinfo=UTC)          # after every fact of every subject
PER_SUBJECT = 8        # subject_facts' events incl. Registered: 7 facts
FACTS_PER_SUBJECT = 9  # + a share and an access request
EVENTS_PER_SUBJECT = 11  # 10 on the subject + the access request's case (Received)
POLICY_EVENTS = 2  # the policy register's creation and the adoption

INGEST_4W_TARGET = 1.6
CATCH_UP_TARGET = 0.5
VERIFY_TARGET = 0.5
INGEST_1W_TARGET = 0.5
IDLE_SWEEP_TARGET_MS = 50.0
ERASING_SWEEP_TARGET = 0.25


@dataclass(frozen=True)
class Size:
    subjects: int
    due: int            # subjects whose marketing record falls due at the 2025-07-01 review
    exports: int        # timed DSAR exports (each beside a bare get)
    idle_runs: int      # timed sweeps with nothing due
    repeats: int        # alternating runs of rebuild/verify and their baselines
    ingest_repeats: int  # alternating pairs of 1-writer and 4-writer ingests
    memory_subjects: int  # the memory row's store: subjects x records due together
    memory_records: int
    rotation_keys: int = 50_000  # live data keys `keys rotate` re-wraps (issue 14)

    @property
    def facts(self) -> int:
        return self.subjects * FACTS_PER_SUBJECT

    def describe(self) -> str:
        return (f"{self.subjects:,} subjects, {self.facts:,} facts, "
                f"{self.subjects * EVENTS_PER_SUBJECT + POLICY_EVENTS:,} events per store "
                f"({self.due:,} due at the 2025-07-01 review); {self.exports} DSAR exports, "
                f"{self.idle_runs} idle sweeps, {self.repeats} runs of rebuild/verify, "
                f"{self.ingest_repeats} alternating pairs of 1-writer/4-writer ingests; "
                f"memory row: {self.memory_subjects * self.memory_records:,} records due "
                f"({self.memory_subjects:,} subjects x {self.memory_records})")


SIZES = {
    "tiny": Size(subjects=400, due=40, exports=20, idle_runs=5, repeats=1, ingest_repeats=1,
                 memory_subjects=400, memory_records=5, rotation_keys=2_000),  # smoke test
    "small": Size(subjects=4_000, due=400, exports=100, idle_runs=20, repeats=2,
                   ingest_repeats=3, memory_subjects=20_000, memory_records=5),
    "medium": Size(subjects=12_000, due=1_000, exports=200, idle_runs=30, repeats=3,
                    ingest_repeats=3, memory_subjects=20_000, memory_records=5),
}


# -- the facts ------------------------------------------------------------------------------

def facts_of(n: int, subjects: int, due: int) -> list[dict[str, object]]:
    """sweep_bench's subject (consent, a direct-marketing and a service-communications
    record, activity and rectifications; the due ones unsubscribe on 2024-03-10), plus a
    share with a declared processor and an access request, in time order."""
    facts = subject_facts(n, PER_SUBJECT, is_due(n, subjects, due))
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
    facts.sort(key=lambda f: datetime.fromisoformat(str(f["at"])))
    return facts


def fact_lines(first: int, stop: int, subjects: int, due: int) -> Iterator[str]:
    for n in range(first, stop):
        for item in facts_of(n, subjects, due):
            yield json.dumps(item)


def reference(n: int) -> str:
    return f"subscriber:{n}"


# -- stores ---------------------------------------------------------------------------------

@dataclass
class StoreRef:
    label: str
    home: Path
    database_url: str | None

    def env(self) -> dict[str, str]:
        env = {HOME_ENV: str(self.home), MASTER_KEY_ENV: MASTER_KEY}
        if self.database_url:
            env[DATABASE_URL_ENV] = self.database_url
        return env

    def settings(self) -> Settings:
        return load_settings(self.env())


class Backend:
    name = "?"

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.stores: list[StoreRef] = []

    def new_store(self, label: str) -> StoreRef:
        raise NotImplementedError

    def drop(self, store: StoreRef) -> None:
        raise NotImplementedError

    def close(self) -> None:
        for store in list(self.stores):
            self.drop(store)

    def sampler(self, store: StoreRef) -> Sampler:
        return Sampler(None)

    def settle(self, store: StoreRef) -> None:
        """Brings the store's tables to rest after a bulk load (nothing to do on SQLite)."""


class SQLiteBackend(Backend):
    name = "sqlite"

    def new_store(self, label: str) -> StoreRef:
        store = StoreRef(label, self.tmp / f"sqlite-{label}", None)
        self.stores.append(store)
        return store

    def drop(self, store: StoreRef) -> None:
        shutil.rmtree(store.home, ignore_errors=True)
        self.stores.remove(store)


class PostgresBackend(Backend):
    """Scratch databases on the server named by `admin_url` (never written to itself)."""

    name = "postgres"

    def __init__(self, tmp: Path, admin_url: str) -> None:
        super().__init__(tmp)
        import psycopg

        self.psycopg = psycopg
        self.admin_url = admin_url
        self.base = admin_url.rsplit("/", 1)[0]
        self.prefix = f"lifecycle_bench_{os.getpid()}"

    def check(self) -> str:
        with self.psycopg.connect(self.admin_url, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0] if row else "?")

    def _admin(self, statement: str) -> None:
        with self.psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(statement)

    def new_store(self, label: str) -> StoreRef:
        name = f"{self.prefix}_{label}"
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._admin(f'CREATE DATABASE "{name}"')
        store = StoreRef(label, self.tmp / f"postgres-{label}", f"{self.base}/{name}")
        self.stores.append(store)
        return store

    def drop(self, store: StoreRef) -> None:
        assert store.database_url is not None
        name = store.database_url.rsplit("/", 1)[1]
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(store.home, ignore_errors=True)
        self.stores.remove(store)

    def sampler(self, store: StoreRef) -> Sampler:
        return Sampler(store.database_url)

    def settle(self, store: StoreRef) -> None:
        """VACUUM ANALYZE, as after any bulk load: otherwise autovacuum works through the
        freshly written tables of both stores during the timed runs that follow."""
        assert store.database_url is not None
        with self.psycopg.connect(store.database_url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")


# -- what the machine and the server are doing during a run ---------------------------------

def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0, 0
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def process_cpu_seconds(pid: int) -> float | None:
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def schedstat(pid: int | str = "self") -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for a CPU) of a process's main
    thread, from /proc/PID/schedstat; (0, 0) where the kernel does not provide it."""
    try:
        on_cpu, waiting, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    except (OSError, ValueError):
        return 0.0, 0.0
    return int(on_cpu) / 1e9, int(waiting) / 1e9


class Sampler:
    """While a run lasts: the machine's CPU use, and on PostgreSQL, every 50 ms, what each
    server backend of the store's database is doing (pg_stat_activity: running, or waiting
    and on what: `Lock:relation` is the event table's EXCLUSIVE lock, `Client:ClientRead`
    is the server waiting for the Python writer) and the CPU time those backends used."""

    def __init__(self, database_url: str | None) -> None:
        self.database_url = database_url
        self.states: Counter[str] = Counter()
        self.samples = 0
        self.lock_samples = 0   # samples in which at least one backend waited on a lock
        self.server_cpu: dict[int, float] = {}
        self.server_sched: dict[int, tuple[float, float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cpu0 = (0, 0)
        self.machine_busy = 0.0  # average busy cores over the run
        self._t0 = 0.0

    def __enter__(self) -> Sampler:
        self._cpu0 = cpu_jiffies()
        self._t0 = time.perf_counter()
        if self.database_url:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        busy1, total1 = cpu_jiffies()
        busy0, total0 = self._cpu0
        if total1 > total0:
            self.machine_busy = (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1)

    def _run(self) -> None:
        import psycopg

        assert self.database_url
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            me = conn.info.backend_pid
            name = self.database_url.rsplit("/", 1)[1]
            while not self._stop.wait(0.05):
                rows = conn.execute(
                    "SELECT pid, state, wait_event_type, wait_event FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> %s AND backend_type = 'client backend'",
                    (name, me)).fetchall()
                self.samples += 1
                waiting_on_lock = False
                for pid, state, wait_type, wait_event in rows:
                    if state is None:  # still starting up
                        continue
                    if state == "active":
                        what = f"waiting {wait_type}:{wait_event}" if wait_type \
                            else "running"
                        waiting_on_lock |= wait_type == "Lock"
                    elif state == "idle":
                        what = "idle"  # a pooled connection the client is not using
                    else:  # idle in transaction: inside a transaction, the client's turn
                        what = f"{state}"
                    self.states[what] += 1
                    cpu = process_cpu_seconds(pid)
                    if cpu is not None:
                        self.server_cpu[pid] = cpu
                    self.server_sched[pid] = schedstat(pid)
                self.lock_samples += waiting_on_lock

    def server_cpu_seconds(self, before: dict[int, float]) -> float:
        return sum(cpu - before.get(pid, 0.0) for pid, cpu in self.server_cpu.items())

    def lock_waiting(self) -> float | None:
        """Backends waiting on a heavyweight lock, on average over the samples."""
        if not self.samples:
            return None
        return sum(n for what, n in self.states.items()
                   if what.startswith("waiting Lock:")) / self.samples

    def server_runqueue_seconds(self) -> float:
        """Time the store's server backends were runnable but waiting for a CPU."""
        return sum(waiting for _, waiting in self.server_sched.values())

    def describe(self) -> str:
        if not self.samples:
            return ""
        parts = ", ".join(f"{what} {count / self.samples:.2f}"
                          for what, count in self.states.most_common() if what != "idle")
        return (f"PostgreSQL backends of the store, average number in each state over "
                f"{self.samples} samples (50 ms apart): {parts or 'none busy'} (idle "
                f"{self.states['idle'] / self.samples:.1f}); samples with a writer waiting on "
                f"a lock: {self.lock_samples / self.samples:.0%}")


# -- ingest ---------------------------------------------------------------------------------

def _ingest_worker(env: dict[str, str], path: str, barrier: Any, opening: Any,
                   results: Any, index: int, own_session: bool) -> None:
    """One writer process: open the ledger, wait for the others, ingest its file.

    Each writer runs in a session of its own, like an ingest started on its own (a shell,
    cron, a service): with the kernel's autogroup scheduling on, all processes of one
    session share one session's CPU share, so 4 writers left in the suite's session get no
    more CPU than 1 while another session keeps a core busy.

    The writers open their ledgers one at a time (untimed): opened at the same moment on
    PostgreSQL, eventsourcing's schema set-up (`CREATE OR REPLACE FUNCTION`, run by every
    process that opens the store) can fail with "tuple concurrently updated"."""
    if own_session:
        os.setsid()
    lines = Path(path).read_text().splitlines()
    try:
        with opening:
            ledger = Ledger(load_settings(env))
        with ledger:
            conflicts = 0
            save = ledger.store.save

            def counting_save(*aggregates: Any, **kwargs: Any) -> Any:
                nonlocal conflicts
                try:
                    return save(*aggregates, **kwargs)
                except IntegrityError:  # the ingestor reloads and redoes the batch
                    conflicts += 1
                    raise

            ledger.store.save = counting_save  # type: ignore[method-assign]
            barrier.wait()
            cpu0, start, sched0 = time.process_time(), time.time(), schedstat()
            report = ledger.ingest(lines, INGESTED_AT)
            end, cpu, sched1 = time.time(), time.process_time() - cpu0, schedstat()
        results.put((index, start, end, cpu, report.accepted, report.duplicates,
                     [(r.line, r.reason) for r in report.rejected[:3]], None, conflicts,
                     sched1[1] - sched0[1]))
    except BaseException as error:  # noqa: BLE001 - reported to the parent
        barrier.abort()
        results.put((index, 0.0, 0.0, 0.0, 0, 0, [], repr(error), 0, 0.0))


@dataclass
class IngestRun:
    writers: int
    facts: int
    wall_s: float
    client_cpu_s: float
    server_cpu_s: float = 0.0
    machine_busy: float = 0.0
    activity: str = ""
    conflicts: int = 0   # batches redone after an IntegrityError (another writer was first)
    per_writer_s: list[float] = field(default_factory=list)
    runqueue_s: float = 0.0         # writers runnable but waiting for a CPU (all writers)
    server_runqueue_s: float = 0.0  # the same for the store's PostgreSQL backends

    lock_waiting: float | None = None  # PostgreSQL: writers waiting on a lock, on average

    def breakdown(self) -> str:
        """Where the writers' time went, summed over writers (wall x writers = 100%)."""
        total = sum(self.per_writer_s) or 1.0
        blocked = max(0.0, total - self.client_cpu_s - self.runqueue_s)
        text = (f"writers' time: on a CPU {self.client_cpu_s / total:.0%}, waiting for a CPU "
                f"{self.runqueue_s / total:.0%}, blocked (database, locks, I/O) "
                f"{blocked / total:.0%}")
        if self.lock_waiting is not None:
            text += (f" (of which waiting on the event table's lock about "
                     f"{self.lock_waiting / self.writers:.0%})")
        return text + (f"; cores used by the run (writers + server backends) "
                       f"{self.cores_used:.2f}")

    @property
    def cores_used(self) -> float:
        return (self.client_cpu_s + self.server_cpu_s) / self.wall_s

    @property
    def rate(self) -> float:
        return self.facts / self.wall_s


def run_ingest(backend: Backend, store: StoreRef, files: list[Path], expected: int,
               own_session: bool = True) -> IngestRun:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(files))
    opening = ctx.Lock()
    results = ctx.Queue()
    procs = [ctx.Process(target=_ingest_worker,
                         args=(store.env(), str(path), barrier, opening, results, i,
                               own_session))
             for i, path in enumerate(files)]
    for proc in procs:
        proc.start()
    sampler = backend.sampler(store)
    outcomes: list[tuple[Any, ...]] = []
    with sampler:
        while len(outcomes) < len(procs):
            try:
                outcomes.append(results.get(timeout=1.0))
            except queue.Empty:
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if dead:  # a writer died without reporting (see its traceback above)
                    for proc in procs:
                        if proc.is_alive():
                            proc.terminate()
                    raise RuntimeError(f"an ingest writer died (exit codes {dead})") from None
    for proc in procs:
        proc.join()
    errors = [o[7] for o in outcomes if o[7]]
    if errors:
        raise RuntimeError(f"ingest writer failed: {errors}")
    accepted = sum(o[4] for o in outcomes)
    assert accepted == expected and not any(o[5] or o[6] for o in outcomes), \
        [(o[4], o[5], o[6]) for o in outcomes]
    wall = max(o[2] for o in outcomes) - min(o[1] for o in outcomes)
    return IngestRun(len(files), accepted, wall, sum(o[3] for o in outcomes),
                     sampler.server_cpu_seconds({}), sampler.machine_busy, sampler.describe(),
                     sum(o[8] for o in outcomes),
                     [o[2] - o[1] for o in sorted(outcomes)], sum(o[9] for o in outcomes),
                     sampler.server_runqueue_seconds(), sampler.lock_waiting())


def prepare_store(store: StoreRef) -> int:
    """Creates the schema and adopts the policy before any writer starts."""
    with Ledger(store.settings()) as ledger:
        ledger.adopt_policy(POLICY, ADOPTED)
        return int(ledger.store.recorder.max_notification_id() or 0)


# -- the timed operations -------------------------------------------------------------------

def bare_pass(ledger: Ledger, page: int) -> int:
    """Pages through the notification log and decodes every event (the baselines)."""
    recorder, mapper = ledger.store.recorder, ledger.store.mapper
    start = count = 0
    while True:
        notifications = recorder.select_notifications(start, page, inclusive_of_start=False)
        if not notifications:
            return count
        for notification in notifications:
            mapper.to_domain_event(notification)
        count += len(notifications)
        start = notifications[-1].id


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class Row:
    metric: str
    backend: str
    value: float | None
    unit: str
    baseline: float | None
    baseline_what: str
    target: str = "-"
    passed: bool | None = None  # None: no target (information)
    ratio_override: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.ratio_override is not None:
            return self.ratio_override
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "SKIPPED"
        return "info" if self.passed is None else ("PASS" if self.passed else "FAIL")


@dataclass
class BackendResult:
    name: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    elapsed_s: float = 0.0


def number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def check_export(document: dict[str, Any], ref: str) -> None:
    assert document["subject"] == ref, document["subject"]
    records = document["records"]
    assert isinstance(records, list) and len(records) == 2, records
    assert all(isinstance(r["data"], dict) for r in records), "values must open"
    assert len(document["requests"]) == 1 and document["requests"][0]["deadline"]


def run_backend(backend: Backend, size: Size, seed: int, log: Callable[[str], None],
                own_session: bool = True, only_sweep: bool = False, only_ingest: bool = False,
                memory: bool = True) -> BackendResult:
    result = BackendResult(backend.name, load_before=os.getloadavg())
    began = time.perf_counter()
    name = backend.name
    log(f"[{name}] load average {fmt_load(result.load_before)}")
    work = backend.tmp / f"facts-{name}"
    work.mkdir()
    everything = work / "all.jsonl"
    everything.write_text("\n".join(fact_lines(0, size.subjects, size.subjects, size.due)) + "\n")
    quarters = []
    for w in range(4):
        first, stop = w * size.subjects // 4, (w + 1) * size.subjects // 4
        path = work / f"writer-{w}.jsonl"
        path.write_text("\n".join(fact_lines(first, stop, size.subjects, size.due)) + "\n")
        quarters.append(path)
    lines = everything.read_text().splitlines()

    # 1. ingest: bare baseline, 1 writer, 4 writers ---------------------------------------
    bare_runs: list[float] = []

    def bare_run(rep: int) -> None:
        bare_store = backend.new_store(f"bare_{rep}")
        bare_store.home.mkdir(parents=True, exist_ok=True)
        seconds = ingest_bench.bench_bare(lines, bare_store.home, bare_store.database_url)
        backend.drop(bare_store)
        bare_runs.append(seconds)
        log(f"[{name}] bare eventsourcing app + AES: {len(lines):,} events in {seconds:.1f} s "
            f"({len(lines) / seconds:,.0f} events/s)")

    def ingest_into(label: str, files: list[Path]) -> tuple[StoreRef, IngestRun, int]:
        store = backend.new_store(label)
        head = prepare_store(store)
        run = run_ingest(backend, store, files, size.facts, own_session)
        log(f"[{name}] {run.writers} writer(s): {run.facts:,} facts in {run.wall_s:.1f} s "
            f"({run.rate:,.0f} facts/s); writer CPU {run.client_cpu_s:.1f} s"
            + (f", server CPU {run.server_cpu_s:.1f} s" if run.server_cpu_s else "")
            + f"; machine busy {run.machine_busy:.2f} of {os.cpu_count()} cores; "
            + run.breakdown())
        if run.activity:
            log(f"[{name}]   {run.activity}")
        return store, run, head

    # Alternating 1-writer and 4-writer runs, each into a fresh store, so that both see
    # the same (shared, changing) machine load; the last pair's stores are kept.
    singles: list[IngestRun] = []
    multis: list[IngestRun] = []
    ingest_repeats = 1 if only_sweep else size.ingest_repeats
    for rep in range(ingest_repeats):
        if not only_sweep:
            # The baseline is run before each pair, in the same (changing) load as it: one
            # run of it alone moved by 15% between runs of the suite.
            bare_run(rep)
        one, run1, head0 = ingest_into(f"w1_{rep}", [everything])
        four, run4, _ = ingest_into(f"w4_{rep}", quarters)
        singles.append(run1)
        multis.append(run4)
        if rep < ingest_repeats - 1:
            backend.drop(one)
            backend.drop(four)
    bare_s = statistics.median(bare_runs) if bare_runs else math.nan
    if not only_sweep:
        single_rate = statistics.median(r.rate for r in singles)
        multi_rate = statistics.median(r.rate for r in multis)
        pair_ratios = [m.rate / s.rate for s, m in zip(singles, multis)]
        if len(pair_ratios) > 1:
            result.notes.append("ingest 4w/1w ratio of each alternating pair: "
                                + ", ".join(f"{r:.2f}" for r in pair_ratios))

        runs = f"median of {size.ingest_repeats}" if size.ingest_repeats > 1 else "one run"
        result.rows.append(Row(f"ingest, 1 writer (facts/s, {runs})", name, single_rate,
                               "facts/s", len(lines) / bare_s,
                               "bare eventsourcing app + AES, 1 process"
                               + (f", median of {len(bare_runs)}" if len(bare_runs) > 1 else ""),
                               f">= {INGEST_1W_TARGET} (ingest issue)",
                               single_rate / (len(lines) / bare_s) >= INGEST_1W_TARGET))
        ingest_ratio = multi_rate / single_rate
        on_pg = name == "postgres"
        result.rows.append(Row(f"ingest, 4 writers (facts/s, {runs})", name, multi_rate,
                               "facts/s", single_rate, "1 writer, same run (alternating)",
                               f">= {INGEST_4W_TARGET}" if on_pg else "- (single-writer file)",
                               ingest_ratio >= INGEST_4W_TARGET if on_pg else None))
        # The 4w/1w ratio depends on how much CPU the machine gives the 4 writers; facts per
        # CPU-second (writers + their server backends) does not: it shows what the 4 writers
        # make of the CPU they get, compared with 1 writer.
        per_cpu_1 = statistics.median(r.facts / (r.client_cpu_s + r.server_cpu_s) for r in singles)
        per_cpu_4 = statistics.median(r.facts / (r.client_cpu_s + r.server_cpu_s) for r in multis)
        result.rows.append(Row("ingest, 4 writers, facts per CPU-second", name, per_cpu_4,
                               "facts/CPU-s", per_cpu_1,
                               "1 writer" + (" (writers + server backends)" if on_pg else "")))
        cores = ", ".join(f"{r.cores_used:.2f}" for r in multis)
        result.notes.append(
            f"ingest: cores used by the 4-writer runs {cores} (of {os.cpu_count()}); by the "
            f"1-writer runs {', '.join(f'{r.cores_used:.2f}' for r in singles)}; so the 4w/1w "
            f"ratio is about (cores the 4 writers got / cores 1 writer used) x "
            f"{per_cpu_4 / per_cpu_1:.2f} (facts per CPU-second, 4w/1w)")
        for run in (*singles, *multis):
            per_k = run.client_cpu_s / run.facts * 1000
            note = (f"ingest, {run.writers} writer(s): wall {run.wall_s:.1f} s, writer CPU "
                    f"{run.client_cpu_s:.1f} s ({per_k:.1f} CPU-s per 1,000 facts)")
            if run.server_cpu_s:
                note += f", PostgreSQL backends CPU {run.server_cpu_s:.1f} s"
            if run.server_runqueue_s:
                note += f" (waiting for a CPU {run.server_runqueue_s:.1f} s)"
            note += (f", machine busy {run.machine_busy:.2f} of {os.cpu_count()} cores, "
                     f"batches redone after a conflict: {run.conflicts}, each writer's time "
                     f"{', '.join(f'{s:.1f}' for s in run.per_writer_s)} s; {run.breakdown()}")
            if run.activity:
                note += f"; {run.activity}"
            result.notes.append(note)

    if only_ingest:
        for store in (one, four):
            backend.drop(store)
        shutil.rmtree(work)
        result.load_after = os.getloadavg()
        result.elapsed_s = time.perf_counter() - began
        log(f"[{name}] done in {result.elapsed_s:.0f} s; load average "
            f"{fmt_load(result.load_after)}")
        return result

    # 2-6 on the 1-writer store ------------------------------------------------------------
    for store in (one, four):
        backend.settle(store)
    with Ledger(one.settings()) as ledger:
        head = int(ledger.store.recorder.max_notification_id() or 0)
        assert head - head0 == size.subjects * EVENTS_PER_SUBJECT, (head, head0)

        if not only_sweep:
            # 2. projection catch-up vs bare read-and-decode (runner's page size)
            bare_pass(ledger, runner.BATCH)  # warm the process and the cache, untimed,
            ledger.rebuild_projections()      # for both sides alike
            rebuild_s: list[float] = []
            decode_s: list[float] = []
            for _ in range(size.repeats):
                decoded, seconds = timed(lambda: bare_pass(ledger, runner.BATCH))
                assert decoded == head
                decode_s.append(seconds)
                processed, seconds = timed(ledger.rebuild_projections)
                assert processed == head, (processed, head)
                rebuild_s.append(seconds)
            rebuild_rate = head / statistics.median(rebuild_s)
            decode_rate = head / statistics.median(decode_s)
            log(f"[{name}] projection rebuild: {', '.join(f'{s:.1f}' for s in rebuild_s)} s "
                f"({rebuild_rate:,.0f} events/s); bare read-and-decode "
                f"{', '.join(f'{s:.1f}' for s in decode_s)} s ({decode_rate:,.0f} events/s)")
            result.rows.append(Row("projection catch-up (events/s)", name, rebuild_rate,
                                   "events/s", decode_rate,
                                   f"bare read-and-decode, pages of {runner.BATCH:,}",
                                   f">= {CATCH_UP_TARGET}",
                                   rebuild_rate / decode_rate >= CATCH_UP_TARGET))

            # 3. DSAR export vs bare events.get of the same subjects
            rng = random.Random(seed)
            picks = rng.sample(range(size.subjects), min(size.subjects, size.exports + 10))
            check_export(ledger.dsar_export(reference(picks[0]), AS_OF), reference(picks[0]))
            for n in picks[:10]:  # warm
                ledger.dsar_export(reference(n), AS_OF)
                list(ledger.store.events.get(DataSubject.create_id(reference(n))))
            export_ms: list[float] = []
            get_ms: list[float] = []
            for n in picks[10:]:
                ref = reference(n)
                _, seconds = timed(lambda: ledger.dsar_export(ref, AS_OF))
                export_ms.append(seconds * 1000)
                got, seconds = timed(
                    lambda: list(ledger.store.events.get(DataSubject.create_id(ref))))
                assert len(got) == EVENTS_PER_SUBJECT - 1
                get_ms.append(seconds * 1000)
            for label, p in (("p50", 50), ("p95", 95)):
                result.rows.append(Row(f"DSAR export {label} (ms)", name, percentile(export_ms, p),
                                       "ms", percentile(get_ms, p),
                                       f"bare store.events.get, same subjects, {label}"))
            log(f"[{name}] DSAR export ({len(export_ms)}): p50 {percentile(export_ms, 50):.2f} ms, "
                f"p95 {percentile(export_ms, 95):.2f} ms; bare get p50 "
                f"{percentile(get_ms, 50):.2f} ms, p95 {percentile(get_ms, 95):.2f} ms")

            # 4. verify (the chain was written with the events) vs bare read-and-decode
            verify_s: list[float] = []
            decode_s = []
            for _ in range(size.repeats):
                decoded, seconds = timed(lambda: bare_pass(ledger, audit.PAGE))
                assert decoded == head
                decode_s.append(seconds)
                report, seconds = timed(lambda: audit.verify(ledger.store, ledger.views))
                assert report.ok and report.events_checked == head, report.render()[:5]
                verify_s.append(seconds)
            verify_rate = head / statistics.median(verify_s)
            decode_rate = head / statistics.median(decode_s)
            log(f"[{name}] audit verify {', '.join(f'{s:.1f}' for s in verify_s)} s ({verify_rate:,.0f} events/s);"
                f" bare read-and-decode {', '.join(f'{s:.1f}' for s in decode_s)} s "
                f"({decode_rate:,.0f} events/s)")
            result.rows.append(Row("audit verify (events/s)", name, verify_rate, "events/s",
                                   decode_rate, f"bare read-and-decode, pages of {audit.PAGE:,}",
                                   f">= {VERIFY_TARGET} (audit issue)",
                                   verify_rate / decode_rate >= VERIFY_TARGET))

        # 5. sweep with nothing due vs its unavoidable round trips
        first_sweep = ledger.sweep(NOTHING_DUE_AT, SWEPT_BY)
        assert not (first_sweep.erased or first_sweep.reviews or first_sweep.paused), \
            "nothing may be due at 2025-01-02"
        idle_ms: list[float] = []
        probe_ms: list[float] = []
        for _ in range(size.idle_runs):
            idle_sweep, seconds = timed(lambda: ledger.sweep(NOTHING_DUE_AT, SWEPT_BY))
            assert not (idle_sweep.erased or idle_sweep.reviews or idle_sweep.paused)
            idle_ms.append(seconds * 1000)
            _, seconds = timed(lambda: (ledger.projections.catch_up(),
                                        due_items(ledger.views, NOTHING_DUE_AT)))
            probe_ms.append(seconds * 1000)
        idle = statistics.median(idle_ms)
        result.rows.append(Row("sweep, nothing due (ms, median)", name, idle, "ms",
                               statistics.median(probe_ms),
                               "bare catch-up check + due-index probe",
                               f"< {IDLE_SWEEP_TARGET_MS:.0f} ms (retention issue)",
                               idle < IDLE_SWEEP_TARGET_MS))
        log(f"[{name}] sweep, nothing due: median {idle:.1f} ms, p95 "
            f"{percentile(idle_ms, 95):.1f} ms; bare probe median "
            f"{statistics.median(probe_ms):.1f} ms")

        # 6. the erasing sweep (once) vs bare vault destroy of the same keys on the twin
        erase_catch_ups = time_catch_ups(ledger)
        erasing, erase_s = timed(lambda: ledger.sweep(REVIEW_AT, SWEPT_BY))
        erased = len(erasing.erased)
        assert erased == size.due and not (erasing.reviews or erasing.paused), \
            (erased, len(erasing.reviews), len(erasing.paused))
    due_ids = [str(DataSubject.create_id(reference(n))) for n in range(size.subjects)
               if is_due(n, size.subjects, size.due)]
    with Ledger(four.settings()) as twin:
        with twin.vault.engine.connect() as conn:
            key_of = dict(conn.execute(
                sa.select(data_keys.c.subject_id, data_keys.c.key_id)
                .where(data_keys.c.scope == key_scope("newsletter"))
                .where(data_keys.c.destroyed_at.is_(None))).all())
        batches = [[key_of[s] for s in due_ids[i:i + BATCH_SUBJECTS]]
                   for i in range(0, len(due_ids), BATCH_SUBJECTS)]

        def destroy_all() -> int:
            return sum(twin.vault.destroy(keys, REVIEW_AT, "benchmark baseline")
                       for keys in batches)

        destroyed, destroy_s = timed(destroy_all)
        assert destroyed == size.due, destroyed
    erase_ratio = (erased / erase_s) / (destroyed / destroy_s)
    result.rows.append(Row("sweep, erasing (erasures/s)", name, erased / erase_s, "erasures/s",
                           destroyed / destroy_s,
                           f"bare vault.destroy of the same keys, {BATCH_SUBJECTS} per call",
                           f">= {ERASING_SWEEP_TARGET} (issue 11)",
                           erase_ratio >= ERASING_SWEEP_TARGET))
    log(f"[{name}] erasing sweep: {erased:,} erased in {erase_s:.3f} s "
        f"({erased / erase_s:,.0f}/s, of which projection catch-up "
        f"{sum(erase_catch_ups):.0f} ms); bare vault destroy {destroyed:,} keys in "
        f"{destroy_s:.3f} s ({destroyed / destroy_s:,.0f}/s)")

    backend.drop(one)
    backend.drop(four)

    # 7. peak memory of a sweep with many records due at once, in a process of its own
    if memory:
        mem_store = backend.new_store("memory")
        try:
            mem = sweep_memory.measure(mem_store.home, size.memory_subjects,
                                       size.memory_records, mem_store.database_url)
        finally:
            backend.drop(mem_store)
        result.rows.append(Row(f"sweep, {mem.due:,} due: peak RSS (MB)", name, mem.peak_mb,
                               "MB", None, "-", f"< {sweep_memory.PEAK_TARGET_MB:.0f} MB "
                               "(issue 11)", mem.peak_mb < sweep_memory.PEAK_TARGET_MB))
        log(f"[{name}] sweep of {mem.due:,} due records: {mem.erased:,} erased in "
            f"{mem.sweep_s:.1f} s ({mem.erased / mem.sweep_s:,.0f}/s); peak RSS "
            f"{mem.peak_mb:,.0f} MB (before the sweep {mem.before_mb:,.0f} MB); store built "
            f"in {mem.ingest_s:.1f} s")
    # 8. key rotation: re-wrap N live keys vs bare AES-GCM unwrap + wrap of the same keys
    if not only_sweep:
        rot_store = backend.new_store("rotation")
        try:
            rot = rotation_bench.measure(rot_store.settings(), size.rotation_keys,
                                         rotation_bench.BATCH)
        finally:
            backend.drop(rot_store)
        result.rows.append(Row(f"key rotation, {size.rotation_keys:,} keys (keys/s)", name,
                               rot["rotation_keys_per_s"], "keys/s", rot["bare_keys_per_s"],
                               "bare AES-GCM unwrap + wrap of the same keys",
                               f">= {rotation_bench.TARGET} (issue 14)",
                               rot["ratio"] >= rotation_bench.TARGET))
        log(f"[{name}] key rotation: {size.rotation_keys:,} keys at "
            f"{rot['rotation_keys_per_s']:,}/s; bare AES-GCM {rot['bare_keys_per_s']:,}/s")
    shutil.rmtree(work)
    result.load_after = os.getloadavg()
    result.elapsed_s = time.perf_counter() - began
    log(f"[{name}] done in {result.elapsed_s:.0f} s; load average {fmt_load(result.load_after)}")
    return result


# -- report ---------------------------------------------------------------------------------

def scheduler() -> str:
    try:
        autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip()
    except OSError:
        return "autogroup unknown"
    return ("autogroup on (CPU is shared between sessions first, then between the processes "
            "of a session)" if autogroup == "1" else "autogroup off")


def code_version() -> str:
    """The commit measured, and whether src/ differs from it (read-only git commands)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    return f"commit {commit}" + (" with uncommitted changes in src/" if dirty else "")


def fmt_load(load: tuple[float, float, float]) -> str:
    return " / ".join(f"{x:.2f}" for x in load) + " (1 / 5 / 15 min)"


def table(results: list[BackendResult]) -> list[str]:
    out = ["| metric | backend | value | baseline (what) | baseline | ratio | target | result |",
           "|---|---|---:|---|---:|---:|---|---|"]
    for result in results:
        for row in result.rows:
            value = "-" if row.value is None else number(row.value)
            base = "-" if row.baseline is None else number(row.baseline)
            ratio = "-" if row.ratio is None else f"{row.ratio:.2f}"
            out.append(f"| {row.metric} | {row.backend} | {value} | {row.baseline_what} | "
                       f"{base} | {ratio} | {row.target} | {row.verdict} |")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--backends", default="sqlite,postgres",
                        help="comma-separated: sqlite, postgres")
    parser.add_argument("--postgres-url", default=os.environ.get(
        "LIFECYCLE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="a server to create scratch databases on (nothing is written to this database)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--same-session", action="store_true",
                        help="diagnosis: keep the ingest writers in the suite's session "
                             "(one autogroup CPU share for all of them)")
    parser.add_argument("--tmp", type=Path, default=None,
                        help="parent of the temporary directory (default: system temp)")
    parser.add_argument("--only", choices=["sweep", "ingest"], default=None,
                        help="sweep: only the sweep rows and the memory row; ingest: only "
                             "the ingest rows")
    parser.add_argument("--no-memory", action="store_true",
                        help="leave out the memory row (its own store: minutes)")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - {"sqlite", "postgres"}
    if unknown or not backends:
        parser.error(f"--backends: unknown {sorted(unknown)} (choose sqlite, postgres)")
    size = SIZES[args.size]
    os.environ[MASTER_KEY_ENV] = MASTER_KEY  # every process of the run shares one master key

    def log(text: str) -> None:
        print(text, flush=True)

    command = "python3 run.py bench -m bench " + " ".join(argv if argv is not None
                                                          else sys.argv[1:])
    log(f"command: {command.strip()}")
    log(f"date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}")
    log(f"machine: {machine()}")
    log(f"code: {code_version()}")
    log(f"size: {args.size}: {size.describe()}")
    log("ingest: 1 writer = one process with every fact; 4 writers = 4 processes, one "
        "quarter of the subjects each (disjoint), one master key, one store; each writer "
        + ("in the suite's session (--same-session)" if args.same_session else
           "in a session of its own"))
    log(f"scheduler: {scheduler()}")
    results: list[BackendResult] = []
    skipped: list[str] = []
    with tempfile.TemporaryDirectory(prefix="lifecycle-bench-", dir=args.tmp) as tmp:
        for name in backends:
            backend: Backend
            if name == "sqlite":
                backend = SQLiteBackend(Path(tmp))
            else:
                try:
                    backend = PostgresBackend(Path(tmp), args.postgres_url)
                    log(f"[postgres] server {backend.check()} at "
                        f"{args.postgres_url.rsplit('@', 1)[-1]}")
                except Exception as error:  # noqa: BLE001 - report and go on
                    log(f"[postgres] SKIPPED: cannot reach {args.postgres_url}: {error}")
                    skipped.append("postgres")
                    continue
            try:
                results.append(run_backend(backend, size, args.seed, log,
                                           own_session=not args.same_session,
                                           only_sweep=args.only == "sweep",
                                           only_ingest=args.only == "ingest",
                                           memory=not args.no_memory))
            finally:
                backend.close()

    log("")
    log(f"size {args.size}: {size.describe()}")
    for result in results:
        log(f"load average on {result.name}: before {fmt_load(result.load_before)}, after "
            f"{fmt_load(result.load_after)}; {result.elapsed_s:.0f} s")
    log("")
    for line in table(results):
        log(line)
    log("")
    log("ratio = value / baseline (for ms rows, how many times the baseline's time).")
    for result in results:
        for note in result.notes:
            log(f"{result.name}: {note}")
    failed = [r for res in results for r in res.rows if r.verdict == "FAIL"]
    log("")
    log("targets: " + ("all met" if not failed else
                       "NOT MET: " + "; ".join(f"{r.metric} on {r.backend}" for r in failed))
        + (f"; NOT RUN on {', '.join(skipped)}" if skipped else ""))
    return 1 if skipped else 0  # unmet targets are results; a missing backend is not
