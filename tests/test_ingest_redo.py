"""A batch that ingest redoes (another writer bound one of its fact ids first, or saved the
same subjects) is judged as if it ran once: nothing its abandoned attempt worked out, such as
addresses it put on the suppression list, decides the redo.

Real processes on a real store: the first run is killed (SIGKILL) after it bound a fact id
and before it stored anything, as a concurrent or crashed writer leaves it; the second run
then meets that binding and must redo its batch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lifecycle.support.faults import CRASH_ENV
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact
from tests.processes import env_for, lifecycle

ROOT = Path(__file__).resolve().parents[1]
HQIP = ROOT / "config" / "hqip.toml"
SUBJECT = "subscriber:redo-1"


def _subscriber_changes_address() -> list[dict[str, object]]:
    """Subscribes, unsubscribes, then rectifies the newsletter address."""
    return [
        fact("consent-given", SUBJECT, "2022-02-21T08:34:50Z", id="redo-consent",
             purpose="direct-marketing", method="subscribe-form"),
        collected(SUBJECT, "2022-02-21T08:42:00Z", "newsletter",
                  {"email": "first.address@example.org"}, id="redo-collected"),
        fact("unsubscribed", SUBJECT, "2022-11-27T23:31:34Z", id="redo-unsubscribed",
             channel="email-link"),
        fact("rectified", SUBJECT, "2023-02-12T12:57:21Z", id="redo-rectified",
             record="newsletter", data={"email": "second.address@example.org"}),
    ]


def _write(path: Path, facts: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(f) + "\n" for f in facts))
    return path


def _ingest_report(settings: Settings, path: Path) -> dict[str, object]:
    result = lifecycle(settings, "--log-level", "ERROR", "ingest", str(path), "--json")
    assert "Traceback" not in result.stderr, result.stderr
    document: dict[str, object] = json.loads(result.stdout)
    return document


def _rejected_ids(report: dict[str, object]) -> set[str]:
    rejections = report["rejections"]
    assert isinstance(rejections, list)
    return {str(r["fact"]) for r in rejections}


def test_a_redone_batch_accepts_what_a_single_run_accepts(
        backend: Settings, tmp_path: Path) -> None:
    """A rectification after an unsubscribe is judged the same whether its batch ran once or
    was redone because another writer had bound one of its fact ids: the redo does not
    see the address its own abandoned attempt suppressed."""
    settings = backend
    adopted = lifecycle(settings, "policy", "adopt", str(HQIP), "--at", "2020-01-01")
    assert adopted.returncode == 0, adopted.stderr
    # A writer binds fact id "redo-taken" to its own fact, then dies before storing it.
    other = _write(tmp_path / "other.jsonl", [fact(
        "consent-given", "subscriber:redo-other", "2022-01-01T00:00:00Z", id="redo-taken",
        purpose="direct-marketing", method="subscribe-form")])
    killed = subprocess.run(
        [sys.executable, "-m", "lifecycle", "--log-level", "ERROR", "ingest", str(other)],
        env={**env_for(settings), CRASH_ENV: "keys-stored"}, capture_output=True,
        text=True, timeout=60)
    assert killed.returncode == -9, killed.stderr
    # Our file reuses that id for other content: its batch is redone, and that line refused.
    ours = _write(tmp_path / "ours.jsonl", [
        *_subscriber_changes_address(),
        fact("activity", SUBJECT, "2022-03-01T00:00:00Z", id="redo-taken",
             record="newsletter")])

    report = _ingest_report(settings, ours)

    assert _rejected_ids(report) == {"redo-taken"}, report
    history = json.loads(lifecycle(settings, "history", SUBJECT, "--json").stdout)
    events = history if isinstance(history, list) else history["events"]
    assert "redo-rectified" in {e.get("fact_id") for e in events}


def test_the_same_file_in_one_run_accepts_the_rectification(
        sqlite_settings: Settings, tmp_path: Path) -> None:
    """The control: without a redo, the rectification after the unsubscribe is accepted
    (its address then goes on the suppression list)."""
    settings = sqlite_settings
    adopted = lifecycle(settings, "policy", "adopt", str(HQIP), "--at", "2020-01-01")
    assert adopted.returncode == 0, adopted.stderr

    report = _ingest_report(settings, _write(tmp_path / "f.jsonl",
                                             _subscriber_changes_address()))

    assert _rejected_ids(report) == set(), report
