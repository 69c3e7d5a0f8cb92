"""Attack 9: the suppression list across runs and across subjects.

Rules (README "Suppressed means suppressed", docs/guarantees.md "Processing limits and
arrival order"): the same facts give the same result in any order and however they are
split into runs or processes; the suppression list is checked "as it stands" (a listing
the listing subject's own opt-in has lifted no longer counts); a suppressed address is
never accepted for marketing, under any subject.
"""

from __future__ import annotations

from typing import Any


from lifecycle.services.ledger import Ledger
from tests.facts_builder import collected, fact, lines

from tests.suppression_setup import NOW, hqip  # noqa: F401 - hqip is a fixture


def unsubscribe_then_own_opt_in(tag: str) -> list[dict[str, Any]]:
    """Alice subscribes, unsubscribes, then re-subscribes by her own opt-in (the
    Subscribe form): her listing is lifted."""
    alice = f"s:alice-{tag}"
    return [
        collected(alice, "2023-05-02T09:00:00Z", "newsletter",
                  {"email": f"alice.{tag}@example.org"}, id=f"{tag}-1"),
        fact("consent-given", alice, "2023-05-02T09:00:00Z", purpose="direct-marketing",
             method="subscribe-form", id=f"{tag}-2"),
        fact("unsubscribed", alice, "2024-03-10T10:00:00Z", id=f"{tag}-3"),
        fact("consent-given", alice, "2024-08-01T10:00:00Z", purpose="direct-marketing",
             method="subscribe-form", id=f"{tag}-4"),
    ]


def crm_import_after_the_opt_in(tag: str) -> list[dict[str, Any]]:
    """Another subject's CRM marketing row with Alice's address, dated after her own
    opt-in lifted her listing: lawful in fact time."""
    crm = f"crm:b-{tag}"
    return [
        fact("consent-given", crm, "2024-09-01T00:00:00Z", purpose="direct-marketing",
             method="crm-import", id=f"{tag}-5"),
        collected(crm, "2024-09-01T09:00:00Z", "crm-row",
                  {"email": f"Alice.{tag}@example.org"}, source="third-party", id=f"{tag}-6"),
    ]


def test_a_lifted_listing_decides_the_same_in_one_run_as_in_two(hqip: Ledger) -> None:
    """The same facts ingested as one file, or as two files (Alice's history, then the
    CRM import), decide the CRM row the same way: here, with Alice's listing lifted by her
    own opt-in before the row's time, the row lands either way (the list as it stands)."""
    one = hqip.ingest(lines(unsubscribe_then_own_opt_in("one")
                            + crm_import_after_the_opt_in("one")), NOW)
    first = hqip.ingest(lines(unsubscribe_then_own_opt_in("two")), NOW)
    second = hqip.ingest(lines(crm_import_after_the_opt_in("two")), NOW)
    assert first.ok and second.ok, (first.as_dict(), second.as_dict())
    assert (one.accepted, len(one.rejected)) == (6, 0), one.as_dict()


def test_a_listed_address_is_not_marketed_to_through_another_subjects_record(
        hqip: Ledger) -> None:
    """Subject B's CRM row holds Alice's address (collected before Alice unsubscribed, so
    it was kept). After Alice's unsubscribe puts the address on the list, a marketing
    e-mail to it (an `activity` on B's direct-marketing row) and a direct-marketing share
    of the row to the mailing house are marketing of a suppressed address: refused as
    the same facts are for Alice's own records, or at least listed under B's
    `limit_breaches` (limit direct-marketing-stopped)."""
    assert hqip.ingest(lines([
        collected("s:alice", "2023-05-02T09:00:00Z", "newsletter",
                  {"email": "alice.smith@example.org"}),
        fact("consent-given", "s:alice", "2023-05-02T09:00:00Z", purpose="direct-marketing",
             method="subscribe-form"),
        fact("consent-given", "crm:c", "2023-06-01T00:00:00Z", purpose="direct-marketing",
             method="crm-import"),
        collected("crm:c", "2023-06-01T09:00:00Z", "crm-row",
                  {"email": "Alice.Smith@Example.org"}, source="third-party"),
        fact("unsubscribed", "s:alice", "2024-03-10T10:00:00Z"),
    ]), NOW).ok
    report = hqip.ingest(lines([
        fact("activity", "crm:c", "2024-05-01T09:00:00Z", record="crm-row"),
        fact("shared", "crm:c", "2024-05-02T09:00:00Z", recipient="Clarity Marketing",
             role="processor", purpose="direct-marketing", basis="consent",
             records=["crm-row"], country="GB"),
    ]), NOW)
    flagged = {b["fact"] for b in hqip.subject_view("crm:c")["limit_breaches"]}
    refused = {r.line for r in report.rejected}
    assert refused | {{"activity": 1, "shared": 2}[f] for f in flagged} == {1, 2}


def test_a_stored_listing_lifted_in_a_run_stops_counting_in_that_run(hqip: Ledger) -> None:
    """A listing the store holds, lifted by the person's own opt-in in a later run, no
    longer counts for the rest of that run: the CRM row dated after the opt-in lands in
    the run that carries the opt-in as it does in a run after it. A row in that run dated
    while the listing stood (before the opt-in, in fact-time order) is still refused."""
    history = unsubscribe_then_own_opt_in("st")
    assert hqip.ingest(lines(history[:3]), NOW).ok  # stored: Alice listed
    crm = crm_import_after_the_opt_in("st")
    report = hqip.ingest(lines([history[3], *crm]), NOW)
    assert (report.accepted, len(report.rejected)) == (3, 0), report.as_dict()

    history = unsubscribe_then_own_opt_in("st2")
    assert hqip.ingest(lines(history[:3]), NOW).ok
    early = fact("consent-given", "crm:early", "2024-05-01T00:00:00Z",
                 purpose="direct-marketing", method="crm-import", id="st2-e1")
    row = collected("crm:early", "2024-05-01T09:00:00Z", "crm-row",
                    {"email": "alice.st2@example.org"}, source="third-party", id="st2-e2")
    report = hqip.ingest(lines([history[3], early, row]), NOW)
    assert [r.line for r in report.rejected] == [3], report.as_dict()


def test_uses_of_another_subjects_record_are_flagged_only_from_the_listing_on(
        hqip: Ledger) -> None:
    """B's marketing e-mails to the address on its record (activities) are flagged only
    from the time another subject's unsubscribe listed the address, and not once B's own
    opt-in is in force; the entry names the record, never the address or the other
    subject."""
    assert hqip.ingest(lines([
        collected("s:alice2", "2023-05-02T09:00:00Z", "newsletter",
                  {"email": "alice.two@example.org"}),
        fact("consent-given", "s:alice2", "2023-05-02T09:00:00Z",
             purpose="direct-marketing", method="subscribe-form"),
        fact("consent-given", "crm:d", "2023-06-01T00:00:00Z", purpose="direct-marketing",
             method="crm-import"),
        collected("crm:d", "2023-06-01T09:00:00Z", "crm-row",
                  {"contact": "Alice Two <ALICE.TWO@example.org>"}, source="third-party"),
        fact("activity", "crm:d", "2024-01-01T09:00:00Z", record="crm-row"),
        fact("unsubscribed", "s:alice2", "2024-03-10T10:00:00Z"),
        fact("activity", "crm:d", "2024-04-01T09:00:00Z", record="crm-row"),
        fact("consent-given", "crm:d", "2024-05-01T00:00:00Z", purpose="direct-marketing",
             method="subscribe-form"),
        fact("activity", "crm:d", "2024-06-01T09:00:00Z", record="crm-row"),
    ]), NOW).ok
    breaches = hqip.subject_view("crm:d")["limit_breaches"]
    assert [(b["fact"], b["at"][:10], b["record"]) for b in breaches] == [
        ("activity", "2024-04-01", "crm-row")]
    assert "alice" not in str(breaches).lower()


def test_a_cross_subject_entry_gives_the_listing_day_not_the_other_subjects_time(
        hqip: Ledger) -> None:
    """B's limit_breaches entry says since which day the address is listed, not the time
    of the other subject's unsubscribe (a fact of that other person)."""
    assert hqip.ingest(lines([
        collected("s:alice3", "2023-05-02T09:00:00Z", "newsletter",
                  {"email": "alice.three@example.org"}),
        fact("consent-given", "s:alice3", "2023-05-02T09:00:00Z",
             purpose="direct-marketing", method="subscribe-form"),
        fact("consent-given", "crm:e", "2023-06-01T00:00:00Z", purpose="direct-marketing",
             method="crm-import"),
        collected("crm:e", "2023-06-01T09:00:00Z", "crm-row",
                  {"email": "alice.three@example.org"}, source="third-party"),
        fact("unsubscribed", "s:alice3", "2024-03-10T10:17:42Z"),
        fact("activity", "crm:e", "2024-04-01T09:00:00Z", record="crm-row"),
    ]), NOW).ok
    [entry] = hqip.subject_view("crm:e")["limit_breaches"]
    assert "since 2024-03-10 " in entry["limit"] and "10:17" not in entry["limit"]
