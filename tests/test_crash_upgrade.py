"""An ingest under this code, killed (SIGKILL) at each step of record-before-destroy on a
store the code before ing2 wrote, then run again, with other writers' files meeting its
claims in between: SQLite and PostgreSQL, real processes."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from lifecycle.support.faults import STEPS
from tests.facts_builder import collected
from tests.processes import keyed_store, lifecycle
from tests.test_crash_matrix import (ERASED_VALUES, FOUND_NAME, SUBJECT, assert_no_plaintext,
                                     assert_recorded_before_destroyed, crash_facts, run)
from tests.test_ingest_write_upgrade import (HQIP, MASTER_KEY, before_src,  # noqa: F401
                                             ingest as ingest_with, run as run_with)

OLD_SUBJECT = "member:old-1"


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    return keyed_store(request.param, tmp_path, MASTER_KEY,
                       lambda: request.getfixturevalue("postgres_database"))


def older(n: int) -> dict[str, object]:
    return collected(OLD_SUBJECT, f"2023-0{n}-01T09:00:00Z", f"old-rec-{n}",
                     {"n": n, "f": 1e-7}, purpose="enquiries-complaints",
                     basis="legitimate-interests", id=f"old-{n}")


@pytest.mark.parametrize("step", STEPS)
def test_a_killed_ingest_on_an_old_store_is_completed_by_running_it_again(
        store: Settings, before_src: Path, tmp_path: Path, step: str) -> None:  # noqa: F811
    """Rule: on a store the old code wrote, an ingest killed at any step and run again
    leaves every fact stored once (the old subject's chain continued), the erasure recorded
    and its keys destroyed with events naming them, no erased value anywhere; meanwhile a
    writer giving the killed run's facts again is never rejected, one giving a killed
    run's id other content is rejected naming it, and the chain verifies."""
    old_code = before_src
    adopted = run_with(store, old_code, "policy", "adopt", str(HQIP), "--at", "2020-01-01")
    assert adopted.returncode == 0, adopted.stderr
    code, report = ingest_with(store, old_code,
                               _write(tmp_path / "old.jsonl", [older(1), older(2)]))
    assert (code, report["accepted"]) == (0, 2), report
    facts = [*crash_facts(), older(3)]
    path = _write(tmp_path / "facts.jsonl", facts)
    killed = run(store, "ingest", str(path), "--json", crash_at=step)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    same = run(store, "ingest", str(_write(tmp_path / "same.jsonl", [older(3)])), "--json")
    assert same.returncode == 0, same.stdout
    assert json.loads(same.stdout)["rejected"] == 0
    other = {**older(3), "data": {"n": "other"}}
    clash = run(store, "ingest", str(_write(tmp_path / "clash.jsonl", [other])), "--json")
    assert clash.returncode == 1, clash.stdout
    assert "'old-3'" in json.loads(clash.stdout)["rejections"][0]["reason"]

    again = run(store, "ingest", str(path), "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    with Ledger(store) as ledger:
        subject = ledger.subject(SUBJECT)
        erased = {r.record for r in subject.records.values() if r.erased_at is not None}
        assert erased == {"rec-crash-a", "rec-crash-b", FOUND_NAME}
        assert_recorded_before_destroyed(ledger, [SUBJECT, OLD_SUBJECT])
        old = ledger.subject(OLD_SUBJECT)
        assert {n: ledger.open_sealed(r.values) for n, r in old.records.items()} == {
            f"old-rec-{n}": {"n": n, "f": 1e-7} for n in (1, 2, 3)}
        ids = [e["fact_id"] for ref in (SUBJECT, OLD_SUBJECT) for e in ledger.history(ref)
               if "fact_id" in e]
        assert sorted(ids) == sorted(str(f["id"]) for f in [*facts, older(1), older(2)])
    third = run(store, "ingest", str(path), "--json")
    assert json.loads(third.stdout)["duplicates"] == len(facts)
    assert lifecycle(store, "audit", "verify").returncode == 0
    assert_no_plaintext(store, ERASED_VALUES, FOUND_NAME, [killed, again])


def _write(path: Path, facts: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(f) + "\n" for f in facts), encoding="utf-8")
    return path
