"""The daemon and the reporting commands: status, forecast, policy check, projections, sweep.

The store: config/hqip.toml adopted on 2023-01-01, and subscribers who unsubscribed on
2024-03-10, so their marketing data falls due on 2025-04-10 (13 months) and goes at the
next contact-database review, 2025-07-01 00:00 Europe/London (2025-06-30 23:00 UTC).
Commands run as real processes (`python -m lifecycle`) against a real store; time is an
explicit argument (`--at`, `--from`, an injected clock), except for the daemon process,
whose real clock (well after 2025) makes those items overdue. The daemon runs on SQLite and
on PostgreSQL; the reporting commands, which only read the same store through the same
code, run on SQLite to keep the file quick (each process start costs about a second).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from lifecycle.daemon import Daemon
from lifecycle.services.forecast import monthly_forecast
from lifecycle.services.ledger import Ledger
from lifecycle.policy.loader import load_policy
from lifecycle.projections import parallel, tables
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact, lines
from tests.processes import destroyed_keys, env_for, json_of, lifecycle, wait_for
from tests.read_models import snapshot_views

CONFIG = Path(__file__).resolve().parents[1] / "config"
HQIP = CONFIG / "hqip.toml"
IHPA = CONFIG / "ihpa.toml"
ADOPTED = datetime(2023, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
JULY_REVIEW = "2025-07-01T00:00:00+01:00"
SUBSCRIBERS = 3
MARKETING_RULE = "marketing-13m-after-unsubscribe"


def email(n: int) -> str:
    return f"quentin.marlowe-{n}@example.org"


def personal_values() -> list[str]:
    return [email(n) for n in range(SUBSCRIBERS)] + ["quentin.marlowe", "Quentin"]


def unsubscriber_facts() -> list[dict[str, Any]]:
    facts = []
    for n in range(SUBSCRIBERS):
        subject = f"subscriber:{n}"
        facts += [
            collected(subject, "2023-05-02T09:00:00+01:00", "newsletter-signup",
                      {"email": email(n), "first_name": "Quentin"}),
            fact("consent-given", subject, "2023-05-02T09:00:00+01:00",
                 purpose="direct-marketing", method="web-form"),
            fact("unsubscribed", subject, "2024-03-10T10:00:00+00:00", channel="email-link"),
        ]
    return facts


def other_facts() -> list[dict[str, Any]]:
    """Items under other rules, each with a known disposal time."""
    return [
        # analytics-26m, no window: 2026-04-15 12:00 UTC (on consent given first)
        fact("consent-given", "visitor:1", "2024-02-15T12:00:00+00:00",
             purpose="website-analytics", method="cookie-banner"),
        collected("visitor:1", "2024-02-15T12:00:00+00:00", "analytics-id",
                  {"client_id": "GA1.2.4711"}, purpose="website-analytics", category="online"),
        # surveys-2y, due 2026-03-05, disposed of at the 2026-07-01 Europe/London review
        collected("respondent:1", "2024-03-05T10:00:00+00:00", "survey-2024",
                  {"answer": "more webinars"}, purpose="surveys-feedback", category="feedback",
                  basis="legitimate-interests"),
        # service-communications-review-6y: a review (2026-01-06), never an erasure
        collected("member:1", "2020-01-06T10:00:00+00:00", "privacy-update",
                  {"postcode": "N1 9GU"}, purpose="service-communications",
                  basis="legal-obligation"),
    ]


def prepare(settings: Settings, facts: list[dict[str, Any]]) -> None:
    """Adopts hqip.toml and ingests `facts` in-process (projections left behind)."""
    with Ledger(settings) as ledger:
        ledger.adopt_policy(HQIP, ADOPTED)
        report = ledger.ingest(lines(facts), NOW)
        assert report.accepted == len(facts), report.rejected[:3]








def json_lines(text: str) -> list[dict[str, Any]]:
    """Every non-empty line parsed as JSON (fails on any line that is not)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]




def record_data(ledger: Ledger, reference: str, record: str) -> object:
    view = ledger.subject_view(reference)
    return next(r["data"] for r in view["records"] if r["record"] == record)


def retention_expired(ledger: Ledger, reference: str) -> int:
    return [e["event"] for e in ledger.history(reference)].count("RetentionExpired")


# -- the daemon: a real process --------------------------------------------------------------

def start_daemon(settings: Settings, interval: str = "1") -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "lifecycle", "daemon", "--interval", interval],
                            env=env_for(settings), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def stop_daemon(process: subprocess.Popen[str], *signals: int) -> tuple[int, str, str]:
    try:
        for sig in signals:
            process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, stdout, stderr


def sweeps_recorded(settings: Settings) -> int:
    engine = sa.create_engine(settings.views_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count())
                                    .select_from(tables.sweep_runs)).scalar_one())
    except sa.exc.OperationalError:  # the daemon has not created the views yet
        return 0
    finally:
        engine.dispose()




def test_the_daemon_catches_up_downtime_at_start_and_exits_0_on_sigterm(
        backend: Settings) -> None:
    """The daemon's first tick, at start, erases everything already overdue (downtime is
    caught up); SIGTERM then stops it with exit code 0; stderr holds one JSON log line per
    entry, with a "daemon.tick" line counting the erasures and the projection lag, and no
    personal value appears on stdout or stderr."""
    prepare(backend, unsubscriber_facts())
    daemon = start_daemon(backend)
    try:
        wait_for(lambda: destroyed_keys(backend) == SUBSCRIBERS and sweeps_recorded(backend) > 0,
                 30, "the first tick to erase the overdue items")
    finally:
        code, stdout, stderr = stop_daemon(daemon, signal.SIGTERM)
    assert code == 0, stderr
    assert stdout == ""
    logs = json_lines(stderr)
    events = [entry["event"] for entry in logs]
    assert events[0] == "daemon.started" and events[-1] == "daemon.stopped"
    assert events.count("daemon.stopping") == 1  # a tick under way may still log after it
    assert logs[events.index("daemon.stopping")]["signal"] == signal.SIGTERM
    ticks = [entry for entry in logs if entry["event"] == "daemon.tick"]
    assert ticks and ticks[0]["erased"] == SUBSCRIBERS
    # the ingest left the projections behind: caught up before the first sweep's count
    assert logs[events.index("daemon.first_sweep")]["events_projected"] > 0
    assert all(tick["projection_lag"] == 0 for tick in ticks)
    assert sum(tick["erased"] for tick in ticks) == SUBSCRIBERS  # later ticks: nothing
    for value in personal_values():
        assert value not in stderr and value not in stdout
    with Ledger(backend) as ledger:
        for n in range(SUBSCRIBERS):
            assert record_data(ledger, f"subscriber:{n}", "newsletter-signup") == "erased"
            assert retention_expired(ledger, f"subscriber:{n}") == 1


def test_the_daemon_exits_0_on_sigint_even_when_interrupted_twice(
        sqlite_settings: Settings) -> None:
    """SIGINT (Ctrl-C) stops the daemon with exit code 0, like SIGTERM; an impatient
    second Ctrl-C is harmless: no traceback. With an interval shorter than a tick, the
    scheduler's own warnings (a skipped beat) are JSON lines too: stderr holds nothing else."""
    prepare(sqlite_settings, unsubscriber_facts())
    daemon = start_daemon(sqlite_settings, interval="0.02")
    try:
        wait_for(lambda: sweeps_recorded(sqlite_settings) >= 5, 30, "five ticks")
    finally:
        code, stdout, stderr = stop_daemon(daemon, signal.SIGINT, signal.SIGINT)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    logs = json_lines(stderr)
    assert logs[-1]["event"] == "daemon.stopped" and logs[-1]["ticks"] >= 1
    assert {entry["signal"] for entry in logs if entry["event"] == "daemon.stopping"} == {
        signal.SIGINT}


# -- the daemon in-process, with an injected clock ---------------------------------------------

def test_ticks_at_the_same_time_erase_once_and_the_second_records_nothing(
        ledger: Ledger) -> None:
    """A tick sweeps at its clock's time: nothing before the 2025-07-01 review, the
    subscribers' marketing data at it; a second tick at the same time erases nothing and
    records no event."""
    ledger.adopt_policy(HQIP, ADOPTED)
    ledger.ingest(lines(unsubscriber_facts()), NOW)
    times = iter([datetime.fromisoformat("2025-06-30T22:59:59+00:00"),
                  datetime.fromisoformat(JULY_REVIEW), datetime.fromisoformat(JULY_REVIEW)])
    now = [datetime(2020, 1, 1, tzinfo=UTC)]

    def clock() -> datetime:
        return now[0]

    daemon = Daemon(ledger, 60, clock=clock)
    summaries, heads = [], []
    for at in times:
        now[0] = at
        summaries.append(daemon.tick())
        heads.append(ledger.projections.head())
    assert [s["erased"] for s in summaries] == [0, SUBSCRIBERS, 0]
    assert summaries[1]["at"] == JULY_REVIEW
    assert all(s["projection_lag"] == 0 for s in summaries)
    assert heads[2] == heads[1] > heads[0]  # the second tick at the review: no event
    assert summaries[2]["events_projected"] == 0
    assert daemon.ticks == 3
    for n in range(SUBSCRIBERS):
        assert retention_expired(ledger, f"subscriber:{n}") == 1


def test_run_survives_a_repeated_signal_ticks_at_start_and_restores_handlers(
        sqlite_settings: Settings) -> None:
    """`Daemon.run` ticks at once on start, even when the injected clock is ahead of the
    real one; a stop signal sent twice is harmless (run returns normally after the tick);
    and the process gets its previous signal handlers back."""
    prepare(sqlite_settings, unsubscriber_facts())
    leaked: list[int] = []

    def guard(signum: int, _frame: object) -> None:
        leaked.append(signum)

    saved = {sig: signal.signal(sig, guard) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with Ledger(sqlite_settings) as ledger:
            daemon = Daemon(ledger, 3600, clock=lambda: datetime(2030, 1, 1, tzinfo=UTC))

            def interrupt_twice() -> None:
                deadline = time.monotonic() + 5
                while daemon.ticks < 1 and time.monotonic() < deadline:
                    time.sleep(0.01)
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)

            thread = threading.Thread(target=interrupt_twice)
            thread.start()
            try:
                daemon.run()
            finally:
                thread.join()
            time.sleep(0.1)  # any signal still pending reaches whichever handler is set
            assert daemon.ticks == 1
            assert all(signal.getsignal(sig) is guard for sig in saved)
            assert leaked == []
            assert record_data(ledger, "subscriber:0", "newsletter-signup") == "erased"
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


# -- status ----------------------------------------------------------------------------------

def test_status_shows_the_last_sweep_pending_items_next_due_and_lag(
        sqlite_settings: Settings) -> None:
    """`status --json` shows no sweep before the first, then the last sweep (its time and
    counts); the pending count and the next items due in disposal order (the July review
    first); and every projection's lag, 0 because status catches up first."""
    prepare(sqlite_settings, unsubscriber_facts() + other_facts())
    before = json_of(lifecycle(sqlite_settings, "status", "--json"))
    assert before["last_sweep"] is None
    assert before["policy"].startswith("hqip@2023-11")
    assert before["pending"] == SUBSCRIBERS + 3
    due = [(item["subject"], item["rule"], item["action"],
            datetime.fromisoformat(item["dispose_at"])) for item in before["next_due"]]
    assert [d[3] for d in due] == sorted(d[3] for d in due)
    assert sorted(due[:SUBSCRIBERS]) == [
        (f"subscriber:{n}", MARKETING_RULE, "erase", datetime.fromisoformat(JULY_REVIEW))
        for n in range(SUBSCRIBERS)]
    assert due[SUBSCRIBERS][:3] == ("member:1", "service-communications-review-6y", "review")
    assert before["projections"] and all(p["lag"] == 0 for p in before["projections"])

    json_of(lifecycle(sqlite_settings, "sweep", "--at", JULY_REVIEW, "--json"))
    after = json_of(lifecycle(sqlite_settings, "status", "--next", "2", "--json"))
    last = after["last_sweep"]
    assert datetime.fromisoformat(last["swept_at"]) == datetime.fromisoformat(JULY_REVIEW)
    assert (last["erased"], last["reviews"], last["paused"]) == (SUBSCRIBERS, 0, 0)
    assert after["pending"] == 3
    assert [(i["subject"], i["action"]) for i in after["next_due"]] == [
        ("member:1", "review"), ("visitor:1", "erase")]
    assert all(p["lag"] == 0 for p in after["projections"])


# -- forecast --------------------------------------------------------------------------------

def forecast_months(document: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Only the months with something due: {month: {rule: count}}."""
    return {row["month"]: row["by_rule"] for row in document["months"] if row["total"]}


def test_forecast_counts_pending_erasures_per_month_and_rule_and_plots_them(
        sqlite_settings: Settings, tmp_path: Path) -> None:
    """`forecast --json` counts pending erasures per calendar month and per rule (reviews
    are not erasures); items already overdue at --from count in the first month;
    `--plot FILE.png` also writes the chart as a PNG."""
    store = sqlite_settings
    prepare(store, unsubscriber_facts() + other_facts())
    chart = tmp_path / "forecast.png"
    result = json_of(lifecycle(store, "forecast", "--months", "24", "--from", "2025-01-01",
                               "--plot", str(chart), "--json"))
    assert result["months_ahead"] == 24 and len(result["months"]) == 24
    assert result["months"][0]["month"] == "2025-01" and result["months"][-1]["month"] == "2026-12"
    assert result["rules"] == ["analytics-26m", MARKETING_RULE, "surveys-2y"]
    months = forecast_months(result)
    assert months["2026-04"] == {"analytics-26m": 1}
    per_rule: dict[str, int] = {}
    for by_rule in months.values():
        for rule, count in by_rule.items():
            per_rule[rule] = per_rule.get(rule, 0) + count
    assert per_rule == {MARKETING_RULE: SUBSCRIBERS, "analytics-26m": 1, "surveys-2y": 1}
    assert sum(row["total"] for row in result["months"]) == SUBSCRIBERS + 2
    data = chart.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR" and data[-8:-4] == b"IEND"
    assert len(data) > 5_000

    overdue = json_of(lifecycle(store, "forecast", "--months", "12",
                                "--from", "2025-09-15T08:00:00+00:00", "--json"))
    overdue_months = forecast_months(overdue)
    assert overdue["months"][0]["month"] == "2025-09"
    assert overdue_months["2025-09"] == {MARKETING_RULE: SUBSCRIBERS}
    assert overdue_months["2026-04"] == {"analytics-26m": 1}
    assert overdue["rules"] == result["rules"]


def test_forecast_months_are_the_policy_time_zone_months(sqlite_settings: Settings) -> None:
    """`forecast` counts the subscribers' marketing data in July 2025, the month of the
    Europe/London review that disposes of it, and the survey in July 2026."""
    prepare(sqlite_settings, unsubscriber_facts() + other_facts())
    months = forecast_months(json_of(lifecycle(sqlite_settings, "forecast", "--months", "24",
                                               "--from", "2025-01-01", "--json")))
    assert months["2025-07"] == {MARKETING_RULE: SUBSCRIBERS}
    assert months["2026-07"] == {"surveys-2y": 1}


def test_monthly_forecast_buckets_in_the_zone_it_is_given(ledger: Ledger) -> None:
    """Given the policy's zone, the forecast counts review-window disposals in the month of
    the review (July), though the schedule stores 30 June 23:00 UTC; without one, months are
    those of --from's offset."""
    ledger.adopt_policy(HQIP, ADOPTED)
    ledger.ingest(lines(unsubscriber_facts() + other_facts()), NOW)
    ledger.projections.catch_up()
    zone = load_policy(HQIP).zone
    start = datetime(2025, 1, 1, tzinfo=zone)
    months = forecast_months(monthly_forecast(ledger.views, start, 24, zone))
    assert months == {"2025-07": {MARKETING_RULE: SUBSCRIBERS},
                      "2026-04": {"analytics-26m": 1}, "2026-07": {"surveys-2y": 1}}
    offset = datetime.fromisoformat("2025-01-01T00:00:00+01:00")
    assert "2025-07" in forecast_months(monthly_forecast(ledger.views, offset, 24))
    assert monthly_forecast(ledger.views, start, 0)["months"] == []


# -- policy check ----------------------------------------------------------------------------

def broken_hqip(tmp_path: Path) -> Path:
    """hqip.toml with a misspelt key, a bad duration and an unknown basis."""
    text = HQIP.read_text(encoding="utf-8")
    rules = tomllib.loads(text)["rules"]
    assert (rules[0]["id"], rules[0]["keep_for"]) == (MARKETING_RULE, "P13M")
    assert (rules[3]["id"], rules[3]["keep_for"]) == ("analytics-26m", "P26M")
    edits = [
        (r'keep_for = "P13M"', 'keep_fro = "P13M"'),                 # the first rule only
        (r'keep_for = "P26M"', 'keep_for = "26 months"'),
        (r'(\[purposes\.parliamentary-records\][^\[]*?bases = \[)"legal-obligation"',
         r'\1"legal-obligaton"'),
    ]
    for pattern, replacement in edits:
        text, count = re.subn(pattern, replacement, text, count=1)
        assert count == 1, pattern
    path = tmp_path / "hqip-broken.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_policy_check_reports_every_error_with_file_and_key(sqlite_settings: Settings,
                                                            tmp_path: Path) -> None:
    """`policy check` on a file with a misspelt key, a bad duration and an unknown basis
    exits 2 and reports all three, each with the file, the key and what is wrong."""
    path = broken_hqip(tmp_path)
    result = lifecycle(sqlite_settings, "policy", "check", str(path))
    assert result.returncode == 2, result.stdout
    reported = result.stdout.splitlines()
    for key, reason in [("rules[0].keep_fro", "unknown key (did you mean 'keep_for'?)"),
                        ("rules[3].keep_for", "not an ISO 8601 duration"),
                        ("purposes.parliamentary-records.bases[0]", "'legal-obligation'")]:
        line = next((ln for ln in reported if ln.startswith(f"{path}: {key}: ")), None)
        assert line is not None, (key, reported)
        assert reason in line
    as_json = lifecycle(sqlite_settings, "policy", "check", str(path), "--json")
    assert as_json.returncode == 2
    document = json.loads(as_json.stdout)
    assert document["ok"] is False
    assert {p["file"] for p in document["problems"]} == {str(path)}
    assert {"rules[0].keep_fro", "rules[3].keep_for",
            "purposes.parliamentary-records.bases[0]"} <= {p["key"] for p in document["problems"]}


def test_policy_check_passes_the_real_policies(sqlite_settings: Settings) -> None:
    """`policy check` passes config/hqip.toml and config/ihpa.toml (exit 0)."""
    for config in (HQIP, IHPA):
        result = lifecycle(sqlite_settings, "policy", "check", str(config))
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip() == f"{config}: ok"


# -- projections -----------------------------------------------------------------------------

def test_projection_status_shows_lag_after_ingest_and_rebuild_clears_it(
        sqlite_settings: Settings) -> None:
    """`projections status --json` reports the lag an ingest leaves (it reads, it does not
    catch up: the positions stay where they were); `projections rebuild --json` replays
    every event, returns their number, and leaves every projection at lag 0; with
    `--workers 2` it shares the rebuild (so it drops scratch a killed shared rebuild left)
    and builds the same rows."""
    store = sqlite_settings
    prepare(store, unsubscriber_facts())
    with Ledger(store) as ledger:
        positions = ledger.projections.positions()
    status = json_of(lifecycle(store, "projections", "status", "--json"))["projections"]
    with Ledger(store) as ledger:
        assert ledger.projections.positions() == positions
        events = ledger.projections.head()
    assert {p["name"]: p["position"] for p in status} == positions
    assert all(p["head"] == events for p in status)
    assert all(p["lag"] == events - p["position"] > 0 for p in status)

    rebuilt = json_of(lifecycle(store, "projections", "rebuild", "--json"))
    assert rebuilt["events"] == events
    assert set(rebuilt["rebuilt"]) == set(positions)
    after = json_of(lifecycle(store, "projections", "status", "--json"))["projections"]
    assert all((p["position"], p["head"], p["lag"]) == (events, events, 0) for p in after)
    with Ledger(store) as ledger:
        alone = snapshot_views(ledger)

    abandoned = store.home / f"{parallel.FOLDER_PREFIX}killed"
    abandoned.mkdir()
    shared = json_of(lifecycle(store, "projections", "rebuild", "--workers", "2", "--json"))
    assert shared["events"] == events
    assert not abandoned.exists()
    with Ledger(store) as ledger:
        assert snapshot_views(ledger) == alone


# -- sweep -----------------------------------------------------------------------------------

def test_sweep_dry_run_lists_then_sweep_erases_then_a_second_erases_nothing(
        sqlite_settings: Settings) -> None:
    """`sweep --at T --dry-run --json` lists the due items and changes nothing (no event,
    values still readable); `sweep --at T --json` erases exactly those; the same sweep
    again erases nothing and records nothing."""
    prepare(sqlite_settings, unsubscriber_facts() + other_facts())
    with Ledger(sqlite_settings) as ledger:
        ledger.projections.catch_up()
        head = ledger.projections.head()

    dry_run = lifecycle(sqlite_settings, "sweep", "--at", JULY_REVIEW, "--dry-run", "--json")
    dry = json_of(dry_run)
    assert dry["dry_run"] is True and dry["erased"] == SUBSCRIBERS
    listed = sorted((i["subject"], i["record"], i["rule"]) for i in dry["items"]["erased"])
    assert listed == [(f"subscriber:{n}", "newsletter-signup", MARKETING_RULE)
                      for n in range(SUBSCRIBERS)]
    with Ledger(sqlite_settings) as ledger:
        assert ledger.projections.head() == head
        assert record_data(ledger, "subscriber:0", "newsletter-signup") == {
            "email": email(0), "first_name": "Quentin"}
    assert destroyed_keys(sqlite_settings) == 0

    sweep = lifecycle(sqlite_settings, "sweep", "--at", JULY_REVIEW, "--json")
    swept = json_of(sweep)
    assert swept["dry_run"] is False and swept["erased"] == SUBSCRIBERS
    assert sorted((i["subject"], i["record"], i["rule"])
                  for i in swept["items"]["erased"]) == listed
    with Ledger(sqlite_settings) as ledger:
        for n in range(SUBSCRIBERS):
            assert record_data(ledger, f"subscriber:{n}", "newsletter-signup") == "erased"
        assert record_data(ledger, "visitor:1", "analytics-id") == {"client_id": "GA1.2.4711"}
        head = ledger.projections.head()

    again = lifecycle(sqlite_settings, "sweep", "--at", JULY_REVIEW, "--json")
    assert (json_of(again)["erased"], json_of(again)["items"]["erased"]) == (0, [])
    for value in personal_values():
        for process in (dry_run, sweep, again):
            assert value not in process.stdout + process.stderr
    with Ledger(sqlite_settings) as ledger:
        assert ledger.projections.head() == head
        for n in range(SUBSCRIBERS):
            assert retention_expired(ledger, f"subscriber:{n}") == 1
