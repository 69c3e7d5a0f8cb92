"""`lifecycle keys rotate` killed at each of its steps, then run again.

For each step of lifecycle.services.rotation.ROTATION_STEPS (and the second re-wrap batch;
the second and third range read and wrapped: on PostgreSQL read ahead while the range
before is being stored), on SQLite and on PostgreSQL, a real `lifecycle keys rotate --batch 40` is killed with
SIGKILL at that step (LIFECYCLE_CRASH_AT), then run again without it. Afterwards every
live data key is wrapped under the current epoch and opens, none is lost, every earlier
epoch is retired and recorded by exactly one KeysRotated event, the key file holds the
current epoch's key, and the rotation's file beside it is gone.
"""

from __future__ import annotations

import base64
import signal
import subprocess
import sys
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from lifecycle.store.epoch_keys import next_key_files
from lifecycle.store.master_key import key_check_value
from lifecycle.store.vault import CURRENT, RETIRED, data_keys
from lifecycle.support.faults import CRASH_ENV
from lifecycle.services.ledger import Ledger
from lifecycle.services.rotation import ROTATION_STEPS, recorded_rotations
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, fact, lines
from tests.processes import env_for

NOW = datetime(2024, 6, 1, tzinfo=UTC)
SUBJECTS = [f"subscriber:rot-{n}" for n in range(150)]  # several pages on PostgreSQL
CRASH_STEPS = [s for s in ROTATION_STEPS if s != "rotate-batch"] + [
    "rotate-batch:1", "rotate-batch:2", "rotate-batch-read:2", "rotate-batch-read:3"]


def populate(settings: Settings) -> int:
    """150 subjects with a record each, one of them erased; returns the live key count."""
    facts = [collected(s, "2024-01-01T09:00:00+00:00", "rec-1", {"name": f"Name {n}"},
                       id=f"rot-{n}") for n, s in enumerate(SUBJECTS)]
    facts.append(fact("erasure-requested", SUBJECTS[0], "2024-02-01T09:00:00+00:00",
                      request="ER-rot", id="rot-erase"))
    with Ledger(settings) as ledger:
        assert ledger.ingest(lines(facts), NOW).accepted == len(facts)
        return live_keys(ledger)


def live_keys(ledger: Ledger) -> int:
    with ledger.vault.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(data_keys)
                                .where(data_keys.c.wrapped.is_not(None))).scalar_one())


def rotate(settings: Settings, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = env_for(settings)
    if crash_at:
        env[CRASH_ENV] = crash_at
    return subprocess.run([sys.executable, "-m", "lifecycle", "keys", "rotate", "--batch", "40"],
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("step", CRASH_STEPS)
def test_a_rotation_killed_at_any_step_is_finished_by_the_next_run(
        backend: Settings, step: str) -> None:
    """Killed at `step` and run again: every live key opens under the current epoch, no
    key is lost, each old epoch is destroyed and recorded exactly once."""
    before = populate(backend)
    killed = rotate(backend, step)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    again = rotate(backend)
    assert again.returncode == 0, again.stderr

    with Ledger(backend) as ledger:
        epochs = ledger.vault.epochs()
        current = [e for e in epochs if e.state == CURRENT]
        assert len(current) == 1 and current[0].epoch == max(e.epoch for e in epochs)
        assert all(e.state == RETIRED for e in epochs if e is not current[0])
        rotations = recorded_rotations(ledger.store)
        assert sorted(r.old_epoch for r in rotations) == sorted(
            e.epoch for e in epochs if e.state == RETIRED)
        assert len({r.new_epoch for r in rotations}) == len(rotations)
        assert live_keys(ledger) == before
        with ledger.vault.engine.connect() as conn:
            under = set(conn.execute(sa.select(data_keys.c.epoch).distinct()
                                     .where(data_keys.c.wrapped.is_not(None))).scalars())
        assert under == {current[0].epoch}
        for n, reference in list(enumerate(SUBJECTS))[1::15]:
            assert ledger.subject_view(reference)["records"][0]["data"] == {"name": f"Name {n}"}
        assert ledger.subject_view(SUBJECTS[0])["records"][0]["data"] == "erased"
    key = base64.b64decode(backend.master_key_file.read_text())
    assert key_check_value(key) == current[0].key_check
    assert next_key_files(backend) == []
