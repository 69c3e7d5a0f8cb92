"""Bad input is a rejected line, never a traceback: bytes that are not UTF-8, a BOM, lines
over the size cap, JSON nested too deep, loose types, times out of bounds and free text in
fields that take a slug or a closed vocabulary."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lifecycle.domain import facts as f
from lifecycle.domain.facts import MAX_DEPTH, parse_lines
from lifecycle.services.ledger import Ledger
from lifecycle.services.line_reader import MAX_LINE_BYTES, read_lines
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact, lines
from tests.processes import env_for

NOW = datetime(2026, 1, 1, tzinfo=UTC)
AT = "2024-01-02T10:00:00Z"
EMAIL = "zelda.quuxington@example.org"


def good_lines(count: int) -> list[bytes]:
    return [json.dumps(collected(f"member:{n}", AT, "signup", {"email": f"p{n}@example.org"},
                                 id=f"good-{n}")).encode() for n in range(count)]


def run_cli(settings: Settings, *args: str, stdin: bytes | None = None
            ) -> subprocess.CompletedProcess[bytes]:
    """`lifecycle` as a real process, with bytes in and out (stdin may be any bytes)."""
    return subprocess.run([sys.executable, "-m", "lifecycle", *args], env=env_for(settings),
                          input=stdin, capture_output=True, timeout=120)


def report_of(result: subprocess.CompletedProcess[bytes]) -> Any:
    assert b"Traceback" not in result.stderr, result.stderr.decode(errors="replace")
    return json.loads(result.stdout)


def reasons(lines_: list[str], now: datetime = NOW) -> dict[int, str]:
    return {item.line: item.reason for item in parse_lines(lines_, now)
            if isinstance(item, f.Rejection)}


# -- bytes: UTF-8, BOM, line size -------------------------------------------------------

def with_bad_utf8(good: list[bytes], at_line: int) -> bytes:
    bad = json.dumps(collected("member:x", AT, "r", {"name": "PLACEHOLDER"}, id="bad"))
    data = list(good)
    data.insert(at_line - 1, bad.encode().replace(b"PLACEHOLDER", b"Zelda \xff\xfe Q"))
    return b"\n".join(data) + b"\n"


def test_invalid_utf8_in_a_file_rejects_that_line_and_the_rest_lands(
        backend: Settings, tmp_path: Path) -> None:
    """A file with invalid UTF-8 on line 45 of 50: line 45 is rejected as 'not valid UTF-8'
    with its number, the 49 other facts are stored, exit 1, no traceback."""
    path = tmp_path / "facts.jsonl"
    path.write_bytes(with_bad_utf8(good_lines(49), 45))
    result = run_cli(backend, "ingest", str(path), "--json")
    document = report_of(result)
    assert result.returncode == 1
    assert document["accepted"] == 49
    assert document["rejections"] == [{"line": 45, "fact": None, "reason": "not valid UTF-8"}]


def test_invalid_utf8_on_standard_input_rejects_that_line_and_the_rest_lands(
        backend: Settings) -> None:
    """The same holds when the bytes arrive on standard input, and the human summary names
    the line."""
    result = run_cli(backend, "ingest", "-", stdin=with_bad_utf8(good_lines(9), 4))
    assert result.returncode == 1
    assert b"Traceback" not in result.stderr
    out = result.stdout.decode()
    assert "9 accepted, 0 duplicates, 1 rejected" in out
    assert "line 4: not valid UTF-8" in out


def test_a_bom_at_the_start_of_the_input_is_accepted(backend: Settings, tmp_path: Path) -> None:
    """A UTF-8 byte order mark before line 1 (file or standard input) is not part of the
    first fact: every line lands, exit 0."""
    data = b"\xef\xbb\xbf" + b"\n".join(good_lines(3)) + b"\n"
    path = tmp_path / "bom.jsonl"
    path.write_bytes(data)
    result = run_cli(backend, "ingest", str(path), "--json")
    assert report_of(result)["accepted"] == 3 and result.returncode == 0
    result = run_cli(backend, "ingest", "-", "--json", stdin=data)
    assert report_of(result)["duplicates"] == 3 and result.returncode == 0


def test_a_bom_on_a_text_first_line_is_accepted() -> None:
    """Lines handed over as text keep the same rule: a BOM before line 1 is ignored."""
    text = "\ufeff" + good_lines(1)[0].decode()
    assert reasons([text]) == {}


def test_a_line_over_the_cap_is_rejected_and_the_rest_lands(
        backend: Settings, tmp_path: Path) -> None:
    """A line longer than the cap (1 MiB) is rejected with that reason; the lines around it
    land."""
    good = good_lines(4)
    huge = json.dumps(collected("member:x", AT, "r", {"blob": "z" * (MAX_LINE_BYTES + 10)},
                                id="huge")).encode()
    path = tmp_path / "huge.jsonl"
    path.write_bytes(b"\n".join([good[0], good[1], huge, good[2], good[3]]) + b"\n")
    result = run_cli(backend, "ingest", str(path), "--json")
    document = report_of(result)
    assert result.returncode == 1 and document["accepted"] == 4
    [rejection] = document["rejections"]
    assert rejection["line"] == 3
    assert rejection["reason"] == f"line longer than {MAX_LINE_BYTES} bytes"


def test_a_text_line_over_the_cap_is_rejected_too() -> None:
    """Lines handed over as text obey the same cap, counted in UTF-8 bytes: a line of
    300,000 four-byte characters (1.2 MB) is rejected though it has fewer characters."""
    wide = json.dumps({"note": "\U0001F600" * 300_000}, ensure_ascii=False)
    assert reasons([wide, good_lines(1)[0].decode()]) == {
        1: f"line longer than {MAX_LINE_BYTES} bytes"}


class _Recording(io.BytesIO):
    """A byte stream that remembers the longest piece any one read handed out."""

    longest = 0

    def readline(self, size: int | None = -1, /) -> bytes:
        piece = super().readline(size)
        self.longest = max(self.longest, len(piece))
        return piece

    def read(self, size: int | None = -1, /) -> bytes:
        piece = super().read(size)
        self.longest = max(self.longest, len(piece))
        return piece


def test_a_long_line_is_skipped_without_being_read_whole() -> None:
    """Reading a 5 MB line under a 64 KiB cap never takes more than the cap (plus a newline
    and a BOM's 3 bytes) at once, and the next line is read normally."""
    stream = _Recording(b"x" * 5_000_000 + b"\n" + b'{"a": 1}\n' + b"y" * 70_000)
    got = list(read_lines(stream, max_bytes=65_536))
    assert stream.longest <= 65_536 + 4
    assert [type(line) is f.UnreadableLine for line in got] == [True, False, True]
    assert got[1] == '{"a": 1}\n'
    assert str(got[0]) == "line longer than 65536 bytes"


def test_a_line_exactly_at_the_cap_is_read() -> None:
    """The cap counts the line's bytes without its newline or a BOM: a line of exactly the
    cap is read, with or without a final newline or a BOM; one byte more is too long."""
    for head in (b"", b"\xef\xbb\xbf"):
        for tail in (b"\n", b""):
            [line] = list(read_lines(io.BytesIO(head + b"a" * 100 + tail), max_bytes=100))
            assert type(line) is str and line.rstrip("\n") == "a" * 100
            [line] = list(read_lines(io.BytesIO(head + b"a" * 101 + tail), max_bytes=100))
            assert type(line) is f.UnreadableLine


_RSS_PROBE = """
import resource, sys
from lifecycle.cli.main import main
sys.argv = ["lifecycle", "ingest", sys.argv[1], "--json"]
try:
    main()
except SystemExit:
    pass
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def _peak_rss_kib(settings: Settings, path: Path) -> int:
    result = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(path)],
                            env=env_for(settings), capture_output=True, timeout=120)
    assert b"Traceback" not in result.stderr, result.stderr.decode(errors="replace")
    return int(result.stderr.decode().strip().splitlines()[-1])


def test_a_64_mb_line_does_not_grow_the_process(backend: Settings, tmp_path: Path) -> None:
    """Ingesting a file with one 64 MB line peaks within 16 MB of ingesting the same file
    without it: the long line is never held in memory."""
    small = tmp_path / "small.jsonl"
    small.write_bytes(b"\n".join(good_lines(3)) + b"\n")
    big = tmp_path / "big.jsonl"
    big.write_bytes(b'{"data": "' + b"z" * 64_000_000 + b'"}\n' + small.read_bytes())
    baseline = _peak_rss_kib(backend, small)
    with_long_line = _peak_rss_kib(backend, big)
    assert with_long_line - baseline < 16_000, (baseline, with_long_line)


# -- JSON depth and strict types -------------------------------------------------------

def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


def test_json_nested_deeper_than_the_cap_is_rejected_with_that_reason(ledger: Ledger) -> None:
    """A fact nested one level past the cap, or far past what the parser allows, is
    rejected as too deep (not as invalid JSON); exactly at the cap it is stored."""
    # The fact object is level 1 and `data` level 2: a line whose data is nested(n) has
    # n + 1 levels.
    at_cap = collected("member:1", AT, "r1", nested(MAX_DEPTH - 1), id="deep-ok")
    over = collected("member:1", AT, "r2", nested(MAX_DEPTH), id="deep-1")
    far_over = collected("member:1", AT, "r3", nested(500), id="deep-2")
    deep_list: Any = []
    for _ in range(MAX_DEPTH):
        deep_list = [deep_list]
    in_list = collected("member:1", AT, "r4", {"a": deep_list}, id="deep-3")
    report = ledger.ingest(lines([at_cap, over, far_over, in_list]), NOW)
    assert report.accepted == 1
    too_deep = f"nested deeper than {MAX_DEPTH} levels"
    assert {r.line: r.reason for r in report.rejected} == {2: too_deep, 3: too_deep,
                                                          4: too_deep}


def test_types_are_strict(ledger: Ledger) -> None:
    """No number for a time, no "yes" or 1 for a boolean, no string or float for an
    integer: each is rejected naming the field; the same facts with proper types land."""
    def request(**fields: Any) -> dict[str, Any]:
        return fact("access-requested", "member:1", AT, request="dsar-1", **fields)

    bad = [
        fact("activity", "member:1", 1704189600, id="num-at"),
        request(identity_check="yes", id="yes-bool"),
        request(identity_check=1, id="one-bool"),
        fact("request-extended", "member:1", AT, request="dsar-1", months="2", id="str-int"),
        fact("request-extended", "member:1", AT, request="dsar-1", months=2.0, id="float-int"),
    ]
    report = ledger.ingest(lines(bad), NOW)
    assert report.accepted == 0
    got = {r.line: r.reason for r in report.rejected}
    assert got[1].startswith("at: ")
    assert got[2].startswith("identity_check: ") and got[3].startswith("identity_check: ")
    assert got[4].startswith("months: ") and got[5].startswith("months: ")
    good = [request(identity_check=False, id="ok-1"),
            fact("request-extended", "member:1", AT, request="dsar-1", months=2, id="ok-2")]
    assert ledger.ingest(lines(good), NOW).accepted == 2


# -- time bounds ---------------------------------------------------------------------------

@pytest.mark.parametrize(("at", "reason"), [
    ("0001-01-01T00:00:00+14:00", "at: before 1900-01-01"),
    ("1899-12-31T23:59:59Z", "at: before 1900-01-01"),
    ("1900-01-01T04:59:59+05:00", "at: before 1900-01-01"),
    ("9999-12-31T23:59:59-12:00", "at: after now (more than 5 minutes ahead)"),
    ("9999-01-01T00:00:00Z", "at: after now (more than 5 minutes ahead)"),
    ("2026-01-01T00:05:01Z", "at: after now (more than 5 minutes ahead)"),
])
def test_a_fact_time_out_of_bounds_is_rejected_without_its_value(at: str, reason: str) -> None:
    """A fact's `at` lies between 1900-01-01T00:00:00Z and now plus 5 minutes of clock skew;
    outside, the line is rejected naming the field and the bound, not the value."""
    got = reasons(lines([collected("member:1", at, "r", {"email": EMAIL})]))
    assert got == {1: reason}
    assert at[:4] not in got[1].replace("1900", "")


def test_fact_times_at_the_bounds_are_accepted() -> None:
    """1900-01-01T00:00:00Z and now plus exactly 5 minutes are inside the bounds."""
    skew = (NOW + timedelta(minutes=5)).isoformat()
    assert reasons(lines([fact("activity", "m:1", "1900-01-01T00:00:00Z"),
                          fact("activity", "m:1", "1900-01-01T05:00:00+05:00"),
                          fact("activity", "m:1", skew)])) == {}


@pytest.mark.parametrize(("until", "reason"), [
    ("1899-12-31T00:00:00Z", "until: before 1900-01-01"),
    ("2200-01-01T00:00:01Z", "until: after 2200-01-01"),
    ("9999-12-31T23:59:59-12:00", "until: after 2200-01-01"),
])
def test_a_hold_until_out_of_bounds_is_rejected(until: str, reason: str) -> None:
    """A legal hold's `until` lies between 1900-01-01 and 2200-01-01."""
    hold = fact("legal-hold-placed", "m:1", AT, hold="h1", scope="all", reason="court order",
                until=until)
    assert reasons(lines([hold])) == {1: reason}


def test_out_of_range_times_never_reach_the_store(ledger: Ledger) -> None:
    """The three inputs that used to break every later command are rejected at ingest, and
    sweep and status then run for the subject whose valid facts landed."""
    report = ledger.ingest(lines([
        collected("member:1", AT, "r", {"email": EMAIL}, purpose="website-analytics",
                  id="ok"),
        fact("consent-given", "member:1", "0001-01-01T00:00:00+14:00",
             purpose="direct-marketing", id="x1"),
        fact("consent-given", "member:1", "9999-12-31T23:59:59-12:00",
             purpose="direct-marketing", id="x2"),
        collected("member:1", "9999-01-01T00:00:00Z", "late", {"email": EMAIL},
                  purpose="website-analytics", id="x3"),
    ]), NOW)
    assert report.accepted == 1
    assert [r.line for r in report.rejected] == [2, 3, 4]
    ledger.sweep(NOW, NOW)
    ledger.status()


def test_the_cli_names_line_and_field_of_a_time_out_of_bounds(
        backend: Settings, tmp_path: Path) -> None:
    """The summary reads `line 3: at: before 1900-01-01`, exit 1, and the good lines land."""
    data = [*good_lines(2), json.dumps(fact("activity", "member:1",
                                            "0001-01-01T00:00:00+14:00")).encode()]
    path = tmp_path / "times.jsonl"
    path.write_bytes(b"\n".join(data) + b"\n")
    result = run_cli(backend, "ingest", str(path))
    assert result.returncode == 1, result.stderr
    assert "line 3: at: before 1900-01-01" in result.stdout.decode()
    assert "2 accepted" in result.stdout.decode()


# -- free text where a slug or a vocabulary is due -------------------------------------

@pytest.mark.parametrize("type_", ["consent-given", "consent-withdrawn"])
def test_a_consent_method_is_a_slug(type_: str) -> None:
    """`method` takes a slug such as subscribe-form; free text is rejected naming the field
    and the allowed form, without echoing the text."""
    free = "phone call with Zelda Quuxington on 07700900461"
    got = reasons(lines([
        fact(type_, "m:1", AT, purpose="direct-marketing", method=free),
        fact(type_, "m:1", AT, purpose="direct-marketing", method="subscribe-form"),
        fact(type_, "m:1", AT, purpose="direct-marketing", method="crm-import"),
    ]))
    assert list(got) == [1]
    assert got[1].startswith("method: ") and "slug" in got[1]
    assert "Zelda" not in got[1] and "07700900461" not in got[1]


def test_an_unsubscribe_channel_is_from_the_closed_vocabulary() -> None:
    """`channel` takes one of the documented channels; anything else is rejected naming the
    field and the allowed values, without echoing the text."""
    from lifecycle.domain.vocabulary import CHANNELS

    assert {"email-link", "email-reply", "web-form", "phone", "post", "other"} <= set(CHANNELS)
    got = reasons(lines([
        fact("unsubscribed", "m:1", AT, channel=f"reply from {EMAIL}"),
        fact("unsubscribed", "m:1", AT, channel="email"),
        *[fact("unsubscribed", "m:1", AT, channel=channel) for channel in CHANNELS],
        fact("unsubscribed", "m:1", AT),
    ]))
    assert list(got) == [1, 2]
    assert got[1].startswith("channel: ") and "email-link" in got[1]
    assert EMAIL not in got[1]


# -- nothing escapes as a traceback ----------------------------------------------------------

def test_an_unexpected_error_while_validating_rejects_only_that_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """If validating one line fails in a way nobody foresaw, that line is rejected with a
    one-line reason naming the error's kind, and the next line is still read."""
    real = f._adapter.validate_json

    def flaky(text: str | bytes) -> Any:
        if "boom" in str(text):
            raise RuntimeError(f"internal detail {EMAIL}")
        return real(text)

    monkeypatch.setattr(f._adapter, "validate_json", flaky)
    got = list(parse_lines(lines([fact("activity", "m:1", AT, id="boom"),
                                  fact("activity", "m:1", AT, id="fine")]), NOW))
    assert isinstance(got[0], f.Rejection) and isinstance(got[1], f.ParsedLine)
    assert got[0].reason == "could not be validated (RuntimeError)"
