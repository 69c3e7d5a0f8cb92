"""A file is judged in fact-time order as a whole: which facts land does not depend on how
its lines fall into save batches (`lifecycle.services.ingest.BATCH_LINES`) or on how many parsed
facts a run holds in memory (`HELD_FACTS`; beyond it, lines wait sealed on disk).

A fact a processing limit forbids given all the file's facts dated before it is rejected
and reported; one that an earlier-dated fact of the same file allows (a consent given
before it, written on a later line, in a later batch) lands.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from lifecycle.services import ingest as ingest_module
from lifecycle.services.ingest import IngestReport
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact

CONFIG = Path(__file__).resolve().parents[1] / "config"
ADOPTED = datetime(2019, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
START = datetime(2024, 3, 1, 9, tzinfo=UTC)


def at(hours: int) -> str:
    return (START + timedelta(hours=hours)).isoformat()


def outcome(report: IngestReport) -> tuple[int, int, list[tuple[int, str]]]:
    return (report.accepted, report.duplicates,
            [(r.line, r.reason) for r in report.rejected])


def test_a_consent_on_a_later_line_in_a_later_batch_lets_the_earlier_record_land(
        backend: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Line 1: marketing data on consent dated 10:00; line 5 (two batches later, batches
    of 2 lines): the consent, dated 09:00. The consent is in force at the record's time,
    so the record lands, as it does when both share a batch."""
    monkeypatch.setattr(ingest_module, "BATCH_LINES", 2)
    who = "person:late-consent"
    file = [
        collected(who, at(1), "newsletter", {"email": "late@example.org"}),
        *[fact("activity", f"person:filler-{n}", at(2)) for n in range(3)],
        fact("consent-given", who, at(0), purpose="direct-marketing",
             method="subscribe-form"),
    ]
    with Ledger(backend) as ledger:
        ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
        report = ledger.ingest([json.dumps(f) for f in file], NOW)
        assert report.ok and report.accepted == 5, report.as_dict()
        assert list(ledger.subject(who).records) == ["newsletter"]


def test_a_record_without_any_consent_in_the_file_is_rejected_and_reported(
        backend: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The consent dated after the record (a later line, a later batch) does not make it
    lawful: the record is rejected, reported with its line and the limit, and not stored;
    the consent lands."""
    monkeypatch.setattr(ingest_module, "BATCH_LINES", 2)
    who = "person:consent-too-late"
    file = [
        collected(who, at(1), "newsletter", {"email": "late@example.org"}),
        *[fact("activity", f"person:filler-{n}", at(2)) for n in range(3)],
        fact("consent-given", who, at(5), purpose="direct-marketing",
             method="subscribe-form"),
    ]
    with Ledger(backend) as ledger:
        ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
        report = ledger.ingest([json.dumps(f) for f in file], NOW)
        assert report.accepted == 4
        assert [r.line for r in report.rejected] == [1]
        assert "limit consent-required" in report.rejected[0].reason
        assert ledger.subject(who).records == {}


def test_lines_held_on_disk_are_sealed(tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond HELD_FACTS, lines wait in a temporary file: nothing of them is readable there
    (the key lives only in the run's memory)."""
    from lifecycle.services.ingest import _FileOrder
    from lifecycle.domain.facts import ParsedLine, parse_line

    monkeypatch.setattr(ingest_module, "HELD_FACTS", 1)
    order = _FileOrder(NOW)
    texts = [json.dumps(collected("person:disk", at(n), f"r{n}",
                                  {"email": f"secret{n}@example.org"}))
             for n in range(3)]
    for number, text in enumerate(reversed(texts), 1):
        order.add(ParsedLine(number, parse_line(text, NOW), text))
    assert order._file is not None
    order._file.seek(0)
    on_disk = order._file.read()
    assert on_disk and b"secret" not in on_disk and b"example.org" not in on_disk
    batches = list(order.batches(2))
    order.close()
    assert [[item.fact.record for item in batch] for batch in batches] == [["r0", "r1"],
                                                                          ["r2"]]


# -- the property ---------------------------------------------------------------------

PEOPLE = ["person:a", "person:b", "person:c"]


@st.composite
def files(draw: st.DrawFn) -> list[str]:
    """Facts of a few subjects about marketing on consent, in a random line order: consents
    given and withdrawn, unsubscribes and re-subscriptions, marketing collections and
    activity, some duplicated, at times that often tie."""
    facts: list[dict[str, Any]] = []
    for n in range(draw(st.integers(1, 14))):
        who = draw(st.sampled_from(PEOPLE))
        when = at(draw(st.integers(0, 6)))
        kind = draw(st.sampled_from(["consent", "withdraw", "unsubscribe", "collect",
                                     "collect", "activity"]))
        if kind == "consent":
            facts.append(fact("consent-given", who, when, purpose="direct-marketing",
                              method=draw(st.sampled_from(["subscribe-form", "phone"]))))
        elif kind == "withdraw":
            facts.append(fact("consent-withdrawn", who, when, purpose="direct-marketing",
                              method="email-link"))
        elif kind == "unsubscribe":
            facts.append(fact("unsubscribed", who, when))
        elif kind == "collect":
            facts.append(collected(who, when, f"r{n % 3}", {"email": f"{who[-1]}@x.org"}))
        else:
            facts.append(fact("activity", who, when, record=f"r{n % 3}"))
    if facts and draw(st.booleans()):
        facts.append(draw(st.sampled_from(facts)))  # a duplicate line
    order = draw(st.permutations(range(len(facts))))
    return [json.dumps(facts[i]) for i in order]


def run(settings: Settings, file: list[str], batch: int, held: int
        ) -> tuple[tuple[int, int, list[tuple[int, str]]], dict[str, Any]]:
    previous = ingest_module.BATCH_LINES, ingest_module.HELD_FACTS
    ingest_module.BATCH_LINES, ingest_module.HELD_FACTS = batch, held
    try:
        with Ledger(settings) as ledger:
            ledger.adopt_policy(CONFIG / "hqip.toml", ADOPTED)
            report = ledger.ingest(file, NOW)
            subjects = {who: ledger.store.get_subject(who) for who in PEOPLE}
            stored = {who: (sorted(s.records), s.version) for who, s in subjects.items()
                      if s is not None}
    finally:
        ingest_module.BATCH_LINES, ingest_module.HELD_FACTS = previous
    return outcome(report), stored


def fresh(root: Path, name: str) -> Settings:
    home = root / name / "lifecycle-data"
    return Settings(home=home, database_url=None, master_key=None,
                    master_key_file=home / "master.key")


@given(file=files(), batch=st.sampled_from([1, 2, 3, 5]), held=st.sampled_from([0, 2, 10**6]))
@hsettings(max_examples=40, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_what_lands_does_not_depend_on_the_batch_size(
        tmp_path: Path, file: list[str], batch: int, held: int) -> None:
    """The same file, in batches of 1, 2, 3 or 5 lines and with 0, 2 or all parsed facts
    held in memory, accepts, duplicates and rejects the same lines (with the same reasons)
    as in one batch: the outcome is the file's, not its batches'."""
    root = tmp_path / f"run-{random.getrandbits(64):x}"
    whole = run(fresh(root, "whole"), file, 10**6, 10**6)
    cut = run(fresh(root, "cut"), file, batch, held)
    assert cut == whole
