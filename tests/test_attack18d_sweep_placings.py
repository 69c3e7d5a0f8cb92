"""Attack 18d: sweeps against legal holds kept per placing (commit 4a21332).

Rules (docs/guarantees.md "Restrictions and legal holds", "A sweep never destroys what a
hold or a restriction protects as it runs"; README `sweep`): a sweep at `at`, run at `now`,
pauses a due record under a placing (of any id, by scope and `until`) in force at `at` OR
at `now`, and erases every other due record; the next sweep after the release erases it;
state is decided by fact time, so the facts in any arrival order give the same sweep
outcome; erased values do not open and their keys are destroyed.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.domain.errors import KeyDestroyed
from lifecycle.services.ledger import Ledger
from tests.histories import chunks
from tests.test_attack18d_hold_placings_property import Placing, expected_placings, iso
from tests.test_order_independence import (HEALTH, NO_SHRINK, check_erasures, fresh_store,
                                           ingest_all, resubmit, views)

NOW = datetime(2026, 6, 1, tzinfo=UTC)
SCOPES = ["all", "website-analytics", "enquiries-complaints"]


@st.composite
def swept_histories(draw: st.DrawFn) -> tuple[list[dict[str, Any]], datetime]:
    """Analytics records (due 26 months after collection, 2024) and placings/releases of
    two reused hold ids between 2023 and just before NOW; and a sweep time."""
    tag = draw(st.integers(0, 10**6))
    ref = f"member:s18d-{tag}"
    n = 0

    def fid() -> str:
        nonlocal n
        n += 1
        return f"s{tag}-{n}"

    facts: list[dict[str, Any]] = [
        {"id": fid(), "type": "consent-given", "subject": ref,
         "at": "2022-01-01T00:00:00+00:00", "purpose": "website-analytics",
         "method": "cookie-banner"}]
    for i in range(draw(st.integers(1, 3))):
        facts.append({"id": fid(), "type": "collected", "subject": ref,
                      "at": iso(datetime(2022, 1 + i, 2, tzinfo=UTC)), "record": f"ga{i}",
                      "category": "technical", "purpose": "website-analytics",
                      "basis": "consent", "source": "data-subject",
                      "data": {"client_id": f"Zq{tag}Ga{i}Qv"}})
    # Hold facts on a grid of days between 2023-01-01 and NOW (distinct days).
    span = (NOW - datetime(2023, 1, 1, tzinfo=UTC)).days
    days = sorted(draw(st.lists(st.integers(0, span - 1), min_size=1, max_size=7,
                                unique=True)))
    placings: list[Placing] = []
    for day in days:
        at = datetime(2023, 1, 1, tzinfo=UTC) + timedelta(days=day)
        live = sorted({p.hold for p in placings if p.in_force(at)})
        if live and draw(st.booleans()):
            hold = draw(st.sampled_from(live))
            for p in placings:
                if p.hold == hold and p.released is None:
                    p.released = at
            facts.append({"id": fid(), "type": "legal-hold-released", "subject": ref,
                          "at": iso(at), "hold": hold})
            continue
        hold = draw(st.sampled_from(["H", "K"]))
        until = None
        if draw(st.booleans()):
            until = at + timedelta(days=draw(st.integers(1, 900)))
        p = Placing(hold, draw(st.sampled_from(SCOPES)), at, until, f"Zq{tag}Why{n}Qv")
        placings.append(p)
        fact: dict[str, Any] = {"id": fid(), "type": "legal-hold-placed", "subject": ref,
                                "at": iso(at), "hold": hold, "scope": p.scope,
                                "reason": p.reason}
        if until is not None:
            fact["until"] = iso(until)
        facts.append(fact)
    sweep_day = draw(st.integers(0, (NOW - datetime(2024, 9, 1, tzinfo=UTC)).days))
    return facts, datetime(2024, 9, 1, tzinfo=UTC) + timedelta(days=sweep_day)


def protected(placings: list[Placing], moments: list[datetime]) -> bool:
    return any(p.in_force(t) and p.scope in ("all", "website-analytics")
               for p in placings for t in moments)


def sweep_and_check(ledger: Ledger, facts: list[dict[str, Any]], at: datetime
                    ) -> tuple[list[str], list[str]]:
    ref = facts[0]["subject"]
    records = sorted(f["record"] for f in facts if f["type"] == "collected")
    placings = expected_placings(facts, ref)
    first = ledger.sweep(at, NOW)
    erased = sorted(i["record"] for i in first.erased)
    paused = sorted(i["record"] for i in first.paused)
    if protected(placings, [at, NOW]):
        assert erased == [], f"sweep at {at} erased {erased} under a hold in force"
        assert paused == records
    else:
        assert erased == records and paused == []
    # The daemon's sweep at NOW: erases unless a placing is in force now.
    second = ledger.sweep(NOW, NOW)
    still = sorted(r["record"] for r in ledger.subject_view(ref)["records"]
                   if r["data"] != "erased")
    if protected(placings, [NOW]):
        assert still == records and second.erased == []
    else:
        assert still == []
    return erased, paused


@settings(max_examples=15, deadline=None, suppress_health_check=HEALTH, database=None,
          phases=NO_SHRINK)
@given(history=swept_histories(), seed=st.integers(0, 2**32), parts=st.integers(1, 3))
def test_a_sweep_pauses_exactly_what_a_placing_in_force_at_its_time_or_now_covers(
        tmp_path: Path, history: tuple[list[dict[str, Any]], datetime], seed: int,
        parts: int) -> None:
    """SQLite: ingested in fact-time order and in a random order (batches, rejected
    lines re-submitted), the sweep at `at` run at NOW erases a due record exactly when no
    placing covering it is in force at `at` or NOW; the same records in both orders; the
    daemon's sweep at NOW then erases what no placing in force now covers; erased keys
    are destroyed and the views agree (also after a rebuild)."""
    facts, at = history
    outcomes = []
    for arrival in ("sorted", "random"):
        with fresh_store("sqlite", tmp_path) as store:
            with Ledger(store) as ledger:
                if arrival == "sorted":
                    ordered = sorted(facts, key=lambda f: f["at"])
                    assert ingest_all(ledger, ordered) == []
                else:
                    rng = random.Random(seed)
                    shuffled = facts[:]
                    rng.shuffle(shuffled)
                    rejected: list[dict[str, Any]] = []
                    for piece in chunks(shuffled, rng, parts):
                        if piece:
                            rejected += ingest_all(ledger, piece)
                    assert resubmit(ledger, rejected) == []
                result = sweep_and_check(ledger, facts, at)
                view = views(ledger, facts)
                ledger.rebuild_projections()
                assert views(ledger, facts) == view
                outcomes.append((result, view))
            check_erasures(store, facts)
    assert outcomes[0] == outcomes[1]


def test_a_placing_of_one_id_in_force_now_pauses_a_past_sweep_after_another_was_released(
        ledger: Ledger) -> None:
    """Hold H placed on analytics (2023), released (2024-01); H placed again on all
    purposes 2025-01 and in force as the sweep runs: a sweep at 2024-06 (H not in force
    then) pauses the due analytics record citing H; after the second release the same
    sweep erases it and its key is destroyed."""
    ledger.adopt_policy(Path(__file__).resolve().parents[1] / "config" / "hqip.toml",
                        datetime(2019, 1, 1, tzinfo=UTC))
    ref = "member:s18d-plain"
    facts = [
        {"id": "sp-1", "type": "consent-given", "subject": ref,
         "at": "2022-01-01T00:00:00Z", "purpose": "website-analytics",
         "method": "cookie-banner"},
        {"id": "sp-2", "type": "collected", "subject": ref, "at": "2022-01-01T00:00:00Z",
         "record": "ga", "category": "technical", "purpose": "website-analytics",
         "basis": "consent", "source": "data-subject", "data": {"client_id": "ZqSpGaQv"}},
        {"id": "sp-3", "type": "legal-hold-placed", "subject": ref,
         "at": "2023-01-01T00:00:00Z", "hold": "H", "scope": "website-analytics",
         "reason": "first"},
        {"id": "sp-4", "type": "legal-hold-released", "subject": ref,
         "at": "2024-01-01T00:00:00Z", "hold": "H"},
        {"id": "sp-5", "type": "legal-hold-placed", "subject": ref,
         "at": "2025-01-01T00:00:00Z", "hold": "H", "scope": "all", "reason": "second"},
    ]
    # Arrival: the second placing first, then the rest.
    assert ingest_all(ledger, [facts[4]]) == []
    assert ingest_all(ledger, facts[:4]) == []
    sweep_at = datetime(2024, 6, 1, tzinfo=UTC)
    report = ledger.sweep(sweep_at, NOW)
    assert report.erased == []
    assert [(i["record"], i["paused_by"]) for i in report.paused] == [("ga", "legal hold H")]
    assert ingest_all(ledger, [{"id": "sp-6", "type": "legal-hold-released", "subject": ref,
                                "at": "2025-06-01T00:00:00Z", "hold": "H"}]) == []
    assert [i["record"] for i in ledger.sweep(sweep_at, NOW).erased] == ["ga"]
    subject = ledger.subject(ref)
    assert subject.records["ga"].erased_at is not None
    with pytest.raises(KeyDestroyed):
        ledger.vault.open(subject.records["ga"].values[0])


def _analytics(ref: str, tag: str) -> list[dict[str, Any]]:
    return [{"id": f"{tag}-c", "type": "consent-given", "subject": ref,
             "at": "2022-01-01T00:00:00Z", "purpose": "website-analytics",
             "method": "cookie-banner"},
            {"id": f"{tag}-ga", "type": "collected", "subject": ref,
             "at": "2022-01-01T00:00:00Z", "record": "ga", "category": "technical",
             "purpose": "website-analytics", "basis": "consent", "source": "data-subject",
             "data": {"client_id": f"Zq{tag}GaQv"}}]


@pytest.mark.parametrize("case, extra, paused", [
    # a restriction in force at `at` (2024-06), lifted before NOW: paused
    ("restricted-then", [("restricted", "2024-05-01T00:00:00Z", {"scope": "all",
                          "reason": "contested-accuracy"}),
                         ("restriction-lifted", "2025-01-01T00:00:00Z", {"scope": "all"})],
     "restriction (contested-accuracy)"),
    # a restriction placed after `at` and in force at NOW: paused
    ("restricted-now", [("restricted", "2025-01-01T00:00:00Z",
                         {"scope": "website-analytics", "reason": "objection-pending"})],
     "restriction (objection-pending)"),
    # a hold in force only between `at` and NOW (placed after, expired before): erased
    ("held-between", [("legal-hold-placed", "2025-01-01T00:00:00Z",
                       {"hold": "H", "scope": "all", "reason": "x",
                        "until": "2025-06-01T00:00:00Z"})], None),
    # a hold in force at `at`, expired by its `until` before NOW: paused (at `at`)
    ("held-then", [("legal-hold-placed", "2024-05-01T00:00:00Z",
                    {"hold": "H", "scope": "website-analytics", "reason": "x",
                     "until": "2025-06-01T00:00:00Z"})], "legal hold H"),
    # a hold of another scope in force throughout: erased
    ("held-elsewhere", [("legal-hold-placed", "2024-05-01T00:00:00Z",
                         {"hold": "H", "scope": "enquiries-complaints", "reason": "x"})],
     None),
])
def test_a_past_sweep_pauses_under_what_is_in_force_at_its_time_or_now(
        ledger: Ledger, case: str, extra: list[tuple[str, str, dict[str, Any]]],
        paused: str | None) -> None:
    """Analytics due 2024-03; a sweep at 2024-06-01 run at NOW (2026-06-01) pauses it
    exactly when a hold or restriction covering it is in force at 2024-06-01 or at NOW
    (citing it), and otherwise erases it (its key destroyed)."""
    ledger.adopt_policy(Path(__file__).resolve().parents[1] / "config" / "hqip.toml",
                        datetime(2019, 1, 1, tzinfo=UTC))
    ref = f"member:s18d-{case}"
    facts = _analytics(ref, case) + [
        {"id": f"{case}-{n}", "type": kind, "subject": ref, "at": at, **fields}
        for n, (kind, at, fields) in enumerate(extra)]
    assert ingest_all(ledger, facts) == []
    report = ledger.sweep(datetime(2024, 6, 1, tzinfo=UTC), NOW)
    if paused is None:
        assert [i["record"] for i in report.erased] == ["ga"] and report.paused == []
        with pytest.raises(KeyDestroyed):
            ledger.vault.open(ledger.subject(ref).records["ga"].values[0])
    else:
        assert report.erased == []
        assert [(i["record"], i["paused_by"]) for i in report.paused] == [("ga", paused)]
        assert [r["data"] for r in ledger.subject_view(ref)["records"]] == [
            {"client_id": f"Zq{case}GaQv"}]
