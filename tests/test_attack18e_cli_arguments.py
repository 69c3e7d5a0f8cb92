"""attack18e: arguments that are not UTF-8, and the calendar bounds of command times.

fc7710a / cli.main.undecodable_argument: an argument that is not UTF-8 is "named by its
option or its place after the command; never the value", in one line, exit 2, nothing
done. docs/facts.md: every time a command takes lies in 1900-01-01..2200-01-01 (one line
naming the option, exit 2); README: a sweep `--at` more than 5 minutes ahead is refused.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lifecycle.store.settings import Settings
from tests.processes import env_for


def run(settings: Settings, *args: str | bytes) -> subprocess.CompletedProcess[str]:
    argv = [os.fsencode(a) if isinstance(a, str) else a for a in args]
    return subprocess.run([os.fsencode(sys.executable), b"-m", b"lifecycle", b"--log-level",
                           b"ERROR", *argv], env=env_for(settings), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "unexpected error" not in lines[0], lines[0]
    assert result.returncode == 2, (result.returncode, result.stderr)
    return lines[0]


def test_undecodable_values_are_one_line_without_the_value(sqlite_settings: Settings) -> None:
    """Held: a reference, an option value in either spelling, and `--actor=` holding a
    byte that is not UTF-8: one line, exit 2, the bytes never repeated, no store made."""
    for args in ((b"subject", b"show", b"m\xffzz"), (b"sweep", b"--at", b"\xffzz"),
                 (b"sweep", b"--at=\xffzz"), (b"--actor=\xffzz", b"status")):
        line = _one_line(run(sqlite_settings, *args))
        assert "zz" not in line and "\\x" not in line and "\ufffd" not in line, line
    assert not sqlite_settings.home.exists()


def test_an_undecodable_value_given_with_equals_names_its_option(
        sqlite_settings: Settings) -> None:
    """`sweep --at=<not UTF-8>`: the one line names `--at` (its value is what is not
    UTF-8), as `sweep --at <not UTF-8>` does, never calls the option's name undecodable."""
    spaced = _one_line(run(sqlite_settings, b"sweep", b"--at", b"\xff"))
    assert "--at" in spaced, spaced
    joined = _one_line(run(sqlite_settings, b"sweep", b"--at=\xff"))
    assert "--at" in joined and "name" not in joined, joined


@pytest.mark.parametrize("args", [
    ("sweep", "--dry-run", "--at", "2199-12-31T23:59:59-00:01"),
    ("sweep", "--dry-run", "--at", "1900-01-01T00:59:59+01:00"),
    ("forecast", "--from", "2200-01-01T00:00:01Z"),
    ("dsar", "export", "m:1", "--as-of", "2200-01-02"),
])
def test_times_outside_the_calendar_bounds_name_the_option(sqlite_settings: Settings,
                                                           args: tuple[str, ...]) -> None:
    """Held: a time outside 1900-01-01..2200-01-01 once read in UTC (whatever its offset)
    is one line naming the option, exit 2."""
    line = _one_line(run(sqlite_settings, *args))
    assert args[-2] in line and "1900-01-01" in line, line


def test_a_sweep_ahead_of_now_is_refused(sqlite_settings: Settings) -> None:
    """Held: a real sweep at a time an hour ahead of now is refused (exit 2, nothing
    changed); a what-if is --dry-run."""
    from datetime import UTC, datetime, timedelta

    ahead = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    result = run(sqlite_settings, "sweep", "--at", ahead)
    assert result.returncode == 2 and "nothing was done" in result.stderr, result.stderr
