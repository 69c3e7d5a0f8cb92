"""Retention semantics as regulators state them (README, "Retention semantics").

Microsoft Purview's principles adapted to UK GDPR: a rule retains (a minimum the law or a
contract needs) or disposes (a storage limit); retention wins over deletion; the longest
retention wins; explicit wins over implicit (a withdrawal, upheld objection or erasure
request ends consent- or legitimate-interest-based storage, at once or after the period
its own rule names, even where a longer storage limit would apply); the shortest storage
limit wins. A legal hold and a restriction on any of the four grounds pause erasure.
`subject show` and the DSAR export state the one rule that decides.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lifecycle.services.ledger import Ledger
from tests.facts_builder import collected, fact, lines, t

CONFIG = Path(__file__).resolve().parents[1] / "config"
ADOPTED = datetime(2019, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def ingest(ledger: Ledger, *facts: dict[str, Any]) -> None:
    report = ledger.ingest(lines(facts), NOW)
    assert report.ok, report.as_dict()


def retention(ledger: Ledger, who: str, record: str) -> dict[str, Any]:
    view = ledger.subject_view(who)
    found: dict[str, Any] = next(r["retention"] for r in view["records"]
                                 if r["record"] == record)
    return found


def exported(ledger: Ledger, who: str, record: str) -> dict[str, Any]:
    export = ledger.dsar_export(who, NOW)
    found: dict[str, Any] = next(r["retention"] for r in export["records"]
                                 if r["record"] == record)
    return found


def hqip_visitor(ledger: Ledger) -> None:
    """Accepted analytics cookies on 22 September 2022; withdrew on 1 September 2023."""
    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    ingest(ledger,
           fact("consent-given", "visitor:1", "2022-09-22T09:00:00Z",
                purpose="website-analytics", method="cookie-banner"),
           collected("visitor:1", "2022-09-22T09:00:00Z", "ga", {"client_id": "GA1.2.3"},
                     purpose="website-analytics", category="technical"),
           fact("consent-withdrawn", "visitor:1", "2023-09-01T09:00:00Z",
                purpose="website-analytics"))


def test_hqip_withdrawing_analytics_consent_erases_at_once_not_after_26_months(
        ledger: Ledger) -> None:
    """HQIP: analytics consent withdrawn on 2023-09-01: the rule for the withdrawal
    (analytics-on-consent-withdrawn, P0D) decides, not the 26-month storage limit, and the
    next sweep erases the data."""
    hqip_visitor(ledger)
    decided = retention(ledger, "visitor:1", "ga")
    assert (decided["rule"], decided["dispose_at"]) == (
        "analytics-on-consent-withdrawn", "2023-09-01T09:00:00+00:00")
    report = ledger.sweep(t("2023-09-02T00:00:00Z"), NOW)
    assert [(e["record"], e["rule"]) for e in report.erased] == [
        ("ga", "analytics-on-consent-withdrawn")]


def test_the_dsar_export_states_the_one_deciding_rule(ledger: Ledger) -> None:
    """The DSAR export gives the deciding rule with why, and no list of other rules
    beside it (which contradicted it: 26 months and at once)."""
    hqip_visitor(ledger)
    entry = exported(ledger, "visitor:1", "ga")
    assert entry["rule"] == "analytics-on-consent-withdrawn"
    assert entry["criteria"] == []
    assert "consent-withdrawn ended the ground" in entry["why"]


def test_before_any_trigger_the_export_lists_the_criteria(ledger: Ledger) -> None:
    """While no rule has fired (a newsletter sign-up before any unsubscribe), the export
    lists the criteria that may decide and names no rule; a retention rule that has fired
    (a DARG application under contract) decides, said to be a minimum the law or a
    contract needs."""
    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    ingest(ledger,
           fact("consent-given", "sub:1", "2024-01-01T09:00:00Z", purpose="direct-marketing",
                method="subscribe-form"),
           collected("sub:1", "2024-01-01T09:00:00Z", "newsletter", {"x": 1}),
           collected("darg:1", "2024-01-01T09:00:00Z", "application", {"x": 1},
                     purpose="darg-application", basis="contract"))
    waiting = exported(ledger, "sub:1", "newsletter")
    assert waiting["rule"] is None and len(waiting["criteria"]) == 3
    decided = exported(ledger, "darg:1", "application")
    assert decided["rule"] == "darg-7y-after-application" and decided["criteria"] == []
    assert "retention wins" in decided["why"]


@pytest.mark.parametrize("purpose", ["membership", "member-communications"])
def test_ihpa_withdrawing_membership_consent_ends_consent_based_storage(
        ledger: Ledger, purpose: str) -> None:
    """IHPA: withdrawing consent for membership or member communications ends the storage
    of the data held on that consent at once (no rule names a period: implicit), while
    the same purpose's data under contract is kept by its retention rule."""
    ledger.adopt_policy(CONFIG / "ihpa.toml", ADOPTED)
    ingest(ledger,
           fact("consent-given", "member:1", "2024-01-01T09:00:00Z", purpose=purpose,
                method="web-form"),
           collected("member:1", "2024-01-01T10:00:00Z", "on-consent", {"x": 1},
                     purpose=purpose, category="account"),
           collected("member:1", "2024-01-01T10:00:00Z", "on-contract", {"x": 2},
                     purpose=purpose, basis="contract", category="account"),
           fact("relationship-ended", "member:1", "2024-03-01T09:00:00Z"),
           fact("consent-withdrawn", "member:1", "2024-05-01T09:00:00Z", purpose=purpose))
    assert retention(ledger, "member:1", "on-consent")["rule"] == (
        "implicit-consent-withdrawn")
    kept = retention(ledger, "member:1", "on-contract")
    assert kept["rule"].endswith("-after-end") and kept["trigger"] == "relationship-ended"
    report = ledger.sweep(t("2024-05-02T00:00:00Z"), NOW)
    assert [e["record"] for e in report.erased] == ["on-consent"]


def test_an_upheld_objection_ends_legitimate_interest_storage(ledger: Ledger) -> None:
    """HQIP: an objection to enquiries kept on legitimate interests ends their storage at
    once, before the two-year limit after the last contact."""
    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    ingest(ledger,
           collected("asker:1", "2024-01-01T09:00:00Z", "enquiry", {"x": 1},
                     purpose="enquiries-complaints", basis="legitimate-interests"),
           fact("objected", "asker:1", "2024-02-01T09:00:00Z", purpose="enquiries-complaints"))
    assert retention(ledger, "asker:1", "enquiry")["rule"] == "implicit-objected"


PURVIEW = """
[policy]
id = "purview"
version = "1"

[controller]
name = "Test controller"
contact = "dpo@example.org"

[notice]
title = "Test notice"
updated = "2023"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"

[disclosures]
complaint = "ICO"
automated_decision_making = "None."

[purposes.accounts]
bases = ["legal-obligation", "consent"]

[[rules]]
id = "accounts-limit-1y"
purpose = "accounts"
trigger = "collected"
keep_for = "P1Y"
action = "erase"
kind = "dispose"

[[rules]]
id = "accounts-limit-2y"
purpose = "accounts"
trigger = "collected"
keep_for = "P2Y"
action = "erase"
kind = "dispose"

[[rules]]
id = "accounts-keep-6y"
purpose = "accounts"
trigger = "collected"
keep_for = "P6Y"
action = "erase"
kind = "retain"

[[rules]]
id = "accounts-keep-3y"
purpose = "accounts"
trigger = "collected"
keep_for = "P3Y"
action = "erase"
kind = "retain"
"""


def test_retention_wins_over_deletion_and_the_longest_retention_wins(
        ledger: Ledger, tmp_path: Path) -> None:
    """Two storage limits (1 and 2 years) and two retentions (3 and 6 years): the data is
    kept six years (retention over deletion, longest retention), also when consent-based
    and the consent is withdrawn: a retention rule outlives the withdrawal."""
    policy = tmp_path / "purview.toml"
    policy.write_text(PURVIEW)
    ledger.adopt_policy(policy, ADOPTED)
    ingest(ledger,
           fact("consent-given", "p:1", "2020-01-01T09:00:00Z", purpose="accounts"),
           collected("p:1", "2020-01-01T09:00:00Z", "ledger", {"x": 1}, purpose="accounts",
                     basis="legal-obligation", category="account"),
           collected("p:1", "2020-01-01T09:00:00Z", "opt", {"x": 1}, purpose="accounts",
                     category="account"),
           fact("consent-withdrawn", "p:1", "2020-06-01T09:00:00Z", purpose="accounts"))
    for record in ("ledger", "opt"):
        decided = retention(ledger, "p:1", record)
        assert (decided["rule"], decided["dispose_at"][:10]) == ("accounts-keep-6y",
                                                                  "2026-01-01"), record


def test_the_shortest_storage_limit_wins(ledger: Ledger, tmp_path: Path) -> None:
    """Without a retention rule, of two storage limits (1 and 2 years) the shorter decides."""
    policy = tmp_path / "purview.toml"
    policy.write_text(PURVIEW.split('[[rules]]\nid = "accounts-keep-6y"')[0])
    ledger.adopt_policy(policy, ADOPTED)
    ingest(ledger, collected("p:1", "2020-01-01T09:00:00Z", "ledger", {"x": 1},
                             purpose="accounts", basis="legal-obligation",
                             category="account"))
    assert retention(ledger, "p:1", "ledger")["rule"] == "accounts-limit-1y"


@pytest.mark.parametrize("reason", ["contested-accuracy", "unlawful-processing",
                                    "legal-claims", "objection-pending"])
def test_a_restriction_on_any_ground_pauses_a_retention_erasure(
        ledger: Ledger, reason: str) -> None:
    """A restriction on each of the four Art 18(1) grounds (the unlawful-processing one:
    the person opposes erasure) pauses the erasure a rule made due."""
    hqip_visitor(ledger)
    ingest(ledger, fact("restricted", "visitor:1", "2023-08-01T09:00:00Z",
                        scope="website-analytics", reason=reason))
    report = ledger.sweep(t("2023-09-02T00:00:00Z"), NOW)
    assert report.erased == []
    assert [p["paused_by"] for p in report.paused] == [f"restriction ({reason})"]


def test_a_legal_hold_pauses_the_erasure_a_withdrawal_made_due(ledger: Ledger) -> None:
    """A legal hold over the purpose pauses the erasure the withdrawal made due."""
    hqip_visitor(ledger)
    ingest(ledger, fact("legal-hold-placed", "visitor:1", "2023-08-01T09:00:00Z",
                        hold="H-1", scope="website-analytics", reason="claim"))
    report = ledger.sweep(t("2023-09-02T00:00:00Z"), NOW)
    assert report.erased == [] and report.paused[0]["paused_by"] == "legal hold H-1"
