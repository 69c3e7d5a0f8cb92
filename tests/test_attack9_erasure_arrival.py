"""Attack 9: erasure decided by fact time, whatever the arrival order, and certified truly.

Rules (README "Erased means erased", docs/guarantees.md "Fact time, not arrival order"):
- a record collected before an erasure request but ingested after it is erased as it
  arrives and the deletion certificate lists it with `erased_on_arrival: true`; a record
  that was there when the request was carried out is not "erased on arrival";
- for a lawful history the same facts in any arrival order give the same `subject show`
  (the documented exceptions: a late hold or legal-claims restriction, a later request
  arriving first, a late unsubscribe or objection);
- a suppressed address is never accepted for marketing; an exclusion keeps the excluded
  member's address on the block list.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from lifecycle.services.ledger import Ledger
from tests.facts_builder import collected, fact, lines

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def membership(subject: str, at: str, record: str, data: dict[str, Any],
               **extra: Any) -> dict[str, Any]:
    extra.setdefault("basis", "contract")
    extra.setdefault("category", "identity")
    return collected(subject, at, record, data, purpose="membership", **extra)


def arrival_flags(certificate: dict[str, Any]) -> dict[str, bool]:
    return {r["record"]: r["erased_on_arrival"] for r in certificate["erased"]}


def test_a_late_record_is_certified_erased_on_arrival_when_the_request_came_first(
        ledger: Ledger) -> None:
    """An erasure request that arrives before any record of the subject (nothing to erase
    when carried out); a record collected before it arrives later and is erased as it
    arrives: the certificate lists it with `erased_on_arrival: true`."""
    assert ledger.ingest(lines([
        fact("erasure-requested", "member:first", "2024-03-01T09:00:00Z", request="ER-F"),
    ]), NOW).ok
    report = ledger.ingest(lines([
        membership("member:first", "2024-01-01T09:00:00Z", "late", {"name": "Late Lou"}),
    ]), NOW)
    assert report.accepted == 1 and report.erased_keys == 1
    certificate = ledger.certificate("ER-F", "member:first", NOW)
    assert certificate["all_keys_destroyed"]
    assert arrival_flags(certificate) == {"late": True}


def test_a_late_record_is_certified_erased_on_arrival_after_a_request_that_kept_all(
        ledger: Ledger) -> None:
    """The request kept everything it found (legal-obligation data, Art 17(3)(b)); a
    contract record collected before it arrives later and is erased on arrival: the
    certificate says so."""
    assert ledger.ingest(lines([
        membership("member:kept", "2023-12-01T09:00:00Z", "register", {"name": "K"},
                   basis="legal-obligation"),
        fact("erasure-requested", "member:kept", "2024-03-01T09:00:00Z", request="ER-K"),
    ]), NOW).ok
    assert ledger.ingest(lines([
        membership("member:kept", "2024-01-01T09:00:00Z", "late", {"name": "Late K"}),
    ]), NOW).ok
    certificate = ledger.certificate("ER-K", "member:kept", NOW)
    assert [k["record"] for k in certificate["kept"]] == ["register"]
    assert arrival_flags(certificate) == {"late": True}


def test_a_record_freed_by_a_late_release_is_not_certified_as_arriving_late(
        ledger: Ledger) -> None:
    """A record present when the request was carried out, kept under a hold whose release
    (dated before the request) arrives later, is then erased: it did not arrive after the
    request, so the certificate does not mark it `erased_on_arrival` (the certificate of
    the same facts in fact-time order lists it as erased by the request, not on arrival).
    """
    assert ledger.ingest(lines([
        membership("member:held", "2023-01-01T09:00:00Z", "profile", {"name": "H"}),
        collected("member:held", "2023-01-01T09:00:00Z", "enquiry", {"name": "H2"},
                  purpose="events", basis="contract", category="identity"),
        fact("legal-hold-placed", "member:held", "2023-02-01T09:00:00Z", hold="LIT-9",
             scope="membership", reason="claim"),
        fact("erasure-requested", "member:held", "2023-06-01T09:00:00Z", request="ER-H"),
    ]), NOW).ok
    assert arrival_flags(ledger.certificate("ER-H", "member:held", NOW)) == {
        "enquiry": False}
    assert ledger.ingest(lines([fact("legal-hold-released", "member:held",
                                     "2023-03-01T09:00:00Z", hold="LIT-9")]), NOW).ok
    certificate = ledger.certificate("ER-H", "member:held", NOW)
    assert certificate["all_keys_destroyed"]
    assert arrival_flags(certificate) == {"enquiry": False, "profile": False}


def exclusion_facts(tag: str) -> list[dict[str, Any]]:
    """A member excluded, the block-list address kept under legitimate interests after
    the exclusion, then an erasure request: a lawful history."""
    subject = f"member:{tag}"
    return [
        membership(subject, "2023-01-01T09:00:00Z", "profile", {"name": "Xavier"},
                   id=f"{tag}-1"),
        fact("excluded", subject, "2023-02-01T09:00:00Z", reason="code of conduct",
             id=f"{tag}-2"),
        collected(subject, "2023-03-01T09:00:00Z", "blocklist",
                  {"email": f"xavier.{tag}@example.org"}, purpose="membership",
                  basis="legitimate-interests", category="contact", id=f"{tag}-3"),
        fact("erasure-requested", subject, "2023-06-01T09:00:00Z", request=f"ER-{tag}",
             id=f"{tag}-4"),
    ]


def _records_after(ledger: Ledger, order: list[int], tag: str) -> tuple[Any, Any]:
    facts = exclusion_facts(tag)
    for index in order:
        report = ledger.ingest(lines([facts[index]]), NOW)
        assert report.ok, report.as_dict()
    view = ledger.subject_view(f"member:{tag}")
    marketing = ledger.ingest(lines([
        collected(f"crm:{tag}", "2024-01-01T09:00:00Z", "crm-row",
                  {"email": f"Xavier.{tag.upper()}@example.org"}, source="third-party"),
    ]), NOW)
    records = {r["record"]: r["data"] for r in view["records"]}
    if isinstance(records.get("blocklist"), dict):
        records["blocklist"] = "kept"
    return records, marketing.accepted


def test_an_exclusion_keeps_the_block_list_in_time_order_and_a_late_one_cannot_undo_an_erasure(
        ledger: Ledger) -> None:
    """In fact-time order (member excluded, block-list address kept under legitimate
    interests, then an erasure request) the block list is kept (Art 17(1)(c) with Art
    21(1)) and its address stays refused for marketing under another subject. With the
    exclusion recorded after the erasure was carried out (a documented limit, like a late
    hold: an erasure is final) the block list is erased and stays erased, and nothing
    reports it as kept."""
    in_time, accepted_in_time = _records_after(ledger, [0, 1, 2, 3], "intime")
    assert in_time == {"profile": "erased", "blocklist": "kept"}
    assert accepted_in_time == 0
    late, accepted_late = _records_after(ledger, [0, 2, 3, 1], "late")
    assert late == {"profile": "erased", "blocklist": "erased"}
    assert accepted_late == 1
