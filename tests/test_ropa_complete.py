"""The record of processing consistent with the checks and complete against the ICO's
controller documentation template (issue 13, item 6), in JSON and HTML."""

from __future__ import annotations

import re
from html import unescape
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lifecycle.services.ledger import Ledger
from lifecycle.services.ropa import build_ropa, to_html
from tests.facts_builder import collected, fact, lines, t

ROOT = Path(__file__).resolve().parents[1]
HQIP = ROOT / "config" / "hqip.toml"
IHPA = ROOT / "config" / "ihpa.toml"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
ADOPTED = t("2023-01-01T00:00:00+00:00")


def ingest(ledger: Ledger, facts: list[dict[str, Any]]) -> None:
    report = ledger.ingest(lines(facts), NOW)
    assert report.ok, report.rejected


@pytest.fixture
def darg(ledger: Ledger) -> Ledger:
    """A DARG applicant whose application went to NHS England, a recipient HQIP declares
    without a purpose list, and a survey answer holding health information."""
    ledger.adopt_policy(HQIP, ADOPTED)
    ingest(ledger, [
        collected("applicant:1", "2023-03-01T10:00:00Z", "application", {"org": "Trust A"},
                  purpose="darg-application", basis="contract", category="account"),
        fact("shared", "applicant:1", "2023-03-02T10:00:00Z", recipient="NHS England",
             role="controller", purpose="darg-application", basis="contract",
             records=["application"], country="GB"),
        collected("respondent:2", "2023-04-01T10:00:00Z", "survey", {"health": "asthma"},
                  purpose="surveys-feedback", basis="consent", category="special"),
        fact("consent-given", "respondent:2", "2023-04-01T10:00:00Z",
             purpose="surveys-feedback"),
    ])
    return ledger


def purpose(document: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in document["purposes"] if p["purpose"] == name)


def text_of(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_a_recipient_without_purposes_is_declared_for_every_purpose_everywhere(
        darg: Ledger) -> None:
    """NHS England is declared without `purposes`: every purpose card lists it as declared
    (for every purpose), the recipients table says "Every purpose", no finding is raised,
    and the header's clean claim agrees with every card."""
    document = build_ropa(darg, None, NOW)
    nhs = {r["recipient"]: r for r in purpose(document, "darg-application")["recipients"]}
    assert nhs["NHS England"]["declared"] is True and nhs["NHS England"]["every_purpose"]
    assert nhs["NHS England"]["disclosures"] == 1
    assert all(any(r["recipient"] == "NHS England" and r["declared"] for r in p["recipients"])
               for p in document["purposes"])
    recipients = {r["recipient"]: r for r in document["recipients"]}
    assert recipients["NHS England"]["findings"] == []
    html = to_html(document)
    assert "not declared for this purpose" not in html and "Not limited" not in html
    assert "Every purpose" in html
    assert 'class="ok">No undeclared purpose or recipient' in html


def test_a_card_contradicting_a_declaration_is_flagged_in_the_header(
        darg: Ledger, tmp_path: Path) -> None:
    """When a later policy no longer declares NHS England for DARG applications, the
    card shows "No: not declared for this purpose", the recipient carries the finding and
    the header counts it: the header never claims what a card contradicts."""
    text = HQIP.read_text(encoding="utf-8")
    revised = tmp_path / "hqip-2024.toml"
    revised.write_text(text.replace('version = "2023-11"', 'version = "2024-06"').replace(
        'role = "controller"\ncountry = "GB"\ndescription = "NHS body"',
        'role = "controller"\ncountry = "GB"\npurposes = ["events"]\n'
        'description = "NHS body"'), encoding="utf-8")
    darg.adopt_policy(revised, t("2024-06-01T00:00:00Z"))
    document = build_ropa(darg, None, NOW)
    card = {r["recipient"]: r for r in purpose(document, "darg-application")["recipients"]}
    assert card["NHS England"]["declared"] is False
    recipients = {r["recipient"]: r for r in document["recipients"]}
    assert recipients["NHS England"]["findings"] == [
        "shared for purpose darg-application, not declared for it"]
    html = to_html(document)
    assert "No: not declared for this purpose" in html
    assert "1 issue needs attention" in text_of(html)
    assert 'class="ok">' not in html


def test_the_record_holds_every_column_of_the_ico_controller_template(darg: Ledger) -> None:
    """Art 9 and Art 10 conditions, the legitimate interests relied on, the rights
    available per basis, the source of the data, automated decision-making, the
    organisation's own security measures, joint controller and representative ("none"),
    and breaches are all in the JSON record."""
    document = build_ropa(darg, None, NOW)
    surveys = purpose(document, "surveys-feedback")
    assert surveys["special_category_condition"].startswith("Art 9(2)(a)")
    assert surveys["criminal_offence"] == {"data": False, "condition": None}
    assert surveys["findings"] == []
    enquiries = purpose(document, "enquiries-complaints")
    assert enquiries["legitimate_interest"]
    assert purpose(document, "events")["legitimate_interest"] is None
    rights = purpose(document, "parliamentary-records")["rights_available"]
    assert "erasure" not in rights["legal-obligation"]
    assert "portability" not in rights["legal-obligation"]
    assert "objection" in purpose(document, "direct-marketing")["rights_available"]["consent"]
    assert surveys["sources_declared"] == ["data-subject"]
    assert surveys["sources_in_use"] == [{"name": "data-subject", "count": 1}]
    assert document["automated_decision_making"]["notice"].startswith(
        "Your data is not subject to automated decision making")
    assert (document["joint_controllers"], document["representative"]) == ("none", "none")
    assert "Z1780946" in document["controller"]["registration"] and document["dpo"]
    organisation = document["security_measures"]["organisation"]
    assert "All staff are regularly trained in IT, data security and data protection;" in (
        organisation)
    assert any("Crypto-shredding" in m for m in document["security_measures"]["system"])
    assert document["breaches"] == {"total": 0, "reported": 0, "overdue": 0,
                                    "subjects_to_notify": 0, "breaches": []}
    assert document["notice"]["title"] == "Privacy Notice"
    assert document["complaint"]["notice"]
    html = text_of(to_html(document))
    for heading in ("Special category (Art 9)", "Criminal offence (Art 10)",
                    "Legitimate interest relied on", "Rights available", "Source of the data",
                    "Automated decision-making, including profiling",
                    "The organisation's measures", "Joint controllers None Representative None",
                    "No personal data breach recorded"):
        assert heading in html, heading


def test_special_category_data_without_an_art_9_condition_is_a_finding(
        ledger: Ledger, tmp_path: Path) -> None:
    """IHPA declares no special-category purpose: health data collected for its forum
    under an earlier version that named an Art 9 condition (ingest refuses it otherwise)
    is, once the bundled policy is adopted, flagged on the purpose and in the header."""
    earlier = tmp_path / "ihpa-earlier.toml"
    earlier.write_text(IHPA.read_text(encoding="utf-8").replace(
        'version = "2019-03-07"', 'version = "2019-01-01"').replace(
        "[purposes.forum]\n", '[purposes.forum]\nspecial_category_condition = '
        '"Art 9(2)(a): explicit consent"\n', 1), encoding="utf-8")
    ledger.adopt_policy(earlier, ADOPTED)
    ingest(ledger, [
        collected("member:1", "2023-03-01T10:00:00Z", "post", {"text": "my diagnosis"},
                  purpose="forum", basis="consent", category="special"),
        fact("consent-given", "member:1", "2023-03-01T10:00:00Z", purpose="forum"),
    ])
    assert purpose(build_ropa(ledger, None, NOW), "forum")["findings"] == []
    ledger.adopt_policy(IHPA, t("2024-01-01T00:00:00Z"))
    document = build_ropa(ledger, None, NOW)
    assert purpose(document, "forum")["findings"] == [
        "special-category data held with no Art 9 condition declared"]
    assert "special-category data held with no Art 9 condition" in to_html(document)


def test_rules_show_the_notice_words_apart_from_the_controllers_choice(
        darg: Ledger) -> None:
    """A rule whose period the notice states is marked as from the notice; one whose
    period is the controller's choice carries its rationale, shown as such in the page;
    IHPA's transfers read as the controller's choice, not the notice's."""
    document = build_ropa(darg, None, NOW)
    rules = {r["rule"]: r for r in document["retention"]["rules"]}
    assert rules["marketing-13m-after-unsubscribe"]["period_from"] == "notice"
    assert rules["marketing-13m-after-unsubscribe"]["rationale"] is None
    assert rules["analytics-26m"]["period_from"] == "controller's choice"
    assert "26 months" in rules["analytics-26m"]["rationale"]
    html = to_html(document)
    assert "Controller's choice</span> The notice names no period for website analytics" in html


def test_ihpa_transfers_are_shown_as_the_controllers_choice(ledger: Ledger) -> None:
    """IHPA's notice says nothing about transfers: the record shows no notice words for
    them and the safeguards as the controller's choice."""
    ledger.adopt_policy(IHPA, ADOPTED)
    document = build_ropa(ledger, None, NOW)
    told = document["transfers"]["told"]
    assert told["notice"] is None and "Mailchimp" in told["controller_choice"]
    mailchimp = next(x for x in document["transfers"]["outside_uk"]
                     if x["recipient"] == "Mailchimp")
    assert mailchimp["safeguard_rationale"]
    assert document["automated_decision_making"]["notice"] is None
    assert document["security_measures"]["organisation"] == []
    assert document["security_measures"]["organisation_rationale"]


def test_the_record_shows_breaches_and_flags_an_overdue_report(darg: Ledger) -> None:
    """A breach not reported 72 hours after awareness is listed and counted as overdue,
    and the header says it needs attention."""
    ingest(darg, [{"id": "b-1", "type": "breach-detected", "breach": "BR-1",
                   "at": "2024-03-04T09:00:00Z", "categories": ["account"],
                   "exposed_from": "2024-03-01T00:00:00Z",
                   "exposed_until": "2024-03-03T00:00:00Z", "description": "laptop lost"}])
    document = build_ropa(darg, None, NOW)
    assert document["breaches"]["total"] == 1 and document["breaches"]["overdue"] == 1
    assert document["breaches"]["breaches"][0]["breach"] == "BR-1"
    html = to_html(document)
    assert "not reported to the ICO within 72 hours" in html
    assert "laptop lost" not in html
    before = build_ropa(darg, t("2024-03-05T00:00:00Z"), NOW)
    assert before["breaches"]["overdue"] == 0 and before["breaches"]["total"] == 1


def test_the_page_renders_in_headless_chromium(darg: Ledger, tmp_path: Path) -> None:
    """The HTML record loads in headless Chromium: the DOM it builds holds every section
    and a screenshot is taken (looked at by hand when the template changes)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    page = tmp_path / "ropa.html"
    page.write_text(to_html(build_ropa(darg, None, NOW)), encoding="utf-8")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'p'}"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-500:]
    for section in ("Personal data breaches", "Rights, complaints and automated decisions",
                    "Technical and organisational security measures"):
        assert section in dom.stdout
    shot = tmp_path / "ropa.png"
    subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1280,4000",
                    page.as_uri()], capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000


def test_purpose_recipient_rows_show_the_safeguard_rationale(ledger: Ledger) -> None:
    """IHPA's notice names no transfer safeguard: on each purpose card a recipient abroad
    carries the controller's rationale for its safeguard, marked as the controller's
    choice, as the transfers table does; a UK recipient carries none."""
    ledger.adopt_policy(IHPA, ADOPTED)
    document = build_ropa(ledger, None, NOW)
    card = {r["recipient"]: r for r in purpose(document, "direct-marketing")["recipients"]}
    rationale = card["Mailchimp"]["safeguard_rationale"]
    assert rationale is not None and "International Data Transfer Addendum" in rationale
    transfers = {t["recipient"]: t for t in document["transfers"]["outside_uk"]}
    assert rationale == transfers["Mailchimp"]["safeguard_rationale"]
    uk = {r["recipient"]: r for r in purpose(document, "membership")["recipients"]}
    assert uk["IPSE"]["country"] == "GB" and uk["IPSE"]["safeguard_rationale"] is None
    html = to_html(document)
    card_html = unescape(
        html.split('id="purpose-direct-marketing"', 1)[1].split('id="purpose-', 1)[0])
    assert "controller's choice</span>" in card_html
    assert "The notice names no transfer safeguard; the controller's choice: the UK " \
           "International Data Transfer Addendum" in card_html
