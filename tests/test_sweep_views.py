"""After a sweep's erasures, the views the catch-up leaves equal a rebuild from zero, also
where it writes only what an erasure by retention changes (no re-planning of the records
that stay, no notification rows for a subject that shared nothing)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lifecycle.domain import retention
from lifecycle.projections import views
from lifecycle.services.ledger import Ledger
from tests.facts_builder import collected, fact, lines
from tests.read_models import snapshot_views

CONFIG = Path(__file__).resolve().parents[1] / "config"
ADOPTED = datetime(2023, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
REVIEW = datetime(2025, 7, 1, tzinfo=UTC)


def subscribers(ledger: Ledger) -> None:
    """subscriber:keeps holds a marketing record (due at the review) and an account record
    kept six years; subscriber:shared shared its marketing record; subscriber:plain holds
    the marketing record alone. All three unsubscribed on 2024-03-10."""
    facts: list[dict[str, Any]] = []
    for ref in ("subscriber:keeps", "subscriber:shared", "subscriber:plain"):
        facts += [
            fact("consent-given", ref, "2023-05-02T09:00:00Z", purpose="direct-marketing"),
            collected(ref, "2023-05-02T09:00:00Z", "newsletter", {"email": f"{ref}@e.org"}),
        ]
    facts.append(collected("subscriber:keeps", "2023-05-02T09:00:00Z", "account",
                           {"email": "keeps@e.org"}, purpose="service-communications",
                           basis="legal-obligation"))
    facts.append(fact("shared", "subscriber:shared", "2023-06-01T00:00:00Z",
                      recipient="Clarity Marketing", role="processor",
                      purpose="direct-marketing", basis="consent", records=["newsletter"],
                      country="GB"))
    facts += [fact("unsubscribed", ref, "2024-03-10T10:00:00Z")
              for ref in ("subscriber:keeps", "subscriber:shared", "subscriber:plain")]
    report = ledger.ingest(lines(facts), NOW)
    assert report.accepted == len(facts), report.rejected[:3]


@pytest.mark.parametrize("cached", [True, False], ids=["same-process", "fresh-runner"])
def test_views_after_erasures_by_retention_equal_a_rebuild(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch, cached: bool) -> None:
    """The schedule drops the rows of the records a sweep erased and keeps the others
    without planning them again (a record's plan never reads another record's erasure);
    the notifications view leaves a subject that shared nothing alone. Whether the
    catch-up is handed the swept subjects or reads them, the views equal a rebuild."""
    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    subscribers(ledger)
    ledger.projections.catch_up()
    before = snapshot_views(ledger)
    kept_rows = [row for row in before["lifecycle_retention_schedule"]
                 if '"account"' in row]
    assert len(kept_rows) == 1
    planned: list[str] = []
    plan = views.plan

    def counting(subject: Any, record: Any, *args: Any) -> Any:
        planned.append(record.record)
        return plan(subject, record, *args)

    monkeypatch.setattr(views, "plan", counting)
    if cached:
        report = ledger.sweep(REVIEW, NOW)
    else:
        report = ledger.sweep(REVIEW, NOW, dry_run=True)
        from lifecycle.services.sweep import Sweeper
        report = Sweeper(ledger.store, ledger.vault, ledger.views).sweep(REVIEW, NOW)
        ledger.projections.forget()
        ledger.projections.catch_up()
    assert sorted(e["subject"] for e in report.erased) == [
        "subscriber:keeps", "subscriber:plain", "subscriber:shared"]
    assert planned == [], "no record was planned again by the schedule view"
    swept = snapshot_views(ledger)
    schedule = swept["lifecycle_retention_schedule"]
    assert [row for row in schedule if '"newsletter"' in row] == []
    assert [row for row in schedule if '"account"' in row] == kept_rows
    assert len(swept["lifecycle_erasure_notifications"]) == 1
    monkeypatch.undo()
    ledger.projections.rebuild()
    assert snapshot_views(ledger) == swept


def test_a_subject_with_other_events_since_is_planned_in_full(ledger: Ledger) -> None:
    """A subject whose events since the view's position are not only erasures by
    retention (here a new record arrives in the same catch-up) gets every row planned
    again: the views equal a rebuild."""
    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    subscribers(ledger)
    ledger.projections.catch_up()
    from lifecycle.services.sweep import Sweeper
    Sweeper(ledger.store, ledger.vault, ledger.views).sweep(REVIEW, NOW)
    report = ledger.ingest(lines([collected(
        "subscriber:keeps", "2025-07-02T09:00:00Z", "profile", {"name": "K"},
        purpose="service-communications", basis="legal-obligation")]), NOW)
    assert report.accepted == 1, report.rejected
    ledger.projections.catch_up()
    swept = snapshot_views(ledger)
    assert len([row for row in swept["lifecycle_retention_schedule"]
                if '"profile"' in row]) == 1
    ledger.projections.rebuild()
    assert snapshot_views(ledger) == swept


def test_a_records_disposal_does_not_change_when_another_record_is_erased(
        ledger: Ledger) -> None:
    """The rule the narrow schedule update relies on: erasing one record by retention
    leaves the disposal of the subject's other records as it was."""
    from lifecycle.policy.loader import policy_from_document

    ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
    subscribers(ledger)
    adoption = ledger.store.latest_adoption()
    assert adoption is not None
    policy = policy_from_document(adoption.document)
    before = ledger.store.get_subject("subscriber:keeps")
    assert before is not None
    planned = retention.plan(before, before.records["account"], policy, adoption)
    assert planned is not None
    ledger.sweep(REVIEW, NOW)
    after = ledger.store.get_subject("subscriber:keeps")
    assert after is not None and after.records["newsletter"].erased_at is not None
    assert retention.plan(after, after.records["account"], policy, adoption) == planned
    assert retention.plan(after, after.records["newsletter"], policy, adoption) is None
