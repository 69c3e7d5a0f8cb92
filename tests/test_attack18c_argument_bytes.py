"""attack18c: arguments and standard input that are not UTF-8.

A shell in another encoding (Latin-1 `m:m\\xfcller`), a script that pastes raw bytes or a
file piped to `--email -` hands lifecycle bytes that do not decode. The README: "Whatever
goes wrong, the user is told in one line on stderr, never with a traceback", naming the
option or the argument; `lifecycle: unexpected error (UnicodeEncodeError)` names neither
the place nor what is wrong.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lifecycle.store.settings import Settings
from tests.processes import env_for

FACTS = (b'{"id":"u1","type":"collected","subject":"m:1","at":"2024-01-02T10:00:00Z",'
         b'"record":"signup","category":"contact","purpose":"enquiries",'
         b'"basis":"legitimate-interests","source":"data-subject",'
         b'"data":{"email":"peregrine.oduya@example.org"}}\n'
         b'{"id":"u2","type":"access-requested","subject":"m:1","at":"2024-01-03T10:00:00Z",'
         b'"request":"SAR-1"}\n')


def run(settings: Settings, *args: bytes, stdin: bytes | None = None
        ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable.encode(), b"-m", b"lifecycle", b"--log-level",
                           b"ERROR", *args], env=env_for(settings), input=stdin,
                          capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    home: Path = tmp_path_factory.mktemp("bytes18c") / "home"
    settings = Settings(home, None, None, home / "master.key")
    result = run(settings, b"ingest", b"-", stdin=FACTS)
    assert result.returncode == 0, result.stderr
    return settings


def assert_one_line(result: subprocess.CompletedProcess[bytes], *mentions: str) -> str:
    err = result.stderr.decode("utf-8", "replace")
    assert b"Traceback" not in result.stderr + result.stdout, err
    assert "unexpected error" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lifecycle: "), err
    assert result.returncode in (1, 2), err
    for word in mentions:
        assert word in lines[0].lower(), lines[0]
    return lines[0]


def _bad(what: str) -> tuple[()]:
    """What attack18c found (each case an 'unexpected error' before the fix); no mark now."""
    return ()


@pytest.mark.parametrize("args", [
    pytest.param((b"subject", b"show", b"m:m\xfcller"), marks=_bad("subject show SUBJECT"),
                 id="subject show"),
    pytest.param((b"history", b"m:m\xfcller"), marks=_bad("history SUBJECT"), id="history"),
    pytest.param((b"dsar", b"export", b"m:m\xfcller"), marks=_bad("dsar export SUBJECT"),
                 id="dsar export"),
    pytest.param((b"certificate", b"ER-m\xfcller"), marks=_bad("certificate REQUEST"),
                 id="certificate"),
    pytest.param((b"request", b"verify", b"SAR-m\xfcller"), marks=_bad("request verify REQUEST"),
                 id="request verify"),
    pytest.param((b"subject", b"find", b"--email", b"m\xfcller@example.org"),
                 marks=_bad("subject find --email ADDR"), id="subject find --email"),
])
def test_an_argument_that_is_not_utf8_is_one_line_not_an_unexpected_error(
        prepared: Settings, args: tuple[bytes, ...]) -> None:
    """An argument holding a byte that is not UTF-8 names no known subject, request or
    address: the command answers in one line (unknown, or not valid), exit 1 or 2, never
    'unexpected error'."""
    assert_one_line(run(prepared, *args))


def test_an_address_on_standard_input_that_is_not_utf8_is_one_line(prepared: Settings) -> None:
    """`subject find --email -` reads the address from standard input; bytes there that
    do not decode are one line naming `--email`, never 'unexpected error'."""
    result = run(prepared, b"subject", b"find", b"--email", b"-",
                 stdin=b"\xffperegrine.oduya@example.org\n")
    assert_one_line(result, "--email")


def test_an_address_on_standard_input_is_found_in_any_line_ending(prepared: Settings) -> None:
    """Held: the address read from standard input is found whether it ends in CRLF or
    in nothing, after a UTF-8 byte order mark."""
    for stdin in (b"peregrine.oduya@example.org\r\n",
                  b"\xef\xbb\xbfperegrine.oduya@example.org"):
        result = run(prepared, b"subject", b"find", b"--email", b"-", stdin=stdin)
        assert result.returncode == 0 and b"m:1" in result.stdout, (stdin, result.stderr)


@pytest.mark.parametrize(("args", "place"), [
    ((b"hold", b"place", b"m:1", b"H-m\xfcller", b"--reason", b"court order"), "hold"),
    ((b"hold", b"place", b"m:1", b"H-1", b"--reason", b"M\xfcller v Smith"), "--reason"),
])
def test_a_hold_argument_that_is_not_utf8_is_named(prepared: Settings,
                                                   args: tuple[bytes, ...], place: str) -> None:
    """A hold placed from the command line with an argument that does not decode is
    refused in one line naming that argument (`HOLD` or `--reason`), nothing stored."""
    line = assert_one_line(run(prepared, *args))
    assert "json" not in line.lower() and place in line.lower(), line
