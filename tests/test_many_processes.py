"""Many processes against one store: concurrent writers, two daemons, projection lag.

Every process here is real (`python -m lifecycle ...`), started together against one
store. All of them share one master key (LIFECYCLE_MASTER_KEY), as the processes of one
deployment must. The daemons run on their real clock (2026 or later), so subscribers who
unsubscribed on 2024-03-10 are overdue: their marketing data fell due at the 2025-07-01
review of config/hqip.toml (adopted 2023-01-01).
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pytest

from lifecycle.daemon import Daemon
from lifecycle.store.lease import lease_for
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact, lines
from tests.processes import (destroyed_keys, env_for, json_of, keyed_store, lifecycle,
                             run_together, wait_for)
from tests.read_models import snapshot_views

CONFIG = Path(__file__).resolve().parents[1] / "config"
HQIP = CONFIG / "hqip.toml"
ADOPTED = datetime(2023, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
MASTER_KEY = base64.b64encode(bytes(range(32))).decode()
MARKETING_RULE = "marketing-13m-after-unsubscribe"

WRITERS = 4
SUBJECTS = 40
FACTS_PER_SUBJECT = 24
DUE = 60        # subscribers overdue when the two daemons start
LATE_DUE = 10   # subscribers added after the lease holder is killed
INTERVAL = 1.0  # seconds between daemon ticks


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """A clean store (SQLite or a fresh PostgreSQL database) with a fixed master key."""
    return keyed_store(request.param, tmp_path, MASTER_KEY,
                       lambda: request.getfixturevalue("postgres_database"))










# -- many writers ------------------------------------------------------------------------------

CONSENT_PURPOSES = ["events", "surveys-feedback", "website-analytics", "direct-marketing"]
COLLECTED_PURPOSES = [("enquiries-complaints", "legitimate-interests"),
                      ("service-communications", "legitimate-interests"),
                      ("events", "contract"), ("surveys-feedback", "legitimate-interests")]


def overlapping_facts() -> list[list[dict[str, Any]]]:
    """SUBJECTS subjects with FACTS_PER_SUBJECT facts each, dealt round-robin to WRITERS
    files so that every subject gets facts from every writer. Only facts whose order within
    a subject does not matter: consents for distinct purposes, collections of distinct
    records, activity."""
    files: list[list[dict[str, Any]]] = [[] for _ in range(WRITERS)]
    for n in range(SUBJECTS):
        subject = f"member:{n}"
        for k in range(FACTS_PER_SUBJECT):
            at = f"2024-{1 + k % 12:02d}-{1 + n % 28:02d}T09:{k % 60:02d}:00+00:00"
            ident = f"mw-{n}-{k}"
            if k < len(CONSENT_PURPOSES):
                item = fact("consent-given", subject, at, id=ident,
                            purpose=CONSENT_PURPOSES[k], method="web-form")
            elif k % 2:
                item = fact("activity", subject, at, id=ident)
            else:
                purpose, basis = COLLECTED_PURPOSES[k % len(COLLECTED_PURPOSES)]
                item = collected(subject, at, f"{purpose}-{k}", {"note": f"n{n} k{k}"},
                                 purpose=purpose, basis=basis, id=ident)
            files[(n + k) % WRITERS].append(item)
    return files


def test_four_writers_on_overlapping_subjects_store_every_fact_exactly_once(
        store: Settings, tmp_path: Path) -> None:
    """Four `lifecycle ingest` processes started at once, each with facts for every one of
    the same subjects, all exit 0; together they accept every fact, and the store holds
    each fact id exactly once: an optimistic-concurrency conflict (another writer saved the
    subject first) is retried on fresh state, never dropped or applied twice."""
    with Ledger(store) as ledger:  # the deployment exists: schema made, policy adopted
        ledger.adopt_policy(HQIP, ADOPTED)
    files = overlapping_facts()
    paths = []
    for index, facts in enumerate(files):
        path = tmp_path / f"writer-{index}.jsonl"
        path.write_text("\n".join(lines(facts)) + "\n", encoding="utf-8")
        paths.append(path)
    outputs = run_together(store, [["-m", "lifecycle", "ingest", str(path), "--json"]
                                   for path in paths], timeout=60)
    for output in outputs:
        assert output.returncode == 0, output.stderr
    reports = [json.loads(output.stdout) for output in outputs]
    expected = [f["id"] for facts in files for f in facts]
    assert [r["accepted"] for r in reports] == [len(facts) for facts in files]
    assert sum(r["accepted"] for r in reports) == len(expected) == SUBJECTS * FACTS_PER_SUBJECT
    assert all(r["duplicates"] == 0 and r["rejected"] == 0 for r in reports)

    stored: Counter[str] = Counter()
    with Ledger(store) as ledger:
        for n in range(SUBJECTS):
            history = ledger.history(f"member:{n}")
            stored.update(entry["fact_id"] for entry in history if "fact_id" in entry)
            subject = ledger.subject(f"member:{n}")
            assert len(subject.records) == len([k for k in range(len(CONSENT_PURPOSES),
                                                                 FACTS_PER_SUBJECT, 2)])
            assert set(subject.consents) == set(CONSENT_PURPOSES)
    assert stored == Counter(expected)
    assert max(stored.values()) == 1


# -- two daemons ------------------------------------------------------------------------------

def unsubscriber_facts(first: int, count: int) -> list[dict[str, Any]]:
    """Subscribers who signed up in 2023 and unsubscribed on 2024-03-10 (consent first, so
    no collection needs the suppression list)."""
    facts = []
    for n in range(first, first + count):
        subject = f"subscriber:{n}"
        facts += [
            fact("consent-given", subject, "2023-05-02T09:00:00+01:00",
                 purpose="direct-marketing", method="web-form"),
            collected(subject, "2023-05-02T09:00:00+01:00", "newsletter-signup",
                      {"email": f"reader-{n}@example.org"}),
            fact("unsubscribed", subject, "2024-03-10T10:00:00+00:00", channel="email-link"),
        ]
    return facts


def ingest_in_process(settings: Settings, facts: list[dict[str, Any]]) -> None:
    with Ledger(settings) as ledger:
        report = ledger.ingest(lines(facts), NOW)
        assert report.accepted == len(facts), report.rejected[:3]


class DaemonProcess:
    """A `lifecycle daemon` process whose JSON log lines (stderr) are read as they come."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lifecycle", "daemon", "--interval", str(INTERVAL)],
            env=env_for(settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.logs: list[dict[str, Any]] = []
        self.stdout = ""
        self._guard = threading.Lock()
        assert self.process.stderr is not None and self.process.stdout is not None
        self._readers = [threading.Thread(target=self._read_logs, args=(self.process.stderr,)),
                         threading.Thread(target=self._read_stdout, args=(self.process.stdout,))]
        for reader in self._readers:
            reader.start()

    def _read_logs(self, stream: IO[str]) -> None:
        for line in stream:
            if not line.strip():
                continue
            try:
                entry = json.loads(line)  # every stderr line is one JSON document
            except ValueError:
                entry = {"event": "<not json>", "line": line}
            with self._guard:
                self.logs.append(entry)

    def problems(self) -> list[dict[str, Any]]:
        """Lines that are not JSON, and failed ticks (the scheduler logs their exception)."""
        with self._guard:
            return [e for e in self.logs if e["event"] == "<not json>" or "exception" in e]

    def _read_stdout(self, stream: IO[str]) -> None:
        self.stdout = stream.read()

    def ticks(self) -> list[dict[str, Any]]:
        with self._guard:
            return [e for e in self.logs if e["event"] == "daemon.tick"]

    def erased(self) -> int:
        return sum(tick["erased"] for tick in self.ticks())

    def holds_lease(self) -> bool:
        with self._guard:
            leases = [e["lease"] for e in self.logs if e["event"] == "daemon.lease"]
        return bool(leases) and leases[-1] == "held"

    def finish(self, sig: int | None = None) -> int:
        try:
            if sig is not None and self.process.poll() is None:
                self.process.send_signal(sig)
            self.process.wait(timeout=20)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            for reader in self._readers:
                reader.join(timeout=5)
        return self.process.returncode




@pytest.fixture
def daemons(store: Settings) -> Iterator[list[DaemonProcess]]:
    """Two daemons against `store` (killed at the end if a test left them running)."""
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.finish(signal.SIGKILL)


def test_one_process_holds_the_lease_at_a_time_and_release_hands_it_over(
        store: Settings) -> None:
    """Of two leases on one store only one is held at a time; the holder keeps it on every
    acquire; release (idempotent) lets the other take it."""
    first, second = lease_for(store), lease_for(store)
    try:
        assert first.acquire() and first.acquire()
        assert not second.acquire()
        first.release()
        first.release()
        assert second.acquire()
        assert not first.acquire()
    finally:
        first.release()
        second.release()


def test_a_lease_dies_with_its_database_session(postgres_database: str,
                                                tmp_path: Path) -> None:
    """On PostgreSQL the lease is the holder's session: when the server ends that session
    (the holder died or was cut off), another process can take the lease, and the old
    holder learns at its next acquire that it no longer holds it."""
    import psycopg

    store = Settings(home=tmp_path, database_url=postgres_database, master_key=MASTER_KEY,
                     master_key_file=tmp_path / "master.key")
    holder, other = lease_for(store), lease_for(store)
    try:
        assert holder.acquire() and not other.acquire()
        with psycopg.connect(postgres_database, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_locks "
                "WHERE locktype = 'advisory' AND granted AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchone()
        assert ended == (1,)
        wait_for(other.acquire, 5, "the lease to be free")
        assert not holder.acquire()
    finally:
        holder.release()
        other.release()


def test_a_daemon_without_the_lease_sweeps_nothing_and_reports_the_lag(
        store: Settings) -> None:
    """A tick while another process holds the lease records nothing (no event, no key
    destroyed, projections left as they are) and reports `swept: false, lease:
    "held-elsewhere"` with the projection lag; once the lease is free, the next tick takes
    it, sweeps and leaves the projections at lag 0."""
    with Ledger(store) as ledger:
        ledger.adopt_policy(HQIP, ADOPTED)
    ingest_in_process(store, unsubscriber_facts(0, 3))
    elsewhere = lease_for(store)
    assert elsewhere.acquire()
    try:
        with Ledger(store) as ledger:
            daemon = Daemon(ledger, 60, clock=lambda: NOW)
            head = ledger.projections.head()
            # Ingest may have projected what it read for suppression; the rest is lag.
            lag = max(st.lag for st in ledger.projections.status())
            standby = daemon.tick()
            assert (standby["swept"], standby["lease"]) == (False, "held-elsewhere")
            assert (standby["erased"], standby["events_projected"]) == (0, 0)
            assert standby["projection_lag"] == lag > 0
            assert ledger.projections.head() == head and destroyed_keys(store) == 0
            elsewhere.release()
            swept = daemon.tick()
            assert (swept["swept"], swept["lease"]) == (True, "held")
            assert swept["erased"] == 3 and swept["projection_lag"] == 0
            daemon.close()
            assert elsewhere.acquire()  # close() handed the lease back
    finally:
        elsewhere.release()


def test_two_daemons_erase_each_item_once_and_the_survivor_takes_over_after_sigkill(
        store: Settings, daemons: list[DaemonProcess]) -> None:
    """Two daemons against one store: one holds the sweep lease and erases every overdue
    item; the other ticks on standby (`swept: false, lease: "held-elsewhere"`, erasing
    nothing), so the erasures in both logs add up to the number of items and each subject
    has exactly one RetentionExpired. Killed with SIGKILL, the holder's lease dies with it:
    the survivor takes over and erases items that fall due afterwards within about two
    intervals, and exits 0 on SIGTERM. `projections status` (another process) then shows
    lag 0, and lag again after an ingest with no daemon running."""
    with Ledger(store) as ledger:
        ledger.adopt_policy(HQIP, ADOPTED)
    ingest_in_process(store, unsubscriber_facts(0, DUE))
    daemons += [DaemonProcess(store, "a"), DaemonProcess(store, "b")]

    wait_for(lambda: destroyed_keys(store) == DUE
             and all(len(d.ticks()) >= 2 for d in daemons), 30,
             "both daemons to tick and the overdue items to be erased")
    holders = [d for d in daemons if d.holds_lease()]
    assert len(holders) == 1, [d.logs for d in daemons]
    holder = holders[0]
    survivor = next(d for d in daemons if d is not holder)
    assert holder.erased() == DUE and survivor.erased() == 0
    assert all(t["swept"] and t["lease"] == "held" for t in holder.ticks())
    assert all(t["swept"] is False and t["lease"] == "held-elsewhere"
               for t in survivor.ticks())
    assert all(isinstance(t["projection_lag"], int) for d in daemons for t in d.ticks())

    killed_at = datetime.now(UTC)
    holder.finish(signal.SIGKILL)
    assert holder.process.returncode == -signal.SIGKILL
    killed_erased = holder.erased()
    ingest_in_process(store, unsubscriber_facts(DUE, LATE_DUE))
    took = wait_for(lambda: destroyed_keys(store) == DUE + LATE_DUE, 2 * INTERVAL + 2,
                    "the survivor to take over and erase the new items")
    wait_for(lambda: survivor.erased() == LATE_DUE, 5, "the survivor's tick log")
    assert survivor.holds_lease()
    taken_at = next(datetime.fromisoformat(e["timestamp"]) for e in reversed(survivor.logs)
                    if e["event"] == "daemon.lease" and e["lease"] == "held")
    takeover = (taken_at - killed_at).total_seconds()
    assert 0 < takeover <= INTERVAL + 1, takeover  # its next tick (plus a slow start)
    print(f"takeover {takeover:.2f}s after SIGKILL; new items erased {took:.2f}s after ingest")

    code = survivor.finish(signal.SIGTERM)
    assert code == 0, survivor.logs[-5:]
    assert survivor.stdout == "" and holder.stdout == ""
    assert killed_erased + survivor.erased() == DUE + LATE_DUE  # nothing counted twice
    erasing = [t for d in daemons for t in d.ticks() if t["erased"]]
    assert all(t["lease"] == "held" for t in erasing)
    assert survivor.logs[-1]["event"] == "daemon.stopped"
    assert holder.problems() == [] and survivor.problems() == []

    with Ledger(store) as ledger:
        for n in range(DUE + LATE_DUE):
            events = [e["event"] for e in ledger.history(f"subscriber:{n}")]
            assert events.count("RetentionExpired") == 1, n

    status = json_of(lifecycle(store, "projections", "status", "--json"))["projections"]
    assert status and all(p["lag"] == 0 for p in status), status
    more = [fact("activity", f"subscriber:{n}", "2025-09-01T10:00:00+00:00") for n in range(3)]
    json_of(lifecycle(store, "ingest", "-", "--json", stdin="\n".join(lines(more)) + "\n"))
    status = json_of(lifecycle(store, "projections", "status", "--json"))["projections"]
    assert all(p["lag"] == len(more) for p in status)


# -- projections caught up by several processes at once -------------------------------------



def test_concurrent_catch_ups_leave_the_views_a_rebuild_gives(store: Settings) -> None:
    """Four `lifecycle status` processes started at once on a store whose projections are
    behind (each catches up first, as `subject show`, `sweep`, an ingest that reads the
    suppression list and the daemon do) all exit 0 and leave every projection at lag 0
    with the rows a rebuild from the first event gives."""
    with Ledger(store) as ledger:
        ledger.adopt_policy(HQIP, ADOPTED)
        ingest_in_process(store, unsubscriber_facts(0, 100) + [
            f for facts in overlapping_facts() for f in facts])
        assert all(st.lag > 0 for st in ledger.projections.status())
    readers = [subprocess.Popen([sys.executable, "-m", "lifecycle", "status", "--json"],
                                env=env_for(store), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(WRITERS)]
    results = [reader.communicate(timeout=60) for reader in readers]
    for reader, (_, stderr) in zip(readers, results):
        assert reader.returncode == 0, stderr[-2000:]
    with Ledger(store) as ledger:
        assert all(st.lag == 0 for st in ledger.projections.status())
        incremental = snapshot_views(ledger)
        ledger.projections.rebuild()
        assert snapshot_views(ledger) == incremental
