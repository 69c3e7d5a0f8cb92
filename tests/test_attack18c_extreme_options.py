"""attack18c: command-line options given values at the edges of what they parse (huge
integers, NaN and infinity, times whose instant lies outside the calendar once read in UTC
or in London) must end as the README says every problem ends: one line on stderr naming
the option, exit 2 (the command could not start), never "unexpected error" and never a
traceback. And one accepted command must not leave a store every later command fails on.

One store (hqip adopted, a subject with an access request, an erasure and a record) is
prepared once and copied for each case; each case runs `python -m lifecycle` for real.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact
from tests.processes import env_for

ROOT = Path(__file__).resolve().parents[1]
HQIP = ROOT / "config" / "hqip.toml"
SUBJECT = "member:18c"
LIVE = "member:18c-live"  # a record no erasure took
# Read in UTC (or London), these instants fall outside datetime's years 1 to 9999.
PAST_EDGE = "0001-01-01T00:00:00+14:00"
FUTURE_EDGE = "9999-12-31T23:59:59-12:00"


def _facts() -> str:
    rows = [
        collected(SUBJECT, "2024-01-02T10:00:00Z", "enquiry",
                  {"email": "ysolde.ferncastle@example.org", "name": "Ysolde Ferncastle"},
                  purpose="enquiries-complaints", basis="legitimate-interests", id="x18c-1"),
        fact("access-requested", SUBJECT, "2024-02-01T09:00:00Z", request="SAR-18c",
             id="x18c-2"),
        fact("erasure-requested", SUBJECT, "2024-03-01T09:00:00Z", request="ER-18c",
             id="x18c-3"),
        collected(LIVE, "2024-01-03T10:00:00Z", "enquiry", {"email": "o.brannagh@example.org"},
                  purpose="enquiries-complaints", basis="legitimate-interests", id="x18c-4"),
    ]
    return "".join(json.dumps(row) + "\n" for row in rows)


def run(settings: Settings, *args: str, stdin: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lifecycle", "--log-level", "ERROR", *args],
                          env=env_for(settings), input=stdin, capture_output=True, text=True,
                          timeout=120)


def settings_for(home: Path) -> Settings:
    return Settings(home, None, None, home / "master.key")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("prepared18c") / "home"
    settings = settings_for(home)
    for args, stdin in ((("policy", "adopt", str(HQIP), "--at", "2020-01-01"), None),
                        (("ingest", "-"), _facts()), (("status",), None)):
        result = run(settings, *args, stdin=stdin)
        assert result.returncode == 0, result.stderr
    return home


@pytest.fixture
def store(prepared: Path, tmp_path: Path) -> Settings:
    home = tmp_path / "home"
    shutil.copytree(prepared, home)
    return settings_for(home)


def assert_one_line_usage_error(result: subprocess.CompletedProcess[str], option: str) -> None:
    text = result.stderr + result.stdout
    assert "Traceback" not in text, result.stderr
    assert "unexpected error" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lifecycle: "), result.stderr
    assert option in lines[0], lines[0]
    assert result.returncode == 2, result.stderr


def _bad(reason: str) -> tuple[()]:
    """What attack18c found (each case an 'unexpected error' before the fix); no mark now."""
    return ()


CASES = [
    pytest.param(("status", "--next", "99999999999999999999"), "--next",
                 marks=_bad("status --next with a huge count is 'unexpected error "
                            "(OverflowError)', exit 1"), id="status --next huge"),
    pytest.param(("requests", "list", "--due-within", "3000000"), "--due-within",
                 marks=_bad("requests list --due-within 3000000 is 'unexpected error "
                            "(OverflowError)', exit 1"), id="requests --due-within huge"),
    pytest.param(("forecast", "--from", "0001-01-01T00:00:00Z", "--months", "2"), "--from",
                 marks=_bad("forecast --from year 1 is 'unexpected error (OverflowError)'"),
                 id="forecast --from year 1"),
    pytest.param(("forecast", "--from", "9999-12-31T00:00:00Z"), "--from",
                 marks=_bad("forecast --from 9999-12-31 is 'unexpected error (ValueError)'"),
                 id="forecast --from 9999-12-31"),
    pytest.param(("daemon", "--interval", "nan"), "--interval",
                 marks=_bad("daemon --interval nan is 'unexpected error (ValueError)'"),
                 id="daemon --interval nan"),
    pytest.param(("daemon", "--interval", "inf"), "--interval",
                 marks=_bad("daemon --interval inf is 'unexpected error (OverflowError)'"),
                 id="daemon --interval inf"),
    pytest.param(("dsar", "export", SUBJECT, "--as-of", FUTURE_EDGE), "--as-of",
                 marks=_bad("dsar export --as-of 9999-12-31T23:59:59-12:00 of a subject "
                            "with a request is 'unexpected error (OverflowError)'"),
                 id="dsar --as-of beyond 9999 in UTC"),
    pytest.param(("replay", "--until", FUTURE_EDGE), "--until",
                 marks=_bad("replay --until 9999-12-31T23:59:59-12:00 is 'unexpected error "
                            "(StatementError)'"), id="replay --until beyond 9999 in UTC"),
    pytest.param(("replay", "--until", PAST_EDGE), "--until",
                 marks=_bad("replay --until 0001-01-01T00:00:00+14:00 is 'unexpected error "
                            "(StatementError)'"), id="replay --until before year 1 in UTC"),
    pytest.param(("report", "ropa", "--at", FUTURE_EDGE), "--at",
                 marks=_bad("report ropa --at 9999-12-31T23:59:59-12:00 is 'unexpected "
                            "error (StatementError)'"), id="ropa --at beyond 9999 in UTC"),
    pytest.param(("sweep", "--dry-run", "--at", FUTURE_EDGE), "--at",
                 marks=_bad("sweep --dry-run --at 9999-12-31T23:59:59-12:00 is 'unexpected "
                            "error (StatementError)'"), id="sweep --dry-run --at beyond 9999"),
]


@pytest.mark.parametrize(("args", "option"), CASES)
def test_an_edge_value_of_an_option_is_one_line_naming_it_with_exit_2(
        store: Settings, args: tuple[str, ...], option: str) -> None:
    """A value an option cannot work with (a count or a time beyond the calendar, NaN,
    infinity) is a usage error: one line on stderr naming the option, exit 2 (README,
    "Exit codes"); never 'unexpected error', never a traceback."""
    assert_one_line_usage_error(run(store, *args), option)


def test_an_adoption_time_beyond_the_calendar_does_not_break_every_later_command(
        backend: Settings) -> None:
    """`policy adopt FILE --at T` either refuses a T it cannot work with (one line, exit 2,
    nothing adopted) or adopts it so that later commands still run: one accepted command
    must never leave a store on which status, sweep and subject show all fail (README:
    "Whatever goes wrong, the user is told in one line", and never an unexpected error)."""
    adopt = run(backend, "policy", "adopt", str(HQIP), "--at", FUTURE_EDGE)
    assert "Traceback" not in adopt.stderr
    assert "unexpected error" not in adopt.stderr, adopt.stderr
    if adopt.returncode != 0:
        assert adopt.returncode == 2 and "--at" in adopt.stderr, adopt.stderr
    ingest = run(backend, "ingest", "-", stdin=_facts())
    assert ingest.returncode in (0, 1), ingest.stderr
    for args in (("status",), ("sweep",), ("subject", "show", LIVE), ("report", "ropa"),
                 ("forecast",)):
        result = run(backend, *args)
        assert "unexpected error" not in result.stderr, (args, result.stderr)
        refused_no_policy = (adopt.returncode != 0 and args == ("report", "ropa")
                             and result.returncode == 1
                             and "no policy has been adopted" in result.stderr)
        assert result.returncode == 0 or refused_no_policy, (args, result.stderr)


def test_times_at_the_edges_of_the_bounds_are_answered_and_beyond_them_refused(
        store: Settings) -> None:
    """An export as of the first bound (1900-01-01), before anything was recorded, lists
    nothing and names no policy; as of the last (2200-01-01) it shows the erasure and no
    erased value; as of 1800 or 9999 it is refused in one line naming `--as-of`, exit 2
    (every time a command takes lies between 1900-01-01 and 2200-01-01)."""
    before = run(store, "dsar", "export", SUBJECT, "--as-of", "1900-01-01T00:00:00Z")
    assert before.returncode == 0, before.stderr
    document = json.loads(before.stdout)
    assert document["records"] == [] and document["requests"] == []
    assert document["policy"] is None
    after = run(store, "dsar", "export", SUBJECT, "--as-of", "2200-01-01T00:00:00Z")
    assert after.returncode == 0, after.stderr
    [record] = json.loads(after.stdout)["records"]
    assert record["data"] == "erased" and record["erased_by"] == "ER-18c"
    assert "ysolde" not in after.stdout.lower()
    for beyond in ("1800-01-01T00:00:00Z", "9999-12-31T23:59:59Z"):
        refused = run(store, "dsar", "export", SUBJECT, "--as-of", beyond)
        lines = refused.stderr.splitlines()
        assert refused.returncode == 2 and len(lines) == 1, refused.stderr
        assert "--as-of" in lines[0] and "1900-01-01 to 2200-01-01" in lines[0], lines[0]
