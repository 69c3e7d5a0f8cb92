"""attack14: the first listing of a run made in a later batch (docs/guarantees.md
"Suppression", "Processing limits and arrival order").

Rule: a direct-marketing value holding an address listed by its time is refused unless
the person's own opt-in is in force then, whichever save batch (BATCH_LINES) of the run
the listing and the value fall in. The run's first check read the store's list when it was
still empty; the shortcut must not keep skipping once the run itself lists an address.
"""

from __future__ import annotations

from typing import Any

from lifecycle.services.ingest import BATCH_LINES
from lifecycle.services.ledger import Ledger
from tests.facts_builder import collected, fact, lines
from tests.suppression_setup import NOW, hqip  # noqa: F401 - hqip is a fixture


def filler(prefix: str, day: str, n: int) -> list[dict[str, Any]]:
    return [fact("consent-given", f"filler:{prefix}", f"{day}T00:{i // 60:02d}:{i % 60:02d}Z",
                 purpose="website-analytics", method="cookie-banner", id=f"{prefix}-{i}")
            for i in range(n)]


def crm(name: str, at: str, address: str) -> list[dict[str, Any]]:
    return [fact("consent-given", name, "2023-01-02T00:00:00Z", purpose="direct-marketing",
                 method="crm-import", id=f"{name}-consent"),
            collected(name, at, "crm-row", {"email": address}, source="third-party",
                      id=f"{name}-row")]


def test_a_listing_in_batch_two_bars_a_row_in_batch_three(hqip: Ledger) -> None:  # noqa: F811
    """Batch 1 checks a CRM row of bob@ (the store's list is empty), batch 2 has Alice's
    unsubscribe, batch 3 a CRM row of her address in another spelling: refused; a row of
    bob@ there is accepted."""
    first = crm("crm:bob", "2023-01-03T09:00:00Z", "bob@example.org")
    first += filler("fill-a", "2023-02-01", BATCH_LINES - len(first))
    alice = [collected("s:alice", "2023-05-02T09:00:00Z", "newsletter",
                       {"email": "alice.smith@example.org"}, id="a-1"),
             fact("consent-given", "s:alice", "2023-05-02T09:00:00Z",
                  purpose="direct-marketing", method="subscribe-form", id="a-2"),
             fact("unsubscribed", "s:alice", "2024-03-10T10:00:00Z", id="a-3")]
    second = [*alice, *filler("fill-b", "2024-04-01", BATCH_LINES - len(alice))]
    third = [*crm("crm:1", "2024-06-01T09:00:00Z", "Mailto:ALICE.Smith+x@example.org"),
             *crm("crm:2", "2024-06-01T09:00:00Z", "bob@example.org")]
    batches: list[int] = []
    report = hqip.ingest(lines([*third, *second, *first]), NOW, batches.append)
    assert len(batches) == 3
    assert [r.fact_id for r in report.rejected] == ["crm:1-row"], report.as_dict()
