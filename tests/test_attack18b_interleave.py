"""attack18b: different commands interleaved at chosen steps, real processes, both backends.

A harness (HARNESS below, run as `python -c`) starts `lifecycle` with its crash points
turned into pauses: with ATK_PAUSE_AT=<step>[:N][,...] (`:*`: at every passage) the process
writes `reached-K` (its K-th pause) into ATK_DIR when it gets to that step and waits there until the test writes
`go-K`; then
LIFECYCLE_CRASH_AT (the product's own hook) may still kill it at a later step. So one
command can be held between its marks and its save while another command runs, which
makes each interleaving deterministic. ATK_CLOCK_BACK=S makes the command line's clock
(`lifecycle.cli.main.utc_now`, "the one place the command line reads the clock") read S
seconds early, and the run's own clock (`lifecycle.support.run_clock`) count S seconds
run since: a run that started S seconds earlier (a large file, a slow standard input),
carrying that `now` into its later batches.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from lifecycle.store.vault import data_keys
from lifecycle.support.faults import CRASH_ENV
from tests.facts_builder import collected, fact, lines
from tests.processes import env_for

ROOT = Path(__file__).resolve().parents[1]
HQIP = ROOT / "config" / "hqip.toml"
MASTER_KEY = base64.b64encode(bytes(range(100, 132))).decode()
SUBJECT = "member:atk18b-1"
REQUEST = "ER-atk18b-1"
SWEEP_AT = "2025-06-01T00:00:00+00:00"  # analytics-26m: rec-analytics due 2025-03-01
VALUES = ["ZqAtkAnalyticsQv", "zq.atk18b.alice@example.org", "ZqAtkAliceSurveyQv"]

HARNESS = r"""
import os, signal, sys, time
from pathlib import Path
import lifecycle.support.faults as faults

_original = faults.crash_point
_passes = {}


def _pause(where):
    _pause.count = getattr(_pause, "count", 0) + 1
    folder = Path(os.environ["ATK_DIR"])
    (folder / f"reached-{_pause.count}").write_text(where)
    while not (folder / f"go-{_pause.count}").exists():
        time.sleep(0.02)


def crash_point(step):
    for wanted in filter(None, os.environ.get("ATK_PAUSE_AT", "").split(",")):
        name, _, nth = wanted.partition(":")
        if step == name:
            _passes[step] = _passes.get(step, 0) + 1
            if nth == "*" or _passes[step] == int(nth or 1):
                _pause(step)
    _original(step)


faults.crash_point = crash_point
if os.environ.get("ATK_PAUSE_BACKUP_BEFORE"):
    import lifecycle.services.backup as backup
    _create = backup.create_private_file

    def create_private_file(path, *args, **kwargs):
        if Path(path).name == os.environ["ATK_PAUSE_BACKUP_BEFORE"]:
            _pause("backup:" + Path(path).name)
        return _create(path, *args, **kwargs)

    backup.create_private_file = create_private_file
import lifecycle.cli.main as main
if os.environ.get("ATK_CLOCK_BACK"):
    from datetime import UTC, datetime, timedelta
    import lifecycle.support.run_clock as run_clock
    _back = timedelta(seconds=float(os.environ["ATK_CLOCK_BACK"]))
    main.utc_now = lambda: datetime.now(UTC) - _back
    _began = run_clock.RunClock.__init__
    def _long_ago(self, started):  # the run began S seconds ago and has run since
        _began(self, started)
        self._began -= _back.total_seconds()
    run_clock.RunClock.__init__ = _long_ago
sys.argv = ["lifecycle", *sys.argv[1:]]
main.main()
"""


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """A clean store with a fixed master key and hqip.toml adopted from 2020."""
    home = tmp_path / "lifecycle-data"
    url = request.getfixturevalue("postgres_database") if request.param == "postgres" else None
    settings = Settings(home=home, database_url=url, master_key=MASTER_KEY,
                        master_key_file=home / "master.key")
    with Ledger(settings) as ledger:
        ledger.adopt_policy(HQIP, datetime(2020, 1, 1, tzinfo=UTC))
    yield settings


class Held:
    """A `lifecycle` process started through the harness; `wait_reached` blocks until it
    pauses at its step, `go` lets it on, `finish` collects its output."""

    def __init__(self, settings: Settings, folder: Path, args: list[str], *,
                 pause_at: str | None = None, crash_at: str | None = None,
                 clock_back: float | None = None, backup_before: str | None = None,
                 stdin: str | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        env = env_for(settings)
        env.pop(CRASH_ENV, None)
        env["ATK_DIR"] = str(folder)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
        if pause_at:
            env["ATK_PAUSE_AT"] = pause_at
        if crash_at:
            env[CRASH_ENV] = crash_at
        if clock_back:
            env["ATK_CLOCK_BACK"] = str(clock_back)
        if backup_before:
            env["ATK_PAUSE_BACKUP_BEFORE"] = backup_before
        source = subprocess.DEVNULL
        if stdin is not None:
            (folder / "stdin").write_text(stdin, encoding="utf-8")
            source = (folder / "stdin").open("rb")
        self.process = subprocess.Popen(
            [sys.executable, "-c", HARNESS, *args], env=env, text=True, stdin=source,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.result: subprocess.CompletedProcess[str] | None = None

    def wait_reached(self, seconds: float = 60, pause: int = 1) -> None:
        started = time.monotonic()
        while not (self.folder / f"reached-{pause}").exists():
            if self.process.poll() is not None:
                out, err = self.process.communicate()
                pytest.fail(f"{self.process.args[3:]} ended ({self.process.returncode}) "
                            f"before its pause: {err[-2000:]}")
            assert time.monotonic() - started < seconds, "the pause was not reached"
            time.sleep(0.02)

    def go(self, pause: int = 1) -> None:
        (self.folder / f"go-{pause}").write_text("go")

    def finish(self, seconds: float = 120) -> subprocess.CompletedProcess[str]:
        if self.result is None:
            try:
                out, err = self.process.communicate(timeout=seconds)
            finally:
                if self.process.poll() is None:
                    self.process.kill()
                    self.process.communicate()
            self.result = subprocess.CompletedProcess(self.process.args, self.process.returncode,
                                                      out, err)
        return self.result

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.finish()


@pytest.fixture
def held() -> Iterator[list[Held]]:
    """Harness processes started by a test, killed at its end if still running."""
    started: list[Held] = []
    yield started
    for process in started:
        process.kill()


def run(settings: Settings, *args: str, stdin: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    env = env_for(settings)
    env.pop(CRASH_ENV, None)
    return subprocess.run([sys.executable, "-m", "lifecycle", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


def base_facts() -> list[dict[str, Any]]:
    """A consent-based analytics record (due 2025-03-01 by analytics-26m) and a
    legitimate-interests survey record (not due), both with distinctive values."""
    return [
        fact("consent-given", SUBJECT, "2023-01-01T09:00:00+00:00",
             purpose="website-analytics", method="cookie-banner", id="atk-0"),
        collected(SUBJECT, "2023-01-01T09:00:00+00:00", "rec-analytics",
                  {"client": VALUES[0], "email": VALUES[1]}, purpose="website-analytics",
                  basis="consent", category="online", id="atk-1"),
        collected(SUBJECT, "2024-01-01T09:00:00+00:00", "rec-survey", {"name": VALUES[2]},
                  purpose="surveys-feedback", basis="legitimate-interests", id="atk-2"),
    ]


def erasure_line() -> str:
    return lines([fact("erasure-requested", SUBJECT, "2025-05-01T09:00:00+00:00",
                       request=REQUEST, id="atk-er")])[0] + "\n"


def seed(settings: Settings) -> None:
    with Ledger(settings) as ledger:
        report = ledger.ingest(lines(base_facts()), datetime.now(UTC))
        assert report.accepted == 3, report.rejected


def vault_rows(settings: Settings) -> dict[str, Any]:
    engine = sa.create_engine(settings.vault_url)
    try:
        with engine.connect() as conn:
            return {r.key_id: r for r in conn.execute(
                sa.select(data_keys.c.key_id, data_keys.c.destroyed_at,
                          data_keys.c.destroyed_by))}
    finally:
        engine.dispose()


def assert_certificate_matches_vault(settings: Settings) -> None:
    """The certificate of REQUEST lists each key once, every one destroyed, and exactly
    the keys the vault says it destroyed for REQUEST (tests/test_order_independence.py's
    `check_erasures` rule). In process: `lifecycle certificate` prints this document."""
    with Ledger(settings) as ledger:
        certificate = ledger.certificate(REQUEST, SUBJECT, datetime.now(UTC))
    listed = [k["key_id"] for k in certificate["keys_destroyed"]]
    assert len(listed) == len(set(listed)), listed
    rows = vault_rows(settings)
    by_vault = {k for k, r in rows.items() if r.destroyed_by == REQUEST}
    assert set(listed) == by_vault, (
        f"certificate of {REQUEST} lists {sorted(listed)}; the vault destroyed "
        f"{sorted(by_vault)} for it ({ {k: rows[k].destroyed_by for k in listed} })")
    assert certificate["all_keys_destroyed"], certificate["keys_destroyed"]


def assert_nothing_readable(settings: Settings) -> None:
    """`subject show` and the DSAR export (now and as of before the erasure; in process,
    the documents the commands print) show no erased value; every key the log records as
    erased is destroyed in the vault."""
    with Ledger(settings) as ledger:
        for document in (ledger.subject_view(SUBJECT),
                         ledger.dsar_export(SUBJECT, datetime.now(UTC)),
                         ledger.dsar_export(SUBJECT, datetime(2024, 6, 1, tzinfo=UTC))):
            text = json.dumps(document)
            for value in VALUES:
                assert value not in text, value
        subject = ledger.subject(SUBJECT)
        erased_keys = {k for e in subject.erasures for k in e.key_ids}
    rows = vault_rows(settings)
    live = sorted(k for k in erased_keys if rows[k].destroyed_at is None)
    assert live == [], f"keys the log records as erased are still live: {live}"


# -- a losing writer's mark replaces the winner's ------------------------------------------

def test_marks_of_a_losing_ingest_do_not_rename_a_crashed_sweep(
        store: Settings, tmp_path: Path, held: list[Held]) -> None:
    """Rule: the vault destroys for an erasure request exactly the keys its certificate
    lists. A sweep marks the due key and pauses; an ingest of an erasure request that
    read the subject before the sweep saved marks the same key (and the other record's)
    and pauses; the sweep saves and dies before destroying; the ingest loses the save
    race, redoes and erases the rest. After the next sweep, the key the sweep's event
    names must not be destroyed under the request."""
    seed(store)
    sweep = Held(store, tmp_path / "sweep", ["sweep", "--at", SWEEP_AT, "--json"],
                 pause_at="marks-stored", crash_at="events-saved")
    held.append(sweep)
    sweep.wait_reached()
    ingest = Held(store, tmp_path / "ingest", ["ingest", "-", "--json"],
                  pause_at="marks-stored", stdin=erasure_line())
    held.append(ingest)
    ingest.wait_reached()
    sweep.go()
    assert sweep.finish().returncode == -signal.SIGKILL
    ingest.go()
    ingested = ingest.finish()
    assert ingested.returncode == 0, ingested.stderr
    again = run(store, "sweep", "--at", SWEEP_AT, "--json")
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in ingested.stderr + again.stderr
    assert_nothing_readable(store)
    assert_certificate_matches_vault(store)


def test_a_finish_between_an_ingests_save_and_destroy_keeps_the_recorded_reason(
        store: Settings, tmp_path: Path, held: list[Held]) -> None:
    """Rule: the certificate lists exactly the keys the vault destroyed for the request,
    with no process killed. An ingest of an erasure request marks its keys and pauses; a
    sweep that read the subject before the ingest saved marks the due one of the same keys
    and pauses; the ingest saves (winning) and pauses before destroying; a third command
    (a sweep with nothing due, which finishes interrupted erasures first) runs; then the
    ingest and the sweep go on to their ends."""
    seed(store)
    ingest = Held(store, tmp_path / "ingest", ["ingest", "-", "--json"],
                  pause_at="marks-stored,events-saved", stdin=erasure_line())
    held.append(ingest)
    ingest.wait_reached()
    sweep = Held(store, tmp_path / "sweep", ["sweep", "--at", SWEEP_AT, "--json"],
                 pause_at="marks-stored")
    held.append(sweep)
    sweep.wait_reached()
    ingest.go()
    ingest.wait_reached(pause=2)  # saved: the erasure is recorded, its keys still live
    beside = run(store, "sweep", "--at", "2024-01-01T00:00:00+00:00", "--json")
    assert beside.returncode == 0, beside.stderr
    ingest.go(pause=2)
    sweep.go()
    for process in (ingest, sweep):
        done = process.finish()
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
    assert_nothing_readable(store)
    assert_certificate_matches_vault(store)


# -- grace periods counted from the run's start, not from the write -------------------------

LONG_RUN = 31 * 60 + 30  # seconds: the run started past the 30-minute grace of a mark


def test_a_long_runs_marks_survive_a_concurrent_finish(
        store: Settings, tmp_path: Path, held: list[Held]) -> None:
    """Rule: an interrupted erasure is finished by the next ingest, sweep or daemon tick;
    marks are dropped only for erasures never recorded (docs/guarantees.md, "Record before
    destroy"). An ingest of an erasure request whose run began 31.5 minutes ago (its clock
    read then: a large file or a slow standard input) marks its keys and pauses; a sweep
    with nothing due runs meanwhile (it finishes interrupted erasures first); the ingest
    saves and is killed before destroying. After another sweep and a re-run of the
    ingest, every key its recorded erasure names must be destroyed."""
    seed(store)
    ingest = Held(store, tmp_path / "ingest", ["ingest", "-", "--json"],
                  pause_at="marks-stored", crash_at="events-saved",
                  clock_back=LONG_RUN, stdin=erasure_line())
    held.append(ingest)
    ingest.wait_reached()
    beside = run(store, "sweep", "--at", "2024-01-01T00:00:00+00:00", "--json")
    assert beside.returncode == 0, beside.stderr
    ingest.go()
    assert ingest.finish().returncode == -signal.SIGKILL
    for args in (["sweep", "--at", "2024-01-01T00:00:00+00:00", "--json"],
                 ["ingest", "-", "--json"]):
        again = run(store, *args, stdin=erasure_line())
        assert again.returncode == 0, again.stderr
    with Ledger(store) as ledger:
        assert {r.record for r in ledger.subject(SUBJECT).records.values()
                if r.erased_at is not None} == {"rec-analytics", "rec-survey"}
    assert_nothing_readable(store)
    assert_certificate_matches_vault(store)


CLAIM_RUN = 6 * 60  # seconds: past the 5-minute grace of a fact-id binding


def test_a_long_runs_fact_ids_stay_bound_while_it_saves(
        store: Settings, tmp_path: Path, held: list[Held]) -> None:
    """Rule: a fact id names one fact; a binding is given up only when its run was killed
    before saving ("within those minutes a run may still be saving it"). An ingest whose
    run began 6 minutes ago claims id `atk-shared` for subject A and pauses before saving;
    another ingest offers the same id with other content for subject B. Once both end,
    exactly one of the two subjects holds the id, and the other ingest named it rejected."""
    def line(subject: str, name: str) -> str:
        return lines([collected(subject, "2024-05-01T09:00:00+00:00", "rec-shared",
                                {"name": name}, purpose="surveys-feedback",
                                basis="legitimate-interests", id="atk-shared")])[0] + "\n"

    first = Held(store, tmp_path / "first", ["ingest", "-", "--json"],
                 pause_at="keys-stored", clock_back=CLAIM_RUN,
                 stdin=line("member:atk18b-a", "ZqAtkFirstQv"))
    held.append(first)
    first.wait_reached()
    second = run(store, "ingest", "-", "--json",
                 stdin=line("member:atk18b-b", "ZqAtkSecondQv"))
    first.go()
    landed = first.finish()
    assert landed.returncode == 0, landed.stderr
    assert "Traceback" not in second.stderr
    with Ledger(store) as ledger:
        holders = [ref for ref in ("member:atk18b-a", "member:atk18b-b")
                   if (found := ledger.store.get_subject(ref)) is not None
                   and found.has_seen("atk-shared")]
    assert holders == ["member:atk18b-a"], holders
    assert second.returncode == 1 and "atk-shared" in second.stdout, second.stdout


# -- a backup taken while an erasure runs ------------------------------------------------

def test_a_backup_beside_an_erasure_restores_nothing_destroyed_unrecorded(
        tmp_path: Path, held: list[Held]) -> None:
    """Rule: `lifecycle backup` is a consistent copy; in it, as in the store, no key is
    destroyed without the event saying why. A backup copies the event log and pauses
    before the key vault; an ingest of an erasure request runs to its end; the backup
    goes on (the erasure's vault writes wait for it, then land). Restored (same master and
    signing keys) into an empty home, every destroyed key of the copy is named by an
    erasure event of the copy's log."""
    home = tmp_path / "lifecycle-data"
    live = Settings(home=home, database_url=None, master_key=MASTER_KEY,
                    master_key_file=home / "master.key")
    with Ledger(live) as ledger:
        ledger.adopt_policy(HQIP, datetime(2020, 1, 1, tzinfo=UTC))
    seed(live)
    copy = tmp_path / "backup"
    backup = Held(live, tmp_path / "backup-run", ["backup", str(copy), "--json"],
                  backup_before="keys.sqlite")
    held.append(backup)
    backup.wait_reached()
    # The erasure runs while the backup sits between the log's copy and the vault's: its
    # vault writes wait for the backup (which holds the vault still), then land.
    ingest = Held(live, tmp_path / "ingest-run", ["ingest", "-", "--json"],
                  stdin=erasure_line())
    held.append(ingest)
    time.sleep(2)
    backup.go()
    taken = backup.finish()
    assert taken.returncode == 0, taken.stderr
    erased = ingest.finish()
    assert erased.returncode == 0, erased.stderr
    with Ledger(live) as ledger:
        assert ledger.subject(SUBJECT).erasures, "the erasure landed in the live store"

    other = tmp_path / "restored"
    restored = Settings(home=other, database_url=None, master_key=MASTER_KEY,
                        master_key_file=other / "master.key",
                        signing_key_file=home / "signing.key")
    result = run(restored, "restore", str(copy), "--json")
    assert result.returncode == 0, result.stderr
    with Ledger(restored) as ledger:
        subject = ledger.subject(SUBJECT)
        named = {k for e in subject.erasures for k in e.key_ids}
    rows = vault_rows(restored)
    unrecorded = sorted(k for k, r in rows.items() if r.destroyed_at is not None
                        and k not in named)
    assert unrecorded == [], f"the copy's vault destroyed {unrecorded} with no event why"


# -- a sweep whose subject another writer keeps moving ------------------------------------

OTHER = "member:atk18b-2"


def seed_two_due(settings: Settings) -> str:
    """SUBJECT's facts, and a second subject with an analytics record due as well."""
    seed(settings)
    with Ledger(settings) as ledger:
        report = ledger.ingest(lines([
            fact("consent-given", OTHER, "2023-01-01T09:00:00+00:00",
                 purpose="website-analytics", method="cookie-banner", id="atk-o0"),
            collected(OTHER, "2023-01-01T09:00:00+00:00", "rec-analytics",
                      {"client": "ZqAtkOtherQv"}, purpose="website-analytics",
                      basis="consent", category="online", id="atk-o1")]), datetime.now(UTC))
        assert report.accepted == 2
    return OTHER


def keep_busy(settings: Settings, sweeper: Held, times: int) -> None:
    """At each of the sweeper's first `times` pauses (before a save), another writer saves
    SUBJECT once more (an activity), then the sweeper goes on and loses the race."""
    for attempt in range(1, times + 1):
        sweeper.wait_reached(pause=attempt)
        with Ledger(settings) as ledger:
            busy = ledger.ingest(lines([fact("activity", SUBJECT,
                                             f"2025-05-0{attempt}T09:00:00+00:00",
                                             id=f"atk-busy-{attempt}")]), datetime.now(UTC))
            assert busy.accepted == 1, busy.rejected
        sweeper.go(pause=attempt)


def test_a_subject_busy_with_an_ingest_does_not_stop_the_sweep_of_the_others(
        store: Settings, tmp_path: Path, held: list[Held]) -> None:
    """Rule: "A subject that cannot be swept is reported by reference and the others go on
    (exit 1)" (README, sweep). Two subjects have a record due; the sweep pauses before each
    save attempt while an ingest stores one more activity of the first subject (a busy
    subject: another writer keeps saving it), five times. The second subject's record is
    erased all the same, and the sweep names no unexpected error."""
    other = seed_two_due(store)
    sweep = Held(store, tmp_path / "sweep", ["sweep", "--at", SWEEP_AT, "--json"],
                 pause_at="marks-stored:*")
    held.append(sweep)
    keep_busy(store, sweep, 5)
    for later in range(6, 16):  # every passage after the last conflict goes on at once
        sweep.go(pause=later)
    swept = sweep.finish()
    assert "Traceback" not in swept.stderr
    assert "unexpected error" not in swept.stderr, swept.stderr
    assert swept.returncode in (0, 1), swept.stderr
    with Ledger(store) as ledger:
        assert ledger.subject(other).records["rec-analytics"].erased_at is not None


def test_a_daemon_tick_beside_a_busy_writer_logs_no_traceback(
        store: Settings, tmp_path: Path, held: list[Held]) -> None:
    """Rule: no traceback reaches a user (README: "never with a traceback"); an erasure
    that a tick could not carry out is done by the next tick. The daemon's first tick
    pauses before each save while another writer saves the subject, five times; the next
    tick erases both due records; the daemon exits 0 on SIGTERM and its stderr holds no
    traceback."""
    other = seed_two_due(store)
    daemon = Held(store, tmp_path / "daemon", ["daemon", "--interval", "1"],
                  pause_at="marks-stored:*")
    held.append(daemon)
    keep_busy(store, daemon, 5)
    for later in range(6, 40):
        daemon.go(pause=later)

    def erased() -> bool:
        with Ledger(store) as ledger:
            return all(ledger.subject(ref).records["rec-analytics"].erased_at is not None
                       for ref in (SUBJECT, other))
    deadline = time.monotonic() + 30
    while not erased():
        assert time.monotonic() < deadline, "the next tick did not erase the due records"
        time.sleep(0.2)
    daemon.process.send_signal(signal.SIGTERM)
    stopped = daemon.finish()
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    assert not any(value in stopped.stderr for value in VALUES)
    assert "Traceback" not in stopped.stderr, stopped.stderr[-3000:]
