"""Suppression between processes that ingest at once (docs/guarantees.md, "Suppression";
"Processing limits and arrival order").

One process lists addresses (each subscriber's unsubscribe) and lifts the listings (their
own opt-in months later); another, at the same time, imports CRM marketing rows holding
those addresses, some dated while they were listed and some after the lift. However the
two interleave, a row dated while its address was listed is never kept silently: it is
refused, or kept and listed in its subject's `limit_breaches`. A row dated after the lift
is accepted and not flagged.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact, lines
from tests.processes import keyed_store, lifecycle, run_together

ROOT = Path(__file__).resolve().parents[1]
HQIP = ROOT / "config" / "hqip.toml"
MASTER_KEY = base64.b64encode(bytes(range(96, 128))).decode()
PEOPLE = 48
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    return keyed_store(request.param, tmp_path, MASTER_KEY,
                       lambda: request.getfixturevalue("postgres_database"))


def address(n: int) -> str:
    return f"person.{n}@example.org"


GROUPS = 8
DRIVER = """
import json, sys
from datetime import UTC, datetime
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import load_settings
for path in sys.argv[1:]:
    # Each file is a run of its own (its own reading of the list), as a new invocation.
    with Ledger(load_settings()) as ledger, open(path, encoding="utf-8") as lines:
        report = ledger.ingest(lines, datetime(2026, 1, 1, tzinfo=UTC))
    print(json.dumps({"file": path, **report.as_dict()}), flush=True)
"""


def group(n: int) -> int:
    return n % GROUPS


def listing_runs() -> list[list[dict[str, Any]]]:
    """Per group of people: a run that lists their addresses, then one that lifts them."""
    runs = []
    for g in range(GROUPS):
        listed, lifted = [], []
        for n in (n for n in range(PEOPLE) if group(n) == g):
            person = f"subscriber:p{n}"
            listed += [
                collected(person, "2023-05-02T09:00:00Z", "newsletter",
                          {"email": address(n)}, id=f"p{n}-1"),
                fact("consent-given", person, "2023-05-02T09:00:00Z",
                     purpose="direct-marketing", method="subscribe-form", id=f"p{n}-2"),
                fact("unsubscribed", person, "2024-03-10T10:00:00Z", id=f"p{n}-3")]
            lifted.append(fact("consent-given", person, "2024-08-01T10:00:00Z",
                               purpose="direct-marketing", method="subscribe-form",
                               id=f"p{n}-4"))
        runs += [listed, lifted]
    return runs


def crm_runs() -> list[list[dict[str, Any]]]:
    """Per group (in the opposite order): a run of CRM rows dated while the addresses were
    listed (1 May 2024) and after the lift (1 September 2024)."""
    runs = []
    for g in reversed(range(GROUPS)):
        rows = []
        for n in (n for n in range(PEOPLE) if group(n) == g):
            for when, tag in (("2024-05-01", "while"), ("2024-09-01", "after")):
                crm = f"crm:{tag}-{n}"
                rows += [fact("consent-given", crm, f"{when}T00:00:00Z",
                              purpose="direct-marketing", method="crm-import",
                              id=f"{tag}-{n}-1"),
                         collected(crm, f"{when}T09:00:00Z", "crm-row",
                                   {"email": address(n)}, source="third-party",
                                   id=f"{tag}-{n}-2")]
        runs.append(rows)
    return runs


def write_runs(tmp_path: Path, name: str, runs: list[list[dict[str, Any]]]) -> list[str]:
    paths = []
    for k, facts in enumerate(runs):
        path = tmp_path / f"{name}-{k}.jsonl"
        path.write_text("\n".join(lines(facts)) + "\n", encoding="utf-8")
        paths.append(str(path))
    return paths


def test_rows_dated_while_listed_are_refused_or_flagged_whatever_the_interleaving(
        store: Settings, tmp_path: Path) -> None:
    """Two processes at once, one listing and lifting addresses run after run, one
    importing CRM rows run after run: every CRM row dated while its address was listed
    is refused or flagged; every row dated after the lift is kept and not flagged; no
    traceback; the same after a rebuild."""
    assert lifecycle(store, "policy", "adopt", str(HQIP), "--at",
                     "2023-01-01").returncode == 0
    commands = [["-c", DRIVER, *write_runs(tmp_path, name, runs)]
                for name, runs in (("listings", listing_runs()), ("crm", crm_runs()))]
    outputs = run_together(store, commands, timeout=300)
    reports = []
    for output in outputs:
        assert output.returncode == 0 and "Traceback" not in output.stderr, output.stderr
        reports.append([json.loads(line) for line in output.stdout.splitlines()])
    assert all(r["rejected"] == 0 for r in reports[0]), reports[0]
    refused = {r["fact"] for run in reports[1] for r in run["rejections"]}
    # A row dated after a lift that had not arrived yet was refused as the list stood
    # then; re-submitted (as rejected lines are), it lands; nothing else changes.
    with Ledger(store) as ledger:
        again = ledger.ingest(lines(f for run in crm_runs() for f in run), NOW)
    refused = {r.fact_id for r in again.rejected}
    assert refused <= {f"while-{n}-2" for n in range(PEOPLE)}, refused
    with Ledger(store) as ledger:
        for rebuilt in (False, True):
            if rebuilt:
                ledger.projections.rebuild()
            silently_kept = []
            for n in range(PEOPLE):
                flagged = any(b["fact"] == "collected"
                              for b in ledger.subject_view(f"crm:while-{n}")["limit_breaches"])
                if f"while-{n}-2" not in refused and not flagged:
                    silently_kept.append(n)
                after = ledger.subject_view(f"crm:after-{n}")
                assert [r["record"] for r in after["records"]] == ["crm-row"]
                assert after["limit_breaches"] == []
            assert silently_kept == [], (silently_kept, rebuilt)
