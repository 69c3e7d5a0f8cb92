"""Chaining an older store's backlog on upgrade survives a killed process and two processes
at once: the next open resumes where the chain stands, and processes that chain pages at
the same time leave one chain that verifies. Real processes, a real SIGKILL, SQLite and
PostgreSQL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime

from lifecycle.aggregates.data_subject import DataSubject
from lifecycle.store.event_store import SubjectStore, attach_signing_key, persistence_env
from lifecycle.store.settings import Settings
from tests.processes import env_for, lifecycle
from tests.test_audit_verify import ALTERED, RawStore, problems, verify_now

SUBJECTS = 12

# A process that opens the store (through the Ledger, or the event store alone: no schema
# lock) chaining 3 events per page and pausing after each, printing "page N".
SLOW_UPGRADE = """
import sys, time
from lifecycle.store.postgres_recorder import LockLightPostgresRecorder
from lifecycle.store.sqlite_recorder import ChainedSQLiteRecorder

for kind in (ChainedSQLiteRecorder, LockLightPostgresRecorder):
    def slow(self, signer, limit, *rest, _chain=kind.chain_backlog):
        chained = _chain(self, signer, 3, *rest)
        print("page", chained, flush=True)
        time.sleep(float(sys.argv[2]))
        return chained
    kind.chain_backlog = slow

from lifecycle.store.settings import load_settings
settings = load_settings()
if sys.argv[1] == "ledger":
    from lifecycle.services.ledger import Ledger
    Ledger(settings).close()
else:
    from lifecycle.store.event_store import open_subject_store
    open_subject_store(settings).close()
print("done", flush=True)
"""


def older_store(settings: Settings) -> int:
    """Events as a version before actors and the chain stored them (each subject created,
    then touched again, so a subject's events fall in different pages), with no chain,
    no checkpoint and no signing key. Returns how many events."""
    store = SubjectStore(env=persistence_env(settings))  # the library's plain mapper
    attach_signing_key(store, settings)
    try:
        subjects = [DataSubject(reference=f"member:{n}") for n in range(SUBJECTS)]
        store.save(*subjects)
        for subject in subjects:
            subject.record_activity("later", datetime(2024, 4, 1, tzinfo=UTC), None)
        store.save(*subjects)
    finally:
        store.close()
    raw = RawStore(settings)
    raw.run("DELETE FROM lifecycle_event_chain")
    raw.run("DELETE FROM lifecycle_event_checkpoints")
    os.unlink(settings.signing_key_path)
    return len(raw.ids())


def slow_upgrade(settings: Settings, how: str, pause: float) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", SLOW_UPGRADE, how, str(pause)],
                            env=env_for(settings), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def chained_rows(settings: Settings) -> int:
    return int(RawStore(settings).run("SELECT COUNT(*) FROM lifecycle_event_chain")[0][0])


def killed_midway(settings: Settings) -> None:
    """Starts the upgrade in a process and kills it (SIGKILL) after two pages."""
    upgrading = slow_upgrade(settings, "ledger", 5.0)
    assert upgrading.stdout is not None
    for _ in range(2):
        assert upgrading.stdout.readline().startswith("page"), upgrading.stderr
    os.kill(upgrading.pid, signal.SIGKILL)
    upgrading.wait(timeout=30)


def test_an_upgrade_killed_midway_is_resumed_by_the_next_processes(backend: Settings) -> None:
    """The upgrading process killed after two pages leaves part of the backlog chained;
    two `audit verify` processes started at once afterwards both find the whole log
    chained and verified (the next open finished the backlog, once)."""
    events = older_store(backend)
    killed_midway(backend)
    assert 0 < chained_rows(backend) < events
    verifiers = [subprocess.Popen([sys.executable, "-m", "lifecycle", "audit", "verify",
                                   "--json"], env=env_for(backend), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for verifier in verifiers:
        out, err = verifier.communicate(timeout=120)
        assert verifier.returncode == 0, (out, err)
        report = json.loads(out)
        assert report["ok"] and report["events_checked"] == events
    assert chained_rows(backend) == events
    raw = RawStore(backend)
    nid = raw.ids()[-2]
    raw.flip_one_byte(nid)
    assert problems(verify_now(backend)) == [(ALTERED, nid)]


def test_two_processes_resuming_at_once_chain_the_backlog_once(backend: Settings) -> None:
    """After a killed upgrade, two processes open the event store at the same moment with
    no schema lock between them, chaining pages in turns: every event is chained exactly
    once, and the log verifies."""
    events = older_store(backend)
    killed_midway(backend)
    resuming = [slow_upgrade(backend, "store", 0.1) for _ in range(2)]
    pages = []
    for process in resuming:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert out.rstrip().endswith("done")
        pages.append(out.count("page"))
    assert all(pages), pages  # both took part
    assert chained_rows(backend) == events
    report = verify_now(backend)
    assert report.ok, [p.describe() for p in report.problems]
    assert report.events_checked == events


def test_the_upgrade_target_is_signed(backend: Settings) -> None:
    """Events appended behind the application after a killed upgrade are not chained by
    the resumed backlog (it stops at the signed head the upgrade began with): verify names
    them and a command exits 1."""
    events = older_store(backend)
    killed_midway(backend)
    raw = RawStore(backend)
    forged = raw.forge(raw.ids()[0])
    result = lifecycle(backend, "audit", "verify", "--json")
    assert result.returncode == 1
    assert ("unchained", forged) in [(p["kind"], p["position"])
                                     for p in json.loads(result.stdout)["problems"]]
    assert chained_rows(backend) == events
