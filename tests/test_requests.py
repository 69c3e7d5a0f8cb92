"""Rights requests as cases: the statutory clock through pauses, extensions and answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from lifecycle.aggregates.request_case import RequestCase
from lifecycle.domain.bank_holidays import CACHE_DIR_ENV
from lifecycle.services.ledger import Ledger
from lifecycle.support.logs import configure_logging
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact, lines, t

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def received(ledger: Ledger, *steps: dict[str, object]) -> None:
    report = ledger.ingest(lines([
        collected("member:5", "2024-01-01T00:00:00Z", "profile", {"name": "Jo"}),
        fact("access-requested", "member:5", "2025-03-03T09:00:00Z", request="SAR-9"),
        *steps,
    ]), NOW)
    assert report.rejected == []


def listed(ledger: Ledger, now: str, **filters: object) -> dict[str, dict[str, object]]:
    return {r["request"]: r for r in ledger.requests(t(now), **filters)}  # type: ignore[arg-type]


def test_a_pause_for_clarification_moves_the_deadline_by_the_days_paused(ledger: Ledger) -> None:
    """Received 3 March 2025 (due 3 April); paused 10 to 20 March: due 10 days later, 13 April,
    a Sunday, so Monday 14 April."""
    received(ledger,
             fact("request-paused", "member:5", "2025-03-10T09:00:00Z", request="SAR-9"),
             fact("request-resumed", "member:5", "2025-03-20T09:00:00Z", request="SAR-9"))
    assert listed(ledger, "2025-03-21T00:00:00Z")["SAR-9"]["deadline"] == "2025-04-14"
    export = ledger.dsar_export("member:5", t("2025-03-05T00:00:00Z"))
    assert export["requests"][0]["deadline"] == "2025-04-03"  # as known before the pause


def test_while_paused_no_clock_runs(ledger: Ledger) -> None:
    """A paused request has no deadline and is listed as paused."""
    received(ledger, fact("request-paused", "member:5", "2025-03-10T09:00:00Z",
                          request="SAR-9"))
    row = listed(ledger, "2025-03-11T00:00:00Z")["SAR-9"]
    assert (row["deadline"], row["paused"]) == (None, True)


def test_overdue_and_due_within_filter_open_requests(ledger: Ledger) -> None:
    """--overdue lists requests past their deadline; --due-within DAYS those due by then;
    fulfilled and refused requests are not open."""
    received(ledger,
             fact("access-requested", "member:5", "2025-03-20T09:00:00Z", request="SAR-10"),
             fact("access-requested", "member:5", "2025-03-21T09:00:00Z", request="SAR-11"),
             fact("request-fulfilled", "member:5", "2025-03-25T09:00:00Z", request="SAR-10"),
             fact("request-refused", "member:5", "2025-03-25T09:00:00Z", request="SAR-11",
                  reason="manifestly-unfounded"))
    assert set(listed(ledger, "2025-04-10T00:00:00Z")) == {"SAR-9"}
    assert set(listed(ledger, "2025-04-10T00:00:00Z", overdue_only=True)) == {"SAR-9"}
    assert listed(ledger, "2025-03-25T00:00:00Z", overdue_only=True) == {}
    assert set(listed(ledger, "2025-03-28T00:00:00Z", due_within=7)) == {"SAR-9"}
    assert listed(ledger, "2025-03-20T00:00:00Z", due_within=7) == {}


def test_due_soon_and_overdue_are_recorded_once_each(ledger: Ledger) -> None:
    """The daemon's flags: "due soon" within 7 days and "overdue" after the deadline, each
    recorded once per deadline however often it runs."""
    received(ledger)
    assert ledger.flag_requests(t("2025-03-20T00:00:00Z")) == {"due_soon": 0, "overdue": 0}
    assert ledger.flag_requests(t("2025-03-30T00:00:00Z")) == {"due_soon": 1, "overdue": 0}
    assert ledger.flag_requests(t("2025-03-31T00:00:00Z")) == {"due_soon": 0, "overdue": 0}
    assert ledger.flag_requests(t("2025-04-04T00:00:00Z")) == {"due_soon": 0, "overdue": 1}
    assert ledger.flag_requests(t("2025-04-05T00:00:00Z")) == {"due_soon": 0, "overdue": 0}
    case = ledger.store.get_request_case(RequestCase.create_id("SAR-9", "member:5"))
    assert case is not None
    kinds = [type(e).__name__ for e in ledger.store.events.get(case.id)]
    assert kinds.count("DueSoonFlagged") == 1 and kinds.count("OverdueFlagged") == 1


def test_a_step_out_of_rule_is_rejected_whole(ledger: Ledger) -> None:
    """Steps on an unknown request, a second receipt of one request, or an answer to a
    closed request are refused with the line named, and store nothing."""
    received(ledger, fact("request-fulfilled", "member:5", "2025-03-10T09:00:00Z",
                          request="SAR-9"))
    head = ledger.projections.head()
    report = ledger.ingest(lines([
        fact("identity-verified", "member:5", "2025-03-11T09:00:00Z", request="SAR-404"),
        fact("access-requested", "member:5", "2025-03-11T09:00:00Z", request="SAR-9"),
        fact("request-paused", "member:5", "2025-03-12T09:00:00Z", request="SAR-9"),
    ]), NOW)
    assert [r.line for r in report.rejected] == [1, 2, 3]
    assert "never received" in report.rejected[0].reason
    assert "already received" in report.rejected[1].reason
    assert ledger.projections.head() == head


def test_an_erasure_request_stays_open_until_answered(ledger: Ledger) -> None:
    """The erasure is carried out at once, but the request is open (and on the clock)
    until `request-fulfilled` records the answer to the person."""
    received(ledger, fact("erasure-requested", "member:5", "2025-03-04T09:00:00Z",
                          request="ER-2"))
    assert listed(ledger, "2025-03-05T00:00:00Z")["ER-2"]["deadline"] == "2025-04-04"
    ledger.ingest(lines([fact("request-fulfilled", "member:5", "2025-03-06T09:00:00Z",
                              request="ER-2")]), NOW)
    assert "ER-2" not in listed(ledger, "2025-03-07T00:00:00Z")


def test_requests_list_prints_one_json_document(sqlite_settings: Settings) -> None:
    """`lifecycle requests list --overdue --json` prints the open overdue requests."""
    with Ledger(sqlite_settings) as ledger:
        received(ledger)
    env = {"LIFECYCLE_HOME": str(sqlite_settings.home), "PATH": "",
           CACHE_DIR_ENV: os.environ[CACHE_DIR_ENV]}
    done = subprocess.run([sys.executable, "-m", "lifecycle", "requests", "list", "--overdue",
                           "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert [r["request"] for r in document["requests"]] == ["SAR-9"]
    assert document["requests"][0]["overdue"] is True


def test_the_daemon_tick_flags_requests_due_soon_then_overdue(
        ledger: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    """Each daemon tick records "due soon" (within --due-soon-days) and "overdue" once per
    deadline, projects and chains those records in the same tick, and logs the counts."""
    from lifecycle.daemon import Daemon

    configure_logging(json=True)  # bind the log to this test's stderr, not an earlier one's
    received(ledger)
    times = iter([t("2025-03-25T00:00:00Z"), t("2025-03-26T00:00:00Z"),
                  t("2025-04-04T00:00:00Z")])
    daemon = Daemon(ledger, 60, clock=lambda: next(times), due_soon_days=10)
    try:
        ticks = [daemon.tick() for _ in range(3)]
    finally:
        daemon.close()
    assert [(k["requests_due_soon"], k["requests_overdue"]) for k in ticks] == [
        (1, 0), (0, 0), (0, 1)]
    assert all(k["projection_lag"] == 0 and k["audit_lag"] == 0 for k in ticks), ticks
    logged = [json.loads(line) for line in capsys.readouterr().err.splitlines()
              if '"daemon.tick"' in line]
    assert [(e["requests_due_soon"], e["requests_overdue"]) for e in logged] == [
        (1, 0), (0, 0), (0, 1)]
