"""Attack 18d: a legal hold placed while a sweep runs (commit 4a21332).

Rule (docs/guarantees.md "A sweep never destroys what a hold or a restriction protects as
it runs"; README `sweep`: "a sweep at a past time never destroys what a hold in force as it
runs protects"): a hold recorded, and in force by its fact time, before the sweep decides
about (and destroys the key of) a record it covers pauses that record. Here the hold
lands between the sweep's reading of the subject and its save: the save conflicts, the
sweep reads the subject again (now with the hold) and decides again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lifecycle.services import sweep as sweep_module
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import lines

CONFIG = Path(__file__).resolve().parents[1] / "config"


def test_a_hold_placed_during_a_sweep_pauses_the_record_it_covers(
        backend: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Analytics due in 2024; a sweep at now starts; before it saves, a hold on all
    purposes is placed (dated then, after the sweep's start) by another writer. The
    sweep's save conflicts and it decides again on the subject with the hold: the record
    is paused citing the hold, its value still readable."""
    ref = "member:a18d-race"
    facts: list[dict[str, Any]] = [
        {"id": "rc-c", "type": "consent-given", "subject": ref, "at": "2022-01-01T00:00:00Z",
         "purpose": "website-analytics", "method": "cookie-banner"},
        {"id": "rc-ga", "type": "collected", "subject": ref, "at": "2022-01-01T00:00:00Z",
         "record": "ga", "category": "technical", "purpose": "website-analytics",
         "basis": "consent", "source": "data-subject", "data": {"client_id": "ZqRaceQv"}}]
    with Ledger(backend) as ledger, Ledger(backend) as other:
        ledger.adopt_policy(CONFIG / "hqip.toml", datetime(2019, 1, 1, tzinfo=UTC))
        assert ledger.ingest(lines(facts), datetime.now(UTC)).rejected == []
        original = sweep_module.Sweeper._sweep_subject
        placed: list[datetime] = []
        seen: list[int] = []  # holds on the subject at each decision

        def racing(self: Any, subject: Any, *args: Any, **kwargs: Any) -> None:
            if not placed:
                at = datetime.now(UTC)
                placed.append(at)
                hold = {"id": "rc-hold", "type": "legal-hold-placed", "subject": ref,
                        "at": at.isoformat(), "hold": "LIT", "scope": "all",
                        "reason": "claim"}
                assert other.ingest(lines([hold]), datetime.now(UTC)).rejected == []
            seen.append(len(subject.holds))
            original(self, subject, *args, **kwargs)

        monkeypatch.setattr(sweep_module.Sweeper, "_sweep_subject", racing)
        now = datetime.now(UTC)
        report = ledger.sweep(now, now)
        assert placed, "the sweep did not reach the subject"
        assert seen == [0, 1], seen  # decided again, with the hold in hand
        assert report.erased == []
        assert [(i["record"], i["paused_by"]) for i in report.paused] == [
            ("ga", "legal hold LIT")]
        assert ledger.subject(ref).records["ga"].erased_at is None
