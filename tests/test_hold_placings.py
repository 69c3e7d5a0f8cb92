"""Legal holds by placing: each placing of a hold id counts on its own, a release ends
the placings of its id in force at its time, and a sweep at a past time never destroys
what a hold in force as it runs protects (docs/guarantees.md, "Fact time, not arrival
order")."""

from __future__ import annotations

from typing import Any

from lifecycle.services.ledger import Ledger
from tests.facts_builder import fact, lines
from tests.test_attack18a_late_facts import NOW, adopt, analytics, at, enquiry, ingest, records


def test_a_sweep_at_a_past_time_pauses_a_record_a_hold_in_force_now_protects(
        ledger: Ledger) -> None:
    """A hold placed on 1 Jan 2025 and in force as the sweep runs: a sweep at 1 Jun 2024
    (before the placing) pauses the record due 1 Mar 2024, citing the hold, and destroys
    nothing; after the release a sweep at the same time erases it."""
    adopt(ledger)
    who = "v:held-now"
    ingest(ledger, *analytics(who, "HN"),
           fact("legal-hold-placed", who, "2025-01-01T00:00:00Z", hold="LIT", scope="all",
                reason="claim"))
    report = ledger.sweep(at("2024-06-01T00:00:00+00:00"), NOW)
    assert report.erased == []
    assert [(i["record"], i["paused_by"]) for i in report.paused] == [("ga", "legal hold LIT")]
    assert records(ledger.subject_view(who)) == {"ga": {"client_id": "ZqHNGAQv"}}
    ingest(ledger, fact("legal-hold-released", who, "2025-02-01T00:00:00Z", hold="LIT"))
    later = ledger.sweep(at("2024-06-01T00:00:00+00:00"), NOW)
    assert [i["record"] for i in later.erased] == ["ga"]
    assert records(ledger.subject_view(who)) == {"ga": "erased"}


def test_a_release_ends_every_placing_of_its_id_in_force_then(ledger: Ledger) -> None:
    """Hold H placed on enquiries (1 Feb) and again on all purposes (1 Apr), released
    1 May: both placings end on 1 May, so an erasure request of 1 Jun erases the enquiry
    and both hold reasons; one of 15 Apr (both placings in force) keeps the enquiry."""
    adopt(ledger)
    for who, request_at, kept in (("m:rel-after", "2023-06-01T00:00:00Z", False),
                                  ("m:rel-before", "2023-04-15T00:00:00Z", True)):
        ingest(ledger,
               enquiry(who, "2023-01-01T00:00:00Z", "enq", {"name": f"Zq{who}Qv"}),
               fact("legal-hold-placed", who, "2023-02-01T00:00:00Z", hold="H",
                    scope="enquiries-complaints", reason="claim"),
               fact("legal-hold-placed", who, "2023-04-01T00:00:00Z", hold="H", scope="all",
                    reason="claim widened"),
               fact("legal-hold-released", who, "2023-05-01T00:00:00Z", hold="H"),
               fact("erasure-requested", who, request_at, request=f"ER-{who}"))
        view = ledger.subject_view(who)
        assert [(h["scope"], h["released_at"]) for h in view["holds"]] == [
            ("enquiries-complaints", "2023-05-01T00:00:00+00:00"),
            ("all", "2023-05-01T00:00:00+00:00")]
        if kept:
            assert records(view) == {"enq": {"name": f"Zq{who}Qv"}}
            assert [h["reason"] for h in view["holds"]] == ["claim", "claim widened"]
        else:
            assert records(view) == {"enq": "erased"}
            assert [h["reason"] for h in view["holds"]] == ["erased", "erased"]


def test_a_release_when_no_placing_of_its_id_is_in_force_is_rejected(ledger: Ledger) -> None:
    """A release dated after the hold's earlier release (and before any new placing) is
    rejected with the reason, as in fact-time order; the hold's state is unchanged."""
    adopt(ledger)
    who = "m:rel-twice"
    ingest(ledger,
           enquiry(who, "2023-01-01T00:00:00Z", "enq", {"name": "ZqTwiceQv"}),
           fact("legal-hold-placed", who, "2023-02-01T00:00:00Z", hold="H", scope="all",
                reason="claim"),
           fact("legal-hold-released", who, "2023-03-01T00:00:00Z", hold="H"))
    report: Any = ledger.ingest(lines([fact("legal-hold-released", who,
                                            "2023-04-01T00:00:00Z", hold="H")]), NOW)
    assert report.accepted == 0
    assert ["no legal hold 'H' in force" in r.reason for r in report.rejected] == [True]
    assert [h["released_at"] for h in ledger.subject_view(who)["holds"]] == [
        "2023-03-01T00:00:00+00:00"]
