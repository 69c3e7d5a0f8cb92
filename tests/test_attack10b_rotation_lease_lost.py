"""attack10b: `lifecycle keys rotate` whose rotation lease is lost while it runs.

The rotation lease (`lifecycle.store.lease`: a session-level advisory lock on its own
connection on PostgreSQL, an flock on `$LIFECYCLE_HOME/daemon.lease.rotation` on SQLite)
is taken once, at the start of `rotate()`, and never looked at again. When the server
drops the lock (its session terminated, or a network cut noticed by the server's TCP
keepalives) or the lease file is replaced, a second `lifecycle keys rotate` takes the
lease and rotates while the first is still running.

Every process here is a real `python -m lifecycle keys rotate`. A slow process (a long
re-wrap, a stall, a network cut that heals) is played by a pause: the child runs the CLI
with `lifecycle.services.rotation.crash_point` wrapped so that at one named step it waits
for a file to appear (nothing else in the child is changed).

Found, and fixed (both backends): the rotation never re-checked its lease, and the two
places that handled `<key file>.next` assumed it was their own (`write_next_key` unlinked
whatever was there, `install_next_key` unlinked it once the key file held its own new
key). With two rotators (lease lost) either could delete the key of the epoch the other
was re-wrapping into, and every live data key ended under an epoch whose key was
nowhere. Now each rotation's key has a file of its own, an epoch begins only over the
epoch its rotation saw current, and the lease is re-checked before each step that
changes the epochs or the key file. A rotator whose KeysRotated save lost to another's
ended "unexpected error (IntegrityError)"; it now reads the record again.
Holds: two rotators at once while the lease is kept (one refused in one line), beside
an ingest with erasures and a sweep; a lost lease with one more rotator and no third.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from lifecycle.services.ledger import Ledger
from lifecycle.services.rotation import recorded_rotations
from lifecycle.store.epoch_keys import next_key_files
from lifecycle.store.master_key import key_check_value
from lifecycle.store.settings import Settings
from lifecycle.store.vault import CURRENT, RETIRED, data_keys
from tests.facts_builder import collected, lines
from tests.processes import env_for, run_together, wait_for
from tests.test_rotation_crashes import NOW

SUBJECTS = 300
BATCH = "20"

# The CLI, with a pause at one rotation step (ATTACK_PAUSE_AT, its first passage): the
# child writes <gate>.reached and waits until <gate> exists.
PAUSING_CLI = r"""
import os, sys, time
from pathlib import Path
import lifecycle.services.rotation as rotation
at, gate = os.environ["ATTACK_PAUSE_AT"], Path(os.environ["ATTACK_PAUSE_GATE"])
real, seen = rotation.crash_point, []
def pausing(step):
    real(step)
    if step == at and not seen:
        seen.append(step)
        Path(str(gate) + ".reached").write_text(str(os.getpid()))
        while not gate.exists():
            time.sleep(0.02)
rotation.crash_point = pausing
if at == "keys-rotated-unsaved":  # KeysRotated made in memory, not yet saved
    from lifecycle.aggregates.key_rotations import KeyRotations
    record = KeyRotations.record
    def recording(self, *args, **kwargs):
        made = record(self, *args, **kwargs)
        pausing(at)
        return made
    KeyRotations.record = recording
from lifecycle.cli.main import main
sys.argv = ["lifecycle", *sys.argv[1:]]
main()
"""


def store(tmp_path: Path, url: str | None) -> Settings:
    home = tmp_path / "lifecycle-data"
    settings = Settings(home=home, database_url=url, master_key=None,
                        master_key_file=home / "master.key")
    facts = [collected(f"subscriber:lease-{n}", "2024-01-01T09:00:00+00:00", "rec-1",
                       {"name": f"Name {n}"}, id=f"lease-{n}") for n in range(SUBJECTS)]
    with Ledger(settings) as ledger:
        assert ledger.ingest(lines(facts), NOW).accepted == SUBJECTS
    return settings


class Paused:
    """`lifecycle keys rotate` started in the background, paused at `step`."""

    def __init__(self, settings: Settings, step: str, gate: Path) -> None:
        env = {**env_for(settings), "ATTACK_PAUSE_AT": step, "ATTACK_PAUSE_GATE": str(gate)}
        self.gate = gate
        self.process = subprocess.Popen(
            [sys.executable, "-c", PAUSING_CLI, "keys", "rotate", "--batch", BATCH],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        reached = Path(f"{gate}.reached")
        wait_for(lambda: reached.exists() or self.process.poll() is not None, 60,
                 f"the rotation to reach {step}")
        assert reached.exists(), self.process.communicate()

    def resume(self) -> subprocess.CompletedProcess[str]:
        self.gate.write_text("go")
        out, err = self.process.communicate(timeout=120)
        return subprocess.CompletedProcess(self.process.args, self.process.returncode, out, err)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def rotate(settings: Settings) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lifecycle", "keys", "rotate", "--batch",
                           BATCH], env=env_for(settings), capture_output=True, text=True,
                          timeout=120)


def lose_lease(settings: Settings) -> None:
    """What the server does when the lease's session dies: PostgreSQL, the lease
    connection terminated (the advisory lock goes with it); SQLite, the lease file
    removed (a new process makes and locks a new one)."""
    if settings.database_url is None:
        (settings.home / "daemon.lease.rotation").unlink()
        return
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name LIKE 'lifecycle lease%%' "
            "AND datname = current_database()").fetchall()
    assert killed and all(row[0] for row in killed), killed


def state(settings: Settings) -> dict[str, Any]:
    """What a reader finds: epochs, where the live keys are, and
    which recorded epochs have their key on disk (key file or its .next)."""
    engine = sa.create_engine(settings.vault_url)
    try:
        with engine.connect() as conn:
            epochs = {int(e): s for e, s in conn.execute(sa.text(
                "SELECT epoch, state FROM lifecycle_key_epochs ORDER BY epoch"))}
            checks: dict[int, str] = dict(conn.execute(sa.text(
                "SELECT epoch, key_check FROM lifecycle_key_epochs")).all())
            under: dict[int, int] = dict(conn.execute(
                sa.select(data_keys.c.epoch, sa.func.count())
                .where(data_keys.c.wrapped.is_not(None))
                .group_by(data_keys.c.epoch)).all())
    finally:
        engine.dispose()
    on_disk = set()
    for path in (settings.master_key_file, *next_key_files(settings)):
        if path.exists():
            on_disk.add(key_check_value(base64.b64decode(path.read_text())))
    keys_at_hand = sorted(e for e, c in checks.items() if c in on_disk)
    return {"epochs": epochs, "live_keys_under": under, "keys_at_hand": keys_at_hand}


SAMPLE = range(0, SUBJECTS, 37)


def readable(settings: Settings, sample: range = SAMPLE) -> int:
    """Sampled subjects whose record opens (`Ledger.subject_view`, a fresh process's
    view: the store opened anew); 0 if the store no longer opens."""
    ok = 0
    try:
        with Ledger(settings) as ledger:
            for n in sample:
                try:
                    data = ledger.subject_view(f"subscriber:lease-{n}")["records"][0]["data"]
                except Exception:  # noqa: BLE001 - a key that no longer opens
                    continue
                ok += data == {"name": f"Name {n}"}
    except Exception:  # noqa: BLE001 - the store's own key no longer found
        return 0
    return ok


def problems(settings: Settings) -> list[str]:
    """What is wrong with the store after every rotator and a re-run: not exactly one
    current epoch (the newest), an older epoch not retired, a live key under another
    epoch than the current one, the current epoch's key not in the key file, a sampled
    subject that does not read, `lifecycle audit verify` failing, the KeysRotated history
    not one event per retired epoch."""
    found: list[str] = []
    now = state(settings)
    epochs: dict[int, str] = now["epochs"]
    current = [e for e, s in epochs.items() if s == CURRENT]
    if len(current) != 1 or current[0] != max(epochs):
        found.append(f"epochs {epochs}")
    if any(s != RETIRED for e, s in epochs.items() if e not in current):
        found.append(f"an old epoch not retired: {epochs}")
    if set(now["live_keys_under"]) != set(current):
        found.append(f"live keys under {now['live_keys_under']}, current {current}")
    if not current or current[0] not in now["keys_at_hand"]:
        found.append(f"current epoch {current} has no key on disk "
                     f"(keys at hand: epochs {now['keys_at_hand']})")
    read = readable(settings)
    if read != len(SAMPLE):
        found.append(f"{len(SAMPLE) - read} of {len(SAMPLE)} sampled subjects do not read")
    verify = subprocess.run([sys.executable, "-m", "lifecycle", "audit", "verify"],
                            env=env_for(settings), capture_output=True, text=True, timeout=60)
    if verify.returncode != 0:
        found.append(f"audit verify: {verify.returncode} {verify.stderr.strip()[-300:]}")
    if read:
        with Ledger(settings) as ledger:
            rotated = sorted(r.old_epoch for r in recorded_rotations(ledger.store))
        if rotated != sorted(e for e, s in epochs.items() if s == RETIRED):
            found.append(f"KeysRotated for epochs {rotated}, epochs {epochs}")
    return found


def one_line(result: subprocess.CompletedProcess[str]) -> bool:
    """Exit 0, or non-zero with one clear line (no traceback, no 'unexpected error')."""
    if result.returncode == 0:
        return True
    text = [line for line in result.stderr.splitlines() if line.startswith("lifecycle:")]
    return (len(text) == 1 and "Traceback" not in result.stderr
            and "unexpected error" not in text[0])



@pytest.fixture(params=["sqlite", "postgres"])
def rotating_store(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """A store of SUBJECTS subjects, a record each, under master-key epoch 0."""
    url = request.getfixturevalue("postgres_database") if request.param == "postgres" else None
    return store(tmp_path, url)


def test_a_rotation_that_lost_its_lease_before_its_epoch_began_loses_no_key(
        rotating_store: Settings, tmp_path: Path) -> None:
    """Rule: whatever happens to the rotation lease, no data key ends wrapped under an
    epoch whose master key is nowhere (that is every subject's data destroyed with no
    erasure recorded). A rotation that has written its new key (step 1) stalls; its lease
    is lost (PostgreSQL: the lease session terminated; SQLite: the lease file removed);
    a second `keys rotate` runs to the end; the first resumes. Afterwards, and after one
    more `keys rotate`, every live key opens under one current epoch whose key is in the
    key file, `audit verify` passes, and each process exited 0 or with one clear line."""
    s = rotating_store
    first = Paused(s, "rotate-key-written", tmp_path / "gate1")
    try:
        lose_lease(s)
        second = rotate(s)
        assert second.returncode == 0, second.stderr  # it rotates 0 -> 1, cleanly
        resumed = first.resume()
    finally:
        first.kill()
    # What happens today: the first begins epoch 2 with a key it wrote to a file the
    # second unlinked, re-wraps all 300 keys under it, and stops: "the new master key
    # (fingerprint ...) is in neither the key file ... nor ....next". The key file holds
    # epoch 1's key; nothing opens; every later command: "the key of master-key epoch 2
    # ... is neither the key given nor in the key file".
    again = rotate(s)
    found = problems(s)
    assert not found and one_line(resumed) and one_line(again), (
        found, resumed.stderr[-400:], again.stderr[-400:])


def test_a_rotation_that_lost_its_lease_mid_rewrap_keeps_the_next_rotations_key(
        rotating_store: Settings, tmp_path: Path) -> None:
    """Rule: a rotation that lost its lease never destroys a key another rotation needs.
    Rotation A (0 -> 1) stalls after its first re-wrapped batch; its lease is lost; run B
    finishes the rotation (0 -> 1, the key file now holds epoch 1's key); run C starts
    the next one (1 -> 2: epoch 2's key in <key file>.next) and is still re-wrapping when
    A resumes and completes. Then C completes. Afterwards (and after one more `keys
    rotate`) every live key opens under one current epoch whose key is on disk, old
    epochs are retired, `audit verify` passes, and no run ended with a traceback."""
    s = rotating_store
    a = Paused(s, "rotate-batch", tmp_path / "gate-a")
    try:
        lose_lease(s)
        b = rotate(s)
        assert b.returncode == 0, b.stderr  # "finished the rotation: epoch 0 -> epoch 1"
        c = Paused(s, "rotate-epoch-begun", tmp_path / "gate-c")
        try:
            a_done = a.resume()  # today: exit 0, "rotated: epoch 0 -> epoch 1", having
            # unlinked master.key.next (epoch 2's key) as "its own" leftover
            c_done = c.resume()  # today: exit 1, "the new master key ... is in neither"
        finally:
            c.kill()
    finally:
        a.kill()
    again = rotate(s)  # today: "the key of master-key epoch 2 ... is neither ..."
    found = problems(s)
    assert not found and all(one_line(r) for r in (a_done, c_done, again)), (
        found, a_done.stderr[-300:], c_done.stderr[-300:], again.stderr[-300:])


def test_a_rotation_whose_lease_was_lost_and_work_finished_elsewhere_says_so(
        rotating_store: Settings, tmp_path: Path) -> None:
    """Rule: a rotator that lost its lease while another run finished the same rotation
    stops with one clear line or reports the rotation done (exit 0), never 'unexpected
    error'; the store stays sane. Run A has re-wrapped every key and made its KeysRotated
    event (not yet saved) when its lease is lost; run B finishes the rotation (records
    it, installs the key, retires epoch 0); A resumes and saves. Seen without any pause
    too, in about a third of the runs of two rotators racing to the end on PostgreSQL."""
    s = rotating_store
    a = Paused(s, "keys-rotated-unsaved", tmp_path / "gate-a")
    try:
        lose_lease(s)
        b = rotate(s)
        assert b.returncode == 0, b.stderr
        a_done = a.resume()  # today: exit 1, "lifecycle: unexpected error (IntegrityError)"
    finally:
        a.kill()
    assert problems(s) == []
    assert one_line(a_done), a_done.stderr[-400:]


def test_two_rotators_at_once_beside_an_ingest_and_a_sweep_hold(
        rotating_store: Settings, tmp_path: Path) -> None:
    """What holds while the lease is kept: two `keys rotate` started at once (one is
    refused in one line, or they run one after the other), an ingest of new subjects and
    erasures and a sweep beside them. Afterwards every live key opens under one current
    epoch, erased subjects stay erased (no key re-wrapped back to life), `audit verify`
    passes and no process printed a traceback."""
    s = rotating_store
    erased = range(1, SUBJECTS, 41)
    new = [collected(f"subscriber:lease-new-{n}", "2024-01-02T09:00:00+00:00", "rec-1",
                     {"name": f"New {n}"}, id=f"lease-new-{n}") for n in range(1500)]
    erasures = [{"id": f"lease-erase-{n}", "type": "erasure-requested",
                 "subject": f"subscriber:lease-{n}", "at": "2024-02-01T09:00:00+00:00",
                 "request": f"ER-lease-{n}"} for n in erased]
    source = tmp_path / "more.jsonl"
    source.write_text("\n".join(lines([*new, *erasures])) + "\n")
    rotate_argv = ["-m", "lifecycle", "keys", "rotate", "--batch", "10"]
    done = run_together(s, [rotate_argv, rotate_argv,
                            ["-m", "lifecycle", "ingest", str(source)],
                            ["-m", "lifecycle", "sweep"]], timeout=120)
    for result in done:
        assert "Traceback" not in result.stderr, result.stderr[-600:]
        assert one_line(result), (result.args, result.stderr[-400:])
    assert done[2].returncode == 0 and done[3].returncode == 0
    assert sum(r.returncode == 0 for r in done[:2]) >= 1
    kept = range(0, SUBJECTS, 37)
    assert problems(s) == []
    with Ledger(s) as ledger:
        for n in erased:
            assert ledger.subject_view(f"subscriber:lease-{n}")["records"][0]["data"] == "erased"
        for n in kept:
            if n not in erased:
                assert ledger.subject_view(f"subscriber:lease-{n}")["records"][0][
                    "data"] == {"name": f"Name {n}"}
        for n in (0, 777, 1499):
            assert ledger.subject_view(f"subscriber:lease-new-{n}")["records"][0][
                "data"] == {"name": f"New {n}"}
        epochs = {e.epoch: e.state for e in ledger.vault.epochs()}
        assert sorted(r.old_epoch for r in recorded_rotations(ledger.store)) == sorted(
            e for e, st in epochs.items() if st == RETIRED)


def test_a_lease_lost_mid_rewrap_with_one_more_rotator_ends_sane(
        postgres_database: str, tmp_path: Path) -> None:
    """What holds with two rotators and no third: a real rotation of 5000 keys (batch 3)
    loses its lease session mid-way (pg_terminate_backend), a second `keys rotate` takes
    the lease and re-wraps beside it. Both end (exit 0, or one line: see the xfail above),
    every key opens under the current epoch, epoch 0 is retired and recorded once, audit passes."""
    home = tmp_path / "lifecycle-data"
    s = Settings(home=home, database_url=postgres_database, master_key=None,
                 master_key_file=home / "master.key")
    facts = [collected(f"subscriber:lease-{n}", "2024-01-01T09:00:00+00:00", "rec-1",
                       {"name": f"Name {n}"}, id=f"lease-{n}") for n in range(5000)]
    with Ledger(s) as ledger:
        ledger.ingest(lines(facts), NOW)
    first = subprocess.Popen([sys.executable, "-m", "lifecycle", "keys", "rotate", "--batch",
                              "3"], env=env_for(s), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: state(s)["live_keys_under"].get(1, 0) > 100,
                 60, "the first rotation to re-wrap keys")
        lose_lease(s)
        second = rotate(s)
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    for result in (second, subprocess.CompletedProcess(first.args, first.returncode, out, err)):
        assert "Traceback" not in result.stderr, result.stderr[-600:]
    assert 0 in (second.returncode, first.returncode)
    assert problems(s) == []
    # Usually the second finishes the same rotation ("finished the rotation"); when the
    # first was already done it rotates on to epoch 2: sane either way.
    assert state(s)["epochs"][0] == RETIRED
