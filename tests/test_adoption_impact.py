"""`policy adopt` reports its impact before anything is erased: how many records become
due at once under the new policy (a sweep now would erase or flag them), by rule, with the
first few, in text and JSON; `--dry-run` reports it and adopts nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact, lines
from tests.processes import json_of, lifecycle
from tests.test_daemon_and_reports import HQIP

NOW = datetime(2025, 1, 1, tzinfo=UTC)
SURVEY_RULE = "surveys-2y"


def policy_variant(tmp_path: Path, name: str, keep_for: str, window: bool) -> Path:
    """hqip.toml with the survey rule's period (and review window) changed."""
    text = HQIP.read_text()
    old = ('id = "surveys-2y"\npurpose = "surveys-feedback"\ntrigger = "collected"\n'
           'keep_for = "P2Y"\naction = "erase"\nwindow = "contact-database-review"\n')
    assert old in text
    new = old.replace('"P2Y"', f'"{keep_for}"')
    if not window:
        new = new.replace('window = "contact-database-review"\n', "")
    text = text.replace(old, new).replace('version = "2023-11"', f'version = "{name}"')
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def survey_facts(respondents: int, collected_at: str) -> list[dict[str, Any]]:
    consents = [fact("consent-given", f"respondent:{n}", collected_at,
                     purpose="surveys-feedback", method="survey-form")
                for n in range(respondents)]
    facts = consents + [collected(f"respondent:{n}", collected_at, "survey", {"answer": f"idea {n}"},
                       purpose="surveys-feedback", category="feedback")
             for n in range(respondents)]
    facts.append(fact("legal-hold-placed", "respondent:0", collected_at, hold="claim-1", reason="litigation",
                      scope="surveys-feedback"))
    return facts


def stored_events(ledger: Ledger) -> int:
    return ledger.projections.head()


def test_adopting_a_shorter_period_reports_what_becomes_due_and_writes_nothing(
        backend: Settings, tmp_path: Path) -> None:
    """Under a policy keeping surveys 99 years nothing is due; a new one keeping them one
    month makes every survey due at once: the impact counts them under the survey rule,
    leaves out the one under a legal hold (counted as paused), lists the first few, and
    writes nothing. The sweep after adopting erases exactly what it reported."""
    long_policy = policy_variant(tmp_path, "long", "P99Y", window=True)
    short_policy = policy_variant(tmp_path, "short", "P1M", window=False)
    with Ledger(backend) as ledger:
        ledger.adopt_policy(long_policy, datetime(2023, 1, 1, tzinfo=UTC))
        assert ledger.ingest(lines(survey_facts(8, "2024-03-05T10:00:00+00:00")), NOW).ok
        events = stored_events(ledger)

        impact = ledger.adoption_impact(short_policy, NOW, NOW)

        assert impact is not None
        document = impact.as_dict()
        assert document["overdue"] == 7 and document["erase"] == 7
        assert document["paused"] == 1 and document["already_due"] == 0
        assert document["by_rule"] == [{"rule": SURVEY_RULE, "action": "erase", "records": 7}]
        assert len(document["first"]) == 5
        assert {i["subject"] for i in document["first"]} <= {f"respondent:{n}"
                                                              for n in range(1, 8)}
        assert stored_events(ledger) == events
        assert ledger.sweep(NOW, NOW, dry_run=True).erased == []

        ledger.adopt_policy(short_policy, NOW)
        erased = ledger.sweep(NOW, NOW).erased
    assert len(erased) == 7 and {i["rule"] for i in erased} == {SURVEY_RULE}


def test_the_same_policy_again_has_no_impact_and_a_future_adoption_makes_nothing_due(
        ledger: Ledger, tmp_path: Path) -> None:
    """Re-adopting the policy in force changes nothing (no impact); a policy adopted from a
    later time applies from then, so nothing becomes due now."""
    long_policy = policy_variant(tmp_path, "long", "P99Y", window=True)
    short_policy = policy_variant(tmp_path, "short", "P1M", window=False)
    ledger.adopt_policy(long_policy, datetime(2023, 1, 1, tzinfo=UTC))
    assert ledger.ingest(lines(survey_facts(3, "2024-03-05T10:00:00+00:00")), NOW).ok

    assert ledger.adoption_impact(long_policy, NOW, NOW) is None
    later = ledger.adoption_impact(short_policy, datetime(2025, 6, 1, tzinfo=UTC), NOW)
    assert later is not None and later.as_dict()["overdue"] == 0


@pytest.mark.parametrize("dry_run", [False, True])
def test_policy_adopt_prints_its_impact_in_text_and_json(
        sqlite_settings: Settings, tmp_path: Path, dry_run: bool) -> None:
    """The command prints the impact (count, by rule, first items) before the adoption
    line, and `--json` carries it as `impact`; with --dry-run nothing is adopted."""
    long_policy = policy_variant(tmp_path, "long", "P99Y", window=True)
    short_policy = policy_variant(tmp_path, "short", "P1M", window=False)
    assert lifecycle(sqlite_settings, "policy", "adopt", str(long_policy),
                     "--at", "2020-01-01").returncode == 0
    facts = tmp_path / "facts.jsonl"
    facts.write_text("\n".join(lines(survey_facts(4, "2020-03-05T10:00:00+00:00"))) + "\n")
    assert lifecycle(sqlite_settings, "ingest", str(facts)).returncode == 0
    extra = ["--dry-run"] if dry_run else []

    text = lifecycle(sqlite_settings, "policy", "adopt", str(short_policy), *extra)
    assert text.returncode == 0, text.stderr
    first_line = text.stdout.splitlines()[0]
    assert "3 records due at once" in first_line and "1 paused" in first_line
    assert f"3 erase  under {SURVEY_RULE}" in text.stdout
    assert ("dry run: nothing adopted" in text.stdout) == dry_run

    status = json_of(lifecycle(sqlite_settings, "status", "--json"))
    assert status["policy"] == ("hqip@long#1" if dry_run else "hqip@short#2")
    again = json_of(lifecycle(sqlite_settings, "policy", "adopt", str(short_policy),
                              "--dry-run", "--json"))
    if dry_run:
        assert again["impact"]["overdue"] == 3 and again["new"] is False
        assert again["impact"]["by_rule"][0]["rule"] == SURVEY_RULE
        assert len(again["impact"]["first"]) == 3
    else:
        assert again["impact"] is None  # already in force
