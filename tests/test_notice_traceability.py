"""Traceability from the notices to the code (issue 13, item 5).

docs/notices/hqip.md and docs/notices/ihpa.md list every sentence of each notice: a promise
with what encodes it and the test that fails if it breaks, or why it promises nothing.
These tests keep the documents honest: every test they name exists, every rule of the
policies is listed, and (with the notice texts beside the checkout) every sentence of each
notice is there word for word. Each rule's period is pinned here too.
"""

from __future__ import annotations

import ast
import re
import tomllib
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import pytest

from lifecycle.policy.loader import load_policy

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "notices"
NOTICES = ROOT.parent / "shared" / "seeds"  # beside the checkout, when present
ORGS = ("hqip", "ihpa")
TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")
PENDING = re.compile(r"\bpending\s*:", re.IGNORECASE)
BACKTICKED = re.compile(r"`([a-z0-9][a-z0-9-]*)`")


def table(org: str, heading: str) -> list[list[str]]:
    """The rows (cells, stripped) of the table under `## heading` in docs/notices/ORG.md."""
    text = (DOCS / f"{org}.md").read_text(encoding="utf-8")
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows[2:]]


def promises(org: str) -> list[list[str]]:
    return table(org, "Promises")


def non_promises(org: str) -> list[list[str]]:
    return table(org, "Sentences that promise nothing about the data held")


@cache
def functions_in(path: str) -> frozenset[str]:
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    return frozenset(node.name for node in tree.body if isinstance(node, ast.FunctionDef))


def sentences(text: str) -> list[str]:
    """The notice split as the documents list it: by line, then at sentence ends."""
    found = []
    for line in text.splitlines():
        line = " ".join(line.replace("•", " ").split())
        found += [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z‘“\[])", line) if s.strip()]
    return found


def notice_text(org: str) -> str:
    if not NOTICES.is_dir():
        pytest.skip(f"the notice texts are not beside this checkout ({NOTICES.name} absent)")
    wanted = tomllib.loads((ROOT / "config" / f"{org}.toml").read_text())["notice"]["sha256"]
    import hashlib

    for path in sorted(NOTICES.glob("*.txt")):
        if hashlib.sha256(path.read_bytes()).hexdigest() == wanted:
            return path.read_text(encoding="utf-8")
    raise AssertionError(f"no notice text has the SHA-256 config/{org}.toml names")


@pytest.mark.parametrize("org", ORGS)
def test_every_promise_names_a_test_that_exists(org: str) -> None:
    """Each promise row names at least one test (`tests/FILE.py::test_name`, which must
    exist); a promise whose enforcement is only pending is no longer accepted."""
    rows = promises(org)
    assert len(rows) >= 20
    for number, said, encoded, tests in rows:
        refs = TEST_REF.findall(tests)
        assert refs, f"{org} {number}: names no test"
        assert not PENDING.search(tests), f"{org} {number}: still marked pending"
        assert encoded, f"{org} {number}: nothing encodes it"
        for path, name in refs:
            assert (ROOT / path).is_file(), f"{org} {number}: {path} does not exist"
            assert name in functions_in(path), f"{org} {number}: {path}::{name} does not exist"


@pytest.mark.parametrize("org", ORGS)
def test_no_entry_is_left_pending(org: str) -> None:
    """No line of docs/notices/ORG.md marks anything `pending:` (a promise waiting for the
    code or test that enforces it): every promise is enforced and tested."""
    text = (DOCS / f"{org}.md").read_text(encoding="utf-8")
    left = [n for n, line in enumerate(text.splitlines(), 1) if PENDING.search(line)]
    assert left == [], f"docs/notices/{org}.md: lines {left} still mark a promise pending"


@pytest.mark.parametrize("org", ORGS)
def test_every_rule_of_the_policy_is_listed(org: str) -> None:
    """Every rule of config/ORG.toml is named where a promise says what encodes it."""
    named = {token for row in promises(org) for token in BACKTICKED.findall(row[2])}
    rules = {rule.id for rule in load_policy(ROOT / "config" / f"{org}.toml").rules}
    assert rules - named == set(), f"rules of config/{org}.toml not in docs/notices/{org}.md"


@pytest.mark.parametrize("org", ORGS)
def test_every_sentence_of_the_notice_is_listed_word_for_word(org: str) -> None:
    """Every sentence of the notice is in one of the two tables, and every sentence the
    tables quote is the notice's own."""
    notice = sentences(notice_text(org))
    listed = [said for _, said, *_ in promises(org)] + [row[0] for row in non_promises(org)]
    quoted = [s.strip() for cell in listed for s in cell.split("<br>")]
    missing = [s for s in notice if s not in quoted]
    assert missing == [], f"sentences of the {org} notice not in docs/notices/{org}.md"
    invented = [s for s in quoted if s not in notice]
    assert invented == [], f"docs/notices/{org}.md quotes words the notice does not hold"


# Each rule's period from a trigger on 10 March 2024 12:00 UTC: when it is due and, with a
# review window, the date it is disposed of (local time). A change to a period or window
# of the bundled policies fails here, naming the rule.
PERIODS = [
    ("hqip", "marketing-13m-after-unsubscribe", "unsubscribed", "2025-04-10", "2025-07-01"),
    ("hqip", "marketing-13m-after-consent-withdrawn", "consent-withdrawn", "2025-04-10",
     "2025-07-01"),
    ("hqip", "marketing-13m-after-objection", "objected", "2025-04-10", "2025-07-01"),
    ("hqip", "analytics-26m", "collected", "2026-05-10", "2026-05-10"),
    ("hqip", "analytics-on-consent-withdrawn", "consent-withdrawn", "2024-03-10", "2024-03-10"),
    ("hqip", "surveys-2y", "collected", "2026-03-10", "2026-07-01"),
    ("hqip", "enquiries-2y-after-last-contact", "activity", "2026-03-10", "2026-03-10"),
    ("hqip", "service-communications-review-6y", "collected", "2030-03-10", "2030-03-10"),
    ("hqip", "events-1y", "collected", "2025-03-10", "2025-07-01"),
    ("hqip", "darg-6y-after-contract", "relationship-ended", "2030-03-10", "2030-03-10"),
    ("hqip", "darg-7y-after-application", "collected", "2031-03-10", "2031-03-10"),
    ("hqip", "parliamentary-records-review-6y", "collected", "2030-03-10", "2030-03-10"),
    ("hqip", "law-enforcement-review-6y", "collected", "2030-03-10", "2030-03-10"),
    ("ihpa", "membership-6y-after-end", "relationship-ended", "2030-03-10", "2030-04-01"),
    ("ihpa", "member-communications-1y-after-end", "relationship-ended", "2025-03-10",
     "2025-03-10"),
    ("ihpa", "marketing-1m-after-unsubscribe", "unsubscribed", "2024-04-10", "2024-04-10"),
    ("ihpa", "marketing-1m-after-consent-withdrawn", "consent-withdrawn", "2024-04-10",
     "2024-04-10"),
    ("ihpa", "marketing-1m-after-objection", "objected", "2024-04-10", "2024-04-10"),
    ("ihpa", "forum-1y-after-end", "relationship-ended", "2025-03-10", "2025-03-10"),
    ("ihpa", "forum-on-consent-withdrawn", "consent-withdrawn", "2024-03-10", "2024-03-10"),
    ("ihpa", "analytics-26m", "collected", "2026-05-10", "2026-05-10"),
    ("ihpa", "payments-6y", "collected", "2030-03-10", "2030-04-01"),
    ("ihpa", "identity-6y-after-end", "relationship-ended", "2030-03-10", "2030-03-10"),
    ("ihpa", "complaints-review-6y", "collected", "2030-03-10", "2030-03-10"),
    ("ihpa", "blocklist-review-5y", "excluded", "2029-03-10", "2029-03-10"),
    ("ihpa", "law-enforcement-review-6y", "collected", "2030-03-10", "2030-03-10"),
]


@pytest.mark.parametrize("org, rule_id, trigger, due, disposed", PERIODS,
                         ids=[f"{p[0]}:{p[1]}" for p in PERIODS])
def test_each_rule_keeps_the_period_it_states(org: str, rule_id: str, trigger: str, due: str,
                                              disposed: str) -> None:
    """A rule runs from its trigger for the period its quote or rationale states, and
    waits for its review window (HQIP: January and July; IHPA: each quarter)."""
    policy = load_policy(ROOT / "config" / f"{org}.toml")
    rule = policy.rule(rule_id)
    assert rule is not None, f"config/{org}.toml has no rule {rule_id}"
    assert rule.trigger == trigger
    due_at = rule.due_at(datetime(2024, 3, 10, 12, tzinfo=UTC))
    assert due_at.date().isoformat() == due
    assert policy.disposal_at(rule, due_at).astimezone(policy.zone).date().isoformat() == (
        disposed)


def test_every_rule_of_the_policies_has_its_period_pinned() -> None:
    """No rule escapes the period table above."""
    pinned = {(org, rule_id) for org, rule_id, *_ in PERIODS}
    for org in ORGS:
        for rule in load_policy(ROOT / "config" / f"{org}.toml").rules:
            assert (org, rule.id) in pinned, f"{org}:{rule.id} has no pinned period"
