"""Random valid subject histories over config/hqip.toml, for the order-independence suite.

A history is a list of fact dicts (ingest format v1) for one to three subjects. It is valid
when ingested sorted by fact time: every fact's prerequisite (the record, the consent, the
restriction, the hold) is strictly earlier in fact time, and no two facts share a time.
A small model of each subject (consents, restrictions, holds, erasures) decides which
facts are valid next, the processing limits included (lifecycle.domain.limits: no consent-based
data without a consent in force, nothing new inside a restriction); personal values are
distinctive strings so a byte search can find them.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

BASE = datetime(2023, 3, 1, tzinfo=UTC)
STEP = timedelta(minutes=7, seconds=13)  # distinct times; several steps span hours

# (purpose, basis) pairs hqip.toml allows; legal-obligation data survives erasure.
COLLECTIONS = [
    ("direct-marketing", "consent"),
    ("surveys-feedback", "legitimate-interests"),
    ("enquiries-complaints", "legitimate-interests"),
    ("service-communications", "legal-obligation"),
    ("parliamentary-records", "legal-obligation"),
    ("events", "contract"),
    ("website-analytics", "consent"),
]
CONSENT_PURPOSES = ["direct-marketing", "website-analytics", "surveys-feedback", "events"]
OBJECTION_PURPOSES = ["direct-marketing", "surveys-feedback", "enquiries-complaints"]
SCOPES = ["all", "direct-marketing", "enquiries-complaints", "service-communications"]
RESTRICTION_REASONS = ["contested-accuracy", "unlawful-processing", "legal-claims",
                       "objection-pending"]
# recipient, role, country, purpose, basis (as hqip.toml declares them)
SHARES = [
    ("Clarity Marketing", "processor", "GB", "direct-marketing", "consent"),
    ("IT service provider", "processor", "GB", "enquiries-complaints",
     "legitimate-interests"),
    ("NHS England", "controller", "GB", "service-communications", "legal-obligation"),
]
KINDS = ["collected", "collected", "rectified", "consent-given", "consent-withdrawn",
         "unsubscribed", "objected", "restricted", "restriction-lifted", "legal-hold-placed",
         "legal-hold-released", "erasure-requested", "shared"]
# Facts whose prerequisites another fact provides (re-submitted when they come too early).
PINNED_BEFORE_ERASURE = {"legal-hold-placed", "legal-hold-released", "restricted",
                         "restriction-lifted", "erasure-requested", "unsubscribed",
                         "objected"}


@dataclass
class SubjectModel:
    """What the facts so far decide for one subject, enough to keep the next one valid."""

    ref: str
    tag: str
    records: list[str] = field(default_factory=list)
    open_records: list[str] = field(default_factory=list)  # collected after the last erasure
    consents: set[str] = field(default_factory=set)
    restrictions: set[str] = field(default_factory=set)
    holds: list[str] = field(default_factory=list)
    purposes: dict[str, str] = field(default_factory=dict)  # record -> purpose
    counter: int = 0

    def allowed(self, purpose: str, basis: str) -> bool:
        """Processing limits (lifecycle.domain.limits): consent-based data needs a consent in
        force (an unsubscribe or marketing objection withdraws it); nothing new inside a
        restriction of its scope."""
        if basis == "consent" and purpose not in self.consents:
            return False
        return "all" not in self.restrictions and purpose not in self.restrictions

    def name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.tag}-{self.counter}"


class Clock:
    def __init__(self) -> None:
        self.n = 0

    def next(self) -> str:
        self.n += 1
        return (BASE + self.n * STEP).isoformat()


def secret(model: SubjectModel, what: str) -> str:
    """A distinctive personal value (found by a byte search if it leaks)."""
    return f"Zq{what}{model.tag}x{model.counter}Qv"


def next_fact(draw: st.DrawFn, kind: str, m: SubjectModel, clock: Clock
              ) -> dict[str, Any] | None:
    """A valid fact of this kind for the subject now, or None when none is (e.g. no
    consent in force to withdraw)."""
    base = {"subject": m.ref}
    if kind == "collected":
        choices = [c for c in COLLECTIONS if m.allowed(*c)]
        if not choices:
            return None
        purpose, basis = draw(st.sampled_from(choices))
        record = m.name("rec")
        m.purposes[record] = purpose
        m.records.append(record)
        m.open_records.append(record)
        # Mostly the person's one address (so suppression and re-subscription meet it
        # again), sometimes another.
        address = "" if draw(st.integers(0, 3)) else f".{m.counter}"
        data = {"email": f"zq.{m.tag}{address}@example.org", "name": secret(m, "Name")}
        return {**base, "type": "collected", "record": record, "category": "contact",
                "purpose": purpose, "basis": basis, "source": "data-subject", "data": data,
                "id": m.name("f"), "at": clock.next()}
    if kind == "rectified":
        if not m.open_records:
            return None
        record = draw(st.sampled_from(m.open_records))
        data = {"name": secret(m, "Rect")}
        if draw(st.integers(0, 2)) == 0:  # sometimes a new address (after an unsubscribe,
            m.counter += 1                # it joins the suppression list)
            data["email"] = f"zq.{m.tag}.r{m.counter}@example.org"
        return {**base, "type": "rectified", "record": record, "id": m.name("f"),
                "data": data, "at": clock.next()}
    if kind == "consent-given":
        purpose = draw(st.sampled_from(CONSENT_PURPOSES))
        m.consents.add(purpose)
        # Direct marketing by the person's own opt-in (the policy's resubscribe method), so
        # a consent after an unsubscribe is valid; others by a method that lifts nothing.
        method = "subscribe-form" if purpose == "direct-marketing" else "web-form"
        return {**base, "type": "consent-given", "purpose": purpose, "method": method,
                "id": m.name("f"), "at": clock.next()}
    if kind == "consent-withdrawn":
        if not m.consents:
            return None
        purpose = draw(st.sampled_from(sorted(m.consents)))
        m.consents.discard(purpose)
        return {**base, "type": "consent-withdrawn", "purpose": purpose,
                "id": m.name("f"), "at": clock.next()}
    if kind == "unsubscribed":
        m.consents.discard("direct-marketing")
        return {**base, "type": "unsubscribed", "id": m.name("f"), "at": clock.next()}
    if kind == "objected":
        purpose = draw(st.sampled_from(OBJECTION_PURPOSES))
        if purpose == "direct-marketing":
            m.consents.discard(purpose)
        return {**base, "type": "objected", "purpose": purpose, "id": m.name("f"),
                "at": clock.next()}
    if kind == "restricted":
        scope = draw(st.sampled_from(SCOPES))
        m.restrictions.add(scope)
        return {**base, "type": "restricted", "scope": scope,
                "reason": draw(st.sampled_from(RESTRICTION_REASONS)), "id": m.name("f"),
                "at": clock.next()}
    if kind == "restriction-lifted":
        if not m.restrictions:
            return None
        scope = draw(st.sampled_from(sorted(m.restrictions)))
        m.restrictions.discard(scope)  # a lift ends every restriction of its scope
        return {**base, "type": "restriction-lifted", "scope": scope, "id": m.name("f"),
                "at": clock.next()}
    if kind == "legal-hold-placed":
        hold = m.name("hold")
        m.holds.append(hold)
        return {**base, "type": "legal-hold-placed", "hold": hold,
                "scope": draw(st.sampled_from(SCOPES)), "reason": secret(m, "Claim"),
                "id": m.name("f"), "at": clock.next()}
    if kind == "legal-hold-released":
        if not m.holds:
            return None
        hold = draw(st.sampled_from(m.holds))
        m.holds.remove(hold)
        return {**base, "type": "legal-hold-released", "hold": hold, "id": m.name("f"),
                "at": clock.next()}
    if kind == "erasure-requested":
        m.open_records = []  # records before it are erased or kept: refer to them no more
        return {**base, "type": "erasure-requested", "request": m.name("ER"),
                "id": m.name("f"), "at": clock.next()}
    if kind == "shared":
        if not m.open_records:
            return None
        shares = [s for s in SHARES if m.allowed(s[3], s[4])]
        shareable = [r for r in m.open_records if m.allowed(m.purposes[r], "")]
        if not shares or not shareable:
            return None
        recipient, role, country, purpose, basis = draw(st.sampled_from(shares))
        records = draw(st.lists(st.sampled_from(shareable), min_size=1, max_size=2,
                                unique=True))
        return {**base, "type": "shared", "recipient": recipient, "role": role,
                "country": country, "purpose": purpose, "basis": basis, "records": records,
                "id": m.name("f"), "at": clock.next()}
    raise AssertionError(kind)


@st.composite
def histories(draw: st.DrawFn, max_subjects: int = 3, max_facts: int = 12,
              prefix: str = "member") -> list[dict[str, Any]]:
    """Facts for 1..max_subjects subjects, interleaved in fact time, sorted by it."""
    clock = Clock()
    tag = draw(st.integers(0, 10**6))
    models = [SubjectModel(f"{prefix}:{tag}-{n}", f"s{tag}n{n}")
              for n in range(draw(st.integers(1, max_subjects)))]
    facts = [next_fact(draw, "collected", m, clock) for m in models]
    for _ in range(draw(st.integers(2, max_facts * len(models)))):
        m = draw(st.sampled_from(models))
        made = next_fact(draw, draw(st.sampled_from(KINDS)), m, clock)
        if made is not None:
            facts.append(made)
    return [f for f in facts if f is not None]


def arrival_order(facts: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """A random permutation, except that every hold, restriction (and their release or
    lift) dated before an erasure request of the same subject arrives before it: an
    erasure is final (see the test module)."""
    shuffled = facts[:]
    rng.shuffle(shuffled)
    placed: set[str] = set()
    order: list[dict[str, Any]] = []

    def put(fact: dict[str, Any]) -> None:
        if fact["id"] not in placed:
            placed.add(fact["id"])
            order.append(fact)

    for fact in shuffled:
        if fact["type"] == "erasure-requested":
            for earlier in by_fact_time(shuffled):  # a release after its hold
                if (earlier["subject"] == fact["subject"]
                        and earlier["type"] in PINNED_BEFORE_ERASURE
                        and earlier["at"] < fact["at"]):
                    put(earlier)
        put(fact)
    return order


def chunks(facts: list[dict[str, Any]], rng: random.Random, parts: int
           ) -> list[list[dict[str, Any]]]:
    """`facts` cut at parts-1 random places (some pieces may be empty)."""
    cuts = sorted(rng.randint(0, len(facts)) for _ in range(parts - 1))
    bounds = [0, *cuts, len(facts)]
    return [facts[a:b] for a, b in zip(bounds, bounds[1:])]


def concurrent_pieces(order: list[dict[str, Any]], rng: random.Random, parts: int
                      ) -> list[list[dict[str, Any]]]:
    """Pieces for processes started together: the facts whose arrival order is pinned
    (erasure requests, and the holds and restrictions that must precede them) stay in one
    piece in their order, since processes running at once keep no order between them;
    every other fact goes to a random piece."""
    pieces: list[list[dict[str, Any]]] = [[] for _ in range(parts)]
    for fact in order:
        pinned = fact["type"] in PINNED_BEFORE_ERASURE
        pieces[0 if pinned else rng.randrange(parts)].append(fact)
    return pieces


def by_fact_time(facts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(facts, key=lambda f: f["at"])


def jsonl(facts: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(f) for f in facts]


def secrets_of(facts: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each record's distinctive values (collected and rectified), by record name."""
    found: dict[str, list[str]] = {}
    for fact in facts:
        if fact["type"] in ("collected", "rectified"):
            found.setdefault(fact["record"], []).extend(
                str(v) for v in fact["data"].values())
    return found


def canonical_view(view: dict[str, Any]) -> dict[str, Any]:
    """A subject view with every list in one order: the lists of `subject show` follow the
    order facts arrived in (records, shares, holds, requests, refusals), which is recording
    time, not what is held."""
    def norm(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: norm(v) for k, v in value.items()}
        if isinstance(value, list):
            items = [norm(v) for v in value]
            return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
        return value
    result: dict[str, Any] = norm(view)
    return result
