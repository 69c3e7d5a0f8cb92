"""Fact-id claims under concurrent ingests (ing2: a claim learns from the inserted-row
count whether any id was bound already). Real `lifecycle ingest` processes started
together on one store, SQLite and PostgreSQL, with overlapping files: the same facts, the
same ids with other content, repeats within a file, breach facts shared and clashing."""

from __future__ import annotations

import base64
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, lines
from tests.processes import keyed_store, lifecycle, run_together
from tests.test_breaches import detected

ROOT = Path(__file__).resolve().parents[1]
HQIP = ROOT / "config" / "hqip.toml"
MASTER_KEY = base64.b64encode(bytes(range(64, 96))).decode()
SHARED, CLASHING, OWN, SUBJECTS = 30, 12, 8, 10
AT = "2024-05-0{}T10:00:00Z"


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    return keyed_store(request.param, tmp_path, MASTER_KEY,
                       lambda: request.getfixturevalue("postgres_database"))


def record(fact_id: str, subject: int, data: dict[str, Any]) -> dict[str, Any]:
    return collected(f"member:{subject}", AT.format(1 + subject % 9), f"rec-{fact_id}", data,
                     id=fact_id, purpose="service-communications",
                     basis="legitimate-interests")


def file_for(writer: int) -> list[dict[str, Any]]:
    shared = [record(f"shared-{k}", k % SUBJECTS, {"k": k, "x": 1e-7}) for k in range(SHARED)]
    clashing = [record(f"clash-{k}", k % SUBJECTS, {"writer": writer}) for k in range(CLASHING)]
    own = [record(f"own-{writer}-{k}", k % SUBJECTS, {"k": k}) for k in range(OWN)]
    breaches = [detected(id="b-shared", breach="BR-S"),
                detected(id="b-clash", breach=f"BR-{writer}")]
    facts = [*shared, *clashing, *own, *breaches, shared[0], own[0], breaches[0]]  # repeats
    return facts[::-1] if writer % 2 else facts  # writers meet the ids in other orders


@pytest.mark.parametrize("writers", [2, 4])
def test_concurrent_claims_bind_each_id_once(store: Settings, tmp_path: Path,
                                             writers: int) -> None:
    """Rule: processes ingesting overlapping files at once store every fact exactly once;
    a fact id given other content by several writers is accepted from exactly one and
    rejected by every other naming the id (exit 1), its stored content the winner's; the
    same fact from several writers or twice in a file is a duplicate, never a rejection;
    a writer with no rejection exits 0; the chain verifies."""
    with Ledger(store) as ledger:
        ledger.adopt_policy(HQIP, datetime(2020, 1, 1, tzinfo=UTC))
    paths = []
    for writer in range(writers):
        path = tmp_path / f"writer-{writer}.jsonl"
        path.write_text("\n".join(lines(file_for(writer))) + "\n", encoding="utf-8")
        paths.append(path)
    outputs = run_together(store, [["-m", "lifecycle", "--log-level", "ERROR", "ingest",
                                    str(p), "--json"] for p in paths], timeout=180)
    reports = []
    for output in outputs:
        assert "Traceback" not in output.stderr, output.stderr
        report = json.loads(output.stdout)
        assert output.returncode == (0 if report["rejected"] == 0 else 1), report
        reports.append(report)
    rejected = [{r["fact"] for r in report["rejections"]} for report in reports]
    for report in reports:
        for rejection in report["rejections"]:
            assert rejection["fact"] in rejection["reason"]
            assert "already names a different fact" in rejection["reason"]
    clash_ids = {f"clash-{k}" for k in range(CLASHING)} | {"b-clash"}
    assert set().union(*rejected) <= clash_ids
    winners = {}
    for fact_id in clash_ids:
        accepted_by = [w for w in range(writers) if fact_id not in rejected[w]]
        assert len(accepted_by) == 1, (fact_id, accepted_by)
        winners[fact_id] = accepted_by[0]
    distinct = SHARED + CLASHING + writers * OWN + 2
    assert sum(r["accepted"] for r in reports) == distinct
    assert sum(r["duplicates"] for r in reports) == (writers - 1) * (SHARED + 1) + 3 * writers

    stored: Counter[str] = Counter()
    with Ledger(store) as ledger:
        for n in range(SUBJECTS):
            stored.update(entry["fact_id"] for entry in ledger.history(f"member:{n}")
                          if "fact_id" in entry)
            for name, found in ledger.subject(f"member:{n}").records.items():
                if name.startswith("rec-clash-"):
                    fact_id = name.removeprefix("rec-")
                    assert ledger.open_sealed(found.values) == {"writer": winners[fact_id]}
    subject_ids = {f"shared-{k}" for k in range(SHARED)} | {
        f"clash-{k}" for k in range(CLASHING)} | {
        f"own-{w}-{k}" for w in range(writers) for k in range(OWN)}
    assert stored == Counter({fact_id: 1 for fact_id in subject_ids})
    assert lifecycle(store, "audit", "verify").returncode == 0
