"""Processing limits enforced at ingest, on both notices (config/hqip.toml, ihpa.toml).

Each limit rejects the fact with a reason naming it (lifecycle.domain.limits): no direct
marketing after an unsubscribe or a marketing objection; nothing new on consent without a
consent in force at the fact's time; no share or new collection inside a restriction
without an Art 18(2) exception; shares only to recipients declared for their purpose.
A limit that arrives after a later-dated fact it bars flags that fact on the subject.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lifecycle.services.ingest import IngestReport
from lifecycle.services.ledger import Ledger
from tests.facts_builder import collected, fact, lines

CONFIG = Path(__file__).resolve().parents[1] / "config"
ADOPTED = datetime(2019, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
WHO = "person:limits"


@dataclass(frozen=True)
class Notice:
    policy: str
    marketer: dict[str, Any]  # recipient, role, country (and safeguard abroad) for marketing
    consent_purpose: str  # a purpose processed on consent besides marketing
    consent_category: str
    open_purpose: tuple[str, str]  # (purpose, basis) not on consent, shareable at home
    home_recipient: str  # a UK recipient declared for open_purpose
    wrong_recipient: str  # declared, but not for direct marketing


HQIP = Notice("hqip", {"recipient": "Clarity Marketing", "role": "processor", "country": "GB"},
              "website-analytics", "technical", ("enquiries-complaints", "legitimate-interests"),
              "IT service provider", "Police")
IHPA = Notice("ihpa", {"recipient": "Mailchimp", "role": "processor", "country": "US",
                       "safeguard": "IDTA"},
              "forum", "content", ("membership", "contract"), "IPSE", "HMRC")


@pytest.fixture(params=[HQIP, IHPA], ids=["hqip", "ihpa"])
def notice(request: pytest.FixtureRequest, ledger: Ledger) -> Notice:
    ledger.adopt_policy(CONFIG / f"{request.param.policy}.toml", ADOPTED)
    return request.param  # type: ignore[no-any-return]


def ingest(ledger: Ledger, *facts: dict[str, Any]) -> IngestReport:
    return ledger.ingest(lines(facts), NOW)


def one_rejection(report: IngestReport) -> str:
    assert report.accepted == 0 and len(report.rejected) == 1, report.as_dict()
    return report.rejected[0].reason


def subscriber(ledger: Ledger, notice: Notice) -> None:
    """Consents to marketing on 1 March 2024 and signs up; a share to the marketer."""
    report = ingest(
        ledger,
        fact("consent-given", WHO, "2024-03-01T09:00:00Z", purpose="direct-marketing",
             method="subscribe-form"),
        collected(WHO, "2024-03-01T10:00:00Z", "newsletter", {"email": "lim@example.org"}),
        fact("shared", WHO, "2024-03-02T10:00:00Z", purpose="direct-marketing",
             basis="consent", records=["newsletter"], **notice.marketer))
    assert report.ok, report.as_dict()


def marketing_after(notice: Notice, at: str) -> list[dict[str, Any]]:
    return [
        collected(WHO, at, "newsletter-2", {"email": "lim@example.org"}),
        fact("activity", WHO, at, record="newsletter"),
        fact("shared", WHO, at, purpose="direct-marketing", basis="consent",
             records=["newsletter"], **notice.marketer),
    ]


@pytest.mark.parametrize("stop", ["unsubscribed", "objected"])
def test_no_direct_marketing_after_an_unsubscribe_or_a_marketing_objection(
        ledger: Ledger, notice: Notice, stop: str) -> None:
    """After an unsubscribe or an objection to direct marketing, a new direct-marketing
    collection, an activity on a marketing record and a marketing share are each rejected,
    the reason naming the limit direct-marketing-stopped."""
    subscriber(ledger, notice)
    extra = {"purpose": "direct-marketing"} if stop == "objected" else {}
    assert ingest(ledger, fact(stop, WHO, "2024-04-01T09:00:00Z", **extra)).ok
    for item in marketing_after(notice, "2024-04-02T09:00:00Z"):
        reason = one_rejection(ingest(ledger, item))
        assert "limit direct-marketing-stopped" in reason
        assert "2024-04-01T09:00:00+00:00" in reason
    view = ledger.subject_view(WHO)
    assert [r["record"] for r in view["records"]] == ["newsletter"]
    assert len(view["recipients"]) == 1


def test_re_subscribing_by_the_persons_own_opt_in_lifts_the_stop(
        ledger: Ledger, notice: Notice) -> None:
    """A direct-marketing consent given by the person's own opt-in after an unsubscribe
    allows marketing again from its time."""
    subscriber(ledger, notice)
    assert ingest(ledger, fact("unsubscribed", WHO, "2024-04-01T09:00:00Z")).ok
    assert ingest(ledger, fact("consent-given", WHO, "2024-05-01T09:00:00Z",
                               purpose="direct-marketing", method="subscribe-form")).ok
    report = ingest(ledger, *marketing_after(notice, "2024-05-02T09:00:00Z"))
    assert report.ok and report.accepted == 3, report.as_dict()


def test_no_processing_on_consent_after_its_withdrawal(ledger: Ledger, notice: Notice) -> None:
    """After consent for a purpose is withdrawn, a new record of that purpose on the
    consent basis is rejected naming the limit consent-required and the withdrawal;
    one dated before the withdrawal still lands."""
    purpose, category = notice.consent_purpose, notice.consent_category
    assert ingest(ledger,
                  fact("consent-given", WHO, "2024-03-01T09:00:00Z", purpose=purpose,
                       method="web-form"),
                  fact("consent-withdrawn", WHO, "2024-06-01T09:00:00Z",
                       purpose=purpose)).ok
    late = collected(WHO, "2024-06-02T09:00:00Z", "after", {"x": 1}, purpose=purpose,
                     category=category)
    reason = one_rejection(ingest(ledger, late))
    assert "limit consent-required" in reason and "withdrawn at 2024-06-01" in reason
    early = collected(WHO, "2024-05-02T09:00:00Z", "before", {"x": 2}, purpose=purpose,
                      category=category)
    assert ingest(ledger, early).accepted == 1


def test_a_consent_based_record_needs_a_consent_in_force_at_its_time(
        ledger: Ledger, notice: Notice) -> None:
    """A record on the consent basis with no consent given by its time is rejected (it
    would otherwise have no ground and no disposal); a consent given later does not make
    an earlier record lawful."""
    purpose, category = notice.consent_purpose, notice.consent_category
    record = collected(WHO, "2024-03-01T09:00:00Z", "early", {"x": 1}, purpose=purpose,
                       category=category)
    reason = one_rejection(ingest(ledger, record))
    assert "limit consent-required" in reason and "no consent" in reason
    assert ingest(ledger, fact("consent-given", WHO, "2024-04-01T09:00:00Z",
                               purpose=purpose, method="web-form")).ok
    assert "limit consent-required" in one_rejection(ingest(ledger, record))


def test_a_restriction_stops_shares_and_new_collections_in_its_scope(
        ledger: Ledger, notice: Notice) -> None:
    """While a restriction is in force, a share and a new collection in its scope are
    rejected naming the limit restriction; a share under an Art 18(2) exception lands and
    keeps its exception; after the lift both land."""
    purpose, basis = notice.open_purpose
    share = {"recipient": notice.home_recipient, "role": "processor", "country": "GB",
             "purpose": purpose, "basis": basis, "records": ["base"]}
    assert ingest(ledger,
                  collected(WHO, "2024-03-01T09:00:00Z", "base", {"x": 1}, purpose=purpose,
                            basis=basis),
                  fact("restricted", WHO, "2024-04-01T09:00:00Z", scope="all",
                       reason="unlawful-processing")).ok
    during = "2024-04-02T09:00:00Z"
    assert "limit restriction" in one_rejection(ingest(ledger, fact("shared", WHO, during,
                                                                    **share)))
    assert "limit restriction" in one_rejection(ingest(ledger, collected(
        WHO, during, "new", {"x": 2}, purpose=purpose, basis=basis)))
    excepted = fact("shared", WHO, during, restriction_exception="legal-claims", **share)
    assert ingest(ledger, excepted).accepted == 1
    assert ingest(ledger, fact("restriction-lifted", WHO, "2024-05-01T09:00:00Z",
                               scope="all")).ok
    after = "2024-05-02T09:00:00Z"
    assert ingest(ledger, fact("shared", WHO, after, **share),
                  collected(WHO, after, "new", {"x": 2}, purpose=purpose,
                            basis=basis)).accepted == 2
    shares = ledger.subject_view(WHO)["recipients"]
    assert sorted((s["at"], s["restriction_exception"]) for s in shares) == [
        ("2024-04-02T09:00:00+00:00", "legal-claims"), ("2024-05-02T09:00:00+00:00", None)]


def test_a_restriction_of_one_purpose_leaves_the_others(ledger: Ledger) -> None:
    """IHPA: a restriction of membership blocks a new membership record but not a payment
    record, nor a share abroad for another purpose; HQIP: a restricted analytics purpose
    blocks the share to Google Analytics (abroad)."""
    ledger.adopt_policy(CONFIG / "ihpa.toml", ADOPTED)
    assert ingest(ledger, fact("restricted", WHO, "2024-04-01T09:00:00Z",
                               scope="membership", reason="contested-accuracy")).ok
    at = "2024-04-02T09:00:00Z"
    assert "limit restriction" in one_rejection(ingest(ledger, collected(
        WHO, at, "member", {"x": 1}, purpose="membership", basis="contract")))
    assert ingest(ledger, collected(WHO, at, "paid", {"x": 1}, purpose="payments",
                                    basis="contract")).accepted == 1


def test_a_share_abroad_inside_a_restriction_is_rejected(ledger: Ledger) -> None:
    """HQIP: analytics data shared to Google Analytics (US) while analytics is restricted
    is rejected naming the restriction."""
    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    assert ingest(ledger,
                  fact("consent-given", WHO, "2024-03-01T09:00:00Z",
                       purpose="website-analytics", method="cookie-banner"),
                  collected(WHO, "2024-03-01T10:00:00Z", "ga", {"c": "1"},
                            purpose="website-analytics", category="technical"),
                  fact("restricted", WHO, "2024-04-01T09:00:00Z", scope="website-analytics",
                       reason="objection-pending")).ok
    share = fact("shared", WHO, "2024-04-02T09:00:00Z", recipient="Google Analytics",
                 role="processor", country="US", safeguard="IDTA",
                 purpose="website-analytics", basis="consent", records=["ga"])
    assert "limit restriction" in one_rejection(ingest(ledger, share))


def test_shares_go_only_to_recipients_declared_for_their_purpose(
        ledger: Ledger, notice: Notice) -> None:
    """A share to a recipient not declared for its purpose is rejected naming the limit
    recipient-purpose (the Police or HMRC for direct marketing); a recipient declared
    without purposes takes any purpose."""
    subscriber(ledger, notice)
    wrong = fact("shared", WHO, "2024-03-05T09:00:00Z", recipient=notice.wrong_recipient,
                 role="controller", country="GB", purpose="direct-marketing",
                 basis="consent", records=["newsletter"])
    reason = one_rejection(ingest(ledger, wrong))
    assert "limit recipient-purpose" in reason and notice.wrong_recipient in reason


def test_a_recipient_without_purposes_is_declared_for_every_purpose(ledger: Ledger) -> None:
    """HQIP declares NHS England without purposes: a share to it for any purpose lands."""
    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    report = ingest(
        ledger,
        collected(WHO, "2024-03-01T09:00:00Z", "q", {"x": 1}, purpose="enquiries-complaints",
                  basis="legitimate-interests"),
        fact("shared", WHO, "2024-03-02T09:00:00Z", recipient="NHS England",
             role="controller", country="GB", purpose="enquiries-complaints",
             basis="legitimate-interests", records=["q"]))
    assert report.ok and report.accepted == 2


def test_a_late_unsubscribe_flags_the_later_marketing_it_would_have_barred(
        ledger: Ledger, notice: Notice) -> None:
    """An unsubscribe arriving after a later-dated marketing collection does not undo it
    (it was lawful as far as was known); the subject lists it under limit_breaches naming
    the limit, until a fact making it lawful (a re-subscription dated between) arrives.
    In fact-time order the same collection is rejected."""
    subscriber(ledger, notice)
    late_record = collected(WHO, "2024-04-02T09:00:00Z", "newsletter-2",
                            {"email": "lim@example.org"})
    assert ingest(ledger, late_record).accepted == 1
    assert ledger.subject_view(WHO)["limit_breaches"] == []
    assert ingest(ledger, fact("unsubscribed", WHO, "2024-04-01T09:00:00Z")).ok
    breaches = ledger.subject_view(WHO)["limit_breaches"]
    assert [(b["fact"], b.get("record")) for b in breaches] == [("collected", "newsletter-2")]
    assert "limit direct-marketing-stopped" in breaches[0]["limit"]
    assert ingest(ledger, fact("consent-given", WHO, "2024-04-01T12:00:00Z",
                               purpose="direct-marketing", method="subscribe-form")).ok
    assert ledger.subject_view(WHO)["limit_breaches"] == []


def test_in_fact_time_order_the_same_marketing_is_rejected(ledger: Ledger) -> None:
    """The counterpart of the late unsubscribe: arriving after it, the later marketing
    collection is rejected and nothing is flagged."""
    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    subscriber(ledger, HQIP)
    assert ingest(ledger, fact("unsubscribed", WHO, "2024-04-01T09:00:00Z")).ok
    late_record = collected(WHO, "2024-04-02T09:00:00Z", "newsletter-2",
                            {"email": "lim@example.org"})
    assert "limit direct-marketing-stopped" in one_rejection(ingest(ledger, late_record))
    assert ledger.subject_view(WHO)["limit_breaches"] == []


def test_special_category_data_needs_an_art_9_condition_for_its_purpose(
        ledger: Ledger) -> None:
    """A record of category `special` is rejected for a purpose that names no Art 9(2)
    condition (IHPA's forum), naming the limit art-9-condition and the purpose; for a
    purpose that names one (HQIP's surveys) it lands."""
    ledger.adopt_policy(CONFIG / "ihpa.toml", ADOPTED)
    assert ingest(ledger, fact("consent-given", WHO, "2024-03-01T09:00:00Z",
                               purpose="forum", method="web-form")).ok
    health = collected(WHO, "2024-03-02T09:00:00Z", "post", {"text": "my diagnosis"},
                       purpose="forum", category="special")
    reason = one_rejection(ingest(ledger, health))
    assert reason.startswith("category: limit art-9-condition")
    assert "'forum'" in reason and "Art 9(2)" in reason
    assert ledger.subject_view(WHO)["records"] == []

    other = "person:limits-hqip"
    ledger.adopt_policy(CONFIG / "hqip.toml", datetime(2020, 1, 1, tzinfo=UTC))
    report = ingest(ledger,
                    fact("consent-given", other, "2024-03-01T09:00:00Z",
                         purpose="surveys-feedback", method="web-form"),
                    collected(other, "2024-03-02T09:00:00Z", "survey", {"health": "asthma"},
                              purpose="surveys-feedback", category="special"))
    assert report.ok and report.accepted == 2, report.as_dict()


def criminal_offence_policy(tmp_path: Path, condition: str | None) -> Path:
    """IHPA's policy whose law-enforcement purpose declares criminal-offence data, with
    or without an Art 10 condition (declared false when without: the loader refuses a
    purpose declaring the data without its condition)."""
    text = (CONFIG / "ihpa.toml").read_text(encoding="utf-8")
    declared = (f'criminal_offence_data = true\ncriminal_offence_condition = "{condition}"\n'
                if condition else "")
    path = tmp_path / "ihpa-criminal.toml"
    path.write_text(text.replace('[purposes.law-enforcement]\n',
                                 f'[purposes.law-enforcement]\n{declared}', 1),
                    encoding="utf-8")
    return path


@pytest.mark.parametrize("condition", [None, "DPA 2018 Sch 1 para 10: preventing or "
                                             "detecting unlawful acts"])
def test_criminal_offence_data_needs_an_art_10_condition_for_its_purpose(
        ledger: Ledger, tmp_path: Path, condition: str | None) -> None:
    """A record of category `criminal-offence` is rejected, naming the limit
    art-10-condition, for a purpose that declares no criminal-offence data with an Art 10
    condition; for one that does it lands. A special-category or criminal-offence record
    for an ordinary purpose stays rejected either way."""
    ledger.adopt_policy(criminal_offence_policy(tmp_path, condition), ADOPTED)
    record = collected(WHO, "2024-03-02T09:00:00Z", "conviction", {"offence": "fraud"},
                       purpose="law-enforcement", basis="legal-obligation",
                       category="criminal-offence")
    report = ingest(ledger, record)
    if condition is None:
        reason = one_rejection(report)
        assert reason.startswith("category: limit art-10-condition")
        assert "'law-enforcement'" in reason and "Art 10" in reason
    else:
        assert report.ok and report.accepted == 1, report.as_dict()
    elsewhere = collected(WHO, "2024-03-03T09:00:00Z", "member-conviction",
                          {"offence": "fraud"}, purpose="membership", basis="contract",
                          category="criminal-offence")
    assert "limit art-10-condition" in one_rejection(ingest(ledger, elsewhere))


def test_a_consent_exception_to_a_restriction_needs_a_consent_in_force(
        ledger: Ledger, notice: Notice) -> None:
    """Art 18(2) lets restricted data be processed "with the data subject's consent": a
    share or collection claiming `restriction_exception: consent` with no consent for its
    purpose in force then is rejected naming the restriction; once the person consents,
    the same share lands."""
    purpose, basis = notice.open_purpose
    share = {"recipient": notice.home_recipient, "role": "processor", "country": "GB",
             "purpose": purpose, "basis": basis, "records": ["base"],
             "restriction_exception": "consent"}
    assert ingest(ledger,
                  collected(WHO, "2024-03-01T09:00:00Z", "base", {"x": 1}, purpose=purpose,
                            basis=basis),
                  fact("restricted", WHO, "2024-04-01T09:00:00Z", scope="all",
                       reason="contested-accuracy")).ok
    during = "2024-04-02T09:00:00Z"
    reason = one_rejection(ingest(ledger, fact("shared", WHO, during, **share)))
    assert "limit restriction" in reason and "no consent" in reason
    assert "limit restriction" in one_rejection(ingest(ledger, collected(
        WHO, during, "new", {"x": 2}, purpose=purpose, basis=basis,
        restriction_exception="consent")))
    assert ingest(ledger, fact("consent-given", WHO, "2024-04-02T08:00:00Z",
                               purpose=purpose, method="signed-form")).ok
    assert ingest(ledger, fact("shared", WHO, during, **share)).accepted == 1


def test_special_category_data_cannot_be_shared_for_a_purpose_without_an_art_9_condition(
        ledger: Ledger) -> None:
    """HQIP: health data collected for surveys (Art 9(2)(a) named) may not leave through a
    share for direct marketing, which names no Art 9 condition, whether the share names
    the category `special` or the health record itself; the share of contact data for
    marketing lands."""
    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    assert ingest(ledger,
                  fact("consent-given", WHO, "2024-03-01T09:00:00Z",
                       purpose="direct-marketing", method="subscribe-form"),
                  collected(WHO, "2024-03-01T10:00:00Z", "health", {"condition": "x"},
                            purpose="surveys-feedback", basis="legitimate-interests",
                            category="special"),
                  collected(WHO, "2024-03-01T10:00:00Z", "mail", {"email": "a@b.c"})).ok
    share = {**HQIP.marketer, "purpose": "direct-marketing", "basis": "consent"}
    at = "2024-03-02T09:00:00Z"
    by_category = one_rejection(ingest(ledger, fact("shared", WHO, at, categories=["special"],
                                                    **share)))
    by_record = one_rejection(ingest(ledger, fact("shared", WHO, at, records=["health"],
                                                  **share)))
    assert "limit art-9-condition" in by_category and "limit art-9-condition" in by_record
    assert ingest(ledger, fact("shared", WHO, at, records=["mail"], **share)).accepted == 1


def test_a_share_by_category_carries_the_restricted_purposes_data(ledger: Ledger) -> None:
    """HQIP: with enquiries restricted, a share naming only the category `contact` for
    surveys, when the person's only contact data is held for enquiries, is that data
    leaving under another label: rejected naming the restriction. Once contact data is
    held for surveys itself, the same share lands."""
    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    assert ingest(ledger,
                  collected(WHO, "2024-01-10T09:00:00Z", "enquiry", {"email": "a@b.c"},
                            purpose="enquiries-complaints", basis="legitimate-interests"),
                  fact("restricted", WHO, "2024-02-01T09:00:00Z",
                       scope="enquiries-complaints", reason="contested-accuracy")).ok
    share = fact("shared", WHO, "2024-02-05T09:00:00Z", recipient="IT service provider",
                 role="processor", country="GB", purpose="surveys-feedback",
                 basis="legitimate-interests", categories=["contact"])
    assert "limit restriction" in one_rejection(ingest(ledger, share))
    assert ingest(ledger, collected(WHO, "2024-02-03T09:00:00Z", "survey", {"email": "a@b.c"},
                                    purpose="surveys-feedback",
                                    basis="legitimate-interests")).ok
    assert ingest(ledger, share).accepted == 1


def test_limits_are_checked_once_per_marketing_collection(
        ledger: Ledger, notice: Notice, monkeypatch: pytest.MonkeyPatch) -> None:
    """A direct-marketing collection has its limits judged in one pass (the person's own
    marketing stop first, then the suppression list, then the rest), not two: one
    `check_limits` call per collected fact, whatever its purpose; the outcome is the same."""
    import lifecycle.services.ingest as ingest_module

    calls: list[str] = []
    real = ingest_module.check_limits

    def counted(*args: Any, **kwargs: Any) -> None:
        calls.append(args[2].type)
        real(*args, **kwargs)

    monkeypatch.setattr(ingest_module, "check_limits", counted)
    subscriber(ledger, notice)  # a marketing collection and a share
    assert calls.count("collected") == 1 and calls.count("shared") == 1, calls
    assert ingest(ledger, fact("unsubscribed", WHO, "2024-04-01T09:00:00Z")).ok
    calls.clear()
    reason = one_rejection(ingest(ledger, marketing_after(notice, "2024-04-02T09:00:00Z")[0]))
    assert "limit direct-marketing-stopped" in reason
    assert calls == ["collected"]
