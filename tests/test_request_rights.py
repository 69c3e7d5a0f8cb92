"""Request handling as the ICO states it: identity verification only where it was asked
for, the clock from when identity information was received, no answer to an unverified
requester, an erasure's Art 17(1) ground, and a policy's consequences of exercising a right.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lifecycle.services.dsar_render import to_html
from lifecycle.services.ingest import IngestReport
from lifecycle.services.ledger import Ledger
from lifecycle.domain.vocabulary import ERASURE_GROUNDS
from tests.facts_builder import collected, fact, lines, t

CONFIG = Path(__file__).resolve().parents[1] / "config"
ADOPTED = datetime(2019, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
WHO = "member:rights"


def ingest(ledger: Ledger, *facts: dict[str, Any]) -> IngestReport:
    return ledger.ingest(lines(facts), NOW)


def deadline(ledger: Ledger, request: str, at: str) -> str | None:
    rows = {r["request"]: r for r in ledger.requests(t(at))}
    found: str | None = rows[request]["deadline"]
    return found


def test_identity_verification_is_refused_for_a_request_not_awaiting_identity(
        ledger: Ledger) -> None:
    """An identity-verified for a request received without identity_check is rejected;
    the overdue request stays in `requests list --overdue` (its clock is not restarted)."""
    assert ingest(ledger, fact("access-requested", WHO, "2025-01-06T09:00:00Z",
                               request="SAR-1")).ok
    report = ingest(ledger, fact("identity-verified", WHO, "2025-03-01T09:00:00Z",
                                 request="SAR-1"))
    assert [r.line for r in report.rejected] == [1]
    assert "not awaiting identity" in report.rejected[0].reason
    overdue = ledger.requests(t("2025-03-02T09:00:00Z"), overdue_only=True)
    assert [(r["request"], r["deadline"]) for r in overdue] == [("SAR-1", "2025-02-06")]


def test_identity_verification_is_refused_for_a_closed_request(ledger: Ledger) -> None:
    """A request answered (refused) while awaiting identity takes no verification after."""
    report = ingest(
        ledger,
        fact("access-requested", WHO, "2025-01-06T09:00:00Z", request="SAR-2",
             identity_check=True),
        fact("request-refused", WHO, "2025-01-07T09:00:00Z", request="SAR-2",
             reason="manifestly-unfounded"),
        fact("identity-verified", WHO, "2025-01-08T09:00:00Z", request="SAR-2"))
    assert [r.line for r in report.rejected] == [3]
    assert "already refused" in report.rejected[0].reason


def test_the_clock_starts_when_identity_information_was_received(ledger: Ledger) -> None:
    """Identity information received on 5 March 2025 and checked on 20 March: the month
    runs from 5 March (due Monday 7 April, the 5th being a Saturday); without received_at
    it runs from the check (20 March: due Tuesday 22 April, after Easter Monday)."""
    assert ingest(
        ledger,
        fact("access-requested", WHO, "2025-03-03T09:00:00Z", request="SAR-3",
             identity_check=True),
        fact("identity-verified", WHO, "2025-03-20T09:00:00Z", request="SAR-3",
             received_at="2025-03-05T11:00:00Z"),
        fact("access-requested", WHO, "2025-03-03T09:00:00Z", request="SAR-4",
             identity_check=True),
        fact("identity-verified", WHO, "2025-03-20T09:00:00Z", request="SAR-4")).ok
    assert deadline(ledger, "SAR-3", "2025-03-21T09:00:00Z") == "2025-04-07"
    assert deadline(ledger, "SAR-4", "2025-03-21T09:00:00Z") == "2025-04-22"
    requests = {q["request"]: q for q in ledger.subject_view(WHO)["requests"]}
    assert requests["SAR-3"]["identity_received_at"] == "2025-03-05T11:00:00+00:00"


def test_identity_information_cannot_be_received_after_its_check(ledger: Ledger) -> None:
    """received_at later than the verification's own time is rejected, naming the field."""
    report = ingest(
        ledger,
        fact("access-requested", WHO, "2025-03-03T09:00:00Z", request="SAR-5",
             identity_check=True),
        fact("identity-verified", WHO, "2025-03-10T09:00:00Z", request="SAR-5",
             received_at="2025-03-11T09:00:00Z"))
    assert [r.line for r in report.rejected] == [2]
    assert report.rejected[0].reason.startswith("received_at: after the fact's at")


def test_a_request_awaiting_identity_cannot_be_fulfilled(ledger: Ledger) -> None:
    """Access, portability and rectification requests awaiting identity are not fulfilled
    (the data may not go to an unverified requester); after verification they are. An
    objection awaiting identity can be answered."""
    facts = []
    for n, kind in enumerate(("access", "portability", "rectification", "objection")):
        facts.append(fact("access-requested", WHO, "2025-03-03T09:00:00Z",
                          request=f"R-{n}", kind=kind, identity_check=True))
        facts.append(fact("request-fulfilled", WHO, "2025-03-04T09:00:00Z",
                          request=f"R-{n}"))
    report = ingest(ledger, *facts)
    assert [r.line for r in report.rejected] == [2, 4, 6]
    assert all("awaiting identity" in r.reason for r in report.rejected)
    assert ingest(ledger,
                  fact("identity-verified", WHO, "2025-03-05T09:00:00Z", request="R-0"),
                  fact("request-fulfilled", WHO, "2025-03-06T09:00:00Z", request="R-0")).ok


def test_an_erasure_request_records_its_ground_shown_in_the_certificate(
        ledger: Ledger) -> None:
    """erasure-requested with ground "b" (consent withdrawn) shows that ground in the
    deletion certificate and on the subject; without one the certificate says so."""
    assert ingest(ledger,
                  collected(WHO, "2025-01-01T09:00:00Z", "profile", {"name": "Ro"},
                            purpose="membership", basis="contract"),
                  fact("erasure-requested", WHO, "2025-02-01T09:00:00Z", request="ER-1",
                       ground="b"),
                  fact("erasure-requested", WHO, "2025-02-02T09:00:00Z",
                       request="ER-2")).ok
    certificate = ledger.certificate("ER-1", WHO, NOW)
    assert certificate["ground"] == ERASURE_GROUNDS["b"]
    assert certificate["ground"].startswith("Art 17(1)(b)")
    assert ledger.certificate("ER-2", WHO, NOW)["ground"] == "not stated"
    requests = {q["request"]: q for q in ledger.subject_view(WHO)["requests"]}
    assert requests["ER-1"]["ground"] == ERASURE_GROUNDS["b"]


def test_an_unknown_erasure_ground_is_rejected(ledger: Ledger) -> None:
    """A ground outside Art 17(1)(a)-(f) is rejected naming the field."""
    report = ingest(ledger, fact("erasure-requested", WHO, "2025-02-01T09:00:00Z",
                                 request="ER-3", ground="g"))
    reason = report.rejected[0].reason
    assert reason.startswith("ground: ") and "'a'" in reason and "'f'" in reason


def test_ihpa_erasure_restriction_or_objection_suspends_the_membership(
        ledger: Ledger) -> None:
    """IHPA's notice: erasure, restriction or objection may suspend the membership
    account; each is recorded on the subject with the right and its time, and shown in
    the DSAR export (JSON and the readable pack) with the policy's description."""
    ledger.adopt_policy(CONFIG / "ihpa.toml", ADOPTED)
    assert ingest(
        ledger,
        collected(WHO, "2025-01-01T09:00:00Z", "profile", {"name": "Ro"},
                  purpose="membership", basis="contract"),
        fact("restricted", WHO, "2025-02-01T09:00:00Z", scope="membership",
             reason="contested-accuracy"),
        fact("objected", WHO, "2025-02-02T09:00:00Z", purpose="membership"),
        fact("erasure-requested", WHO, "2025-02-03T09:00:00Z", request="ER-4")).ok
    shown = ledger.subject_view(WHO)["consequences"]
    assert [(c["name"], c["right"], c["at"][:10]) for c in shown] == [
        ("membership-suspended", "restriction", "2025-02-01"),
        ("membership-suspended", "objection", "2025-02-02"),
        ("membership-suspended", "erasure", "2025-02-03")]
    export = ledger.dsar_export(WHO, NOW)
    assert "suspended" in export["consequence_descriptions"]["membership-suspended"]
    page = to_html(export)
    assert "because you exercised your right of erasure" in page
    assert "membership account may be suspended" in page


def test_hqip_declares_no_consequence(ledger: Ledger) -> None:
    """HQIP's notice ties nothing to exercising a right: nothing is recorded."""
    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    assert ingest(ledger, fact("objected", WHO, "2025-02-02T09:00:00Z",
                               purpose="direct-marketing")).ok
    assert ledger.subject_view(WHO)["consequences"] == []
