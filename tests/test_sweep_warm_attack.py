"""Attacks on a warm sweeper (one long-lived Ledger whose projection runner holds the
subjects, f8acf64) and on the narrow view updates of erasures by retention (f37355d),
with other real processes sweeping, ingesting, crashing and catching the views up in
between. Both backends."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from lifecycle.services.audit import verify
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from lifecycle.store.vault import doomed_keys
from lifecycle.support.faults import CRASH_ENV
from tests.facts_builder import collected, fact, lines
from tests.processes import env_for, json_of, lifecycle
from tests.read_models import snapshot_views

CONFIG = Path(__file__).resolve().parents[1] / "config"
ADOPTED = datetime(2019, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
REVIEW_AT = "2025-07-01T00:00:00+00:00"


def write(tmp_path: Path, name: str, facts: list[dict[str, Any]]) -> str:
    path = tmp_path / name
    path.write_text("\n".join(lines(facts)) + "\n")
    return str(path)


def marketing(ref: str, n: int) -> list[dict[str, Any]]:
    """A marketing record, unsubscribed 2024-03-10: due at the 2025-07-01 review."""
    return [fact("consent-given", ref, "2023-05-02T09:00:00Z", purpose="direct-marketing"),
            collected(ref, "2023-05-02T09:01:00Z", "list-0", {"email": f"zq{n}@e.org"}),
            fact("unsubscribed", ref, "2024-03-10T10:00:00Z")]


# -- a crash mid-sweep, then a warm re-run -------------------------------------------------

@pytest.mark.parametrize("elsewhere", [False, True], ids=["warm", "warm-views-moved"])
@pytest.mark.parametrize("step", ["marks-stored:2", "events-saved:2", "keys-destroyed:2"])
def test_a_warm_sweeper_finishes_a_sweep_killed_in_another_process(
        backend: Settings, tmp_path: Path, step: str, elsewhere: bool) -> None:
    """A `lifecycle sweep` (one subject a batch) killed at a step of its second batch,
    then a sweep by a process that held every subject from before the killed one ran
    (with, or without, a third process catching the views up in between): every due
    record is erased exactly once, every erased key destroyed and unmarked, the views
    equal a rebuild and the audit chain verifies."""
    refs = [f"member:{n}" for n in range(3)]
    with Ledger(backend) as warm:
        warm.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
        assert warm.ingest(lines([f for n, ref in enumerate(refs)
                                  for f in marketing(ref, n)]), NOW).ok
        warm.projections.catch_up()  # holds every subject
        env = {**env_for(backend), CRASH_ENV: step, "LIFECYCLE_SWEEP_BATCH": "1"}
        killed = subprocess.run(
            [*lifecycle_argv(), "sweep", "--at", REVIEW_AT], env=env,
            capture_output=True, text=True, timeout=60)
        assert killed.returncode == -9, killed.stderr
        if elsewhere:
            json_of(lifecycle(backend, "status", "--json"))
        report = warm.sweep(NOW, NOW)
        erasures: dict[str, int] = {}
        for ref in refs:
            subject = warm.store.get_subject(ref)
            assert subject is not None
            record = subject.records["list-0"]
            assert record.erased_at is not None, (ref, report.as_dict())
            erasures[ref] = sum(1 for e in subject.erasures if e.records == ["list-0"])
            assert warm.vault.live_key_ids([record.key_id]) == set()
        assert erasures == dict.fromkeys(refs, 1)
        with warm.vault.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(doomed_keys)
                                ).scalar_one() == 0
        assert warm.sweep(NOW, NOW).erased == []
        views = snapshot_views(warm)
        warm.projections.rebuild()
        assert snapshot_views(warm) == views
        assert verify(warm.store, warm.views).ok


def lifecycle_argv() -> list[str]:
    import sys

    return [sys.executable, "-m", "lifecycle"]


# -- narrow views: any mix of sweeps, ingests and requests, several processes ----------------

def first_facts() -> list[dict[str, Any]]:
    """A: a marketing record shared with a processor; B: a marketing record and a
    legal-obligation record due for review (2025-06-01); C: a marketing record under a
    legal hold; D: an event sign-up (due 2025) and a marketing record still consented;
    E: a marketing record under a restriction."""
    facts = marketing("member:A", 0) + [fact(
        "shared", "member:A", "2023-06-01T00:00:00Z", recipient="Clarity Marketing",
        role="processor", purpose="direct-marketing", basis="consent", records=["list-0"],
        country="GB")]
    facts += marketing("member:B", 1) + [collected(
        "member:B", "2019-06-01T09:00:00Z", "svc", {"ref": "zqB"},
        purpose="service-communications", basis="legal-obligation")]
    facts += marketing("member:C", 2) + [fact(
        "legal-hold-placed", "member:C", "2024-06-01T09:00:00Z", hold="H-1",
        scope="direct-marketing", reason="claim")]
    facts += [fact("consent-given", "member:D", "2023-05-02T09:00:00Z",
                   purpose="direct-marketing"),
              collected("member:D", "2023-05-02T09:01:00Z", "list-0", {"email": "zqD@e.org"}),
              collected("member:D", "2024-01-01T09:00:00Z", "ev", {"seat": "zqD"},
                        purpose="events", basis="contract")]
    facts += marketing("member:E", 4) + [fact(
        "restricted", "member:E", "2024-06-01T09:00:00Z", scope="direct-marketing",
        reason="contested-accuracy")]
    return facts


def later_facts() -> list[dict[str, Any]]:
    """A subscribes again (a new record, shared again: the same name is refused); C's hold
    released after its due date; D asks for erasure; E's restriction stays."""
    return [
        fact("consent-given", "member:A", "2025-08-01T09:00:00Z", purpose="direct-marketing",
             method="subscribe-form"),
        collected("member:A", "2025-08-01T09:01:00Z", "list-1", {"email": "zqA2@e.org"}),
        fact("shared", "member:A", "2025-08-02T00:00:00Z", recipient="Clarity Marketing",
             role="processor", purpose="direct-marketing", basis="consent",
             records=["list-1"], country="GB"),
        fact("legal-hold-released", "member:C", "2025-08-01T09:00:00Z", hold="H-1"),
        fact("erasure-requested", "member:D", "2025-09-01T09:00:00Z", request="ER-D"),
    ]


REFS = ["member:A", "member:B", "member:C", "member:D", "member:E"]


def cli_views(settings: Settings) -> dict[str, Any]:
    """What other processes show: each subject, the status (less its clock-bound
    parts), the open notifications."""
    status = json_of(lifecycle(settings, "status", "--json"))
    for moving in ("now", "generated_at", "projections", "audit"):
        status.pop(moving, None)
    shown = {ref: json_of(lifecycle(settings, "subject", "show", ref, "--json"))
             for ref in REFS}
    notes = json_of(lifecycle(settings, "notifications", "list", "--all", "--json"))
    return {"status": status, "subjects": shown, "notifications": notes}


def test_views_after_sweeps_ingests_and_requests_in_several_processes_equal_a_rebuild(
        backend: Settings, tmp_path: Path) -> None:
    """A warm sweeper and other processes (a sweep, an ingest of a new subscription
    shared again, a hold released after its due date, an erasure
    request, status reads that move the views) in turn: the views the warm process
    leaves, and what `status`, `subject show` and `notifications list` print, equal those
    after `projections rebuild`; and every record due is erased."""
    with Ledger(backend) as warm:
        warm.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
        assert warm.ingest(lines(first_facts()), NOW).ok
        warm.projections.catch_up()
        swept = json_of(lifecycle(backend, "sweep", "--at", REVIEW_AT, "--json"))
        assert swept["erased"] == 3 and swept["reviews"] == 1 and swept["paused"] == 2, swept
        json_of(lifecycle(backend, "status", "--json"))
        ingested = lifecycle(backend, "ingest", write(tmp_path, "later.jsonl", later_facts()))
        assert ingested.returncode == 0, ingested.stderr
        json_of(lifecycle(backend, "status", "--json"))  # the views move past the ingest
        report = warm.sweep(NOW, NOW)
        assert json_of(lifecycle(backend, "sweep", "--json"))["erased"] == 0
        warm.projections.catch_up()
        assert [(e["subject"], e["record"]) for e in report.erased] == [
            ("member:C", "list-0")], report.as_dict()
        views = snapshot_views(warm)
        shown = cli_views(backend)
        rebuilt = lifecycle(backend, "projections", "rebuild")
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert cli_views(backend) == shown
        assert snapshot_views(warm) == views
        for ref in ("member:C", "member:D"):
            subject = warm.store.get_subject(ref)
            assert subject is not None
            assert [r.record for r in subject.records.values()
                    if r.erased_at is None and r.purpose == "direct-marketing"] == []
