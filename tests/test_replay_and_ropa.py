"""Auditor replay (state as of T, rebuilt into fresh read models) and the Art 30 record."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from lifecycle.cli.auditor import replay as replay_command
from lifecycle.cli.auditor import report as report_command
from lifecycle.services.ledger import Ledger
from lifecycle.support.logs import configure_logging
from lifecycle.projections import tables
from lifecycle.projections.runner import create_views_engine
from lifecycle.services.replay import VIEWS_FILE, replay
from lifecycle.services.ropa import build_ropa, to_html
from lifecycle.services.samples import generate_facts
from tests.facts_builder import collected, fact, lines, t
from tests.read_models import table_rows

ROOT = Path(__file__).resolve().parents[1]
HQIP = ROOT / "config" / "hqip.toml"
ADOPTED = t("2023-01-01T00:00:00+00:00")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
EMAIL = "robin.reader@example.org"
ENQUIRER_EMAIL = "sam.asker@example.net"
SWEPT = t("2025-07-01T00:00:00+01:00")
GOOGLE_SAFEGUARD = "UK International Data Transfer Addendum to the EU standard contractual clauses"


@pytest.fixture(autouse=True)
def logs_to_stderr() -> None:
    """The `lifecycle` group configures logging; commands invoked alone need it too."""
    configure_logging("INFO", json=True)


@pytest.fixture
def history(ledger: Ledger) -> Ledger:
    """A subscriber who unsubscribed on 2024-03-10 (newsletter erased at the 2025-07-01
    review, analytics shared with Google in the US) and an enquirer erased on request on
    2024-01-15."""
    ledger.adopt_policy(HQIP, ADOPTED)
    report = ledger.ingest(lines([
        collected("subscriber:7", "2023-05-02T09:00:00+01:00", "newsletter",
                  {"email": EMAIL, "first_name": "Robin"}),
        fact("consent-given", "subscriber:7", "2023-05-02T09:00:00+01:00",
             purpose="direct-marketing", method="web-form"),
        fact("shared", "subscriber:7", "2023-06-01T09:00:00+01:00",
             recipient="Clarity Marketing", role="processor", purpose="direct-marketing",
             basis="consent", records=["newsletter"], country="GB"),
        collected("subscriber:7", "2023-07-01T09:00:00+01:00", "site-visits",
                  {"ip": "192.0.2.7"}, purpose="website-analytics", category="technical"),
        fact("consent-given", "subscriber:7", "2023-07-01T09:00:00+01:00",
             purpose="website-analytics"),
        fact("shared", "subscriber:7", "2023-07-01T09:00:00+01:00",
             recipient="Google Analytics", role="processor", purpose="website-analytics",
             basis="consent", categories=["technical"], country="US",
             safeguard=GOOGLE_SAFEGUARD),
        fact("unsubscribed", "subscriber:7", "2024-03-10T10:00:00+00:00"),
        collected("enquirer:3", "2023-02-01T12:00:00+00:00", "enquiry",
                  {"email": ENQUIRER_EMAIL, "question": "opening hours"},
                  purpose="enquiries-complaints", basis="legitimate-interests"),
        fact("erasure-requested", "enquirer:3", "2024-01-15T09:00:00+00:00", request="ER-3"),
    ]), NOW)
    assert report.rejected == []
    ledger.sweep(SWEPT, NOW)
    return ledger


def cli_env(ledger: Ledger) -> dict[str, str | None]:
    """The environment under which `open_ledger()` opens this test's store."""
    settings = ledger.settings
    return {"LIFECYCLE_HOME": str(settings.home),
            "LIFECYCLE_DATABASE_URL": settings.database_url,
            "LIFECYCLE_MASTER_KEY": None, "LIFECYCLE_MASTER_KEY_FILE": None}


def invoke(command: Any, args: list[str], ledger: Ledger) -> Result:
    return CliRunner().invoke(command, args, env=cli_env(ledger), catch_exceptions=False)




def records_of(subject: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["record"]: r for r in subject["records"]}


# -- replay ------------------------------------------------------------------------------

def test_replay_before_an_erasure_shows_the_record_held_and_after_it_erased(
        history: Ledger) -> None:
    """A replay until a moment before the review that erased the newsletter shows it held
    and not erased; a replay until after it shows it erased, by the rule that erased it."""
    before = replay(history.store, t("2025-06-30T12:00:00+01:00"), subject="subscriber:7")
    after = replay(history.store, t("2025-07-01T12:00:00+01:00"), subject="subscriber:7")
    assert before.subject is not None and after.subject is not None
    held = records_of(before.subject)["newsletter"]
    assert (held["erased_at"], held["data"]) == (None, "sealed")
    assert held["retention"]["rule"] == "marketing-13m-after-unsubscribe"
    gone = records_of(after.subject)["newsletter"]
    assert gone["data"] == "erased" and gone["erased_at"] is not None
    assert "marketing-13m-after-unsubscribe" in gone["erased_by"]
    assert (before.records_held, before.records_erased) == (2, 1)  # enquiry erased 2024-01
    assert (after.records_held, after.records_erased) == (1, 2)


def test_replay_follows_fact_time_of_an_erasure_request(history: Ledger) -> None:
    """The enquiry is held on 2024-01-14 and erased from the request on 2024-01-15; a
    replay before the subject's first fact does not know the subject at all."""
    day_before = replay(history.store, t("2024-01-14T00:00:00+00:00"), subject="enquirer:3")
    day_after = replay(history.store, t("2024-01-16T00:00:00+00:00"), subject="enquirer:3")
    assert day_before.subject is not None and day_after.subject is not None
    assert records_of(day_before.subject)["enquiry"]["erased_at"] is None
    assert records_of(day_after.subject)["enquiry"]["erased_by"] == "ER-3"
    early = replay(history.store, t("2023-03-01T00:00:00+00:00"))
    assert early.subjects == 1 and early.records_held == 1  # only the enquirer by then


def test_replay_reports_what_stood_at_the_time(history: Ledger) -> None:
    """Between the unsubscribe and the review: marketing consent withdrawn, analytics
    consent in force, the subscriber suppressed, disclosures counted per recipient, and the
    newsletter not yet due for disposal."""
    report = replay(history.store, t("2024-06-01T00:00:00+00:00"))
    assert report.policy is not None and report.policy["label"] == "hqip@2023-11#1"
    assert report.consents_by_purpose == {"website-analytics": 1}
    assert report.suppressed == 1
    google = [d for d in report.disclosures if d["recipient"] == "Google Analytics"]
    assert google == [{"recipient": "Google Analytics", "role": "processor", "country": "US",
                       "safeguard": GOOGLE_SAFEGUARD, "disclosures": 1, "subjects": 1}]
    assert report.retention_due == 0
    assert report.events_applied + report.events_later + report.policy_events \
        + report.other_events == report.events_read


def test_replay_reports_items_past_due_that_no_sweep_has_disposed_of(history: Ledger) -> None:
    """The analytics record falls due on 2025-09-01 (26 months after collection) and no
    sweep ran after 2025-07-01: a replay at 2025-10-01 reports it due under its rule, still
    held; a replay the day before it falls due does not."""
    before = replay(history.store, t("2025-08-31T00:00:00+00:00"), subject="subscriber:7")
    after = replay(history.store, t("2025-10-01T00:00:00+00:00"), subject="subscriber:7")
    assert before.retention_due == 0
    assert (after.retention_due, after.retention_due_by_rule) == (1, {"analytics-26m": 1})
    assert after.subject is not None
    visits = records_of(after.subject)["site-visits"]
    assert visits["data"] == "sealed" and visits["retention"]["due_by_as_of"] is True


def test_replay_of_the_whole_log_equals_the_live_read_models(ledger: Ledger,
                                                             tmp_path: Path) -> None:
    """Replayed until after the last fact, the fresh read models hold exactly the rows the
    live projections built incrementally: subjects, consents, disclosures and schedule."""
    ledger.adopt_policy(HQIP, ADOPTED)
    facts = lines(generate_facts("hqip", 60))
    ledger.ingest(facts[:200], NOW)
    ledger.projections.catch_up()
    ledger.ingest(facts[200:], NOW)
    ledger.sweep(datetime(2025, 1, 1, tzinfo=UTC), NOW)
    ledger.projections.catch_up()
    report = replay(ledger.store, datetime(2100, 1, 1, tzinfo=UTC), into=tmp_path / "replay")
    assert report.read_models == str(tmp_path / "replay" / VIEWS_FILE)
    replayed = create_views_engine(f"sqlite:///{report.read_models}")
    try:
        for table in (tables.subjects, tables.consents, tables.disclosures, tables.schedule):
            live = table_rows(ledger.views, table)
            assert live, table.name
            assert table_rows(replayed, table) == live, table.name
        with replayed.connect() as conn:
            positions = set(conn.execute(sa.select(tables.positions.c.position)).scalars())
    finally:
        replayed.dispose()
    assert positions == {report.head}
    assert report.events_applied + report.policy_events + report.other_events == report.head


def test_replay_writes_no_event(history: Ledger, tmp_path: Path) -> None:
    """Replay is a pure read of the event store: the log head is the same afterwards, and
    the live read models are not touched."""
    history.projections.catch_up()
    head = history.projections.head()
    positions = history.projections.positions()
    live = table_rows(history.views, tables.subjects)
    replay(history.store, t("2024-06-01T00:00:00+00:00"))
    result = invoke(replay_command, ["--until", "2024-06-01T00:00:00+00:00", "--json",
                                     "--into", str(tmp_path / "r")], history)
    assert result.exit_code == 0
    assert history.projections.head() == head
    assert history.projections.positions() == positions
    assert table_rows(history.views, tables.subjects) == live


def test_replay_counts_every_event_read_in_progress(history: Ledger) -> None:
    """The progress callback sees every notification read, up to the head."""
    seen: list[int] = []
    report = replay(history.store, NOW, on_progress=seen.append)
    assert sum(seen) == report.events_read == history.projections.head()


def test_replay_subject_shows_one_subject_with_values_sealed(history: Ledger) -> None:
    """--subject adds that one subject's document as of --until; values are never
    decrypted: they read "sealed" (or "erased"); no personal value reaches stdout."""
    result = invoke(replay_command, ["--until", "2024-06-01T00:00:00+00:00",
                                     "--subject", "subscriber:7", "--json"], history)
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["as_of"] == "2024-06-01T00:00:00+00:00"
    subject = document["subject"]
    assert subject["subject"] == "subscriber:7"
    assert {r["record"]: r["data"] for r in subject["records"]} == {
        "newsletter": "sealed", "site-visits": "sealed"}
    assert subject["suppressed"] is True
    assert EMAIL not in result.output and "192.0.2.7" not in result.output
    text = invoke(replay_command, ["--until", "2024-06-01T00:00:00+00:00",
                                   "--subject", "subscriber:7"], history)
    assert text.exit_code == 0 and "subscriber:7" in text.stdout
    assert "enquirer:3" not in text.stdout and EMAIL not in text.output


def test_replay_of_an_unknown_subject_is_refused_without_echoing_it(history: Ledger) -> None:
    """A subject with no fact by --until exits 1; the message does not repeat the
    reference (which may be personal)."""
    result = invoke(replay_command, ["--until", "2023-03-01T00:00:00+00:00",
                                     "--subject", "subscriber:7", "--json"], history)
    assert result.exit_code == 1
    assert result.stdout == "" and "subscriber:7" not in result.stderr


def test_replay_only_writes_fresh_read_models(history: Ledger, tmp_path: Path) -> None:
    """--into keeps the replayed read models; a second replay into the same directory is
    refused (exit 2) rather than mixed with the first."""
    first = invoke(replay_command, ["--until", "2024-06-01", "--into", str(tmp_path),
                                    "--json"], history)
    assert first.exit_code == 0
    assert json.loads(first.stdout)["read_models"] == str(tmp_path / VIEWS_FILE)
    second = invoke(replay_command, ["--until", "2024-06-01", "--into", str(tmp_path)],
                    history)
    assert second.exit_code == 2 and "already exists" in second.stderr


def test_replay_plans_under_the_policy_in_force_then(history: Ledger, tmp_path: Path) -> None:
    """A later adoption does not change a replay of an earlier moment: it reports and
    plans under the adoption in force at --until."""
    later = tmp_path / "hqip-2024.toml"
    later.write_text(HQIP.read_text(encoding="utf-8").replace(
        'version = "2023-11"', 'version = "2024-06"'), encoding="utf-8")
    history.adopt_policy(later, t("2024-06-01T00:00:00+00:00"))
    early = replay(history.store, t("2024-05-01T00:00:00+00:00"), subject="subscriber:7")
    late = replay(history.store, t("2024-07-01T00:00:00+00:00"), subject="subscriber:7")
    assert early.policy is not None and late.policy is not None
    assert (early.policy["label"], late.policy["label"]) == ("hqip@2023-11#1",
                                                             "hqip@2024-06#2")
    assert early.subject is not None
    assert records_of(early.subject)["newsletter"]["retention"]["policy"] == "hqip@2023-11#1"
    none_yet = replay(history.store, t("2022-06-01T00:00:00+00:00"))
    assert none_yet.policy is None and none_yet.subjects == 0


# -- record of processing activities -----------------------------------------------------

def test_ropa_lists_every_declared_purpose_with_its_bases_and_data_held(
        history: Ledger) -> None:
    """Every purpose of the policy is listed with its lawful bases; the categories of data
    actually held carry record counts, and data-subject categories come from the reference
    prefixes."""
    document = build_ropa(history, None, NOW)
    purposes = {p["purpose"]: p for p in document["purposes"]}
    assert set(purposes) == {
        "direct-marketing", "website-analytics", "surveys-feedback", "enquiries-complaints",
        "service-communications", "events", "darg-application", "parliamentary-records",
        "law-enforcement"}
    assert purposes["surveys-feedback"]["lawful_bases"] == ["consent", "legitimate-interests"]
    analytics = purposes["website-analytics"]
    assert analytics["data_categories"] == [
        {"category": "technical", "records_held": 1, "records_erased": 0}]
    assert analytics["data_subject_categories"] == [{"category": "subscriber", "subjects": 1}]
    assert analytics["consents_in_force"] == 1
    marketing = purposes["direct-marketing"]
    assert marketing["data_categories"] == [
        {"category": "contact", "records_held": 0, "records_erased": 1}]
    assert purposes["enquiries-complaints"]["records_held"] == 0
    assert document["controller"]["name"] == (
        "Healthcare Quality Improvement Partnership Ltd (HQIP)")
    assert document["dpo"] and document["policy"]["label"] == "hqip@2023-11#1"
    assert document["data_subject_categories"] == [
        {"category": "enquirer", "subjects": 1}, {"category": "subscriber", "subjects": 1}]


def test_ropa_lists_recipients_and_transfers_outside_the_uk_with_safeguards(
        history: Ledger) -> None:
    """Recipients are those the policy declares plus those actually shared with, each with
    role and country; transfers outside the UK are flagged with their safeguard."""
    document = build_ropa(history, None, NOW)
    recipients = {r["recipient"]: r for r in document["recipients"]}
    assert {"Clarity Marketing", "Google Analytics", "Police", "The Courts"} <= set(recipients)
    google = recipients["Google Analytics"]
    assert (google["role"], google["country"], google["safeguard"]) == (
        "processor", "US", GOOGLE_SAFEGUARD)
    assert google["transfer_outside_uk"] is True and google["disclosures"] == 1
    assert recipients["Clarity Marketing"]["transfer_outside_uk"] is False
    transfers = document["transfers"]["outside_uk"]
    assert [(x["recipient"], x["country"], x["safeguard"], x["safeguard_missing"])
            for x in transfers] == [("Google Analytics", "US", GOOGLE_SAFEGUARD, False)]
    assert "outside the United Kingdom" in document["transfers"]["statement"]
    analytics = next(p for p in document["purposes"] if p["purpose"] == "website-analytics")
    in_analytics = {r["recipient"]: r for r in analytics["recipients"]}
    assert in_analytics["Google Analytics"]["transfer_outside_uk"] is True
    assert in_analytics["Google Analytics"]["safeguard"] == GOOGLE_SAFEGUARD


def test_ropa_lists_the_retention_rules(history: Ledger) -> None:
    """Every rule of the policy appears with trigger, period, action, window and quote,
    and under its purpose."""
    document = build_ropa(history, None, NOW)
    rules = {r["rule"]: r for r in document["retention"]["rules"]}
    assert len(rules) == 13
    marketing = rules["marketing-13m-after-unsubscribe"]
    assert (marketing["trigger"], marketing["keep_for"], marketing["action"]) == (
        "unsubscribed", "P13M", "erase")
    assert marketing["window"]["id"] == "contact-database-review"
    assert marketing["window"]["months"] == [1, 7]
    assert "13 months" in marketing["quote"]
    analytics = next(p for p in document["purposes"] if p["purpose"] == "website-analytics")
    assert [r["rule"] for r in analytics["retention"]] == [
        "analytics-26m", "analytics-on-consent-withdrawn"]
    assert analytics["retention"][0]["pending_items"] == 1
    assert any("Crypto-shredding" in m for m in document["security_measures"]["system"])
    assert any("Hash-chained audit log" in m for m in document["security_measures"]["system"])


def test_ropa_at_a_past_moment_uses_a_replay_and_the_policy_then(history: Ledger) -> None:
    """--at T reports the data held at T (the newsletter not yet erased) from a replay,
    under the adoption in force at T; it writes no event."""
    head = history.projections.head()
    document = build_ropa(history, t("2024-06-01T00:00:00+00:00"), NOW)
    assert document["as_of"] == "2024-06-01T00:00:00+00:00"
    assert document["source"].startswith("replay")
    marketing = next(p for p in document["purposes"] if p["purpose"] == "direct-marketing")
    assert marketing["data_categories"] == [
        {"category": "contact", "records_held": 1, "records_erased": 0}]
    assert history.projections.head() == head


def test_ropa_without_a_policy_in_force_is_refused(history: Ledger) -> None:
    """Before the first adoption there is no record to give: exit 1 with the reason."""
    result = invoke(report_command, ["ropa", "--at", "2022-06-01"], history)
    assert result.exit_code == 1 and "no policy" in result.stderr


def test_ropa_html_escapes_and_names_the_controller(history: Ledger, tmp_path: Path) -> None:
    """The HTML page names the controller, is autoescaped (a name with markup is shown as
    text, never as markup) and holds no personal value."""
    page = invoke(report_command, ["ropa", "--format", "html"], history)
    assert page.exit_code == 0
    assert "Healthcare Quality Improvement Partnership Ltd (HQIP)" in page.stdout
    assert "Google Analytics" in page.stdout and "<script" not in page.stdout
    assert EMAIL not in page.stdout and ENQUIRER_EMAIL not in page.stdout
    document = build_ropa(history, None, NOW)
    document["controller"]["name"] = "Acme & <script>alert(1)</script> Ltd"
    html = to_html(document)
    assert "Acme &amp; &lt;script&gt;alert(1)&lt;/script&gt; Ltd" in html
    assert "<script>" not in html


def test_ropa_cli_writes_json_without_personal_values(
        history: Ledger, tmp_path: Path) -> None:
    """`report ropa` prints one JSON document (or writes --out); neither it nor the log
    line holds a personal value."""
    configure_logging("INFO", json=True)  # JSON lines on the command's stderr
    result = invoke(report_command, ["ropa"], history)
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["format"] == "lifecycle-ropa/2"
    out = tmp_path / "ropa.html"
    written = invoke(report_command, ["ropa", "--format", "html", "--out", str(out)], history)
    assert written.exit_code == 0 and written.stdout == ""
    assert "Record of processing activities" in out.read_text(encoding="utf-8")
    logged = result.stderr + written.stderr
    assert "ropa.generated" in logged
    for value in (EMAIL, ENQUIRER_EMAIL, "Robin", "192.0.2.7"):
        assert value not in result.output and value not in logged
