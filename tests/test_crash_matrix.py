"""The crash matrix: record before destroy, whatever step a process dies at.

For each step of lifecycle.support.faults.STEPS, on SQLite and on PostgreSQL, a real
`lifecycle ingest` (and `lifecycle sweep`) is killed with SIGKILL at that step
(LIFECYCLE_CRASH_AT), then run again without it. Afterwards:
- the erasure request is recorded, and every record it covers is erased, the late one
  (collected before the request, after it in the file) included;
- every key of an erased record is destroyed, and every destroyed key is named by an
  Erased or RetentionExpired event (no key destroyed without its recorded reason);
- ingesting the file once more reports every fact as a duplicate;
- a byte search of every file of the SQLite home, or of every column of every PostgreSQL
  table, and of the processes' output, finds no value of an erased record (the values are
  distinctive strings; a non-personal name from the same facts is found, so the search
  reads what it should).
The daemon sweeps at start; one crash case for it (killed after the events are saved,
before the keys are destroyed) and a restarted daemon must finish the erasure.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from lifecycle.support.faults import CRASH_ENV, STEPS
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact, lines
from tests.processes import env_for, wait_for

CONFIG = Path(__file__).resolve().parents[1] / "config"
HQIP = CONFIG / "hqip.toml"
ADOPTED = datetime(2020, 1, 1, tzinfo=UTC)
MASTER_KEY = base64.b64encode(bytes(range(32, 64))).decode()
SUBJECT = "member:crash-1"
REQUEST = "ER-crash-1"
# Distinctive personal values: none may be found anywhere once their record is erased.
ERASED_VALUES = ["ZqCrashAliceQv", "zq.crash.alice@example.org", "ZqCrashPhone07700Qv",
                 "ZqCrashLateValueQv"]
FOUND_NAME = "rec-crash-late"  # a record name: not personal, stored in plaintext


def crash_facts() -> list[dict[str, Any]]:
    """Two collections, a legal-obligation one (kept), an erasure request, and after it in
    the file a collection dated before it (erased on arrival)."""
    return [
        collected(SUBJECT, "2024-01-01T09:00:00+00:00", "rec-crash-a",
                  {"name": "ZqCrashAliceQv", "email": "zq.crash.alice@example.org"},
                  purpose="surveys-feedback", basis="legitimate-interests", id="crash-1"),
        collected(SUBJECT, "2024-01-02T09:00:00+00:00", "rec-crash-b",
                  {"phone": "ZqCrashPhone07700Qv"}, purpose="enquiries-complaints",
                  basis="legitimate-interests", id="crash-2"),
        collected(SUBJECT, "2024-01-03T09:00:00+00:00", "rec-crash-kept",
                  {"reference": "kept-value"}, purpose="service-communications",
                  basis="legal-obligation", id="crash-3"),
        fact("erasure-requested", SUBJECT, "2024-02-01T09:00:00+00:00", request=REQUEST,
             id="crash-4"),
        collected(SUBJECT, "2024-01-15T09:00:00+00:00", FOUND_NAME,
                  {"note": "ZqCrashLateValueQv"}, purpose="events", basis="contract",
                  id="crash-5"),
    ]


DUE_SUBJECT = "member:crash-due"
DUE_VALUE = "ZqCrashAnalyticsQv"
SWEEP_AT = "2025-06-01T00:00:00+00:00"  # analytics-26m: due 2025-03-01


def due_facts() -> list[dict[str, Any]]:
    """A website-analytics record collected 2023-01-01 on the consent given then: due at
    2025-03-01 (analytics-26m)."""
    return [fact("consent-given", DUE_SUBJECT, "2023-01-01T09:00:00+00:00",
                 purpose="website-analytics", method="cookie-banner", id="due-0"),
            collected(DUE_SUBJECT, "2023-01-01T09:00:00+00:00", "rec-analytics",
                      {"client": DUE_VALUE}, purpose="website-analytics", basis="consent",
                      category="online", id="due-1")]


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """A clean store (SQLite home or fresh PostgreSQL database), hqip.toml adopted."""
    home = tmp_path / "lifecycle-data"
    url = request.getfixturevalue("postgres_database") if request.param == "postgres" else None
    settings = Settings(home=home, database_url=url, master_key=MASTER_KEY,
                        master_key_file=home / "master.key")
    with Ledger(settings) as ledger:
        ledger.adopt_policy(HQIP, ADOPTED)
    yield settings


def run(settings: Settings, *args: str, crash_at: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    env = env_for(settings)
    env.pop(CRASH_ENV, None)
    if crash_at is not None:
        env[CRASH_ENV] = crash_at
    return subprocess.run([sys.executable, "-m", "lifecycle", *args], env=env,
                          capture_output=True, text=True, timeout=120)


# -- invariants --------------------------------------------------------------------------------

def key_rows(ledger: Ledger) -> list[Any]:
    from lifecycle.store.vault import data_keys

    with ledger.vault.engine.connect() as conn:
        return list(conn.execute(sa.select(data_keys.c.key_id, data_keys.c.subject_id,
                                           data_keys.c.destroyed_at)))


def assert_recorded_before_destroyed(ledger: Ledger, references: list[str]) -> None:
    """Every key of an erased record is destroyed; every destroyed key is named by an
    erasure event (Erased or RetentionExpired) of its subject."""
    named: dict[str, set[str]] = {}
    for reference in references:
        subject = ledger.subject(reference)
        named[str(subject.id)] = {k for e in subject.erasures for k in e.key_ids}
        destroyed = {r.key_id for r in key_rows(ledger) if r.destroyed_at is not None}
        for record in subject.records.values():
            if record.erased_at is not None:
                assert record.key_id in destroyed, (reference, record.record)
    for row in key_rows(ledger):
        if row.destroyed_at is not None:
            assert row.key_id in named.get(row.subject_id, set()), (
                f"key {row.key_id} destroyed with no erasure event naming it")


def stored_bytes(settings: Settings) -> bytes:
    """Everything the store holds: every file of the SQLite home, or every column of every
    PostgreSQL table (bytea raw, the rest as text)."""
    if settings.database_url is None:
        return b"\n".join(p.read_bytes() for p in sorted(settings.home.rglob("*"))
                          if p.is_file())
    engine = sa.create_engine(settings.sqlalchemy_url or "")
    chunks: list[bytes] = []
    try:
        with engine.connect() as conn:
            tables = conn.execute(sa.text(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_type = 'BASE TABLE' "
                "AND table_schema NOT IN ('pg_catalog', 'information_schema')")).all()
            for schema, table in tables:
                columns = conn.execute(sa.text(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = :s AND table_name = :t"),
                    {"s": schema, "t": table}).all()
                for column, data_type in columns:
                    expr = f'"{column}"' if data_type == "bytea" else f'"{column}"::text'
                    for (value,) in conn.execute(sa.text(
                            f'SELECT {expr} FROM "{schema}"."{table}"')):
                        if value is not None:
                            chunks.append(bytes(value) if isinstance(value, memoryview | bytes)
                                          else str(value).encode())
    finally:
        engine.dispose()
    return b"\n".join(chunks)


def assert_no_plaintext(settings: Settings, values: list[str], found: str,
                        outputs: list[subprocess.CompletedProcess[str]]) -> None:
    data = stored_bytes(settings)
    assert found.encode() in data, "the byte search does not read the store"
    for value in values:
        assert value.encode() not in data, f"{value} is still in the store"
        for output in outputs:
            assert value not in output.stdout + output.stderr


# -- ingest ------------------------------------------------------------------------------------

@pytest.mark.parametrize("step", STEPS)
def test_an_ingest_killed_at_any_step_is_completed_by_running_it_again(
        store: Settings, tmp_path: Path, step: str) -> None:
    """An ingest killed (SIGKILL) at any step of record-before-destroy and run again leaves
    the erasure request recorded, the late record erased on arrival, every key of an
    erased record destroyed and every destroyed key named by an erasure event; a third run
    finds only duplicates; no erased value is anywhere in the store."""
    path = tmp_path / "facts.jsonl"
    path.write_text("\n".join(lines(crash_facts())) + "\n", encoding="utf-8")
    killed = run(store, "ingest", str(path), "--json", crash_at=step)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    again = run(store, "ingest", str(path), "--json")
    assert again.returncode == 0, again.stderr
    with Ledger(store) as ledger:
        subject = ledger.subject(SUBJECT)
        assert REQUEST in subject.requests
        erased = {r.record for r in subject.records.values() if r.erased_at is not None}
        assert erased == {"rec-crash-a", "rec-crash-b", FOUND_NAME}
        assert_recorded_before_destroyed(ledger, [SUBJECT])
        view = ledger.subject_view(SUBJECT)
        assert {r["record"]: r["data"] for r in view["records"]} == {
            "rec-crash-a": "erased", "rec-crash-b": "erased", FOUND_NAME: "erased",
            "rec-crash-kept": {"reference": "kept-value"}}
        third = ledger.ingest(lines(crash_facts()), datetime.now(UTC))
        assert (third.accepted, third.duplicates, third.rejected) == (0, 5, [])
    assert_no_plaintext(store, ERASED_VALUES, FOUND_NAME, [killed, again])


def test_an_ingest_killed_in_its_second_batch_is_completed_by_running_it_again(
        store: Settings, tmp_path: Path) -> None:
    """Killed after saving its second batch's events (the first batch done, the second's
    keys not yet destroyed), an ingest run again destroys those keys and lands the rest:
    the erasure in the second batch holds and every line is stored once."""
    from lifecycle.services.ingest import BATCH_LINES

    filler = [collected(f"member:filler-{n}", "2024-01-01T09:00:00Z", "file", {"n": n},
                        purpose="enquiries-complaints", basis="legitimate-interests")
              for n in range(BATCH_LINES)]
    path = tmp_path / "facts.jsonl"
    path.write_text("\n".join(lines([*filler, *crash_facts()])) + "\n", encoding="utf-8")
    killed = run(store, "ingest", str(path), "--json", crash_at="events-saved:2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    again = run(store, "ingest", str(path), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["duplicates"] == BATCH_LINES + 5
    with Ledger(store) as ledger:
        subject = ledger.subject(SUBJECT)
        erased = {r.record for r in subject.records.values() if r.erased_at is not None}
        assert erased == {"rec-crash-a", "rec-crash-b", FOUND_NAME}
        assert_recorded_before_destroyed(ledger, [SUBJECT])
    assert_no_plaintext(store, ERASED_VALUES, FOUND_NAME, [killed, again])


# -- sweep -------------------------------------------------------------------------------------

@pytest.mark.parametrize("step", STEPS)
def test_a_sweep_killed_at_any_step_is_completed_by_the_next_sweep(
        store: Settings, step: str) -> None:
    """A sweep killed (SIGKILL) at any step of record-before-destroy, and the next sweep at
    the same time, leave the due record erased with its RetentionExpired event, its key
    destroyed and no key destroyed without an event naming it; a third sweep erases
    nothing; the erased value is nowhere in the store."""
    with Ledger(store) as ledger:
        report = ledger.ingest(lines(due_facts()), datetime.now(UTC))
        assert report.accepted == 2
    killed = run(store, "sweep", "--at", SWEEP_AT, "--json", crash_at=step)
    assert killed.returncode == -signal.SIGKILL, (
        f"the sweep did not reach crash point {step!r}: exit {killed.returncode}")
    again = run(store, "sweep", "--at", SWEEP_AT, "--json")
    assert again.returncode == 0, again.stderr
    with Ledger(store) as ledger:
        subject = ledger.subject(DUE_SUBJECT)
        assert subject.records["rec-analytics"].erased_at is not None
        assert [e.ref for e in subject.erasures] == ["retention:rec-analytics"]
        assert_recorded_before_destroyed(ledger, [DUE_SUBJECT])
        third = ledger.sweep(datetime.fromisoformat(SWEEP_AT), datetime.now(UTC))
        assert third.erased == []
    assert_no_plaintext(store, [DUE_VALUE], "rec-analytics", [killed, again])


# -- daemon ------------------------------------------------------------------------------------

def test_a_daemon_killed_between_saving_and_destroying_is_completed_by_the_next_one(
        store: Settings) -> None:
    """The daemon sweeps at start; killed after its erasure events are saved and before
    the keys are destroyed, a restarted daemon destroys the key at its first tick, and no
    key is destroyed without an event naming it."""
    with Ledger(store) as ledger:
        assert ledger.ingest(lines(due_facts()), datetime.now(UTC)).accepted == 2
    env = env_for(store)
    env[CRASH_ENV] = "events-saved"
    command = [sys.executable, "-m", "lifecycle", "daemon", "--interval", "60"]
    crashed = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        crashed.wait(timeout=20)
    except subprocess.TimeoutExpired:
        crashed.kill()
        crashed.wait()
        pytest.fail("the daemon's sweep did not reach crash point 'events-saved'")
    finally:
        crashed.communicate()
    assert crashed.returncode == -signal.SIGKILL
    with Ledger(store) as ledger:
        assert ledger.subject(DUE_SUBJECT).records["rec-analytics"].erased_at is not None

    env.pop(CRASH_ENV)
    restarted = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    try:
        with Ledger(store) as ledger:
            key_id = ledger.subject(DUE_SUBJECT).records["rec-analytics"].key_id

            def destroyed() -> bool:
                return any(r.key_id == key_id and r.destroyed_at is not None
                           for r in key_rows(ledger))
            wait_for(destroyed, 60, "the restarted daemon to destroy the key")
            assert_recorded_before_destroyed(ledger, [DUE_SUBJECT])
    finally:
        restarted.send_signal(signal.SIGTERM)
        out, err = restarted.communicate(timeout=60)
    assert restarted.returncode == 0, err
    assert DUE_VALUE not in out + err
    logs = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(entry.get("event") == "daemon.tick" for entry in logs)
