"""attack18e: a standard output that cannot be written, for the commands that print tables
(rich's Console, not click.echo), and a closed standard output.

README/fc7710a: "a standard output that cannot be written is one line, exit 2"; README:
"Whatever goes wrong, the user is told in one line on stderr" (never 'unexpected error').
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lifecycle.store.settings import Settings
from tests.processes import env_for

FACTS = (
    '{"id":"o1","type":"collected","subject":"m:1","at":"2024-01-02T10:00:00Z",'
    '"record":"signup","category":"contact","purpose":"enquiries",'
    '"basis":"legitimate-interests","source":"data-subject",'
    '"data":{"email":"cordelia.haverstock@example.org"}}\n'
    '{"id":"o2","type":"access-requested","subject":"m:1","at":"2025-02-01T09:00:00Z",'
    '"request":"SAR-1"}\n')
TABLE_COMMANDS = (("subject", "show", "m:1"), ("requests", "list"), ("breaches", "list"))

pytestmark = pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")


def run(settings: Settings, *args: str, stdout: object = subprocess.PIPE,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lifecycle", "--log-level", "ERROR", *args],
                          env=env_for(settings), input=stdin, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=120)


@pytest.fixture
def store(sqlite_settings: Settings) -> Settings:
    ingested = run(sqlite_settings, "ingest", "-", stdin=FACTS)
    assert ingested.returncode == 0, ingested.stderr
    return sqlite_settings


def _full(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    with open("/dev/full", "w") as full:
        return run(settings, *args, stdout=full)


def _named(result: subprocess.CompletedProcess[str]) -> None:
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and "unexpected error" not in lines[0], result.stderr
    assert "output" in lines[0].lower(), lines[0]
    assert result.returncode == 2, result.returncode


def test_json_and_echoed_reports_to_a_full_output_are_named(store: Settings) -> None:
    """Held: `status`, `audit verify`, `subject show --json` and `requests list --json` on a
    full standard output: one line naming standard output, exit 2."""
    for args in (("status",), ("audit", "verify"), ("subject", "show", "m:1", "--json"),
                 ("requests", "list", "--json")):
        _named(_full(store, *args))


def test_tables_to_a_full_output_are_named(store: Settings) -> None:
    """`subject show`, `requests list` and `breaches list` print tables: on a full
    standard output each says in one line that standard output cannot be written, exit 2,
    as `status` does."""
    failures = []
    for args in TABLE_COMMANDS:
        result = _full(store, *args)
        try:
            _named(result)
        except AssertionError:
            failures.append((args, result.returncode, result.stderr.strip()))
    assert not failures, failures


def test_a_closed_standard_output_is_named(store: Settings) -> None:
    """Run from a shell with standard output closed (`lifecycle history m:1 >&-`), a
    command that prints is told in one line that standard output cannot be written (exit
    2), never 'unexpected error'."""
    failures = []
    for args in (("history", "m:1"), *TABLE_COMMANDS):
        command = " ".join([sys.executable, "-m", "lifecycle", "--log-level", "ERROR", *args])
        result = subprocess.run(["bash", "-c", f"{command} >&-"], env=env_for(store),
                                stderr=subprocess.PIPE, text=True, timeout=120)
        if "unexpected error" in result.stderr or result.returncode != 2:
            failures.append((args, result.returncode, result.stderr.strip()))
    assert not failures, failures
