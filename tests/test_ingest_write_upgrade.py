"""A store written by the code before ing2's write-path cuts (commit 15dfe5d), then by this
code, in real processes on SQLite and PostgreSQL: the old facts are duplicates to the new
code, reused ids with other content are rejected, the chain continues and verifies, and
the values read back are the values written, by either code.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from dataclasses import replace
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact
from tests.processes import env_for, keyed_store, old_source
from tests.test_ingest_write_identity import BEFORE, ROOT

HQIP = ROOT / "config" / "hqip.toml"
MASTER_KEY = base64.b64encode(bytes(range(32, 64))).decode()

# Values whose spelling the cuts changed or could: floats, big integers, non-ASCII, control
# characters, nesting, NaN-like strings (a lone surrogate is refused as a line: not here).
HOSTILE: list[dict[str, Any]] = [
    {"email": "Jane+News@Example.COM", "n": 1e-7, "one": 1.0, "z": -0.0, "big": 2**70,
     "neg": -(2**65), "s": "NaN", "u": "\u00e9\u4e2d\U0001f600", "esc": "\u0000\u001f\\",
     "nested": {"b": [1, 2.5, {"c": None}], "a": True}},
    {"deep": json.loads("[" * 20 + "1e-7" + "]" * 20), "\u00e9": "\u2028", "e": 0.1 + 0.2},
    {"u64": 2**64 - 1, "i64": -(2**63), "f": 1e308, "tiny": 5e-324, "empty": {}},
]
TIMES = ["2024-01-02T03:04:05Z", "2024-01-02T03:04:05.000001+05:30",
         "2024-03-10T23:59:59.999999-11:00", "2024-10-27T01:30:00+01:00"]


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    return keyed_store(request.param, tmp_path, MASTER_KEY,
                       lambda: request.getfixturevalue("postgres_database"))


@pytest.fixture(scope="module")
def before_src(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from old_source(tmp_path_factory, ROOT, BEFORE, "before-upgrade")


def run(settings: Settings, src: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**env_for(settings), "PYTHONPATH": f"{src}{os.pathsep}{ROOT}"}
    return subprocess.run([sys.executable, "-m", "lifecycle", "--log-level", "ERROR", *args],
                          env=env, capture_output=True, text=True, timeout=300)


def ingest(settings: Settings, src: Path, path: Path) -> tuple[int, dict[str, Any]]:
    result = run(settings, src, "ingest", str(path), "--json")
    assert "Traceback" not in result.stderr, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, report


def facts_for(prefix: str, subjects: range) -> list[dict[str, Any]]:
    made = []
    for n in subjects:
        for m, at in enumerate(TIMES):
            made.append(collected(f"member:{n}", at, f"{prefix}-rec-{m}",
                                  HOSTILE[(n + m) % len(HOSTILE)], id=f"{prefix}-{n}-{m}",
                                  purpose="service-communications",
                                  basis="legitimate-interests"))
        made.append(fact("legal-hold-placed", f"member:{n}", TIMES[n % len(TIMES)],
                         id=f"{prefix}-hold-{n}", reason="litigation", hold=f"{prefix}-h{n}",
                         scope="all",
                         until="2025-01-01T00:00:00.5+02:00"))
    return made


def write(path: Path, facts: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(f) + "\n" for f in facts), encoding="utf-8")
    return path


def ordered(value: Any) -> Any:
    """`value` with its objects' keys sorted (values are sealed with sorted keys)."""
    if isinstance(value, dict):
        return {key: ordered(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [ordered(item) for item in value]
    return value


def values_of(settings: Settings) -> dict[str, str]:
    """Every record's values as read back (repr: -0.0 and 0.0, 1 and 1.0 told apart)."""
    found = {}
    with Ledger(settings) as ledger:
        for n in range(6):
            subject = ledger.subject(f"member:{n}")
            for name, record in subject.records.items():
                found[f"{n}/{name}"] = repr(ordered(ledger.open_sealed(record.values)))
    return found


def test_a_store_written_before_the_cuts_continues_under_them(
        store: Settings, before_src: Path, tmp_path: Path) -> None:
    """Rule: facts the old code stored are duplicates to the new code (same digests), their
    ids reused with other content are rejected naming the id (exit 1, nothing stored),
    new facts continue the old chain, `audit verify` exits 0 under both codes, and every
    value reads back as written, whichever code sealed it, before and after a key rotation;
    an erasure then erases the subject's records (old and new keys alike)."""
    here = ROOT / "src"
    assert run(store, before_src, "policy", "adopt", str(HQIP), "--at",
               "2020-01-01").returncode == 0
    old = facts_for("old", range(4))
    code, report = ingest(store, before_src, write(tmp_path / "old.jsonl", old))
    assert (code, report["accepted"], report["rejected"]) == (0, len(old), 0), report["rejections"][:3]

    code, report = ingest(store, here, write(tmp_path / "again.jsonl", old))
    assert (code, report["accepted"], report["duplicates"], report["rejected"]) == (
        0, 0, len(old), 0), report

    changed = [{**f, "data": {**f["data"], "extra": 1e-7}} if "data" in f
               else {**f, "reason": "other"} for f in old]
    code, report = ingest(store, here, write(tmp_path / "changed.jsonl", changed))
    assert code != 0 and report["accepted"] == 0 and report["rejected"] == len(changed), report
    assert {r["fact"] for r in report["rejections"]} == {f["id"] for f in old}
    assert all(r["fact"] in r["reason"] for r in report["rejections"]), report

    new = facts_for("new", range(2, 6))
    code, report = ingest(store, here, write(tmp_path / "new.jsonl", new))
    assert (code, report["accepted"], report["rejected"]) == (0, len(new), 0), report
    # the old code sees the new code's facts as its own: duplicates, conflicts refused
    code, report = ingest(store, before_src, write(tmp_path / "new-again.jsonl", new))
    assert (code, report["accepted"], report["duplicates"]) == (0, 0, len(new)), report

    for src in (here, before_src):
        verified = run(store, src, "audit", "verify")
        assert verified.returncode == 0, (src, verified.stdout, verified.stderr)

    values = values_of(store)
    checked = 0
    for n in range(6):
        for m in range(len(TIMES)):
            data = HOSTILE[(n + m) % len(HOSTILE)]
            for prefix in ("old", "new"):
                key = f"{n}/{prefix}-rec-{m}"
                if key in values:
                    assert values[key] == repr(ordered(data)), key
                    checked += 1
    assert checked == 4 * len(TIMES) * 2

    # keys flushed by both codes rotate, still open, and erase
    rotated = run(store, here, "keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    store = replace(store, master_key=None)  # the new master key is in the key file
    assert values_of(store) == values
    erase = [fact("erasure-requested", "member:3", "2025-06-01T00:00:00Z", id="erase-3",
                  request="ER-3")]
    code, report = ingest(store, here, write(tmp_path / "erase.jsonl", erase))
    assert (code, report["accepted"]) == (0, 1), report
    after = values_of(store)
    erased = {key for key in after if key.startswith("3/")}
    assert erased and all(after[key] == repr("erased") for key in erased), after
    assert {k: v for k, v in after.items() if k not in erased} == {
        k: v for k, v in values.items() if k not in erased}
    verified = run(store, here, "audit", "verify")
    assert verified.returncode == 0, verified.stdout
