"""Attack 11: a store written before held-from clipping (commit 0740f9f), opened by this code.

Rule (docs/guarantees.md "Suppression"; commit 0740f9f: "an address is listed only from
when the subject held it ..., so an address first given after a lifted listing is not on
that listing"; the brief of the change: stores written before it open with sane listings,
the same facts giving the same outcome as in a store this code wrote).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact, lines
from tests.processes import keyed_store, old_source
from tests.suppression_setup import HQIP, NOW
from tests.test_ingest_write_upgrade import run

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "c25685e"  # before listings kept their intervals and addresses their held-from
MASTER_KEY = base64.b64encode(bytes(range(64, 96))).decode()
X = "xavier.first@example.org"
Y = "yolanda.later@example.org"

ALICE = [
    collected("s:alice", "2023-05-01T00:00:00Z", "newsletter", {"email": X}, id="a-1"),
    fact("consent-given", "s:alice", "2023-05-01T00:00:00Z", purpose="direct-marketing",
         method="subscribe-form", id="a-2"),
    fact("unsubscribed", "s:alice", "2024-01-01T00:00:00Z", id="a-3"),
    fact("consent-given", "s:alice", "2024-02-01T00:00:00Z", purpose="direct-marketing",
         method="subscribe-form", id="a-4"),
    collected("s:alice", "2024-06-01T00:00:00Z", "enquiry", {"email": Y},
              purpose="enquiries-complaints", basis="legitimate-interests", id="a-5"),
]
# Arrives late: Y (held from 1 June) is held while she is suppressed again from 1 May.
LATE_UNSUBSCRIBE = [fact("unsubscribed", "s:alice", "2024-05-01T00:00:00Z", id="a-6")]
# Another subject's row holding Y dated 15 January 2024: nobody held Y then.
CRM_ROW = [
    fact("consent-given", "s:crm", "2023-01-02T00:00:00Z", purpose="direct-marketing",
         method="crm-import", id="c-1"),
    collected("s:crm", "2024-01-15T00:00:00Z", "crm-row", {"email": Y},
              source="third-party", id="c-2"),
]


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    return keyed_store(request.param, tmp_path, MASTER_KEY,
                       lambda: request.getfixturevalue("postgres_database"))


@pytest.fixture(scope="module")
def before_src(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from old_source(tmp_path_factory, ROOT, BEFORE, "attack11-before")


def old_ingest(settings: Settings, src: Path, facts: list[dict[str, Any]],
               path: Path) -> dict[str, Any]:
    path.write_text("\n".join(json.dumps(f) for f in facts) + "\n", encoding="utf-8")
    result = run(settings, src, "ingest", str(path), "--json")
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout)
    return report


@pytest.mark.xfail(strict=True, reason=(
    "known limitation (docs/guarantees.md, Suppression): a SuppressionExtended stored "
    "before held-from times were kept has no `at`, so its addresses are listed from "
    "their listings' start (over-suppression only: lawful marketing refused, never "
    "barred marketing let in)"))
def test_an_old_store_does_not_list_an_address_before_it_was_held(
        store: Settings, before_src: Path, tmp_path: Path) -> None:
    """The old code (c25685e) ingests: Alice listed X (1 January 2024), lifted it herself
    (1 February), gave Y first on 1 June; then her unsubscribe of 1 May arrives late (the
    old code extends the list with Y, stored without a time). Opened by this code: Y is
    listed from 1 June (when she first held it) and not on the January listing, as in a
    store this code wrote. A
    CRM row of another subject holding Y dated 15 January lands and is not flagged, as in
    a store this code wrote from the start (tests/test_attack10_listings.py); the same
    after `projections rebuild`."""
    assert run(store, before_src, "policy", "adopt", str(HQIP), "--at",
               "2020-01-01").returncode == 0
    assert old_ingest(store, before_src, ALICE, tmp_path / "a.jsonl")["rejected"] == 0
    assert old_ingest(store, before_src, LATE_UNSUBSCRIBE,
                      tmp_path / "b.jsonl")["rejected"] == 0
    with Ledger(store) as ledger:
        ledger.projections.rebuild()
        listed = {tuple(listings) for by_subject in ledger.suppression_listings().values()
                  for listings in by_subject.values()}
        # X: both listings; Y: from 1 June only (one set of listings: Y got X's)
        assert len(listed) == 2, listed
        report = ledger.ingest(lines(CRM_ROW), NOW)
        assert report.ok, report.as_dict()
        assert ledger.subject_view("s:crm")["limit_breaches"] == []
