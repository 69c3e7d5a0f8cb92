"""Attack 9: an erasure covers what was collected at or before it, to the last digit given.

Rule (docs/guarantees.md "Fact time, not arrival order"; docs/facts.md: a time is an
RFC 3339 string with an offset): an erasure covers every record collected at or before
it; "a record collected *after* the request (even if it arrived first) is not covered".
RFC 3339 allows any number of fractional-second digits; a time is either read exactly or
rejected as a bad line, never silently rounded into the past.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lifecycle.services.ledger import Ledger
from tests.facts_builder import collected, fact, lines

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_record_collected_nanoseconds_after_the_request_is_not_erased(
        ledger: Ledger) -> None:
    """A record collected 900 ns after the erasure request is not covered by it: it is
    kept, or its line is rejected for a time lifecycle cannot hold; its key is never
    destroyed by the request."""
    report = ledger.ingest(lines([
        fact("erasure-requested", "member:N", "2024-03-01T09:00:00Z", request="ER-N"),
        collected("member:N", "2024-03-01T09:00:00.0000009Z", "after", {"name": "N"},
                  purpose="membership", basis="contract", category="identity"),
    ]), NOW)
    assert report.erased_keys == 0, report.as_dict()
    records = {r["record"]: r["data"] for r in ledger.subject_view("member:N")["records"]}
    assert records.get("after", "rejected") in ({"name": "N"}, "rejected")
