"""IHPA's promises, enforced by config/ihpa.toml through ingest, erasure and sweeps.

Each test quotes the sentence of the IHPA privacy notice it enforces.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from lifecycle.services.ledger import Ledger
from tests.facts_builder import collected, fact, lines, t

IHPA = Path(__file__).resolve().parents[1] / "config" / "ihpa.toml"
ADOPTED = datetime(2019, 3, 7, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
EMAIL = "sam.member@example.net"


@pytest.fixture
def ihpa(ledger: Ledger) -> Ledger:
    ledger.adopt_policy(IHPA, ADOPTED)
    return ledger


def data(ledger: Ledger, reference: str) -> dict[str, object]:
    return {r["record"]: r["data"] for r in ledger.subject_view(reference)["records"]}


def member(ledger: Ledger, reference: str = "member:1") -> None:
    report = ledger.ingest(lines([
        collected(reference, "2020-01-10T10:00:00Z", "profile",
                  {"name": "Sam Member", "email": EMAIL}, purpose="membership",
                  basis="contract", category="account"),
        collected(reference, "2020-01-10T10:00:00Z", "registration",
                  {"body": "HCPC", "number": "PA12345"}, purpose="identity-verification",
                  basis="legal-obligation", category="identity"),
        fact("consent-given", reference, "2020-01-10T10:00:00Z", purpose="forum"),
        collected(reference, "2020-02-01T10:00:00Z", "forum-posts",
                  {"posts": ["hello all"]}, purpose="forum", basis="consent",
                  category="content"),
        collected(reference, "2020-02-01T10:00:00Z", "newsletter", {"email": EMAIL},
                  purpose="direct-marketing", basis="consent", category="contact"),
        fact("consent-given", reference, "2020-02-01T10:00:00Z", purpose="direct-marketing"),
    ]), NOW)
    assert report.rejected == []


def test_unsubscribing_from_emails_erases_marketing_data_within_a_month(ihpa: Ledger) -> None:
    """"You can unsubscribe from any of the emails at any time": marketing data goes one
    month after the unsubscribe, the suppression stays, the membership data stays."""
    member(ihpa)
    ihpa.ingest(lines([fact("unsubscribed", "member:1", "2024-05-20T08:00:00Z")]), NOW)
    assert ihpa.subject_view("member:1")["suppressed"] is True
    assert ihpa.sweep(t("2024-06-19T00:00:00Z"), NOW).erased == []
    report = ihpa.sweep(t("2024-06-20T08:00:00Z"), NOW)
    assert [i["rule"] for i in report.erased] == ["marketing-1m-after-unsubscribe"]
    held = data(ihpa, "member:1")
    assert held["newsletter"] == "erased" and held["profile"] != "erased"


def test_withdrawing_forum_consent_erases_the_posts_at_the_next_sweep(ihpa: Ledger) -> None:
    """"Where we rely on your permission to process your personal information, you have a
    right to withdraw your consent at any time": forum content goes at the next sweep."""
    member(ihpa)
    ihpa.ingest(lines([fact("consent-withdrawn", "member:1", "2024-05-20T08:00:00Z",
                            purpose="forum")]), NOW)
    report = ihpa.sweep(t("2024-05-20T09:00:00Z"), NOW)
    assert [(i["record"], i["rule"]) for i in report.erased] == [
        ("forum-posts", "forum-on-consent-withdrawn")]


def test_membership_data_goes_six_years_after_the_membership_ends(ihpa: Ledger) -> None:
    """"We do this at the start of, and for the duration of, your relationship with us":
    membership data is kept six years after the relationship ends, then erased at the
    next quarterly review; identity data required by law is flagged for review instead."""
    member(ihpa)
    ihpa.ingest(lines([fact("relationship-ended", "member:1", "2020-05-15T12:00:00+01:00",
                            reason="did not renew")]), NOW)
    retention = {r["record"]: r["retention"] for r in ihpa.subject_view("member:1")["records"]}
    assert retention["profile"]["due_at"].startswith("2026-05-15")
    # 1 July 00:00 in London (BST), stored in UTC.
    assert retention["profile"]["dispose_at"] == "2026-06-30T23:00:00+00:00"
    early_at, review = t("2026-06-30T00:00:00Z"), t("2026-07-01T00:00:00+01:00")
    early = ihpa.sweep(early_at, early_at)  # a sweep never runs ahead of its now
    assert "profile" not in [i["record"] for i in early.erased]
    assert [i["record"] for i in early.reviews] == ["registration"]  # due 15 May, no window
    report = ihpa.sweep(review, review)
    assert "profile" in [i["record"] for i in report.erased]
    assert report.reviews == []  # a review is flagged once per due date
    held = data(ihpa, "member:1")
    assert held["profile"] == "erased" and held["registration"] != "erased"


def test_an_erasure_request_keeps_what_the_law_requires(ihpa: Ledger) -> None:
    """"You have a right to request that we delete your personal information": all goes
    but the identity data the law makes us keep; that refusal is recorded with its ground."""
    member(ihpa)
    ihpa.ingest(lines([fact("erasure-requested", "member:1", "2024-01-01T00:00:00Z",
                            request="DEL-1")]), NOW)
    held = data(ihpa, "member:1")
    assert held == {"profile": "erased", "registration": {"body": "HCPC", "number": "PA12345"},
                    "forum-posts": "erased", "newsletter": "erased"}
    refusals = ihpa.subject_view("member:1")["erasure_refusals"]
    assert [(r["record"], r["request"]) for r in refusals] == [("registration", "DEL-1")]
    assert refusals[0]["ground"].startswith("Art 17(3)(b)")


def test_an_excluded_members_email_stays_on_the_blocklist(ihpa: Ledger) -> None:
    """"An example is retaining the email address, on a blacklist, of former members who
    for whatever reason we have had to exclude from accessing our membership forum": the
    blocklist entry survives the member's erasure request (overriding legitimate grounds),
    and the suppression keeps only a keyed hash."""
    member(ihpa)
    report = ihpa.ingest(lines([
        fact("excluded", "member:1", "2023-03-01T00:00:00Z", reason="conduct panel"),
        collected("member:1", "2023-03-01T00:00:00Z", "blocklist", {"email": EMAIL},
                  purpose="member-blocklist", basis="legitimate-interests"),
        fact("relationship-ended", "member:1", "2023-03-01T00:00:00Z"),
        fact("erasure-requested", "member:1", "2023-04-01T00:00:00Z", request="DEL-2"),
    ]), NOW)
    assert report.rejected == []
    view = ihpa.subject_view("member:1")
    held = {r["record"]: r["data"] for r in view["records"]}
    assert held["blocklist"] == {"email": EMAIL} and held["profile"] == "erased"
    grounds = {r["record"]: r["ground"] for r in view["erasure_refusals"]}
    assert "overriding legitimate grounds" in grounds["blocklist"]
    assert view["suppressed"] is True
    retention = {r["record"]: r["retention"] for r in view["records"]}
    assert retention["blocklist"]["action"] == "review"
    assert retention["blocklist"]["rule"] == "blocklist-review-5y"


def test_a_restriction_to_defend_legal_claims_pauses_the_erasure(ihpa: Ledger) -> None:
    """"You require the information to establish, exercise or defend legal claims": a
    restriction for legal claims pauses the disposal that falls due, until it is lifted."""
    member(ihpa)
    ihpa.ingest(lines([
        fact("unsubscribed", "member:1", "2024-05-20T08:00:00Z"),
        fact("restricted", "member:1", "2024-05-25T08:00:00Z", scope="all",
             reason="legal-claims"),
    ]), NOW)
    paused = ihpa.sweep(t("2024-07-01T00:00:00Z"), NOW)
    assert paused.erased == [] and paused.paused[0]["record"] == "newsletter"
    ihpa.ingest(lines([fact("restriction-lifted", "member:1", "2024-08-01T00:00:00Z",
                            scope="all")]), NOW)
    assert [i["record"] for i in ihpa.sweep(t("2024-08-02T00:00:00Z"), NOW).erased] == [
        "newsletter"]


def test_sharing_outside_the_uk_names_the_declared_safeguard(ihpa: Ledger) -> None:
    """"MailChimp and Mailgun for newsletter email services": a share must name a declared
    recipient with its declared role and country; US shares carry their safeguard."""
    member(ihpa)
    report = ihpa.ingest(lines([
        fact("shared", "member:1", "2024-01-01T00:00:00Z", recipient="Mailchimp",
             role="processor", purpose="direct-marketing", basis="consent",
             records=["newsletter"], country="US",
             safeguard="UK International Data Transfer Addendum"),
        fact("shared", "member:1", "2024-01-01T00:00:00Z", recipient="Mailchimp",
             role="processor", purpose="direct-marketing", basis="consent",
             records=["newsletter"], country="GB"),
    ]), NOW)
    assert report.accepted == 1
    assert report.rejected[0].reason.startswith("recipient:")
    share = ihpa.subject_view("member:1")["recipients"][0]
    assert (share["recipient"], share["country"]) == ("Mailchimp", "US")


@pytest.mark.parametrize("reason", ["contested-accuracy", "legal-claims",
                                    "unlawful-processing"])
def test_a_restriction_on_each_ground_the_notice_names_pauses_the_erasure(
        ihpa: Ledger, reason: str) -> None:
    """"You may request us to restrict processing your personal information if you believe
    that: any of the information that we hold about you is inaccurate; ... you require the
    information to establish, exercise or defend legal claims; or we are not using your
    information in a lawful manner": on each ground the forum posts a withdrawal of consent
    made due are not erased while the restriction is in force, and go once it is lifted."""
    member(ihpa)
    ihpa.ingest(lines([
        fact("restricted", "member:1", "2024-05-19T08:00:00Z", scope="forum", reason=reason),
        fact("consent-withdrawn", "member:1", "2024-05-20T08:00:00Z", purpose="forum"),
    ]), NOW)
    paused = ihpa.sweep(t("2024-05-20T09:00:00Z"), NOW)
    assert paused.erased == []
    assert [(p["record"], p["paused_by"]) for p in paused.paused] == [
        ("forum-posts", f"restriction ({reason})")]
    assert data(ihpa, "member:1")["forum-posts"] == {"posts": ["hello all"]}
    ihpa.ingest(lines([fact("restriction-lifted", "member:1", "2024-06-01T00:00:00Z",
                            scope="forum")]), NOW)
    assert [i["record"] for i in ihpa.sweep(t("2024-06-01T01:00:00Z"), NOW).erased] == [
        "forum-posts"]


def test_cookie_data_needs_a_consent_in_force(ihpa: Ledger) -> None:
    """"IHPA and our third-party partners ... use cookies and other tracking technologies":
    online-analytics data rests on consent alone, so a record of it with no consent in
    force at its time is rejected (limit consent-required), one after the cookie consent
    lands, and none after the consent is withdrawn."""
    who = "visitor:cookies"

    def analytics(at: str, record: str) -> list[str]:
        return lines([collected(who, at, record, {"client_id": "GA1.2.3"},
                                purpose="online-analytics", category="online")])

    before = ihpa.ingest(analytics("2024-03-01T09:00:00Z", "ga-before"), NOW)
    assert before.accepted == 0 and "limit consent-required" in before.rejected[0].reason
    assert ihpa.ingest(lines([fact("consent-given", who, "2024-03-02T09:00:00Z",
                                   purpose="online-analytics", method="cookie-banner")]),
                       NOW).ok
    assert ihpa.ingest(analytics("2024-03-03T09:00:00Z", "ga"), NOW).accepted == 1
    assert ihpa.ingest(lines([fact("consent-withdrawn", who, "2024-04-01T09:00:00Z",
                                   purpose="online-analytics")]), NOW).ok
    after = ihpa.ingest(analytics("2024-04-02T09:00:00Z", "ga-after"), NOW)
    assert after.accepted == 0 and "withdrawn at 2024-04-01" in after.rejected[0].reason
    assert [r["record"] for r in ihpa.subject_view(who)["records"]] == ["ga"]
