"""Attack on the merged speed branches (SQLite ids from the newest rowid, PostgreSQL binary
arrays, erasure-only subjects' documents patched): several `lifecycle ingest` processes, a
`sweep` and a `keys rotate` started at once against one store. Rule: every process exits
0, every fact is stored exactly once, `audit verify` is ok (each event's notification id and
chain row its own), and the views caught up incrementally are row for row what
`projections rebuild` gives. On both backends.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact, lines
from tests.processes import json_of, lifecycle, run_together
from tests.read_models import snapshot_views

HQIP = Path(__file__).resolve().parents[1] / "config" / "hqip.toml"
WRITERS = 3
SUBJECTS = 60
SWEEP_AT = "2026-01-01T00:00:00+00:00"


@pytest.fixture
def store(backend: Settings) -> Settings:
    """A clean store whose master key is in its key file (a rotation replaces it there)."""
    return backend


def early(n: int) -> list[dict[str, Any]]:
    """A subscriber who unsubscribed in March 2024: due for erasure at SWEEP_AT."""
    subject = f"subscriber:{n}"
    return [fact("consent-given", subject, "2023-05-02T09:00:00+01:00", id=f"c-{n}",
                 purpose="direct-marketing", method="web-form"),
            collected(subject, "2023-05-02T09:00:00+01:00", "newsletter-signup",
                      {"email": f"reader-{n}@example.org", "name": "Zoë Ñ"}, id=f"k-{n}"),
            fact("unsubscribed", subject, "2024-03-10T10:00:00+00:00", channel="email-link",
                 id=f"u-{n}")]


def late(n: int) -> list[dict[str, Any]]:
    """Facts for the same subscribers that arrive while the sweep runs: activity, a new
    record, and for some a restriction or an objection."""
    subject = f"subscriber:{n}"
    out = [fact("activity", subject, "2025-12-01T09:00:00+00:00", id=f"a-{n}"),
           collected(subject, "2025-12-02T09:00:00+00:00", f"enquiry-{n}", {"note": f"n{n}"},
                     purpose="enquiries-complaints", basis="legitimate-interests",
                     id=f"e-{n}")]
    if n % 5 == 0:
        out.append(fact("objected", subject, "2025-12-03T09:00:00+00:00", id=f"o-{n}",
                        purpose="direct-marketing"))
    return out


def test_writers_sweep_and_rotation_at_once_leave_a_verified_log_and_rebuilt_views(
        store: Settings, tmp_path: Path) -> None:
    """(module docstring)"""
    with Ledger(store) as ledger:
        ledger.adopt_policy(HQIP, datetime_of("2023-01-01T00:00:00+00:00"))
        report = ledger.ingest(lines(f for n in range(SUBJECTS) for f in early(n)),
                               datetime_of(SWEEP_AT))
        assert report.accepted == 3 * SUBJECTS, report.rejected[:3]
    files: list[list[dict[str, Any]]] = [[] for _ in range(WRITERS)]
    for n in range(SUBJECTS):
        for k, item in enumerate(late(n)):
            files[(n + k) % WRITERS].append(item)
    for n in range(SUBJECTS, SUBJECTS + 30):  # new subjects too, each in one file
        files[n % WRITERS] += early(n)
    paths = []
    for index, facts in enumerate(files):
        path = tmp_path / f"w{index}.jsonl"
        path.write_text("\n".join(lines(facts)) + "\n", encoding="utf-8")
        paths.append(path)
    commands = [["-m", "lifecycle", "ingest", str(p), "--json"] for p in paths]
    commands += [["-m", "lifecycle", "sweep", "--at", SWEEP_AT, "--json"],
                 ["-m", "lifecycle", "keys", "rotate", "--batch", "7", "--json"],
                 ["-m", "lifecycle", "ingest", str(paths[0]), "--json"]]  # a re-run at once
    outputs = run_together(store, commands, timeout=120)
    for output in outputs:
        assert output.returncode == 0, output.stderr[-3000:]
    reports = [json.loads(o.stdout) for o in outputs[:WRITERS]]
    assert json.loads(outputs[WRITERS].stdout)["erased"], "the sweep beside them erased"
    rerun = json.loads(outputs[-1].stdout)
    assert all(r["rejected"] == 0 for r in reports + [rerun]), (reports, rerun)
    assert (sum(r["accepted"] for r in reports) + rerun["accepted"]
            == sum(len(f) for f in files))
    # A second sweep erases what the first could not see yet.
    json_of(lifecycle(store, "sweep", "--at", SWEEP_AT, "--json"))
    verified = lifecycle(store, "audit", "verify", "--json")
    assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr[-3000:]

    expected = Counter(f["id"] for n in range(SUBJECTS) for f in early(n))
    expected.update(f["id"] for facts in files for f in facts)
    stored: Counter[str] = Counter()
    with Ledger(store) as ledger:
        for n in range(SUBJECTS + 30):
            stored.update(e["fact_id"] for e in ledger.history(f"subscriber:{n}")
                          if "fact_id" in e)
        ledger.projections.catch_up()
        incremental = snapshot_views(ledger)
        ledger.projections.rebuild()
        rebuilt = snapshot_views(ledger)
    assert stored == expected
    for name in rebuilt:
        assert incremental[name] == rebuilt[name], name
    # replay (a pure read of the log) tells the same totals as the views
    replayed = json_of(lifecycle(store, "replay", "--json"))
    assert replayed["subjects"] == len(rebuilt["lifecycle_subjects"]) == SUBJECTS + 30
    with Ledger(store) as ledger:
        views = [ledger.subject_view(f"subscriber:{n}") for n in range(SUBJECTS + 30)]
    records = [r for view in views if view for r in view["records"]]
    assert replayed["records"] == {
        "total": len(records), "erased": sum(1 for r in records if r["erased_at"]),
        "held": sum(1 for r in records if not r["erased_at"])}


def datetime_of(text: str) -> Any:
    from datetime import datetime
    return datetime.fromisoformat(text)


def test_a_writer_killed_mid_write_beside_others_leaves_ids_and_chain_whole(
        store: Settings, tmp_path: Path) -> None:
    """Rule: three `lifecycle ingest` processes at once, one of them SIGKILLed while the
    others write (its transaction, maybe holding the write lock, dies with it); then its
    file ingested again. Every fact is stored once, `audit verify` is ok (the ids the
    survivors worked out after the dead writer's rows were rolled back are their rows'),
    and the views equal a rebuild."""
    import signal
    import subprocess
    import sys
    import time

    from tests.processes import env_for, wait_for

    with Ledger(store) as ledger:
        ledger.adopt_policy(HQIP, datetime_of("2023-01-01T00:00:00+00:00"))
    # The writer to be killed has four times the others' subjects, so that it is still
    # writing when the kill comes, however fast or loaded the machine.
    bounds = [(0, 400), (400, 2000), (2000, 2400)]
    paths = []
    for w, (first, stop) in enumerate(bounds):
        facts = [f for n in range(first, stop) for f in early(n)]
        paths.append(tmp_path / f"k{w}.jsonl")
        paths[-1].write_text("\n".join(lines(facts)) + "\n", encoding="utf-8")
    started = [subprocess.Popen([sys.executable, "-m", "lifecycle", "ingest", str(p), "--json"],
                                env=env_for(store), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for p in paths]
    try:
        def writing() -> bool:
            with Ledger(store) as ledger:
                return (ledger.store.recorder.max_notification_id() or 0) > 10
        wait_for(lambda: started[1].poll() is not None or writing(), 60, "events")
        time.sleep(0.3)
        started[1].send_signal(signal.SIGKILL)
        results = [p.communicate(timeout=120) for p in started]
    finally:
        for p in started:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert started[1].returncode == -signal.SIGKILL  # killed, not finished
    assert started[0].returncode == 0 and started[2].returncode == 0, [r[1][-2000:]
                                                                        for r in results]
    redo = lifecycle(store, "ingest", str(paths[1]), "--json")
    assert redo.returncode == 0, redo.stderr[-3000:]
    verified = lifecycle(store, "audit", "verify", "--json")
    assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr[-3000:]
    expected = Counter(f["id"] for n in range(2400) for f in early(n))
    stored: Counter[str] = Counter()
    with Ledger(store) as ledger:
        for n in range(2400):
            stored.update(e["fact_id"] for e in ledger.history(f"subscriber:{n}")
                          if "fact_id" in e)
        ledger.projections.catch_up()
        incremental = snapshot_views(ledger)
        ledger.projections.rebuild()
        assert snapshot_views(ledger) == incremental
    assert stored == expected
