"""The DSAR export names who may receive the data (Art 15(1)(c)) beside who did, the
third-party source by name when the fact gives it (Art 15(1)(g)), and every activity
(date and purpose) rather than only the last one."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema

from lifecycle.services.dsar_render import to_html
from lifecycle.services.ledger import Ledger
from tests.facts_builder import collected, fact, lines

CONFIG = Path(__file__).resolve().parents[1] / "config"
SCHEMA = json.loads((CONFIG.parent / "docs" / "dsar-export.schema.json").read_text())
ADOPTED = datetime(2019, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
WHO = "subscriber:dsar"


def hqip_subscriber(ledger: Ledger) -> None:
    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    report = ledger.ingest(lines([
        fact("consent-given", WHO, "2024-01-01T09:00:00Z", purpose="direct-marketing",
             method="subscribe-form"),
        collected(WHO, "2024-01-01T09:00:00Z", "newsletter", {"email": "d@example.org"}),
        collected(WHO, "2024-01-02T09:00:00Z", "event-signup", {"name": "Dee"},
                  purpose="events", basis="contract", source="third-party",
                  source_name="Eventbrite"),
        fact("shared", WHO, "2024-01-03T09:00:00Z", recipient="Clarity Marketing",
             role="processor", country="GB", purpose="direct-marketing", basis="consent",
             records=["newsletter"]),
        fact("activity", WHO, "2024-02-01T09:00:00Z", record="newsletter"),
        fact("activity", WHO, "2024-03-01T09:00:00Z", record="event-signup"),
        fact("activity", WHO, "2024-04-01T09:00:00Z"),
    ]), NOW)
    assert report.ok, report.as_dict()


def test_the_export_names_who_may_receive_the_data_beside_who_did(ledger: Ledger) -> None:
    """Recipients declared for a purpose held (direct marketing, events), or declared
    without purposes (every purpose), are listed as possible recipients; those declared
    only for other purposes (Police, the Courts, Google Analytics) are not. The actual
    disclosure is listed apart."""
    hqip_subscriber(ledger)
    export = ledger.dsar_export(WHO, NOW)
    possible = {p["recipient"]: p for p in export["possible_recipients"]}
    assert set(possible) == {"Clarity Marketing", "IT service provider", "NHS England",
                             "Local authority"}
    assert possible["Clarity Marketing"]["purposes"] == ["direct-marketing", "events"]
    assert possible["NHS England"]["declared_for"] == "every purpose"
    assert [r["recipient"] for r in export["recipients"]] == ["Clarity Marketing"]
    jsonschema.validate(export, SCHEMA)


def test_an_erased_purpose_no_longer_makes_a_possible_recipient(ledger: Ledger) -> None:
    """After an erasure request takes every record, no recipient may receive anything."""
    hqip_subscriber(ledger)
    assert ledger.ingest(lines([fact("erasure-requested", WHO, "2024-05-01T09:00:00Z",
                                     request="ER-d")]), NOW).ok
    assert ledger.dsar_export(WHO, NOW)["possible_recipients"] == []


def test_the_export_names_a_third_party_source_and_lists_activities(ledger: Ledger) -> None:
    """A record from a third party names it (Eventbrite); each activity fact is listed with
    its date and the purpose of the record it concerned."""
    hqip_subscriber(ledger)
    export = ledger.dsar_export(WHO, NOW)
    records = {r["record"]: r for r in export["records"]}
    assert records["event-signup"]["source_name"] == "Eventbrite"
    assert records["newsletter"]["source_name"] is None
    assert [(a["at"][:10], a["purpose"]) for a in export["activities"]] == [
        ("2024-02-01", "direct-marketing"), ("2024-03-01", "events"), ("2024-04-01", None)]


def test_the_html_pack_shows_possible_recipients_source_and_activities(
        ledger: Ledger) -> None:
    """The readable pack has the possible recipients, the source's name and the
    interactions table."""
    hqip_subscriber(ledger)
    page = to_html(ledger.dsar_export(WHO, NOW))
    assert "Who may receive your data" in page and "Local authority" in page
    assert "Another organisation or person: Eventbrite" in page
    assert "Your interactions with us" in page
    assert "declared for every purpose" in page
