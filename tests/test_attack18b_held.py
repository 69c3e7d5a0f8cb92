"""attack18b, what held: different commands at once against one store, real processes,
SQLite and PostgreSQL, then every invariant of docs/guarantees.md checked on what they
left: an ingest of erasure requests (with late records erased on arrival), two sweeps at
different times, `keys rotate`, `backup` and a running `serve`, all started together; and
a `keys rotate` killed at a step while an ingest and a sweep erase beside it."""

from __future__ import annotations

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

from lifecycle.domain.errors import KeyDestroyed
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from lifecycle.store.vault import data_keys, key_epochs
from lifecycle.support.faults import CRASH_ENV
from tests.facts_builder import collected, fact, lines
from tests.processes import env_for
from tests.web_service import start_service

ROOT = Path(__file__).resolve().parents[1]
HQIP = ROOT / "config" / "hqip.toml"
SUBJECTS = 10
SWEEP_AT = "2025-06-01T00:00:00+00:00"      # every odd member's rec-analytics due
EARLY_SWEEP_AT = "2025-04-01T00:00:00+00:00"  # the same items, from a second sweep


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """A clean store whose master key is in its key file (a rotation replaces it), with
    hqip.toml adopted from 2020 and SUBJECTS members seeded."""
    home = tmp_path / "lifecycle-data"
    url = request.getfixturevalue("postgres_database") if request.param == "postgres" else None
    settings = Settings(home=home, database_url=url, master_key=None,
                        master_key_file=home / "master.key")
    with Ledger(settings) as ledger:
        ledger.adopt_policy(HQIP, datetime(2020, 1, 1, tzinfo=UTC))
        report = ledger.ingest(lines(f for n in range(SUBJECTS) for f in seed_facts(n)),
                               datetime.now(UTC))
        assert report.ok and report.accepted == 3 * SUBJECTS, report.rejected
    yield settings


def ref(n: int) -> str:
    return f"member:h18b-{n}"


def values_of(n: int) -> dict[str, str]:
    return {"rec-analytics": f"ZqH{n}ClientQv", "rec-survey": f"ZqH{n}SurveyNameQv",
            "email": f"zq.h18b.{n}@example.org", "rec-late": f"ZqH{n}LateQv"}


def seed_facts(n: int) -> list[dict[str, Any]]:
    """An analytics record (an odd member's due 2025-03-01, an even member's 2025-11-01,
    after both sweeps: a sweep and an erasure request never erase the same record here,
    see test_attack18b_interleave.py for what happens when they do) and a survey record."""
    v = values_of(n)
    return [
        fact("consent-given", ref(n), "2023-01-01T09:00:00+00:00",
             purpose="website-analytics", method="cookie-banner", id=f"h18b-{n}-0"),
        collected(ref(n), "2023-01-01T09:00:00+00:00" if n % 2 else "2023-09-01T09:00:00+00:00",
                  "rec-analytics",
                  {"client": v["rec-analytics"]}, purpose="website-analytics",
                  basis="consent", category="online", id=f"h18b-{n}-1"),
        collected(ref(n), "2024-01-01T09:00:00+00:00", "rec-survey",
                  {"name": v["rec-survey"], "email": v["email"]},
                  purpose="surveys-feedback", basis="legitimate-interests",
                  id=f"h18b-{n}-2"),
    ]


def erasure_facts() -> list[dict[str, Any]]:
    """Erasure requests of the even members, each followed by a record dated before it
    (erased on arrival)."""
    facts = []
    for n in range(0, SUBJECTS, 2):
        facts += [fact("erasure-requested", ref(n), "2025-05-01T09:00:00+00:00",
                       request=f"ER-h18b-{n}", id=f"h18b-{n}-er"),
                  collected(ref(n), "2025-04-01T09:00:00+00:00", "rec-late",
                            {"note": values_of(n)["rec-late"]}, purpose="enquiries-complaints",
                            basis="legitimate-interests", id=f"h18b-{n}-late")]
    return facts


def expected_erased(n: int) -> set[str]:
    return {"rec-analytics"} | ({"rec-survey", "rec-late"} if n % 2 == 0 else set())


def erased_values() -> list[str]:
    found = []
    for n in range(SUBJECTS):
        v = values_of(n)
        found += [v[r] for r in expected_erased(n)]
        if n % 2 == 0:
            found.append(v["email"])
    return found


def start(settings: Settings, *args: str, crash_at: str | None = None
          ) -> subprocess.Popen[str]:
    env = env_for(settings)
    env.pop(CRASH_ENV, None)
    if crash_at:
        env[CRASH_ENV] = crash_at
    return subprocess.Popen([sys.executable, "-m", "lifecycle", *args], env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def finish(processes: list[subprocess.Popen[str]]) -> list[subprocess.CompletedProcess[str]]:
    done = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=180)
            done.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return done


def run(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return finish([start(settings, *args)])[0]


def check_settled(settings: Settings, outputs: list[subprocess.CompletedProcess[str]]) -> None:
    """Every invariant, on the store the commands left."""
    secret = erased_values()
    for output in outputs:
        assert "Traceback" not in output.stderr, output.stderr[-3000:]
        for value in secret:
            assert value not in output.stdout + output.stderr, (output.args, value)
    with Ledger(settings) as ledger:
        engine = ledger.vault.engine
        with engine.connect() as conn:
            rows = {r.key_id: r for r in conn.execute(sa.select(
                data_keys.c.key_id, data_keys.c.subject_id, data_keys.c.destroyed_at,
                data_keys.c.destroyed_by))}
        named: set[str] = set()
        for n in range(SUBJECTS):
            subject = ledger.subject(ref(n))
            erased = {r.record for r in subject.records.values() if r.erased_at is not None}
            assert erased == expected_erased(n), (n, erased)
            erased_by = [r for e in subject.erasures for r in e.records]
            assert sorted(erased_by) == sorted(erased), f"{ref(n)}: erased {erased_by}"
            keys = [k for e in subject.erasures for k in e.key_ids]
            assert len(keys) == len(set(keys)), f"{ref(n)}: a key erased twice: {keys}"
            named.update(keys)
            for name in erased:  # record before destroy, and destroyed after it
                record = subject.records[name]
                assert rows[record.key_id].destroyed_at is not None, (n, name)
                for sealed in record.values:
                    with pytest.raises(KeyDestroyed):
                        ledger.vault.open(sealed)
            for request in (q for q in subject.requests.values() if q.kind == "erasure"):
                certificate = ledger.certificate(request.request, ref(n), datetime.now(UTC))
                listed = [k["key_id"] for k in certificate["keys_destroyed"]]
                by_vault = {k for k, r in rows.items() if r.destroyed_by == request.request}
                assert sorted(listed) == sorted(by_vault), (request.request, listed, by_vault)
                assert certificate["all_keys_destroyed"]
            shown = json.dumps(ledger.subject_view(ref(n)))
            exported = json.dumps(ledger.dsar_export(ref(n), datetime.now(UTC)))
            earlier = json.dumps(ledger.dsar_export(ref(n), datetime(2024, 6, 1, tzinfo=UTC)))
            v = values_of(n)
            for text in (shown, exported, earlier):
                for name in expected_erased(n):
                    assert v[name] not in text, (n, name)
                if n % 2:
                    assert v["rec-survey"] in text  # the search reads what it should
                else:
                    assert v["email"] not in text
        unnamed = sorted(k for k, r in rows.items() if r.destroyed_at is not None
                         and k not in named)
        assert unnamed == [], f"keys destroyed with no erasure event naming them: {unnamed}"
    verified = run(settings, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    status = run(settings, "status", "--json")
    assert status.returncode == 0, status.stderr
    again = run(settings, "sweep", "--at", SWEEP_AT, "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["erased"] == 0, again.stdout
    for output in (verified, status, again):
        assert "Traceback" not in output.stderr
        assert not any(value in output.stdout + output.stderr for value in secret)


def epochs(settings: Settings) -> list[tuple[int, str]]:
    with Ledger(settings) as ledger:
        with ledger.vault.engine.connect() as conn:
            return [(r.epoch, r.state) for r in conn.execute(
                sa.select(key_epochs.c.epoch, key_epochs.c.state).order_by(key_epochs.c.epoch))]


def test_ingest_two_sweeps_rotate_backup_and_serve_at_once_keep_every_invariant(
        store: Settings, tmp_path: Path) -> None:
    """Rule: whatever runs beside an erasure, it is recorded before its keys go, each
    certificate lists exactly the keys the vault destroyed for its request, no erased
    value is readable (subject show, DSAR export now and as of before, the web API of a
    service started before them all), the audit chain verifies and every command exits
    honestly. Started together: an ingest of erasure requests with late records, a
    sweep at 2025-06-01 and one at 2025-04-01 (the same items due), `keys rotate` and
    `backup`, while `serve` runs (it opened the even members' values before: its caches
    must not outlive their erasure, nor the rotation stop it opening the others)."""
    service = start_service(store, tmp_path, seed=False)
    try:
        with service.client("responder") as api:  # opened (and cached) before their erasure
            for n in range(0, SUBJECTS, 2):
                assert values_of(n)["rec-survey"] in api.get(f"/api/subjects/{ref(n)}").text
        facts = tmp_path / "erasures.jsonl"
        facts.write_text("\n".join(lines(erasure_facts())) + "\n", encoding="utf-8")
        outputs = finish([
            start(store, "ingest", str(facts), "--json"),
            start(store, "sweep", "--at", SWEEP_AT, "--json"),
            start(store, "sweep", "--at", EARLY_SWEEP_AT, "--json"),
            start(store, "keys", "rotate", "--batch", "3"),
            start(store, "backup", str(tmp_path / "backup"), "--json"),
        ])
        for output in outputs:
            assert output.returncode == 0, (output.args, output.stdout, output.stderr[-2000:])
        swept = [json.loads(o.stdout)["erased"] for o in outputs[1:3]]
        assert sum(swept) == SUBJECTS // 2, swept  # each due item erased once, by one sweep
        assert epochs(store)[-1][1] == "current" and len(epochs(store)) >= 2
        with service.client("responder") as api:
            for n in range(SUBJECTS):
                for path in (f"/api/subjects/{ref(n)}", f"/api/subjects/{ref(n)}/export"):
                    answer = api.get(path)
                    assert answer.status_code == 200, answer.text
                    for name in expected_erased(n):
                        assert values_of(n)[name] not in answer.text, (path, name)
                    if n % 2:  # a live value opens after the rotation the service outlived
                        assert values_of(n)["rec-survey"] in answer.text, (path, answer.text)
        log = service.log_text()
    finally:
        service.stop()
    assert "Traceback" not in log
    assert not any(value in log for value in erased_values())
    check_settled(store, outputs)


@pytest.mark.parametrize("rotation_step, ingest_step", [("rotate-batch:2", "events-saved")])
def test_a_rotation_and_an_ingest_killed_beside_a_sweep_are_finished_and_lose_nothing(
        store: Settings, tmp_path: Path, rotation_step: str, ingest_step: str) -> None:
    """Rule: a rotation killed at any step is finished by the next `keys rotate`, and no
    data key is left under a key that is gone; an interrupted erasure is finished by the
    next run; a sweep running beside both is unharmed. `keys rotate --batch 2` and an
    ingest of erasure requests are killed (SIGKILL) at their steps while a sweep runs;
    the ingest and `keys rotate` run again; then every invariant holds and the untouched
    values open under the new epoch. The due records are swept first (the sweep beside
    them then finishes interrupted erasures and catches up, beside the killed ones)."""
    with Ledger(store) as ledger:
        assert len(ledger.sweep(datetime.fromisoformat(SWEEP_AT), datetime.now(UTC)).erased) \
            == SUBJECTS // 2
    facts = tmp_path / "erasures.jsonl"
    facts.write_text("\n".join(lines(erasure_facts())) + "\n", encoding="utf-8")
    outputs = finish([start(store, "keys", "rotate", "--batch", "2", crash_at=rotation_step),
                      start(store, "ingest", str(facts), "--json", crash_at=ingest_step),
                      start(store, "sweep", "--at", SWEEP_AT, "--json")])
    assert outputs[0].returncode == -signal.SIGKILL, outputs[0].stderr[-2000:]
    assert outputs[1].returncode == -signal.SIGKILL, outputs[1].stderr[-2000:]
    assert outputs[2].returncode == 0, outputs[2].stderr[-2000:]
    reruns = [run(store, "ingest", str(facts), "--json"), run(store, "keys", "rotate")]
    for output in reruns:
        assert output.returncode == 0, (output.args, output.stderr[-2000:])
    states = epochs(store)
    assert [s for _, s in states].count("current") == 1 and "retiring" not in dict(states).values()
    with Ledger(store) as ledger:
        with ledger.vault.engine.connect() as conn:
            stale = conn.execute(sa.select(sa.func.count()).select_from(data_keys)
                                 .where(data_keys.c.destroyed_at.is_(None))
                                 .where(data_keys.c.epoch != states[-1][0])).scalar_one()
        assert stale == 0
        for n in range(1, SUBJECTS, 2):  # live values open under the new epoch
            record = ledger.subject(ref(n)).records["rec-survey"]
            assert ledger.open_sealed(record.values)["name"] == values_of(n)["rec-survey"]
    check_settled(store, [*outputs, *reruns])
