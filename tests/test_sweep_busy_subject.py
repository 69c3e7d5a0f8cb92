"""A subject that other writers keep changing while a sweep saves is reported by
reference and the others are swept (README, sweep: "A subject that cannot be swept is
reported by reference and the others go on")."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from eventsourcing.persistence import IntegrityError

from lifecycle.services.ledger import Ledger
from lifecycle.services.sweep import SAVE_RETRIES
from tests.facts_builder import collected, fact, lines
from tests.test_attack18a_late_facts import NOW, adopt

SWEEP_AT = datetime(2025, 6, 1, tzinfo=UTC)


def analytics(who: str) -> list[dict[str, Any]]:
    return [fact("consent-given", who, "2023-01-01T09:00:00Z", purpose="website-analytics",
                 method="cookie-banner", id=f"{who}-c"),
            collected(who, "2023-01-01T09:00:00Z", "ga", {"client_id": f"Zq{who}Qv"},
                      purpose="website-analytics", category="technical", id=f"{who}-ga")]


def test_a_subject_busy_at_every_attempt_is_reported_and_the_others_are_swept(
        ledger: Ledger) -> None:
    """Every save holding `v:busy` loses to another writer (at each of the sweep's
    attempts): the sweep reports `v:busy` as failed, saying why, erases the two others'
    due records all the same, destroys only their keys, and a later sweep (the writer
    gone) erases `v:busy`'s record."""
    adopt(ledger)
    report = ledger.ingest(lines([*analytics("v:busy"), *analytics("v:one"),
                                  *analytics("v:two")]), NOW)
    assert report.ok, report.as_dict()
    busy_id = ledger.subject("v:busy").id
    save = ledger.store.save
    refused: list[int] = []

    def save_losing_busy(*aggregates: Any, **kwargs: Any) -> Any:
        if any(a.id == busy_id for a in aggregates):
            refused.append(len(aggregates))
            raise IntegrityError("another writer saved v:busy first")
        return save(*aggregates, **kwargs)

    ledger.store.save = save_losing_busy  # type: ignore[method-assign]
    swept = ledger.sweep(SWEEP_AT, NOW)
    assert [i["subject"] for i in swept.failed] == ["v:busy"]
    assert str(SAVE_RETRIES) in swept.failed[0]["error"]
    assert sorted(i["subject"] for i in swept.erased) == ["v:one", "v:two"]
    assert len(refused) == 2 * SAVE_RETRIES  # the batch's attempts, then its own
    assert ledger.subject("v:busy").records["ga"].erased_at is None
    assert ledger.subject_view("v:busy")["records"][0]["data"] == {"client_id": "Zqv:busyQv"}
    ledger.store.save = save  # type: ignore[method-assign]
    again = ledger.sweep(SWEEP_AT, NOW)
    assert [i["subject"] for i in again.erased] == ["v:busy"] and not again.failed
