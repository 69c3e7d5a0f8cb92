"""HQIP's retention promises, enforced by config/hqip.toml through sweeps.

Each test quotes the sentence of the HQIP privacy notice it enforces.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from lifecycle.services.ledger import Ledger
from tests.facts_builder import collected, fact, lines, t

HQIP = Path(__file__).resolve().parents[1] / "config" / "hqip.toml"
ADOPTED = datetime(2023, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
EMAIL = "pat.subscriber@example.org"


@pytest.fixture
def hqip(ledger: Ledger) -> Ledger:
    ledger.adopt_policy(HQIP, ADOPTED)
    return ledger


def subscriber_who_unsubscribes(ledger: Ledger) -> None:
    ledger.ingest(lines([
        collected("subscriber:1", "2023-05-02T09:00:00+01:00", "newsletter-signup",
                  {"email": EMAIL, "first_name": "Pat"}),
        fact("consent-given", "subscriber:1", "2023-05-02T09:00:00+01:00",
             purpose="direct-marketing", method="subscribe-form"),
        fact("unsubscribed", "subscriber:1", "2024-03-10T10:00:00+00:00", channel="email-link"),
    ]), NOW)


def data_of(ledger: Ledger, reference: str, record: str) -> object:
    view = ledger.subject_view(reference)
    return next(r["data"] for r in view["records"] if r["record"] == record)


def test_unsubscribe_suppresses_at_once(hqip: Ledger) -> None:
    """"If you unsubscribe, HQIP will stop sending you marketing emails. Your email address
    will be added to a suppression list to prevent you from being inadvertently
    resubscribed.\""""
    subscriber_who_unsubscribes(hqip)
    view = hqip.subject_view("subscriber:1")
    assert view["suppressed"] is True
    assert view["suppressed_at"] == "2024-03-10T10:00:00+00:00"
    assert [c["in_force"] for c in view["consents"]] == [False]


def test_a_suppressed_email_is_never_resubscribed_inadvertently(hqip: Ledger) -> None:
    """"...added to a suppression list to prevent you from being inadvertently
    resubscribed": marketing data for a suppressed e-mail without fresh consent is refused."""
    subscriber_who_unsubscribes(hqip)
    report = hqip.ingest(lines([
        collected("subscriber:2", "2024-06-01T09:00:00Z", "bought-list",
                  {"email": EMAIL.upper()}, source="third-party"),
    ]), NOW)
    assert report.accepted == 0
    assert "suppression list" in report.rejected[0].reason


def test_the_person_can_resubscribe_themselves(hqip: Ledger) -> None:
    """"You can re-subscribe at any time by completing our Subscribe form": the person's
    own consent lifts the suppression."""
    subscriber_who_unsubscribes(hqip)
    hqip.ingest(lines([fact("consent-given", "subscriber:1", "2024-05-01T09:00:00Z",
                            purpose="direct-marketing", method="subscribe-form")]), NOW)
    assert hqip.subject_view("subscriber:1")["suppressed"] is False


def test_an_email_stays_suppressed_while_anyone_who_gave_it_is(hqip: Ledger) -> None:
    """Two subscribers gave the same address and both unsubscribed; when one re-subscribes,
    the other's suppression still keeps the address on the list; when both have, it is off
    the list."""
    hqip.ingest(lines([
        collected(f"subscriber:{n}", "2023-05-02T09:00:00Z", "newsletter-signup",
                  {"email": EMAIL}) for n in (1, 2)] + [
        fact("consent-given", f"subscriber:{n}", "2023-05-02T09:00:00Z",
             purpose="direct-marketing", method="subscribe-form") for n in (1, 2)]), NOW)
    for n in (1, 2):  # subscriber 2 unsubscribes after subscriber 1, each projected
        hqip.ingest(lines([fact("unsubscribed", f"subscriber:{n}", f"2024-03-1{n}T10:00:00Z",
                                channel="email-link")]), NOW)
        hqip.projections.catch_up()
    hqip.ingest(lines([fact("consent-given", "subscriber:2", "2024-05-01T09:00:00Z",
                            purpose="direct-marketing", method="subscribe-form")]), NOW)
    hqip.projections.catch_up()
    assert hqip.subject_view("subscriber:2")["suppressed"] is False
    report = hqip.ingest(lines([
        collected("subscriber:3", "2024-06-01T09:00:00Z", "bought-list", {"email": EMAIL},
                  source="third-party"),
    ]), NOW)
    assert report.accepted == 0
    assert "suppression list" in report.rejected[0].reason
    assert hqip.suppressed_hashes()

    hqip.ingest(lines([fact("consent-given", "subscriber:1", "2024-07-01T09:00:00Z",
                            purpose="direct-marketing", method="subscribe-form")]), NOW)
    hqip.projections.catch_up()
    assert hqip.suppressed_hashes() == set()
    report = hqip.ingest(lines([
        fact("consent-given", "subscriber:3", "2024-08-01T09:00:00Z",
             purpose="direct-marketing", method="list-import"),
        collected("subscriber:3", "2024-08-01T09:00:00Z", "bought-list", {"email": EMAIL},
                  source="third-party"),
    ]), NOW)
    assert (report.accepted, report.rejected) == (2, [])


def test_marketing_data_is_kept_13_months_then_deleted_at_the_july_review(hqip: Ledger) -> None:
    """"Any marketing data HQIP hold associated to your email address will be kept for 13
    months for the purpose of management reporting. HQIP will review its contact database
    twice a year (January and July) and delete subscriber associated records older than
    13 months.\""""
    subscriber_who_unsubscribes(hqip)
    january = hqip.sweep(t("2025-01-01T00:00:00+00:00"), NOW)
    assert january.erased == []
    assert data_of(hqip, "subscriber:1", "newsletter-signup") == {
        "email": EMAIL, "first_name": "Pat"}
    retention = hqip.subject_view("subscriber:1")["records"][0]["retention"]
    assert retention["due_at"].startswith("2025-04-10")
    assert retention["trigger"] == "unsubscribed"
    july = hqip.sweep(t("2025-07-01T00:00:00+01:00"), NOW)
    assert [(i["subject"], i["record"]) for i in july.erased] == [
        ("subscriber:1", "newsletter-signup")]
    assert data_of(hqip, "subscriber:1", "newsletter-signup") == "erased"
    again = hqip.sweep(t("2025-07-01T00:00:00+01:00"), NOW)
    assert (again.erased, again.reviews, again.paused) == ([], [], [])
    events = [e["event"] for e in hqip.history("subscriber:1")]
    assert events.count("RetentionExpired") == 1


def test_erasure_cites_rule_and_policy_version(hqip: Ledger) -> None:
    """Every retention decision cites its rule id and the policy version in force."""
    subscriber_who_unsubscribes(hqip)
    hqip.sweep(t("2025-07-01T00:00:00+01:00"), NOW)
    expired = [e for e in hqip.history("subscriber:1") if e["event"] == "RetentionExpired"]
    assert expired[0]["policy"].startswith("hqip@")
    assert expired[0]["rule"]
    record = hqip.subject_view("subscriber:1")["records"][0]
    assert expired[0]["rule"] in record["erased_by"]


def test_a_legal_hold_beats_every_rule_and_releases_cleanly(hqip: Ledger) -> None:
    """A record under legal hold is not erased after expiry; after release it is."""
    subscriber_who_unsubscribes(hqip)
    hqip.ingest(lines([fact("legal-hold-placed", "subscriber:1", "2025-03-01T00:00:00Z",
                            hold="LH-1", scope="all", reason="tribunal claim")]), NOW)
    held = hqip.sweep(t("2025-07-01T00:00:00+01:00"), NOW)
    assert held.erased == [] and held.paused[0]["paused_by"] == "legal hold LH-1"
    assert data_of(hqip, "subscriber:1", "newsletter-signup") != "erased"
    hqip.ingest(lines([fact("legal-hold-released", "subscriber:1", "2025-08-01T00:00:00Z",
                            hold="LH-1")]), NOW)
    released = hqip.sweep(t("2025-08-02T00:00:00Z"), NOW)
    assert len(released.erased) == 1


def test_a_restriction_for_legal_claims_pauses_erasure(hqip: Ledger) -> None:
    """A restriction asked for because the person needs the data kept pauses its erasure."""
    subscriber_who_unsubscribes(hqip)
    hqip.ingest(lines([fact("restricted", "subscriber:1", "2025-03-01T00:00:00Z",
                            scope="direct-marketing", reason="legal-claims")]), NOW)
    report = hqip.sweep(t("2025-07-01T00:00:00+01:00"), NOW)
    assert report.erased == [] and "legal-claims" in report.paused[0]["paused_by"]


def test_an_objection_to_direct_marketing_acts_at_once(hqip: Ledger) -> None:
    """"This is an absolute right if we use your data for direct marketing": an objection
    stops marketing at once (consent no longer in force, e-mail suppressed)."""
    hqip.ingest(lines([
        collected("subscriber:3", "2024-01-01T00:00:00Z", "signup", {"email": "o@b.org"}),
        fact("consent-given", "subscriber:3", "2024-01-01T00:00:00Z",
             purpose="direct-marketing"),
        fact("objected", "subscriber:3", "2024-02-01T00:00:00Z", purpose="direct-marketing"),
    ]), NOW)
    view = hqip.subject_view("subscriber:3")
    assert view["suppressed"] is True
    assert view["consents"][0]["in_force"] is False


def test_legal_obligation_data_survives_an_erasure_request(hqip: Ledger) -> None:
    """"the right to erasure does not apply where we have a legal obligation to retain your
    Personal Data": that data stays and the refusal is recorded with the reason."""
    hqip.ingest(lines([
        collected("applicant:1", "2024-01-01T00:00:00Z", "darg-app", {"email": "d@b.org"},
                  purpose="darg-application", basis="contract", category="account"),
        collected("applicant:1", "2024-01-01T00:00:00Z", "pq-file", {"name": "Dee"},
                  purpose="parliamentary-records", basis="legal-obligation",
                  category="identity"),
        fact("erasure-requested", "applicant:1", "2024-05-01T00:00:00Z", request="ER-1"),
    ]), NOW)
    view = hqip.subject_view("applicant:1")
    data = {r["record"]: r["data"] for r in view["records"]}
    assert data == {"darg-app": "erased", "pq-file": {"name": "Dee"}}
    assert view["erasure_refusals"][0]["record"] == "pq-file"
    assert "legal obligation" in view["erasure_refusals"][0]["ground"]


def test_ingest_validates_purposes_against_the_adopted_policy(hqip: Ledger) -> None:
    """Once a policy is adopted, an undeclared purpose, basis or recipient is refused."""
    report = hqip.ingest(lines([
        collected("s:1", "2024-01-01T00:00:00Z", "a", {}, purpose="astrology"),
        collected("s:1", "2024-01-01T00:00:00Z", "b", {}, basis="contract"),
        fact("shared", "s:1", "2024-01-01T00:00:00Z", recipient="Acme Brokers",
             role="controller", purpose="direct-marketing", basis="consent",
             categories=["contact"], country="GB"),
    ]), NOW)
    reasons = [r.reason for r in report.rejected]
    assert reasons[0].startswith("purpose:") and "astrology" in reasons[0]
    assert reasons[1].startswith("basis:")
    assert reasons[2].startswith("recipient:")


def test_policy_adoption_is_versioned_and_idempotent(ledger: Ledger) -> None:
    """Adopting a policy records its version and content hash once; again is a no-op."""
    first, changed = ledger.adopt_policy(HQIP, ADOPTED)
    again, changed_again = ledger.adopt_policy(HQIP, NOW)
    assert changed and not changed_again
    assert first == again and first.number == 1 and len(first.content_hash) == 64


def test_withdrawing_marketing_consent_stops_marketing_and_ends_its_storage(
        hqip: Ledger) -> None:
    """"Any personal data shared with us for marketing purposes will only be processed for
    as long as you wish us to ... until such time that you notify us that you no longer
    wish for us to hold your information": after the direct-marketing consent is withdrawn
    no new marketing record lands (limit consent-required), and what is held is erased by
    the withdrawal's own rule (13 months, at the July review), not kept on."""
    assert hqip.ingest(lines([
        fact("consent-given", "subscriber:2", "2023-05-02T09:00:00+01:00",
             purpose="direct-marketing", method="subscribe-form"),
        collected("subscriber:2", "2023-05-02T09:00:00+01:00", "newsletter-signup",
                  {"email": "kim.subscriber@example.org"}),
        fact("consent-withdrawn", "subscriber:2", "2024-03-10T10:00:00+00:00",
             purpose="direct-marketing", method="email-to-dpo"),
    ]), NOW).ok
    late = hqip.ingest(lines([collected("subscriber:2", "2024-03-11T10:00:00+00:00",
                                        "newsletter-2", {"email": "kim@example.org"})]), NOW)
    assert late.accepted == 0 and "limit consent-required" in late.rejected[0].reason
    retention = hqip.subject_view("subscriber:2")["records"][0]["retention"]
    assert retention["trigger"] == "consent-withdrawn"
    assert retention["due_at"].startswith("2025-04-10")
    assert hqip.sweep(t("2025-01-01T00:00:00+00:00"), NOW).erased == []
    july = hqip.sweep(t("2025-07-01T00:00:00+01:00"), NOW)
    assert [(i["record"], i["rule"]) for i in july.erased] == [
        ("newsletter-signup", "marketing-13m-after-consent-withdrawn")]
    assert data_of(hqip, "subscriber:2", "newsletter-signup") == "erased"
