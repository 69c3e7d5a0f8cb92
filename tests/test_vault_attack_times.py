"""Attacks on the times a vault writes (claims, keys, marks) at odd offsets, through the
Python API in real processes killed at named steps, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from lifecycle.domain.errors import SubjectNotFound
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from lifecycle.support.faults import CRASH_ENV
from tests.facts_builder import collected, lines
from tests.processes import env_for, keyed_store, lifecycle

ROOT = Path(__file__).resolve().parents[1]
HQIP = ROOT / "config" / "hqip.toml"
MASTER_KEY = base64.b64encode(bytes(range(160, 192))).decode()

_INGEST = """
import sys
from datetime import datetime
from lifecycle.domain.errors import SubjectNotFound
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import load_settings
with Ledger(load_settings()) as ledger:
    report = ledger.ingest(sys.stdin.read().splitlines(), datetime.fromisoformat(sys.argv[1]))
print(report.accepted, report.duplicates, len(report.rejected))
"""


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    settings = keyed_store(request.param, tmp_path, MASTER_KEY,
                           lambda: request.getfixturevalue("postgres_database"))
    with Ledger(settings) as ledger:
        ledger.adopt_policy(HQIP, datetime(2020, 1, 1, tzinfo=UTC))
    return settings


def fact(subject: str, value: int) -> dict[str, Any]:
    return collected(subject, "2024-05-01T10:00:00+00:00", "rec-1", {"v": value},
                     id="the-fact", purpose="service-communications",
                     basis="legitimate-interests")


def ingest(settings: Settings, facts: list[dict[str, Any]], now: datetime,
           crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = env_for(settings)
    env.pop(CRASH_ENV, None)
    if crash_at is not None:
        env[CRASH_ENV] = crash_at
    return subprocess.run([sys.executable, "-c", _INGEST, now.isoformat()], env=env,
                          input="\n".join(lines(facts)) + "\n", capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("offset", [timedelta(hours=-5), timedelta(hours=-9, minutes=-30,
                                                                   seconds=-7)])
def test_a_binding_made_at_a_western_offset_keeps_its_grace(
        store: Settings, offset: timedelta) -> None:
    """Rule: a fact id bound by a run that has not saved its fact (killed after its claim,
    or still saving) binds the id for CLAIM_GRACE from the instant it was claimed, at
    whatever offset that run's `now` was given: another fact under the id a minute later
    is rejected naming the id, and the first fact is the one stored after its run is
    redone. (SQLite kept the claim time's wall clock, read back as UTC: a claim at -05:00
    looked five hours old, was given up at once, and two facts shared one id.)"""
    claimed_at = datetime(2025, 3, 1, 12, 0, tzinfo=timezone(offset))
    killed = ingest(store, [fact("member:a", 1)], claimed_at, crash_at="keys-stored")
    assert killed.returncode == -9, killed.stderr
    later = (claimed_at + timedelta(minutes=1)).astimezone(UTC)
    other = ingest(store, [fact("member:b", 2)], later)
    assert other.returncode == 0, other.stderr
    assert other.stdout.split() == ["0", "0", "1"], other.stdout
    redone = ingest(store, [fact("member:a", 1)], later + timedelta(minutes=1))
    assert redone.stdout.split() == ["1", "0", "0"], redone.stdout + redone.stderr
    with Ledger(store) as ledger:
        with pytest.raises(SubjectNotFound):  # its one fact was rejected
            ledger.history("member:b")
        assert ledger.vault.claimed(["the-fact"])["the-fact"].subject_id == str(
            ledger.subject("member:a").id)
    assert lifecycle(store, "audit", "verify").returncode == 0
