"""The sample-fact generator: deterministic, valid, consistent with the policies, ingestible."""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lifecycle.domain.facts import parse_line
from lifecycle.services.ledger import Ledger
from lifecycle.services.samples import ORGANISATIONS, generate_facts

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def _policy(org: str) -> dict[str, Any]:
    with (ROOT / "config" / f"{org}.toml").open("rb") as handle:
        return tomllib.load(handle)


@pytest.mark.parametrize("org", ORGANISATIONS)
def test_generation_is_deterministic_and_large_enough(org: str) -> None:
    """The same arguments give the same facts; 500 subjects give >= 5,000 facts over
    >= 500 subjects, with unique ids, and another seed gives other facts."""
    facts = generate_facts(org, 500)
    assert facts == generate_facts(org, 500)
    assert facts != generate_facts(org, 500, seed=7)
    assert len(facts) >= 5000
    assert len({f["subject"] for f in facts}) >= 500
    assert len({f["id"] for f in facts}) == len(facts)
    assert all(f["id"].startswith(f"{org}-") for f in facts)


@pytest.mark.parametrize("org", ORGANISATIONS)
def test_every_fact_validates_and_times_are_ordered_within_the_window(org: str) -> None:
    """Every fact passes the v1 validator; times carry an offset, lie in 2022-2024, are
    ordered overall and strictly increase within each subject."""
    facts = generate_facts(org, 300)
    instants = []
    last_of: dict[str, datetime] = {}
    for fact in facts:
        parsed = parse_line(json.dumps(fact))
        assert parsed.at.utcoffset() is not None
        assert parsed.subject not in last_of or last_of[parsed.subject] < parsed.at, fact
        last_of[parsed.subject] = parsed.at
        instants.append(parsed.at)
    assert instants == sorted(instants)
    assert datetime(2022, 1, 1, tzinfo=UTC) <= instants[0]
    assert instants[-1] <= datetime(2025, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("org", ORGANISATIONS)
def test_purposes_bases_and_recipients_are_the_declared_ones(org: str) -> None:
    """Every fact uses a purpose config/<org>.toml declares, with one of its bases, and
    shares with a recipient's declared role, country, safeguard and purposes."""
    policy = _policy(org)
    declared = {name: (r["role"], r["country"], r.get("safeguard"), r.get("purposes"))
                for name, r in policy["recipients"].items()}
    for fact in generate_facts(org, 300):
        for key in ("purpose", "scope"):
            if key in fact and fact[key] != "all":
                assert fact[key] in policy["purposes"], fact
        if "basis" in fact:
            assert fact["basis"] in policy["purposes"][fact["purpose"]]["bases"], fact
        if fact["type"] == "shared":
            role, country, safeguard, purposes = declared[fact["recipient"]]
            assert (fact["role"], fact["country"], fact.get("safeguard")) == (
                role, country, safeguard), fact
            assert purposes is None or fact["purpose"] in purposes, fact


def test_demo_subscriber_unsubscribes_on_10_march_2024() -> None:
    """HQIP always has subscriber:demo-1: consented, then signed up with e-mail and first
    name for direct marketing on consent (a consent-based record needs its consent first),
    active, shared with Clarity Marketing, unsubscribed on 2024-03-10."""
    demo = [f for f in generate_facts("hqip", 20) if f["subject"] == "subscriber:demo-1"]
    types = [f["type"] for f in demo]
    assert types[:2] == ["consent-given", "collected"]
    assert demo[1]["purpose"] == "direct-marketing" and demo[1]["basis"] == "consent"
    assert demo[1]["category"] == "contact"
    assert {"email", "first_name"} <= set(demo[1]["data"])
    assert "activity" in types
    assert any(f["type"] == "shared" and f["recipient"] == "Clarity Marketing" for f in demo)
    assert types[-1] == "unsubscribed" and demo[-1]["at"].startswith("2024-03-10")


def test_demo_member_has_a_membership_lifecycle() -> None:
    """IHPA always has member:demo-1: joins on contract, is verified, pays via PayPal,
    and the membership ends."""
    demo = [f for f in generate_facts("ihpa", 20) if f["subject"] == "member:demo-1"]
    purposes = {f.get("purpose") for f in demo if f["type"] == "collected"}
    assert {"membership", "identity-verification", "payments"} <= purposes
    assert any(f["type"] == "shared" and f["recipient"] == "PayPal" for f in demo)
    assert "relationship-ended" in [f["type"] for f in demo]


@pytest.mark.parametrize("org", ORGANISATIONS)
def test_ingest_after_adopting_the_policy_rejects_nothing(ledger: Ledger, org: str) -> None:
    """Every generated fact obeys the domain rules: a real store under the org's policy
    accepts them all and rejects none."""
    facts = generate_facts(org, 150)
    ledger.adopt_policy(ROOT / "config" / f"{org}.toml", datetime(2022, 1, 1, tzinfo=UTC))
    report = ledger.ingest([json.dumps(f) for f in facts], NOW)
    assert report.rejected == []
    assert report.accepted == len(facts)


@pytest.mark.parametrize("org", ORGANISATIONS)
def test_committed_examples_are_what_the_generator_produces(org: str) -> None:
    """examples/<org>-facts.jsonl equals generate_facts(org, 600), one fact per line
    (rewrite them with `python -m lifecycle.services.samples`)."""
    path = ROOT / "examples" / f"{org}-facts.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == generate_facts(org, 600)
