"""Safe by default: no sweep ahead of the clock, the daemon says what its first sweep will
erase, bad output paths are one line (exit 2), and the store is private to its owner.

The store: tests.test_daemon_and_reports' subscribers, whose marketing data is overdue
(due 2025-07-01) by the real clock. Commands run as real processes (`python -m lifecycle`).
"""

from __future__ import annotations

import json
import os
import signal
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lifecycle.store.vault import data_keys
from lifecycle.domain.errors import ArgumentRefused
from lifecycle.domain.facts import CLOCK_SKEW
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from lifecycle.services.sweep import Sweeper
from tests.processes import destroyed_keys, json_of, lifecycle, wait_for
from tests.test_daemon_and_reports import (
    NOW, SUBSCRIBERS, email, json_lines, prepare, record_data, start_daemon, stop_daemon,
    unsubscriber_facts)

TYPO = "2125-01-01T00:00:00Z"  # meant 2025 (within the time bounds)


def stored_events(settings: Settings) -> int:
    """The number of events in the log, read straight from the store."""
    with Ledger(settings) as ledger:
        return ledger.projections.head()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- A: irreversible actions refuse the future -------------------------------------------------

def test_a_sweep_dated_after_now_exits_2_in_one_line_and_changes_nothing(
        backend: Settings) -> None:
    """`sweep --at` a time later than now (a mistyped year) exits 2 with one line on stderr
    that names the time and the what-if alternatives; no key is destroyed, no event
    recorded, the values stay readable."""
    prepare(backend, unsubscriber_facts())
    events = stored_events(backend)

    result = lifecycle(backend, "sweep", "--at", TYPO)

    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "2125-01-01" in result.stderr and "--dry-run" in result.stderr
    assert "Traceback" not in result.stderr
    assert destroyed_keys(backend) == 0
    assert stored_events(backend) == events
    with Ledger(backend) as ledger:
        assert record_data(ledger, "subscriber:0", "newsletter-signup") == {
            "email": email(0), "first_name": "Quentin"}


def test_a_dry_run_for_a_future_time_is_a_what_if(sqlite_settings: Settings) -> None:
    """`sweep --at FUTURE --dry-run` still lists what would be erased then, and changes
    nothing."""
    prepare(sqlite_settings, unsubscriber_facts())
    events = stored_events(sqlite_settings)

    report = json_of(lifecycle(sqlite_settings, "sweep", "--at", TYPO, "--dry-run", "--json"))

    assert report["dry_run"] is True and report["erased"] == SUBSCRIBERS
    assert destroyed_keys(sqlite_settings) == 0
    assert stored_events(sqlite_settings) == events


def test_every_caller_is_refused_a_sweep_ahead_of_now_beyond_the_skew(ledger: Ledger) -> None:
    """The rule holds in the application layer (Ledger.sweep and Sweeper), not only in the
    command line: a sweep more than CLOCK_SKEW after `now` raises ArgumentRefused and
    records nothing; one within the skew, or a dry run, proceeds."""
    prepare_in(ledger)
    head = ledger.projections.head()
    too_far = NOW + CLOCK_SKEW + timedelta(seconds=1)

    with pytest.raises(ArgumentRefused, match="later than now"):
        ledger.sweep(too_far, NOW)
    with pytest.raises(ArgumentRefused):
        Sweeper(ledger.store, ledger.vault, ledger.views).sweep(too_far, NOW)
    assert ledger.projections.head() == head

    assert ledger.sweep(too_far, NOW, dry_run=True).erased  # overdue by then: listed
    assert len(ledger.sweep(NOW + CLOCK_SKEW, NOW).erased) == SUBSCRIBERS


def prepare_in(ledger: Ledger) -> None:
    from tests.test_daemon_and_reports import ADOPTED, HQIP
    from tests.facts_builder import lines

    ledger.adopt_policy(HQIP, ADOPTED)
    ledger.ingest(lines(unsubscriber_facts()), NOW)
    ledger.projections.catch_up()


def test_the_daemon_logs_at_start_how_many_records_its_first_sweep_will_erase(
        sqlite_settings: Settings) -> None:
    """Before its first tick the daemon logs one JSON line, "daemon.first_sweep", counting
    the records that tick will erase; the tick then erases that many."""
    prepare(sqlite_settings, unsubscriber_facts())
    daemon = start_daemon(sqlite_settings, interval="3600")
    try:
        wait_for(lambda: destroyed_keys(sqlite_settings) == SUBSCRIBERS, 30, "the first tick")
    finally:
        code, _stdout, stderr = stop_daemon(daemon, signal.SIGTERM)
    assert code == 0, stderr
    logs = json_lines(stderr)
    events = [entry["event"] for entry in logs]
    assert events.count("daemon.first_sweep") == 1
    assert events.index("daemon.first_sweep") < events.index("daemon.tick")
    first = logs[events.index("daemon.first_sweep")]
    tick = logs[events.index("daemon.tick")]
    assert first["due"] == SUBSCRIBERS == tick["erased"]


# -- B: output paths ---------------------------------------------------------------------------

def test_bad_output_paths_are_one_line_naming_option_and_path_with_exit_2(
        sqlite_settings: Settings, tmp_path: Path) -> None:
    """`--out` or `--plot` into a missing folder or onto a folder, `--plot` to a file that
    is not .png, and a file that cannot be written (a full device) each end in one line on
    stderr (besides JSON log lines) naming the option and the path, exit 2, no traceback
    and no file left."""
    prepare(sqlite_settings, unsubscriber_facts())
    missing = tmp_path / "no-such-folder"
    cases = [
        (("dsar", "export", "subscriber:0"), "--out", missing / "export.json"),
        (("report", "ropa"), "--out", missing / "ropa.json"),
        (("forecast",), "--plot", missing / "chart.png"),
        (("forecast",), "--plot", tmp_path / "chart.txt"),
        (("dsar", "export", "subscriber:0"), "--out", tmp_path),
        (("dsar", "export", "subscriber:0"), "--out", Path("/dev/full")),
        (("report", "ropa", "--format", "html"), "--out", Path("/dev/full")),
    ]
    for command, option, path in cases:
        result = lifecycle(sqlite_settings, *command, option, str(path))
        where = f"{' '.join(command)} {option} {path}"
        assert result.returncode == 2, (where, result.stderr)
        # besides the JSON log lines of the work done before the write
        lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]
        assert len(lines) == 1, (where, result.stderr)
        assert option in lines[0] and str(path) in lines[0], where
        assert "Traceback" not in result.stderr
        assert email(0) not in result.stderr + result.stdout
    assert not missing.exists() and not (tmp_path / "chart.txt").exists()
    assert "must end in .png" in lifecycle(sqlite_settings, "forecast", "--plot",
                                           str(tmp_path / "chart.txt")).stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files")
def test_a_read_only_output_file_is_one_line_with_exit_2(sqlite_settings: Settings,
                                                         tmp_path: Path) -> None:
    """An existing `--out` file that is read-only: one line naming it, exit 2, unchanged."""
    prepare(sqlite_settings, unsubscriber_facts())
    target = tmp_path / "export.json"
    target.write_text("kept\n")
    target.chmod(0o444)
    result = lifecycle(sqlite_settings, "dsar", "export", "subscriber:0", "--out", str(target))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"lifecycle: --out {target}: is not writable"]
    assert target.read_text() == "kept\n"


def test_good_output_paths_still_write(sqlite_settings: Settings, tmp_path: Path) -> None:
    """The checks let a writable path through: the export and the chart are written."""
    prepare(sqlite_settings, unsubscriber_facts())
    export, chart = tmp_path / "export.json", tmp_path / "chart.PNG"
    assert lifecycle(sqlite_settings, "dsar", "export", "subscriber:0", "--out",
                     str(export)).returncode == 0
    result = lifecycle(sqlite_settings, "forecast", "--plot", str(chart))
    assert result.returncode == 0, result.stderr
    assert export.stat().st_size > 0 and chart.read_bytes()[:4] == b"\x89PNG"


# -- C: permissions ----------------------------------------------------------------------------

STORE_FILES = ("events.sqlite", "keys.sqlite", "views.sqlite")


def test_the_command_line_creates_a_private_home_and_store(sqlite_settings: Settings) -> None:
    """A fresh home made by the command line is 0700; its store files, the master key and
    the lease files are 0600 (nothing in it is readable by group or others)."""
    assert lifecycle(sqlite_settings, "status").returncode == 0
    home = sqlite_settings.home
    assert mode(home) == 0o700
    for name in STORE_FILES:
        assert mode(home / name) == 0o600, name
    for path in home.iterdir():
        assert mode(path) & 0o077 == 0, path.name


def test_the_ledger_creates_private_store_files_whatever_the_umask(
        sqlite_settings: Settings) -> None:
    """Opened in-process under a permissive umask (022), the ledger still creates the home
    0700 and each SQLite file 0600, and the journal files SQLite makes while writing
    take the database file's mode."""
    previous = os.umask(0o022)
    try:
        with Ledger(sqlite_settings) as ledger:
            prepare_in(ledger)
            home = sqlite_settings.home
            with ledger.vault.engine.connect() as conn:
                conn.execute(data_keys.update().values(scope=data_keys.c.scope + ""))
                journals = [p for p in home.iterdir() if "-" in p.name]
                modes = {p.name: mode(p) for p in journals}
                conn.rollback()
    finally:
        os.umask(previous)
    assert mode(home) == 0o700
    for name in STORE_FILES:
        assert mode(home / name) == 0o600, name
    assert "keys.sqlite-journal" in modes
    assert all(m == 0o600 for m in modes.values()), modes


@pytest.mark.parametrize("open_mode", [0o644, 0o666, 0o640, 0o604])
def test_a_master_key_file_open_to_others_is_refused_with_exit_2(sqlite_settings: Settings,
                                                                 open_mode: int) -> None:
    """A master key file with group or other permissions is refused: one line on stderr
    naming the file, its mode, the fix (chmod 600) and LIFECYCLE_ALLOW_OPEN_KEY, never the
    key; exit 2 and nothing written."""
    assert lifecycle(sqlite_settings, "status").returncode == 0
    key_file = sqlite_settings.master_key_file
    key_text = key_file.read_text().strip()
    key_file.chmod(open_mode)
    events = (sqlite_settings.home / "events.sqlite").read_bytes()

    result = lifecycle(sqlite_settings, "ingest", "-", stdin=json.dumps(
        {"id": "k1", "type": "activity", "subject": "m:1", "at": "2024-01-01T00:00:00Z"}))

    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert f"chmod 600 {key_file}" in result.stderr and f"{open_mode:04o}" in result.stderr
    assert "LIFECYCLE_ALLOW_OPEN_KEY" in result.stderr
    assert key_text not in result.stderr + result.stdout
    assert (sqlite_settings.home / "events.sqlite").read_bytes() == events


def test_a_signing_key_file_open_to_others_is_refused_with_exit_2(
        sqlite_settings: Settings) -> None:
    """The audit chain's signing key file is held to the master key's rule: group or other
    permissions are refused with one line naming the file and the fix, exit 2, nothing
    written."""
    assert lifecycle(sqlite_settings, "status").returncode == 0
    key_file = sqlite_settings.home / "signing.key"
    assert key_file.exists()
    key_file.chmod(0o640)
    events = (sqlite_settings.home / "events.sqlite").read_bytes()

    result = lifecycle(sqlite_settings, "ingest", "-", stdin=json.dumps(
        {"id": "k1", "type": "activity", "subject": "m:1", "at": "2024-01-01T00:00:00Z"}))

    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert f"chmod 600 {key_file}" in result.stderr and "0640" in result.stderr
    assert (sqlite_settings.home / "events.sqlite").read_bytes() == events


def test_an_open_master_key_file_is_used_with_a_warning_when_allowed(
        sqlite_settings: Settings) -> None:
    """With LIFECYCLE_ALLOW_OPEN_KEY=1 an open key file is used; one warning line names the
    file and the fix."""
    import subprocess
    import sys

    from tests.processes import env_for

    assert lifecycle(sqlite_settings, "status").returncode == 0
    key_file = sqlite_settings.master_key_file
    key_file.chmod(0o644)
    result = subprocess.run([sys.executable, "-m", "lifecycle", "status"],
                            env={**env_for(sqlite_settings), "LIFECYCLE_ALLOW_OPEN_KEY": "1"},
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "master.key" in line]
    assert len(warnings) == 1 and f"chmod 600 {key_file}" in warnings[0]


def test_the_daemon_lease_files_are_private(sqlite_settings: Settings) -> None:
    """The sweep lease and schema lock files a daemon creates are 0600."""
    with Ledger(sqlite_settings) as ledger:
        from lifecycle.daemon import Daemon

        daemon = Daemon(ledger, 3600, clock=lambda: datetime(2026, 1, 1, tzinfo=UTC))
        try:
            daemon.tick()
        finally:
            daemon.close()
    leases = [p for p in sqlite_settings.home.iterdir() if "lease" in p.name]
    assert len(leases) >= 2, leases
    assert all(mode(p) == 0o600 for p in leases), {p.name: oct(mode(p)) for p in leases}


def test_a_private_master_key_file_draws_no_warning(sqlite_settings: Settings) -> None:
    """A master key file at 0600 (as created) draws no warning."""
    assert lifecycle(sqlite_settings, "status").returncode == 0
    assert mode(sqlite_settings.master_key_file) == 0o600
    result = lifecycle(sqlite_settings, "status")
    assert result.returncode == 0 and "master.key" not in result.stderr


def test_a_future_sweep_in_process_uses_the_given_now_not_the_clock(ledger: Ledger) -> None:
    """Time is the caller's `now`: a sweep at 2030 with now 2030 is not "ahead"."""
    prepare_in(ledger)
    at = datetime(2030, 1, 1, tzinfo=UTC)
    assert len(ledger.sweep(at, at).erased) == SUBSCRIBERS
