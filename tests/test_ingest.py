"""Ingest: validation, rejection of whole lines, idempotency, domain guards."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from lifecycle.services.ledger import Ledger
from tests.facts_builder import collected, fact, lines

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def hundred_facts_with_five_bad() -> tuple[list[str], dict[int, str]]:
    """95 good facts over 19 subjects and 5 bad lines at known line numbers."""
    good: list[str] = []
    for n in range(19):
        subject = f"member:{n}"
        good += lines([
            collected(subject, "2024-01-02T10:00:00+00:00", "signup",
                      {"email": f"person{n}@example.org"}, id=f"g{n}-1"),
            fact("consent-given", subject, "2024-01-02T10:00:00+00:00",
                 purpose="direct-marketing", id=f"g{n}-2"),
            fact("activity", subject, "2024-02-01T10:00:00+01:00", id=f"g{n}-3"),
            fact("rectified", subject, "2024-03-01T10:00:00Z", record="signup",
                 data={"job_title": "nurse"}, id=f"g{n}-4"),
            fact("shared", subject, "2024-03-02T10:00:00Z", recipient="Mailchimp",
                 role="processor", purpose="direct-marketing", basis="consent",
                 records=["signup"], country="US", safeguard="IDTA", id=f"g{n}-5"),
        ])
    bad = {
        10: '{"id": "b1", "type": "collected", "subject": "member:x"',
        20: json.dumps(fact("teleported", "member:x", "2024-01-01T00:00:00Z", id="b2")),
        30: json.dumps(fact("activity", "member:x", "2024-01-01T00:00:00", id="b3")),
        40: json.dumps(collected("member:x", "2024-01-01T00:00:00Z", "r", {"a": 1},
                                 basis="because", id="b4")),
        50: json.dumps(fact("rectified", "member:x", "2024-01-01T00:00:00Z",
                            record="never-collected", data={"a": 1}, id="b5")),
    }
    result = list(good)
    for line_number in sorted(bad):
        result.insert(line_number - 1, bad[line_number])
    return result, {n: text for n, text in bad.items()}


def test_bad_lines_are_rejected_whole_and_good_lines_land(ledger: Ledger) -> None:
    """Of 100 facts with 5 bad lines, 95 are stored and the 5 are named by line number."""
    data, bad = hundred_facts_with_five_bad()
    assert len(data) == 100
    report = ledger.ingest(data, NOW)
    assert report.accepted == 95
    assert [r.line for r in report.rejected] == sorted(bad)
    reasons = {r.line: r.reason for r in report.rejected}
    assert reasons[10] == "not valid JSON"
    assert "unknown fact type" in reasons[20]
    assert "naive" in reasons[30]
    assert reasons[40].startswith("basis:")
    assert "never-collected" in reasons[50]


def test_reingesting_the_same_facts_stores_nothing_new(ledger: Ledger) -> None:
    """Re-ingesting a fact id is a no-op: a second run reports only duplicates."""
    data, _ = hundred_facts_with_five_bad()
    ledger.ingest(data, NOW)
    versions = ledger.subject("member:3").version
    again = ledger.ingest(data, NOW)
    assert (again.accepted, again.duplicates, len(again.rejected)) == (0, 95, 5)
    assert ledger.subject("member:3").version == versions


def test_a_rejected_line_leaves_no_trace_on_its_subject(ledger: Ledger) -> None:
    """A fact refused by a domain guard stores nothing: not its event, not its fact id."""
    ledger.ingest(lines([collected("member:1", "2024-01-01T00:00:00Z", "a", {"x": 1})]), NOW)
    before = ledger.history("member:1")
    report = ledger.ingest(lines([
        fact("consent-withdrawn", "member:1", "2024-02-01T00:00:00Z",
             purpose="direct-marketing", id="w1"),
    ]), NOW)
    assert len(report.rejected) == 1 and "no consent in force" in report.rejected[0].reason
    assert ledger.history("member:1") == before
    assert not ledger.subject("member:1").has_seen("w1")


@pytest.mark.parametrize(
    ("bad_fact", "expected"),
    [
        (fact("shared", "m:1", "2024-01-01T00:00:00Z", recipient="X", role="processor",
              purpose="p", basis="consent", categories=["contact"], country="US"),
         "safeguard"),
        (collected("m:1", "2024-01-01T00:00:00Z", "r", {}, category="secrets"), "category:"),
        (collected("m:1", "2024-01-01T00:00:00Z", "r", {}, source="rumour"), "source:"),
        (fact("activity", "m:1", "yesterday"), "at:"),
        (fact("objected", "m:1", "2024-01-01T00:00:00Z"), "purpose: Field required"),
        (fact("activity", "m:1", "2024-01-01T00:00:00Z", colour="blue"), "colour:"),
    ],
)
def test_each_kind_of_bad_field_is_named(ledger: Ledger, bad_fact: dict[str, object],
                                         expected: str) -> None:
    """A bad line's reason names the field that is wrong."""
    report = ledger.ingest(lines([bad_fact]), NOW)
    assert report.accepted == 0
    assert expected in report.rejected[0].reason


def test_a_rectification_of_an_erased_record_is_refused(ledger: Ledger) -> None:
    """Rectifying a record whose values were erased is refused with the record named."""
    ledger.ingest(lines([
        collected("member:1", "2024-01-01T00:00:00Z", "signup", {"email": "a@b.org"}),
        fact("erasure-requested", "member:1", "2024-02-01T00:00:00Z", request="ER-1"),
        fact("rectified", "member:1", "2024-03-01T00:00:00Z", record="signup",
             data={"email": "c@d.org"}),
    ]), NOW)
    view = ledger.subject_view("member:1")
    assert view["records"][0]["data"] == "erased"


def test_rectification_updates_the_current_values(ledger: Ledger) -> None:
    """A rectification replaces the fields it names and keeps the others."""
    ledger.ingest(lines([
        collected("member:1", "2024-01-01T00:00:00Z", "signup",
                  {"email": "a@b.org", "job_title": "nurse"}),
        fact("rectified", "member:1", "2024-03-01T00:00:00Z", record="signup",
             data={"job_title": "matron"}),
    ]), NOW)
    assert ledger.subject_view("member:1")["records"][0]["data"] == {
        "email": "a@b.org", "job_title": "matron"}


def test_facts_for_many_subjects_across_batches_all_land(ledger: Ledger) -> None:
    """Facts spread over several save batches land once each, in order per subject."""
    facts = []
    for n in range(2500):
        facts.append(collected(f"s:{n % 700}", "2024-01-01T00:00:00Z", f"r{n}", {"n": n}))
    report = ledger.ingest(lines(facts), NOW)
    assert report.accepted == 2500
    assert len(ledger.subject("s:5").records) == len(range(5, 2500, 700))


def test_a_long_ingest_collects_its_garbage_now_and_then_and_restores_the_collector(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ingest runs with the cyclic collector paused but collects fully every
    COLLECT_EVERY_BATCHES batches (its garbage stays bounded however long the file), and
    leaves the collector enabled as it found it."""
    import gc

    from lifecycle.services import ingest

    monkeypatch.setattr(ingest, "BATCH_LINES", 10)
    monkeypatch.setattr(ingest, "COLLECT_EVERY_BATCHES", 3)
    full: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            full.append(1)

    facts = lines([fact("activity", f"member:{n}", "2024-02-01T10:00:00Z", id=f"a{n}")
                   for n in range(60)])  # 6 batches to parse, 6 to apply: 4 collections
    assert gc.isenabled()
    gc.callbacks.append(count)
    try:
        report = ledger.ingest(facts, NOW)
    finally:
        gc.callbacks.remove(count)
    assert report.accepted == 60
    assert len(full) >= 4
    assert gc.isenabled()
