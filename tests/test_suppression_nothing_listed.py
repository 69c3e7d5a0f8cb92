"""Ingest skips hashing an address only when nothing can be listed (docs/performance.md).

Rule: a direct-marketing value is checked against the suppression list as it stood at the
value's time. While neither the store, nor a subject the run touched, nor the value's own
subject lists (or ever listed) an address, no address can match, and ingest hashes none.
That shortcut must never change a decision: the first listing of a run, a listing only
the store holds, and a lifted listing each make the check run again.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifecycle.domain.errors import SubjectNotFound
from lifecycle.services.ingest import FactApplier
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact, lines
from tests.suppression_setup import ADOPTED, HQIP, NOW, hqip  # noqa: F401 - hqip is a fixture

ADDRESS = "alice.smith@example.org"


def alice(listed_at: str = "2024-03-10T10:00:00Z") -> list[dict[str, Any]]:
    return [collected("s:alice", "2023-05-02T09:00:00Z", "newsletter", {"email": ADDRESS},
                      id="a-1"),
            fact("consent-given", "s:alice", "2023-05-02T09:00:00Z",
                 purpose="direct-marketing", method="subscribe-form", id="a-2"),
            fact("unsubscribed", "s:alice", listed_at, id="a-3")]


def crm_row(n: int, at: str, email: str = "Alice.Smith+crm@Example.org") -> list[dict[str, Any]]:
    subject = f"crm:{n}"
    return [fact("consent-given", subject, "2023-01-02T00:00:00Z", purpose="direct-marketing",
                 method="crm-import", id=f"c{n}-1"),
            collected(subject, at, "crm-row", {"contact": {"Email": email}},
                      source="third-party", id=f"c{n}-2")]


def test_a_run_that_starts_with_an_empty_list_checks_once_its_first_listing_is_made(
        hqip: Ledger) -> None:
    """One run into an empty store: a CRM row dated before Alice's unsubscribe is accepted
    (nothing listed at its time), one dated after it is refused; the list was empty when
    the run began."""
    report = hqip.ingest(lines([*alice(), *crm_row(1, "2023-09-01T09:00:00Z"),
                                *crm_row(2, "2024-06-01T09:00:00Z")]), NOW)
    refused = [r.fact_id for r in report.rejected]
    assert refused == ["c2-2"], report.as_dict()


def test_a_listing_only_the_store_holds_is_checked_in_a_later_run(hqip: Ledger) -> None:
    """Alice's listing is in the store, not in the run: the CRM row after it is refused."""
    assert hqip.ingest(lines(alice()), NOW).ok
    report = hqip.ingest(lines(crm_row(1, "2024-06-01T09:00:00Z")), NOW)
    assert [r.fact_id for r in report.rejected] == ["c1-2"], report.as_dict()


def test_a_lifted_listing_still_bars_its_own_interval(hqip: Ledger) -> None:
    """Alice opted in again on 1 August: nothing is in force now, but a CRM row dated while
    she was listed is refused in a later run (the store holds only a lifted listing)."""
    assert hqip.ingest(lines([*alice(), fact(
        "consent-given", "s:alice", "2024-08-01T10:00:00Z", purpose="direct-marketing",
        method="subscribe-form", id="a-4")]), NOW).ok
    report = hqip.ingest(lines([*crm_row(1, "2024-05-01T09:00:00Z"),
                                *crm_row(2, "2024-09-01T09:00:00Z")]), NOW)
    assert [r.fact_id for r in report.rejected] == ["c1-2"], report.as_dict()


DAYS = [f"2024-0{m}-1{d}T09:00:00Z" for m in range(1, 10) for d in range(0, 3)]


def _outcome(settings_: Settings, runs: list[list[dict[str, Any]]],
             shortcut: bool, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    with monkeypatch.context() as patch:
        if not shortcut:
            patch.setattr(FactApplier, "_nothing_listed", lambda self, s: False)
        with Ledger(settings_) as ledger:
            ledger.adopt_policy(HQIP, ADOPTED)
            reports = [sorted((r.fact_id or "", r.reason)
                              for r in ledger.ingest(lines(run), NOW).rejected)
                       for run in runs]
            views = []
            for ref in ("s:alice", *(f"crm:{n}" for n in range(4))):
                try:
                    views.append(ledger.subject_view(ref)["limit_breaches"])
                except SubjectNotFound:
                    views.append(None)
    return [reports, views]


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(listed_at=st.sampled_from(DAYS), rows=st.lists(st.sampled_from(DAYS), min_size=1,
                                                      max_size=4),
       split=st.integers(min_value=0, max_value=7), alice_first=st.booleans())
def test_the_shortcut_never_changes_a_decision(
        tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
        listed_at: str, rows: list[str], split: int, alice_first: bool) -> None:
    """Any Alice unsubscribe date, CRM rows on any dates, split into two runs anywhere,
    Alice's facts first or last: with the shortcut and with every address always hashed,
    the same lines are refused and the same breaches flagged (SQLite stores)."""
    crm = [item for n, at in enumerate(rows) for item in crm_row(n, at)]
    facts = [*alice(listed_at), *crm] if alice_first else [*crm, *alice(listed_at)]
    cut = min(split, len(facts))
    runs = [facts[:cut], facts[cut:]]
    outcomes = []
    for shortcut in (True, False):
        home = tmp_path_factory.mktemp("store")
        settings_ = Settings(home=home, database_url=None, master_key=None,
                             master_key_file=home / "master.key")
        outcomes.append(_outcome(settings_, runs, shortcut, monkeypatch))
    assert outcomes[0] == outcomes[1]
