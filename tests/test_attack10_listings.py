"""Attack 10: the suppression list's listings with their intervals (commit 52d793a).

Rules (docs/policy.md "[suppression]": "only a direct-marketing consent given by one of
[resubscribe_methods] lifts suppression"; "The list is read as it stood at the fact's
time"; docs/guarantees.md "Suppression": an unsubscribe, objection or exclusion "lists the
addresses the subject's records held at its time, and every address the subject's records
hold while the subject is suppressed"; "Processing limits and arrival order": for a
history that breaks a limit the outcome depends on order in one way only: arriving after
the limit, the forbidden fact is rejected; arriving before it, it is kept and listed in
`limit_breaches`).
"""

from __future__ import annotations

from typing import Any

import pytest

from lifecycle.services.ledger import Ledger
from tests.facts_builder import collected, fact, lines, t
from tests.suppression_setup import NOW, hqip  # noqa: F401 - hqip is a fixture

X = "xavier.listed@example.org"
Y = "yolanda.later@example.org"


def alice_subscribed(address: str = X) -> list[dict[str, Any]]:
    return [
        collected("s:alice", "2023-05-01T00:00:00Z", "newsletter", {"email": address},
                  id="a-1"),
        fact("consent-given", "s:alice", "2023-05-01T00:00:00Z",
             purpose="direct-marketing", method="subscribe-form", id="a-2"),
    ]


def crm_row(subject: str, at: str, address: str = X) -> list[dict[str, Any]]:
    """Another subject's CRM import of marketing data (not its own opt-in)."""
    return [
        fact("consent-given", subject, "2023-01-02T00:00:00Z", purpose="direct-marketing",
             method="crm-import", id=f"{subject}-consent"),
        collected(subject, at, "crm-row", {"email": address}, source="third-party",
                  id=f"{subject}-row"),
    ]


def refused_or_flagged(ledger: Ledger, report: Any, subject: str) -> bool:
    flagged = [b for b in ledger.subject_view(subject)["limit_breaches"]
               if b["fact"] == "collected"]
    return bool(report.rejected) or bool(flagged)


# -- breaks -----------------------------------------------------------------------------


def test_a_crm_import_consent_that_arrived_first_does_not_lift_the_listing(
        hqip: Ledger) -> None:
    """Only the person's own opt-in lifts a listing. Alice unsubscribes on 1 March 2024;
    a CRM re-import gives her a direct-marketing consent (method crm-import) on 1 April.
    Arriving after the unsubscribe, the consent is refused and the address stays listed;
    arriving before it, the consent is kept (it is flagged or not, but it is no opt-in of
    hers), and the address must still be listed after 1 April: another subject's CRM row
    with it dated 1 May is refused or flagged in either order."""
    outcomes = {}
    for tag, order in (("one", "unsubscribe first"), ("two", "consent first")):
        alice, address = f"s:alice-{tag}", f"xavier.{tag}@example.org"
        assert hqip.ingest(lines([
            collected(alice, "2023-05-01T00:00:00Z", "newsletter", {"email": address},
                      id=f"{tag}-1"),
            fact("consent-given", alice, "2023-05-01T00:00:00Z",
                 purpose="direct-marketing", method="subscribe-form", id=f"{tag}-2"),
        ]), NOW).ok
        unsubscribe = fact("unsubscribed", alice, "2024-03-01T00:00:00Z", id=f"{tag}-3")
        reimport = fact("consent-given", alice, "2024-04-01T00:00:00Z",
                        purpose="direct-marketing", method="crm-import", id=f"{tag}-4")
        for one in ([unsubscribe, reimport] if order == "unsubscribe first"
                    else [reimport, unsubscribe]):
            hqip.ingest(lines([one]), NOW)
        report = hqip.ingest(lines(crm_row(f"crm:{tag}", "2024-05-01T00:00:00Z", address)),
                             NOW)
        outcomes[order] = refused_or_flagged(hqip, report, f"crm:{tag}")
        listings = hqip.store.get_subject(alice).suppression_listings
        assert listings == [(t("2024-03-01T00:00:00+00:00"), None)], (order, listings)
    assert outcomes == {"unsubscribe first": True, "consent first": True}


def test_a_late_relisting_is_not_ended_by_a_crm_import_consent(hqip: Ledger) -> None:
    """Alice unsubscribes (1 March), opts in again herself (1 April); a CRM re-import
    consent for her is dated 1 June (lawful as far as the ledger knows: she is not
    listed). Then her unsubscribe of 1 May arrives late. From 1 May her address is listed
    again, and only her own opt-in lifts that: a CRM row of another subject dated 1 July
    is refused (or at the least flagged)."""
    assert hqip.ingest(lines([
        *alice_subscribed(),
        fact("unsubscribed", "s:alice", "2024-03-01T00:00:00Z", id="a-3"),
        fact("consent-given", "s:alice", "2024-04-01T00:00:00Z", purpose="direct-marketing",
             method="subscribe-form", id="a-4"),
    ]), NOW).ok
    assert hqip.ingest(lines([fact("consent-given", "s:alice", "2024-06-01T00:00:00Z",
                                   purpose="direct-marketing", method="crm-import",
                                   id="a-5")]), NOW).ok
    assert hqip.ingest(lines([fact("unsubscribed", "s:alice", "2024-05-01T00:00:00Z",
                                   id="a-6")]), NOW).ok
    report = hqip.ingest(lines(crm_row("crm:b", "2024-07-01T00:00:00Z")), NOW)
    assert refused_or_flagged(hqip, report, "crm:b"), report.as_dict()


def test_an_address_held_only_after_a_lifted_listing_is_not_listed_before(
        hqip: Ledger) -> None:
    """An address is listed from the listing fact that put it there. Alice unsubscribes
    with X (1 January 2024), opts in herself (1 February), gives a new address Y
    (1 June) and unsubscribes again (1 September): Y is listed from 1 September only.
    A CRM row holding Y dated 15 January (when nobody listed Y) is accepted and not
    flagged, whichever arrives first."""
    alice = [
        *alice_subscribed(),
        fact("unsubscribed", "s:alice", "2024-01-01T00:00:00Z", id="a-3"),
        fact("consent-given", "s:alice", "2024-02-01T00:00:00Z", purpose="direct-marketing",
             method="subscribe-form", id="a-4"),
        collected("s:alice", "2024-06-01T00:00:00Z", "newsletter-2", {"email": Y}, id="a-5"),
        fact("unsubscribed", "s:alice", "2024-09-01T00:00:00Z", id="a-6"),
    ]
    assert hqip.ingest(lines(alice), NOW).ok
    after = hqip.ingest(lines(crm_row("crm:after", "2024-01-15T00:00:00Z", Y)), NOW)
    before = hqip.ingest(lines(crm_row("crm:before", "2023-12-15T00:00:00Z", Y)), NOW)
    assert before.ok and not refused_or_flagged(hqip, before, "crm:before")  # holds
    assert after.ok, after.as_dict()
    assert not refused_or_flagged(hqip, after, "crm:after")


def test_a_crm_import_consent_kept_before_the_listing_is_flagged(hqip: Ledger) -> None:
    """Bob's enquiry record (1 June 2023) holds X. Alice, who also holds X, unsubscribes
    on 1 March 2024. A direct-marketing consent-given for Bob by crm-import dated 1 May
    2024 is refused when the unsubscribe came first; arriving before it, it is kept and
    must be listed in Bob's `limit_breaches`."""
    bob = [collected("s:bob", "2023-06-01T00:00:00Z", "enquiry", {"email": X},
                     purpose="enquiries-complaints", basis="legitimate-interests",
                     id="b-1")]
    consent = fact("consent-given", "s:bob", "2024-05-01T00:00:00Z",
                   purpose="direct-marketing", method="crm-import", id="b-2")
    assert hqip.ingest(lines([*alice_subscribed(), *bob]), NOW).ok
    assert hqip.ingest(lines([consent]), NOW).ok  # before the listing: kept
    assert hqip.ingest(lines([fact("unsubscribed", "s:alice", "2024-03-01T00:00:00Z",
                                   id="a-3")]), NOW).ok
    breaches = hqip.subject_view("s:bob")["limit_breaches"]
    assert [b["fact"] for b in breaches] == ["consent-given"], breaches


def test_an_unsubscribe_and_a_crm_import_consent_at_one_instant_in_one_file(
        hqip: Ledger) -> None:
    """Only the person's own opt-in lifts a listing. One file holds Alice's unsubscribe
    and a CRM-import direct-marketing consent for her, both dated 1 March 2024 (the
    consent's fact id sorting after the unsubscribe's). Sent in two runs, unsubscribe
    first, the consent is refused and the address is listed from 1 March; in one file
    the address must be listed from 1 March too, so another subject's CRM row dated
    1 May is refused."""
    assert hqip.ingest(lines(alice_subscribed()), NOW).ok
    assert hqip.ingest(lines([
        fact("unsubscribed", "s:alice", "2024-03-01T00:00:00Z", id="a-3"),
        fact("consent-given", "s:alice", "2024-03-01T00:00:00Z", purpose="direct-marketing",
             method="crm-import", id="a-4"),
    ]), NOW).accepted >= 1
    listings = hqip.store.get_subject("s:alice").suppression_listings
    report = hqip.ingest(lines(crm_row("crm:b", "2024-05-01T00:00:00Z")), NOW)
    assert listings == [(t("2024-03-01T00:00:00+00:00"), None)], listings
    assert refused_or_flagged(hqip, report, "crm:b"), report.as_dict()
