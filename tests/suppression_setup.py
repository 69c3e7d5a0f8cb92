"""Shared set-up of the suppression attack tests: the HQIP policy adopted, Alice's address
suppressed by her unsubscribe, and a CRM import of marketing data after it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lifecycle.services.ledger import Ledger
from tests.facts_builder import collected, fact, lines

HQIP = Path(__file__).resolve().parents[1] / "config" / "hqip.toml"
ADOPTED = datetime(2023, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
ALICE = "alice.smith@example.org"


@pytest.fixture
def hqip(ledger: Ledger) -> Ledger:
    ledger.adopt_policy(HQIP, ADOPTED)
    return ledger


def alice_unsubscribes(ledger: Ledger) -> None:
    report = ledger.ingest(lines([
        collected("subscriber:alice", "2023-05-02T09:00:00Z", "newsletter", {"email": ALICE}),
        fact("consent-given", "subscriber:alice", "2023-05-02T09:00:00Z",
             purpose="direct-marketing", method="subscribe-form"),
        fact("unsubscribed", "subscriber:alice", "2024-03-10T10:00:00Z"),
    ]), NOW)
    assert report.rejected == [] and report.accepted == 3


def crm_marketing(ledger: Ledger, subject: str, data: dict[str, Any]) -> Any:
    """A CRM import (not the person's own opt-in) of marketing data after the unsubscribe."""
    return ledger.ingest(lines([
        fact("consent-given", subject, "2024-06-01T00:00:00Z", purpose="direct-marketing",
             method="crm-import"),
        collected(subject, "2024-06-01T09:00:00Z", "crm-row", data, source="third-party"),
    ]), NOW)
