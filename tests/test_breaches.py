"""The breach register (UK GDPR Art 33/34, issue 13 item 7).

Breach facts go to a register of their own; `breaches list` gives the 72-hour deadline
from awareness and the overdue flag the daemon records; `breaches impact` names the
subjects whose affected records were held and readable during the exposure window, in
fact time, from the log.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from lifecycle.services.breaches import breach_impact, list_breaches
from lifecycle.cli.breaches import breaches as breaches_command
from lifecycle.services.ledger import Ledger
from lifecycle.support.logs import configure_logging
from tests.facts_builder import collected, fact, lines, t

ROOT = Path(__file__).resolve().parents[1]
HQIP = ROOT / "config" / "hqip.toml"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
SECRET = "Spreadsheet of subscribers e-mailed to the wrong list by J. Bloggs"


def breach_fact(type_: str, at: str, breach: str = "BR-1", **fields: Any) -> dict[str, Any]:
    """A breach fact: no subject (it concerns the controller's records)."""
    entry = fact(type_, "-", at, breach=breach, **fields)
    del entry["subject"]
    return entry


def detected(at: str = "2024-03-04T09:00:00Z", **fields: Any) -> dict[str, Any]:
    return breach_fact("breach-detected", at, **{
        "categories": ["contact"], "purposes": ["direct-marketing"],
        "exposed_from": "2024-03-01T00:00:00Z", "exposed_until": "2024-03-03T00:00:00Z",
        "description": SECRET, **fields})


def cli_env(ledger: Ledger) -> dict[str, str | None]:
    settings = ledger.settings
    return {"LIFECYCLE_HOME": str(settings.home),
            "LIFECYCLE_DATABASE_URL": settings.database_url,
            "LIFECYCLE_MASTER_KEY": None, "LIFECYCLE_MASTER_KEY_FILE": None}


def invoke(args: list[str], ledger: Ledger) -> Result:
    return CliRunner().invoke(breaches_command, args, env=cli_env(ledger),
                              catch_exceptions=False)


def invoke_cli(args: list[str], ledger: Ledger) -> Result:
    """The whole command line (e.g. `report ropa`) on this ledger's store."""
    from lifecycle.cli.main import cli

    return CliRunner().invoke(cli, args, env=cli_env(ledger), catch_exceptions=False)


def consented(subject: str, purpose: str = "direct-marketing") -> dict[str, Any]:
    """The consent a consent-based record needs in force before it is collected."""
    return fact("consent-given", subject, "2024-01-01T09:00:00Z", purpose=purpose,
                method="subscribe-form")


def ingest(ledger: Ledger, facts: list[dict[str, Any]]) -> None:
    report = ledger.ingest(lines(facts), NOW)
    assert report.ok, report.rejected


@pytest.fixture(autouse=True)
def json_logs() -> None:
    configure_logging("INFO", json=True)


@pytest.fixture
def exposed(ledger: Ledger) -> Ledger:
    """Subscribers around a breach of marketing contact data exposed 1-3 March 2024:
    held throughout (a), erased by request before it (b), collected after it (c), erased
    by request during it (d), analytics data only (e), contact data for events (f), and
    erased by a request dated before the window that arrives after the breach (g)."""
    ledger.adopt_policy(HQIP, t("2023-01-01T00:00:00Z"))
    mail = {"email": "x@example.org"}
    ingest(ledger, [
        *(consented(f"subscriber:{who}") for who in "abcdg"),
        consented("subscriber:e", "website-analytics"),
        collected("subscriber:a", "2024-01-10T10:00:00Z", "newsletter", mail),
        collected("subscriber:b", "2024-01-10T10:00:00Z", "newsletter", mail),
        fact("erasure-requested", "subscriber:b", "2024-02-20T10:00:00Z", request="ER-b"),
        collected("subscriber:c", "2024-03-05T10:00:00Z", "newsletter", mail),
        collected("subscriber:d", "2024-01-10T10:00:00Z", "newsletter", mail),
        fact("erasure-requested", "subscriber:d", "2024-03-02T10:00:00Z", request="ER-d"),
        collected("subscriber:e", "2024-01-10T10:00:00Z", "visits", {"ip": "192.0.2.5"},
                  purpose="website-analytics", category="technical"),
        collected("subscriber:f", "2024-01-10T10:00:00Z", "event-2024", mail,
                  purpose="events", basis="contract"),
        collected("subscriber:g", "2024-01-10T10:00:00Z", "newsletter", mail),
        detected(),
    ])
    ingest(ledger, [fact("erasure-requested", "subscriber:g", "2024-02-25T10:00:00Z",
                         request="ER-g")])
    return ledger


def test_impact_names_exactly_the_subjects_whose_affected_records_were_readable(
        exposed: Ledger) -> None:
    """Built by hand: only the subjects with a direct-marketing contact record collected
    by the window's end and not erased by its start are named (a, and d, erased during
    it); erased before (b, and g whose request arrived late), collected after (c), and
    records of other categories or purposes (e, f) are not."""
    impact = breach_impact(exposed.store, "BR-1")
    assert [s["subject"] for s in impact["subjects"]] == ["subscriber:a", "subscriber:d"]
    assert impact["subject_count"] == 2 and impact["records_affected"] == 2
    d = impact["subjects"][1]["records"][0]
    assert d["record"] == "newsletter" and d["erased_at"] == "2024-03-02T10:00:00+00:00"


def test_a_breach_naming_records_counts_them_whatever_their_category(ledger: Ledger) -> None:
    """A record named in `records` is affected even when the breach names no category
    or purpose of it."""
    ledger.adopt_policy(HQIP, t("2023-01-01T00:00:00Z"))
    ingest(ledger, [
        consented("subscriber:e", "website-analytics"),
        consented("subscriber:f", "website-analytics"),
        collected("subscriber:e", "2024-01-10T10:00:00Z", "visits", {"ip": "192.0.2.5"},
                  purpose="website-analytics", category="technical"),
        collected("subscriber:f", "2024-01-10T10:00:00Z", "other", {"ip": "192.0.2.6"},
                  purpose="website-analytics", category="technical"),
        detected(categories=None, purposes=None, records=["visits"]),
    ])
    impact = breach_impact(ledger.store, "BR-1")
    assert [s["subject"] for s in impact["subjects"]] == ["subscriber:e"]


def test_the_report_deadline_is_72_hours_from_awareness_and_overdue_is_flagged(
        ledger: Ledger) -> None:
    """A breach the controller became aware of on 4 March 09:00 must be reported by
    7 March 09:00: before then it is open, after it overdue; a daemon tick records the
    overdue flag once and `breaches list` shows it."""
    from lifecycle.daemon import Daemon

    ingest(ledger, [detected()])
    [row] = list_breaches(ledger.store, t("2024-03-07T08:59:00Z"))
    assert row["report_deadline"] == "2024-03-07T09:00:00+00:00"
    assert row["overdue"] is False and row["must_report"] is True
    times = iter([t("2024-03-07T09:01:00Z"), t("2024-03-08T09:00:00Z")])
    daemon = Daemon(ledger, 60, clock=lambda: next(times))
    try:
        ticks = [daemon.tick() for _ in range(2)]
    finally:
        daemon.close()
    assert [k["breaches_flagged_overdue"] for k in ticks] == [1, 0]
    [row] = list_breaches(ledger.store, NOW)
    assert row["overdue"] is True
    assert row["overdue_flagged_at"] == "2024-03-07T09:01:00+00:00"


def test_a_breach_reported_in_time_or_assessed_without_risk_is_not_overdue(
        ledger: Ledger) -> None:
    """Reported to the ICO within 72 hours: not overdue and not late; assessed as no risk
    (Art 33(1) exemption): no report needed; reported after 72 hours: late."""
    ingest(ledger, [
        detected(breach="BR-1"),
        breach_fact("breach-assessed", "2024-03-04T12:00:00Z", breach="BR-1", risk="risk"),
        breach_fact("breach-reported", "2024-03-06T12:00:00Z", breach="BR-1",
                    reference="ICO-123"),
        detected(breach="BR-2"),
        breach_fact("breach-assessed", "2024-03-04T12:00:00Z", breach="BR-2",
                    risk="no-risk"),
        detected(breach="BR-3"),
        breach_fact("breach-reported", "2024-03-09T12:00:00Z", breach="BR-3",
                    reference="ICO-456"),
    ])
    rows = {r["breach"]: r for r in list_breaches(ledger.store, NOW)}
    assert (rows["BR-1"]["overdue"], rows["BR-1"]["reported_late"],
            rows["BR-1"]["ico_reference"]) == (False, False, "ICO-123")
    assert (rows["BR-2"]["must_report"], rows["BR-2"]["overdue"]) == (False, False)
    assert (rows["BR-3"]["overdue"], rows["BR-3"]["reported_late"]) == (False, True)


def test_high_risk_asks_for_the_people_to_be_told_until_they_are(ledger: Ledger) -> None:
    """Art 34: a high-risk breach shows people to notify until breach-subjects-notified."""
    ingest(ledger, [detected(), breach_fact("breach-assessed", "2024-03-04T12:00:00Z",
                                            risk="high-risk")])
    assert list_breaches(ledger.store, NOW)[0]["subjects_to_notify"] is True
    ingest(ledger, [breach_fact("breach-subjects-notified", "2024-03-05T12:00:00Z",
                                method="email")])
    assert list_breaches(ledger.store, NOW)[0]["subjects_to_notify"] is False


def test_breach_steps_are_checked_and_fact_ids_bound(ledger: Ledger) -> None:
    """A step for a breach never detected, a breach without what it affected, a window
    that ends before it starts, a breach fact naming a subject, and a fact id reused for
    other content are each rejected with the line and reason; the same fact again is a
    duplicate."""
    first = detected(id="b-1")
    report = ledger.ingest(lines([
        first,
        breach_fact("breach-assessed", "2024-03-05T00:00:00Z", breach="BR-9", risk="risk"),
        detected(breach="BR-2", categories=None, purposes=None),
        detected(breach="BR-3", exposed_until="2024-02-01T00:00:00Z"),
        {**detected(breach="BR-4"), "subject": "subscriber:1"},
    ]), NOW)
    reasons = {r.line: r.reason for r in report.rejected}
    assert report.accepted == 1
    assert "breach 'BR-9' was never detected" in reasons[2]
    assert "'categories', 'purposes' or 'records'" in reasons[3]
    assert "'exposed_until' is before 'exposed_from'" in reasons[4]
    assert reasons[5].startswith("subject:")  # a breach fact names no subject
    again = ledger.ingest(lines([first, {**first, "breach": "BR-5"}]), NOW)
    assert again.duplicates == 1 and again.accepted == 0
    assert "already names a different fact" in again.rejected[0].reason


def test_the_description_is_sealed_and_never_listed(ledger: Ledger) -> None:
    """The description may name people: it is stored encrypted (not in the event store's
    bytes), and the list and impact documents do not carry it."""
    ingest(ledger, [detected()])
    listed = invoke(["list", "--json"], ledger)
    assert listed.exit_code == 0
    assert SECRET not in listed.stdout and "BR-1" in listed.stdout
    if ledger.settings.database_url is None:
        raw = ledger.settings.events_path.read_bytes()
        assert b"Bloggs" not in raw


def test_breaches_cli_lists_and_names_the_impact(exposed: Ledger) -> None:
    """`breaches list --json` and `breaches impact BR-1 --json` print one document each;
    an unknown breach exits 1 with one line."""
    listed = invoke(["list", "--json"], exposed)
    assert listed.exit_code == 0
    assert [b["breach"] for b in json.loads(listed.stdout)["breaches"]] == ["BR-1"]
    impact = invoke(["impact", "BR-1", "--json"], exposed)
    assert impact.exit_code == 0
    assert json.loads(impact.stdout)["subject_count"] == 2
    text = invoke(["impact", "BR-1"], exposed)
    assert "subscriber:a: newsletter" in text.stdout
    unknown = invoke(["impact", "BR-404"], exposed)
    assert unknown.exit_code == 1 and "not in the register" in unknown.stderr


def test_impact_on_the_sample_data_matches_the_records_the_read_models_show(
        ledger: Ledger) -> None:
    """On the generated HQIP sample, swept month by month (so rules erased some records),
    the subjects `breaches impact` names for a contact-data breach are exactly those whose
    contact records the subject read models show collected by the window's end and not
    erased by its start."""
    from dateutil.relativedelta import relativedelta

    from lifecycle.projections import tables
    from lifecycle.services.samples import generate_facts

    ledger.adopt_policy(HQIP, t("2022-01-01T00:00:00Z"))
    report = ledger.ingest((json.dumps(f) for f in generate_facts("hqip", 120)), NOW)
    assert report.ok, report.rejected[:3]
    for month in range(0, 30, 3):
        ledger.sweep(t("2023-01-01T00:00:00Z") + relativedelta(months=month), NOW)
    start, end = t("2024-06-01T00:00:00Z"), t("2024-06-15T00:00:00Z")
    ingest(ledger, [detected(at="2024-06-16T09:00:00Z", breach="BR-S", purposes=None,
                             exposed_from=start.isoformat(),
                             exposed_until=end.isoformat())])
    ledger.projections.catch_up()
    with ledger.views.connect() as conn:
        documents = [row.document for row in conn.execute(tables.subjects.select())]
    expected = sorted(
        d["subject"] for d in documents if any(
            r["category"] == "contact" and datetime.fromisoformat(r["collected_at"]) <= end
            and (r["erased_at"] is None or datetime.fromisoformat(r["erased_at"]) > start)
            for r in d["records"]))
    erased_before = [d["subject"] for d in documents if any(
        r["category"] == "contact" and r["erased_at"] is not None
        and datetime.fromisoformat(r["erased_at"]) <= start for r in d["records"])]
    impact = breach_impact(ledger.store, "BR-S")
    assert [s["subject"] for s in impact["subjects"]] == expected
    assert expected and erased_before, "the sample must hold both kinds of subject"


def _every_stored_byte(ledger: Ledger) -> bytes:
    """All the store holds: every file under the home (events, keys, read models) and, on
    PostgreSQL, every row of every table in the database as text (bytea as hex)."""
    blobs = [p.read_bytes() for p in ledger.settings.home.rglob("*") if p.is_file()]
    if ledger.settings.database_url is not None:
        import psycopg

        with psycopg.connect(ledger.settings.database_url) as conn:
            tables = conn.execute(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')").fetchall()
            for schema, name in tables:
                rows = conn.execute(f'SELECT t::text FROM "{schema}"."{name}" t').fetchall()
                blobs.extend(row[0].encode() for row in rows)
    return b"\n".join(blobs)


def test_the_description_is_in_no_store_file_log_or_export(
        ledger: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    """After ingest, a sweep, the projections and the ROPA, the description's words are in
    no byte of the store (files, or rows on PostgreSQL, plain or hex), no log line and no
    export; rejected breach facts carrying it do not leak it either."""
    ledger.adopt_policy(HQIP, t("2023-01-01T00:00:00Z"))
    report = ledger.ingest(lines([
        detected(), detected(id="again", breach="BR-1"),
        detected(breach="BR-X", exposed_until="2023-01-01T00:00:00Z"),
        {**detected(breach="BR-Y"), "description": {"who": SECRET}},
    ]), NOW)
    assert report.accepted == 1 and len(report.rejected) == 3
    assert all("Bloggs" not in r.reason for r in report.rejected)
    ledger.sweep(NOW, NOW)
    ledger.projections.catch_up()
    ropa = invoke_cli(["report", "ropa", "--format", "json"], ledger)
    listed = invoke(["list", "--json"], ledger)
    words = [b"Bloggs", SECRET.encode(), SECRET.encode().hex().encode()]
    stored = _every_stored_byte(ledger)
    assert b"BR-1" in stored  # the search does see the register
    assert not [w for w in words if w in stored]
    assert "Bloggs" not in ropa.stdout + listed.stdout + capsys.readouterr().err


def test_an_absurd_exposure_window_or_a_step_before_awareness_is_rejected_plainly(
        ledger: Ledger) -> None:
    """An exposure that began after the controller became aware of it, or that ends after
    the ingest's now (records not yet collected would count as exposed), is rejected with
    the field; a step dated before the breach's awareness in the same file says so rather
    than that the breach was never detected."""
    report = ledger.ingest(lines([
        detected(breach="BR-LATE", exposed_from="2024-03-05T00:00:00Z",
                 exposed_until="2024-03-06T00:00:00Z"),
        detected(breach="BR-FUTURE", exposed_until="2099-01-01T00:00:00Z"),
        detected(breach="BR-1"),
        breach_fact("breach-assessed", "2024-03-01T00:00:00Z", breach="BR-1", risk="risk"),
    ]), NOW)
    reasons = {r.line: r.reason for r in report.rejected}
    assert report.accepted == 1, reasons
    assert reasons[1].startswith("exposed_from:") and "aware" in reasons[1]
    assert reasons[2].startswith("exposed_until:") and "after now" in reasons[2]
    assert "before the controller became aware" in reasons[4]
    assert [r["breach"] for r in list_breaches(ledger.store, NOW)] == ["BR-1"]


def test_two_assessments_at_the_same_moment_keep_the_higher_risk(ledger: Ledger) -> None:
    """Assessed `high-risk` and `no-risk` at the same instant (two people, one minute): the
    register keeps the higher risk, so the report and the Art 34 notice stay asked for,
    whatever the line order; a later assessment still replaces it."""
    at = "2024-03-04T12:00:00Z"
    ingest(ledger, [detected(),
                    breach_fact("breach-assessed", at, risk="no-risk"),
                    breach_fact("breach-assessed", at, risk="high-risk"),
                    breach_fact("breach-assessed", at, risk="risk")])
    [row] = list_breaches(ledger.store, NOW)
    assert (row["risk"], row["must_report"], row["subjects_to_notify"]) == (
        "high-risk", True, True)
    ingest(ledger, [breach_fact("breach-assessed", "2024-03-05T12:00:00Z", risk="no-risk")])
    assert list_breaches(ledger.store, NOW)[0]["risk"] == "no-risk"
