"""Attack 18d: legal holds by placing, under random arrival orders (commit 4a21332).

Rules (docs/guarantees.md "Restrictions and legal holds", "What cannot be undone";
docs/facts.md legal-hold rows, "Order"):

- each placing of a hold id counts on its own; a placing is in force from its `at` until
  the first release of its id dated at or after it (whichever arrived first) or its `until`;
- a release is accepted only if some placing of its id is in force at its time, and a
  release rejected because its placing had not yet arrived lands once re-submitted;
- an erasure request erases no record a placing in force at its time covers, and keeps a
  placing's reason only while that placing is in force at its time;
- the same facts give the same `subject show` (lists in canonical order) in any arrival
  order (documented limits respected: holds, releases and erasure requests dated before an
  erasure request arrive before it; erasure requests in fact-time order), and after
  `projections rebuild`; certificates list exactly the keys the vault destroyed.

The strategy below generates one or two subjects whose holds reuse the SAME ids (also the
same id across subjects), several placings per id with different scopes, with and without
`until`, releases, records of several purposes, and erasure requests.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.services.ledger import Ledger
from tests.histories import arrival_order, chunks
from tests.test_order_independence import (HEALTH, NO_SHRINK, check_erasures, fresh_store,
                                           ingest_all, reference_views, resubmit, views)

BASE = datetime(2023, 3, 1, tzinfo=UTC)
STEP = timedelta(hours=1, minutes=3)
PURPOSES = [("enquiries-complaints", "legitimate-interests"),
            ("surveys-feedback", "legitimate-interests"),
            ("events", "contract"),
            ("service-communications", "legal-obligation")]
HOLD_SCOPES = ["all", "enquiries-complaints", "surveys-feedback", "events"]
HOLD_IDS = ["H", "K"]


@dataclass
class Placing:
    hold: str
    scope: str
    at: datetime
    until: datetime | None
    reason: str
    released: datetime | None = None

    def in_force(self, t: datetime) -> bool:
        return (self.at <= t and (self.released is None or t < self.released)
                and (self.until is None or t < self.until))


@dataclass
class Model:
    ref: str
    tag: str
    n: int = 0
    placings: list[Placing] = field(default_factory=list)
    records: dict[str, tuple[str, datetime]] = field(default_factory=dict)

    def fid(self) -> str:
        self.n += 1
        return f"{self.tag}-f{self.n}"


def iso(t: datetime) -> str:
    return t.isoformat()


@st.composite
def hold_histories(draw: st.DrawFn, same_instant: bool = False) -> list[dict[str, Any]]:
    """A valid history (every fact lands when ingested sorted by fact time). With
    `same_instant`, a placing may share its time with the previous placing of its id."""
    tag = draw(st.integers(0, 10**6))
    models = [Model(f"member:h18d-{tag}-{i}", f"h{tag}n{i}")
              for i in range(draw(st.integers(1, 2)))]
    facts: list[dict[str, Any]] = []
    tick = 0
    last_placing_at: dict[tuple[str, str], datetime] = {}
    for _ in range(draw(st.integers(4, 14))):
        m = draw(st.sampled_from(models))
        kind = draw(st.sampled_from(["collected", "collected", "placed", "placed",
                                     "released", "erasure"]))
        tick += 1
        now = BASE + tick * STEP
        base = {"subject": m.ref, "id": m.fid()}
        if kind == "collected":
            purpose, basis = draw(st.sampled_from(PURPOSES))
            record = f"rec-{m.tag}-{m.n}"
            m.records[record] = (purpose, now)
            facts.append({**base, "type": "collected", "at": iso(now), "record": record,
                          "category": "contact", "purpose": purpose, "basis": basis,
                          "source": "data-subject",
                          "data": {"name": f"Zq{m.tag}x{m.n}Qv"}})
        elif kind == "placed":
            hold = draw(st.sampled_from(HOLD_IDS))
            at = now
            if same_instant and (m.ref, hold) in last_placing_at and draw(st.booleans()):
                at = last_placing_at[(m.ref, hold)]
                # only if no release of that id is dated at or after it (still valid)
            until = None
            if draw(st.booleans()):
                until = at + draw(st.integers(1, 5)) * STEP
            reason = f"Zq{m.tag}Why{m.n}Qv"
            p = Placing(hold, draw(st.sampled_from(HOLD_SCOPES)), at, until, reason)
            m.placings.append(p)
            last_placing_at[(m.ref, hold)] = at
            fact: dict[str, Any] = {**base, "type": "legal-hold-placed", "at": iso(at),
                                    "hold": hold, "scope": p.scope, "reason": reason}
            if until is not None:
                fact["until"] = iso(until)
            facts.append(fact)
        elif kind == "released":
            live = sorted({p.hold for p in m.placings if p.in_force(now)})
            if not live:
                continue
            hold = draw(st.sampled_from(live))
            for p in m.placings:
                if p.hold == hold and p.at <= now and (p.released is None):
                    p.released = now
            last_placing_at.pop((m.ref, hold), None)  # no same-instant placing before it
            facts.append({**base, "type": "legal-hold-released", "at": iso(now),
                          "hold": hold})
        else:
            facts.append({**base, "type": "erasure-requested", "at": iso(now),
                          "request": f"ER-{m.tag}-{m.n}"})
    return facts


# -- what the documents say, worked out from the facts alone --------------------------------

def expected_placings(facts: list[dict[str, Any]], ref: str) -> list[Placing]:
    placings = [Placing(f["hold"], f["scope"], datetime.fromisoformat(f["at"]),
                        datetime.fromisoformat(f["until"]) if "until" in f else None,
                        f["reason"]) for f in facts
                if f["subject"] == ref and f["type"] == "legal-hold-placed"]
    releases = [(datetime.fromisoformat(f["at"]), f["hold"]) for f in facts
                if f["subject"] == ref and f["type"] == "legal-hold-released"]
    for p in placings:
        ends = [t for t, h in releases if h == p.hold and t >= p.at]
        p.released = min(ends) if ends else None
    return placings


def check_holds_rule(ledger: Ledger, facts: list[dict[str, Any]]) -> None:
    """No record a placing in force at an erasure request's time covers is erased by it;
    each placing's reason is erased exactly when some request dated at or after it found
    it out of force; the holds listed are the placings with their release times."""
    for ref in sorted({f["subject"] for f in facts}):
        placings = expected_placings(facts, ref)
        requests = [(datetime.fromisoformat(f["at"]), f["request"]) for f in facts
                    if f["subject"] == ref and f["type"] == "erasure-requested"]
        subject = ledger.subject(ref)
        for name, record in subject.records.items():
            for t, request in requests:
                if record.collected_at <= t and any(
                        p.in_force(t) and p.scope in ("all", record.purpose)
                        for p in placings):
                    assert record.erased_by != request, (
                        f"{ref} {name} erased by {request} under a hold in force then")
        view = ledger.subject_view(ref)
        got = sorted(((h["hold"], h["scope"], h["placed_at"], h["until"], h["released_at"],
                      h["reason"]) for h in view["holds"]), key=repr)
        want = []
        for p in placings:
            erased = any(p.at <= t and not p.in_force(t) for t, _ in requests)
            want.append((p.hold, p.scope, iso(p.at), iso(p.until) if p.until else None,
                         iso(p.released) if p.released else None,
                         "erased" if erased else p.reason))
        want.sort(key=repr)
        assert got == want, f"{ref}: holds {got} != {want}"


def run_property(kind: str, root: Path, facts: list[dict[str, Any]], seed: int,
                 parts: int) -> None:
    with fresh_store(kind, root) as reference:
        expected = reference_views(reference, facts)
        with Ledger(reference) as ledger:
            check_holds_rule(ledger, facts)
    with fresh_store(kind, root) as store:
        rng = random.Random(seed)
        order = arrival_order(facts, rng)
        with Ledger(store) as ledger:
            rejected: list[dict[str, Any]] = []
            for piece in chunks(order, rng, parts):
                if piece:
                    rejected += ingest_all(ledger, piece)
            assert resubmit(ledger, rejected) == [], "a valid fact stayed rejected"
            assert views(ledger, facts) == expected, "views differ from the fact-time order"
            check_holds_rule(ledger, facts)
            ledger.rebuild_projections()
            assert views(ledger, facts) == expected, "views differ after a rebuild"
        check_erasures(store, facts)


@settings(max_examples=20, deadline=None, suppress_health_check=HEALTH, database=None,
          phases=NO_SHRINK)
@given(facts=hold_histories(), seed=st.integers(0, 2**32), parts=st.integers(1, 4))
def test_hold_placings_any_arrival_order_sqlite(tmp_path: Path, facts: list[dict[str, Any]],
                                                seed: int, parts: int) -> None:
    """SQLite: placings and releases of reused hold ids give the fact-time state in any
    arrival order (and after a rebuild); the hold rule and the reasons' rule hold."""
    run_property("sqlite", tmp_path, facts, seed, parts)


@settings(max_examples=4, deadline=None, suppress_health_check=HEALTH, database=None,
          phases=NO_SHRINK)
@given(facts=hold_histories(), seed=st.integers(0, 2**32), parts=st.integers(1, 4))
def test_hold_placings_any_arrival_order_postgres(tmp_path: Path,
                                                  facts: list[dict[str, Any]], seed: int,
                                                  parts: int) -> None:
    """PostgreSQL: the same property, on a fresh database per example."""
    from tests.conftest import require_postgres
    require_postgres()
    run_property("postgres", tmp_path, facts, seed, parts)



@settings(max_examples=40, deadline=None, suppress_health_check=HEALTH, database=None,
          phases=NO_SHRINK, derandomize=True)
@given(facts=hold_histories(same_instant=True), seed=st.integers(0, 2**32),
       parts=st.integers(1, 3))
def test_hold_placings_at_one_instant_any_arrival_order_sqlite(
        tmp_path: Path, facts: list[dict[str, Any]], seed: int, parts: int) -> None:
    """SQLite: as above, where a placing may share its instant with an earlier placing of
    its id (e.g. two scopes placed at once, one with an `until`): each still counts on its
    own, for the records it keeps and for its reason. Minimal case:
    tests/test_attack18d_hold_placings_cases.py::
    test_an_expired_placings_reason_goes_though_another_placing_shares_its_instant."""
    run_property("sqlite", tmp_path, facts, seed, parts)


def loose_arrival_order(facts: list[dict[str, Any]], rng: random.Random
                        ) -> list[dict[str, Any]]:
    """A random permutation pinning only what docs/guarantees.md "What cannot be undone"
    requires: a placing dated before an erasure request of its subject arrives before it,
    and a subject's erasure requests arrive in fact-time order. Releases (and records)
    dated before a request may arrive after it ("The other way round works")."""
    shuffled = facts[:]
    rng.shuffle(shuffled)
    ordered = sorted(facts, key=lambda f: f["at"])
    placed: set[str] = set()
    order: list[dict[str, Any]] = []

    def put(fact: dict[str, Any]) -> None:
        if fact["id"] not in placed:
            placed.add(fact["id"])
            order.append(fact)

    for fact in shuffled:
        if fact["type"] == "erasure-requested":
            for earlier in ordered:
                if (earlier["subject"] == fact["subject"] and earlier["at"] < fact["at"]
                        and earlier["type"] in ("legal-hold-placed", "erasure-requested")):
                    put(earlier)
        put(fact)
    return order


def run_loose(kind: str, root: Path, facts: list[dict[str, Any]], seed: int,
              parts: int) -> None:
    with fresh_store(kind, root) as reference:
        expected = reference_views(reference, facts)
    with fresh_store(kind, root) as store:
        rng = random.Random(seed)
        order = loose_arrival_order(facts, rng)
        with Ledger(store) as ledger:
            rejected: list[dict[str, Any]] = []
            for piece in chunks(order, rng, parts):
                if piece:
                    rejected += ingest_all(ledger, piece)
            assert resubmit(ledger, rejected) == [], "a valid fact stayed rejected"
            assert views(ledger, facts) == expected, "views differ from the fact-time order"
            check_holds_rule(ledger, facts)
        check_erasures(store, facts)


@settings(max_examples=20, deadline=None, suppress_health_check=HEALTH, database=None,
          phases=NO_SHRINK)
@given(facts=hold_histories(), seed=st.integers(0, 2**32), parts=st.integers(1, 4))
def test_late_releases_of_reused_holds_give_the_fact_time_state_sqlite(
        tmp_path: Path, facts: list[dict[str, Any]], seed: int, parts: int) -> None:
    """SQLite: releases (and records) dated before an erasure request may arrive after it
    (only placings and the requests themselves pinned): a late release voids the refusals
    that cited its placings and the request erases the record and the reasons as it
    arrives, leaving the fact-time state; certificates match the vault."""
    run_loose("sqlite", tmp_path, facts, seed, parts)


@settings(max_examples=4, deadline=None, suppress_health_check=HEALTH, database=None,
          phases=NO_SHRINK)
@given(facts=hold_histories(), seed=st.integers(0, 2**32), parts=st.integers(1, 4))
def test_late_releases_of_reused_holds_give_the_fact_time_state_postgres(
        tmp_path: Path, facts: list[dict[str, Any]], seed: int, parts: int) -> None:
    """PostgreSQL: the same property."""
    from tests.conftest import require_postgres
    require_postgres()
    run_loose("postgres", tmp_path, facts, seed, parts)
