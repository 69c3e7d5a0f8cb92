"""attack11b: the fix of attack10b (each rotation's key in a file of its own, an epoch
begun only over the epoch its run saw, `remove_unused_next_keys` by file mtime), attacked
with real `lifecycle keys rotate` processes paused at one point (a slow process, a stall,
a lost lease: see tests/test_attack10b_rotation_lease_lost.py), and file clocks that do
not agree with the process clock (`os.utime`: what a key folder on a network file system
whose server clock lags, or a system clock stepped back while a process stalled, gives).

Found, and fixed (both backends):

- A rotation that stalled after its epoch began, between reading the epochs and removing
  "unused" new-key files, removed them from a stale list of epochs, protected only by
  file mtimes: with a file clock behind, it deleted the key file of the rotation under
  way, and every live data key ended under an epoch whose key was nowhere. Now a file is
  named with the epoch its run saw, and removed only when that epoch is no longer
  current and its key is no epoch's (read after the files are listed): such a key can
  never begin an epoch. No clock is compared.
- A rotation paused right after its epoch began, whose rotation another run finished
  meanwhile (lease lost), ended "unexpected error (StopIteration)"; now one line.
- A new-key file of a killed run whose mtime is in the future was never removed by the
  rotations that follow; now it is, whatever its mtime.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lifecycle.store.epoch_keys import next_key_files
from lifecycle.store.settings import Settings
from tests.processes import env_for, wait_for
from tests.test_attack10b_rotation_lease_lost import (Paused, lose_lease, one_line,
                                                      problems, rotate, state, store)

# The CLI, paused (once) on entering `remove_unused_next_keys`: after its epoch began and
# it read the epochs, before it removes the new-key files it thinks unused.
PAUSED_IN_CLEANUP = r"""
import os, sys, time
from pathlib import Path
import lifecycle.services.rotation as rotation
gate = Path(os.environ["ATTACK_PAUSE_GATE"])
real = rotation.remove_unused_next_keys
def pausing(*args, **kwargs):
    Path(str(gate) + ".reached").write_text(str(os.getpid()))
    while not gate.exists():
        time.sleep(0.02)
    return real(*args, **kwargs)
rotation.remove_unused_next_keys = pausing
from lifecycle.cli.main import main
sys.argv = ["lifecycle", *sys.argv[1:]]
main()
"""


class PausedInCleanup(Paused):
    """`lifecycle keys rotate` in the background, paused on entering its clean-up."""

    def __init__(self, settings: Settings, gate: Path) -> None:  # noqa: D107
        self.gate = gate
        self.process = subprocess.Popen(
            [sys.executable, "-c", PAUSED_IN_CLEANUP, "keys", "rotate", "--batch", "20"],
            env={**env_for(settings), "ATTACK_PAUSE_GATE": str(gate)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        reached = Path(f"{gate}.reached")
        wait_for(lambda: reached.exists() or self.process.poll() is not None, 60,
                 "the rotation to reach its clean-up")
        assert reached.exists(), self.process.communicate()


@pytest.fixture(params=["sqlite", "postgres"])
def rotating_store(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """A store of 300 subjects, a record each, under master-key epoch 0."""
    url = request.getfixturevalue("postgres_database") if request.param == "postgres" else None
    return store(tmp_path, url)


def backdate(paths: list[Path], seconds: float) -> None:
    moment = time.time() + seconds
    for path in paths:
        os.utime(path, (moment, moment))


def test_a_stalled_clean_up_never_removes_the_key_of_a_rotation_under_way(
        rotating_store: Settings, tmp_path: Path) -> None:
    """Rule: no rotation removes the key file of an epoch that began (or may begin),
    whatever the file's mtime says; no data key ends under an epoch whose key is nowhere.
    Rotation A (0 -> 1) began its epoch and read the epochs, and stalls before its clean-up;
    its lease is lost; run B finishes A's rotation (0 -> 1, retired). Run C rotates on
    (1 -> 2) and is re-wrapping (its key in <key file>.next-<check>, whose mtime reads an
    hour back: the file clock lags, or the clock was stepped back while A stalled); C's
    lease is lost too; A resumes and C resumes. Afterwards, and after one more `keys
    rotate`, every live key opens under one current epoch whose key is on disk.
    Today: A's clean-up (epochs {0, 1} as it read them) deletes C's key file (mtime older
    than A's start, key no epoch's in A's list) and exits 0; C re-wraps all 300 keys under
    epoch 2 with the key it holds in memory, then stops: "the new master key ... is in
    neither the key file ... nor a new-key file beside it". Epoch 2 is current with every
    live key and no key anywhere: nothing opens, `audit verify` and every later command:
    "the key of master-key epoch 2 ... is neither the key given nor in the key file"."""
    s = rotating_store
    a = PausedInCleanup(s, tmp_path / "gate-a")
    try:
        lose_lease(s)
        b = rotate(s)
        assert b.returncode == 0, b.stderr  # finished the rotation 0 -> 1
        c = Paused(s, "rotate-batch", tmp_path / "gate-c")
        try:
            backdate(next_key_files(s), -3600)  # C's key file: an mtime an hour back
            lose_lease(s)
            a_done = a.resume()
            c_done = c.resume()
        finally:
            c.kill()
    finally:
        a.kill()
    again = rotate(s)
    found = problems(s)
    assert not found and all(one_line(r) for r in (a_done, c_done, again)), (
        found, state(s), c_done.stderr[-300:], again.stderr[-300:])


def test_a_rotation_resumed_after_its_rotation_was_finished_elsewhere_ends_in_one_line(
        rotating_store: Settings, tmp_path: Path) -> None:
    """Rule: every rotator ends with exit 0 or one clear line (never 'unexpected error').
    Rotation A (0 -> 1) stalls right after its epoch began (step rotate-epoch-begun); its
    lease is lost; run B finishes the rotation (epoch 0 retired); A resumes. Today A ends
    "lifecycle: unexpected error (StopIteration)", exit 1 (the store itself is sane)."""
    s = rotating_store
    a = Paused(s, "rotate-epoch-begun", tmp_path / "gate-a")
    try:
        lose_lease(s)
        b = rotate(s)
        assert b.returncode == 0, b.stderr
        a_done = a.resume()
    finally:
        a.kill()
    assert problems(s) == []
    assert one_line(a_done), a_done.stderr[-400:]


def test_a_never_used_key_file_dated_in_the_future_is_not_left_behind(tmp_path: Path
                                                                      ) -> None:
    """Rule: after a rotation completes (and one more), no `<key file>.next*` file holds a
    key no epoch ever used (a killed run's): lifecycle keeps no key it has no use for.
    A rotation is killed (SIGKILL) after writing its new key (step rotate-key-written); the
    file's mtime reads a day ahead (the file clock is ahead); two rotations complete.
    Today the killed run's key file is still there, and stays until the clock passes it."""
    s = store(tmp_path, None)
    crashed = subprocess.run(
        [sys.executable, "-m", "lifecycle", "keys", "rotate"],
        env={**env_for(s), "LIFECYCLE_CRASH_AT": "rotate-key-written"},
        capture_output=True, text=True, timeout=60)
    assert crashed.returncode == -9, crashed.stderr
    leftover = next_key_files(s)
    assert len(leftover) == 1
    backdate(leftover, 86400)
    for _ in range(2):
        done = rotate(s)
        assert done.returncode == 0, done.stderr
    assert problems(s) == []
    assert next_key_files(s) == [], next_key_files(s)
