"""Attack 9b: a time is read exactly or rejected, never rounded into the past, whatever
field or spelling carries the extra precision.

Rule (docs/facts.md: a time is an RFC 3339 string with a UTC offset; commit 9766cfe: "a
time finer than a microsecond is rejected with its reason, not truncated into the past";
docs/guarantees.md "Fact time, not arrival order": a record collected *after* the request
is not covered by it). RFC 3339's offset is `+HH:MM`; Python's `fromisoformat` also takes
`+HH:MM:SS.ffffff` and silently drops the offset's fraction.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from lifecycle.domain import facts as f
from lifecycle.services.ledger import Ledger
from tests.facts_builder import collected, fact, lines

NOW = datetime(2026, 1, 1, tzinfo=UTC)

# 09:00:00 at an offset of minus half a second (or 0.9 us) is 09:00:00.5 UTC (09:00:00.0000009)
LATER_BY_OFFSET = ["2024-03-01T09:00:00-00:00:00.5", "2024-03-01T09:00:00-00:00:00.999999",
                   "2024-03-01T09:00:00-00:00:00.0000009"]


@pytest.mark.parametrize("text", LATER_BY_OFFSET)
def test_a_time_whose_offset_has_a_fraction_is_read_exactly_or_rejected(text: str) -> None:
    """`at` is read as the instant it names or the line is rejected: 09:00:00 at offset
    -00:00:00.5 is 09:00:00.5 UTC, never 09:00:00."""
    line = json.dumps({"id": "x", "type": "erasure-requested", "subject": "m:1", "at": text,
                       "request": "R"})
    try:
        parsed = f.parse_line(line, NOW)
    except f.InvalidLine:
        return
    assert parsed.at > datetime(2024, 3, 1, 9, 0, tzinfo=UTC), parsed.at  # type: ignore[attr-defined]


def test_a_hold_until_with_an_offset_fraction_is_read_exactly_or_rejected() -> None:
    """`until` is a time field too: read exactly or rejected."""
    line = json.dumps({"id": "h", "type": "legal-hold-placed", "subject": "m:1",
                       "at": "2024-01-01T00:00:00Z", "hold": "H", "scope": "all",
                       "reason": "case", "until": "2025-01-01T00:00:00-00:00:00.5"})
    try:
        parsed = f.parse_line(line, NOW)
    except f.InvalidLine:
        return
    assert parsed.until == datetime(2025, 1, 1, tzinfo=UTC) + timedelta(  # type: ignore[attr-defined]
        microseconds=500_000)


def test_a_record_collected_half_a_second_after_the_request_is_not_erased(
        ledger: Ledger) -> None:
    """A record collected after the erasure request (here 0.5 s after it, written with a
    fractional offset) is not covered by it: kept, or its line rejected; its key is never
    destroyed by the request."""
    report = ledger.ingest(lines([
        fact("erasure-requested", "member:O", "2024-03-01T09:00:00Z", request="ER-O"),
        collected("member:O", LATER_BY_OFFSET[0], "after", {"name": "O"},
                  purpose="membership", basis="contract", category="identity"),
    ]), NOW)
    assert report.erased_keys == 0, report.as_dict()
