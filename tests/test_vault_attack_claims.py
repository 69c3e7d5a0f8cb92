"""Attacks on fact-id claims (`KeyVault.claim`) with real `lifecycle ingest` processes on
real stores, SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, lines
from tests.processes import keyed_store, lifecycle, run_together

ROOT = Path(__file__).resolve().parents[1]
HQIP = ROOT / "config" / "hqip.toml"
MASTER_KEY = base64.b64encode(bytes(range(96, 128))).decode()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    return keyed_store(request.param, tmp_path, MASTER_KEY,
                       lambda: request.getfixturevalue("postgres_database"))


def record(fact_id: str, subject: int, data: dict[str, Any], day: int = 1) -> dict[str, Any]:
    return collected(f"member:{subject}", f"2024-05-{day:02d}T10:00:00Z", f"rec-{fact_id}", data,
                     id=fact_id, purpose="service-communications",
                     basis="legitimate-interests")


GROUPS, PER_GROUP, SUBJECTS = 4, 2000, 400
SHARED = GROUPS * PER_GROUP


@pytest.mark.parametrize("writers", [2, 3])
def test_writers_meeting_the_same_ids_in_opposite_orders_all_finish(
        store: Settings, tmp_path: Path, writers: int) -> None:
    """Rule: ingests started together whose one batch binds the same fact ids in opposite
    orders (the same facts, one file reversed: one instant, so line order decides) all
    finish: every fact stored once, the others' copies duplicates, no rejection, no
    error; the chain verifies. (Claims taken in file order deadlocked on PostgreSQL: each
    writer held ids the other waited for.)"""
    with Ledger(store) as ledger:
        ledger.adopt_policy(HQIP, datetime(2020, 1, 1, tzinfo=UTC))
    # One day per batch: each writer's batch g holds the same ids, in opposite orders.
    facts = [record(f"same-{k}", k % SUBJECTS, {"k": k}, 1 + k // PER_GROUP)
             for k in range(SHARED)]
    paths = []
    for writer in range(writers):
        path = tmp_path / f"writer-{writer}.jsonl"
        ordered = facts[::-1] if writer % 2 else facts
        path.write_text("\n".join(lines(ordered)) + "\n", encoding="utf-8")
        paths.append(path)
    outputs = run_together(store, [["-m", "lifecycle", "--log-level", "ERROR", "ingest",
                                    str(p), "--json"] for p in paths], timeout=240)
    for output in outputs:
        assert "Traceback" not in output.stderr, output.stderr
        assert output.returncode == 0, output.stderr
    reports = [json.loads(o.stdout) for o in outputs]
    assert sum(r["accepted"] for r in reports) == SHARED
    assert sum(r["duplicates"] for r in reports) == (writers - 1) * SHARED
    stored: Counter[str] = Counter()
    with Ledger(store) as ledger:
        for n in range(SUBJECTS):
            stored.update(entry["fact_id"] for entry in ledger.history(f"member:{n}")
                          if "fact_id" in entry)
    assert stored == Counter({f"same-{k}": 1 for k in range(SHARED)})
    assert lifecycle(store, "audit", "verify").returncode == 0


_CLAIMER = """
import sys, time
from datetime import UTC, datetime
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import load_settings
writer, start, rounds, size = int(sys.argv[1]), float(sys.argv[2]), *map(int, sys.argv[3:5])
errors = []
with Ledger(load_settings()) as ledger:
    for turn in range(rounds):
        ids = [f"r{turn}-{k}" for k in range(size)]
        if writer % 2:
            ids.reverse()
        claims = {i: (f"00000000-0000-0000-0000-00000000000{writer}", f"{writer}" * 64)
                  for i in ids}
        while time.time() < start + turn * 0.4:
            time.sleep(0.001)
        try:
            ledger.vault.claim(claims, datetime.now(UTC))
        except Exception as error:
            errors.append(type(error).__name__)
print(",".join(errors))
"""


def test_claims_of_the_same_ids_in_opposite_orders_at_once_all_complete(
        store: Settings) -> None:
    """Rule: two writers claiming the same fact ids at the same moment, in opposite orders
    (as two files listing the same facts in other orders), both complete: no claim fails
    (PostgreSQL detected a deadlock when each took the ids in its own order, and the
    ingest stopped with an unexpected error), and every id is bound exactly once, to the
    one writer whose claim bound it."""
    import time
    rounds, size = 12, 3000
    start = time.time() + 4
    outputs = run_together(store, [["-c", _CLAIMER, str(w), str(start), str(rounds),
                                    str(size)] for w in range(2)], timeout=240)
    for output in outputs:
        assert output.returncode == 0, output.stderr
        assert output.stdout.strip() == "", output.stdout
    with Ledger(store) as ledger:
        for turn in range(rounds):
            ids = [f"r{turn}-{k}" for k in range(size)]
            bound = ledger.vault.claimed(ids)
            assert set(bound) == set(ids)
            assert {b.digest for b in bound.values()} <= {"0" * 64, "1" * 64}


_INGEST_AT = """
import sys
from datetime import datetime
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import load_settings
with Ledger(load_settings()) as ledger:
    report = ledger.ingest(open(sys.argv[2], encoding="utf-8").read().splitlines(),
                           datetime.fromisoformat(sys.argv[1]))
print(json.dumps({"accepted": report.accepted, "duplicates": report.duplicates,
                  "rejected": sorted(str(r.fact_id) for r in report.rejected),
                  "named": all(str(r.fact_id) in r.reason for r in report.rejected)}))
""".replace("import sys", "import json, sys", 1)

ORPHANS = 300


@pytest.mark.parametrize("writers", [3])
def test_writers_giving_up_the_same_orphaned_bindings_at_once_bind_each_id_once(
        store: Settings, tmp_path: Path, writers: int) -> None:
    """Rule: bindings left by a run killed after its claims (its facts never saved) are
    given up once older than CLAIM_GRACE; writers that meet them at once, each with other
    content under the ids on its own subjects (one COPY, met by a bound id, redone by the
    statement that skips bound ids), bind each id exactly once: one writer's fact stored
    under it, every other writer's rejected naming the id, no error; the chain verifies."""
    import os
    import subprocess
    import sys

    from lifecycle.support.faults import CRASH_ENV
    from tests.processes import env_for

    with Ledger(store) as ledger:
        ledger.adopt_policy(HQIP, datetime(2020, 1, 1, tzinfo=UTC))
    claimed_at = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    later = datetime(2025, 3, 1, 12, 10, tzinfo=UTC)

    def file(name: str, writer: int) -> Path:
        path = tmp_path / f"{name}.jsonl"
        facts = [record(f"orphan-{k}", 1000 * writer + k % 50, {"writer": writer})
                 for k in range(ORPHANS)]
        facts = facts[::-1] if writer % 2 else facts
        path.write_text("\n".join(lines(facts)) + "\n", encoding="utf-8")
        return path

    env = {**env_for(store), CRASH_ENV: "keys-stored"}
    killed = subprocess.run([sys.executable, "-c", _INGEST_AT, claimed_at.isoformat(),
                             str(file("first", 0))], env=env, capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    assert os.environ.get(CRASH_ENV) is None
    outputs = run_together(store, [["-c", _INGEST_AT, later.isoformat(),
                                    str(file(f"w{w}", w))] for w in range(1, writers + 1)],
                           timeout=240)
    reports = []
    for output in outputs:
        assert output.returncode == 0, output.stderr
        reports.append(json.loads(output.stdout))
    ids = {f"orphan-{k}" for k in range(ORPHANS)}
    for report in reports:
        assert report["named"]
        assert report["accepted"] + len(report["rejected"]) == ORPHANS
    accepted_by = Counter(fid for report in reports for fid in ids - set(report["rejected"]))
    assert accepted_by == Counter({fid: 1 for fid in ids})
    stored: Counter[str] = Counter()
    with Ledger(store) as ledger:
        for writer in range(1, writers + 1):
            for n in range(50):
                try:
                    history = ledger.history(f"member:{1000 * writer + n}")
                except Exception:  # noqa: BLE001 - a subject whose every fact lost
                    continue
                stored.update(e["fact_id"] for e in history if "fact_id" in e)
        bound = ledger.vault.claimed(ids)
    assert stored == Counter({fid: 1 for fid in ids})
    assert set(bound) == ids
    assert lifecycle(store, "audit", "verify").returncode == 0


def test_a_claim_undone_to_break_a_deadlock_is_redone(postgres_database: str,
                                                      tmp_path: Path) -> None:
    """Rule: a claim that PostgreSQL undoes to break a deadlock (another transaction held
    an id the claim waited for, and waited for an id the claim held) is redone whole, not
    reported as an error: once the other transaction is gone, every id is bound to the
    claim's fact and the claim reports them all new."""
    import threading

    import psycopg

    settings = keyed_store("postgres", tmp_path, MASTER_KEY, lambda: postgres_database)
    outcome: dict[str, Any] = {}
    with Ledger(settings) as ledger:
        other = psycopg.connect(postgres_database)
        try:
            other.execute("INSERT INTO lifecycle_fact_ids (fact_id, subject_id, digest) "
                          "VALUES ('id-b', 'other', 'other')")

            def claim() -> None:
                try:
                    outcome["result"] = ledger.vault.claim(
                        {"id-b": ("mine", "d" * 64), "id-a": ("mine", "d" * 64)},
                        datetime.now(UTC))
                except Exception as error:  # noqa: BLE001 - what the test reports
                    outcome["error"] = error

            thread = threading.Thread(target=claim)
            thread.start()
            # The claim binds id-a, then waits for id-b; this takes id-a in turn: a cycle,
            # which PostgreSQL breaks by undoing the claim (it waited first).
            import time
            time.sleep(0.5)
            other.execute("INSERT INTO lifecycle_fact_ids (fact_id, subject_id, digest) "
                          "VALUES ('id-a', 'other', 'other')")
            other.rollback()
            thread.join(timeout=60)
        finally:
            other.close()
        assert "error" not in outcome, outcome
        assert outcome["result"] == {}
        bound = ledger.vault.claimed(["id-a", "id-b"])
        assert {fid: b.subject_id for fid, b in bound.items()} == {"id-a": "mine",
                                                                   "id-b": "mine"}
