"""attack11b, what held: a rotation begun by the code before per-run key files (its new
key in the one `<key file>.next`) and killed at each step is finished by this code and
leaves no new-key file; leftovers of killed runs with garbage or a wrong key do not stop a
rotation and are cleared; two hosts sharing one PostgreSQL database, each with its own
key file: the host without the new key stops in one line naming the epoch (also when it
tries to finish the other's rotation after a lost lease), and nothing is lost."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lifecycle.store.epoch_keys import next_key_files, next_key_path
from lifecycle.store.settings import Settings
from tests.processes import env_for
from tests.test_attack10b_rotation_lease_lost import (Paused, lose_lease, one_line,
                                                      problems, readable, rotate, state,
                                                      store)


def crash_at(settings: Settings, step: str) -> None:
    done = subprocess.run([sys.executable, "-m", "lifecycle", "keys", "rotate"],
                          env={**env_for(settings), "LIFECYCLE_CRASH_AT": step},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == -9, done.stderr


@pytest.mark.parametrize("step", ["rotate-key-written", "rotate-epoch-begun",
                                  "rotate-rewrapped", "rotate-recorded"])
def test_a_rotation_begun_with_the_legacy_next_file_is_finished(tmp_path: Path,
                                                                step: str) -> None:
    """An upgrade mid-rotation: the run killed at `step` left its key where the earlier
    code kept it (`master.key.next`). The next run finishes (or, before an epoch began,
    starts afresh); one more run rotates again; the store is sane and no new-key file is
    left (the never-used one included)."""
    s = store(tmp_path, None)
    crash_at(s, step)
    [written] = next_key_files(s)
    written.rename(next_key_path(s))  # the legacy name
    for _ in range(2):
        done = rotate(s)
        assert done.returncode == 0, done.stderr
    assert problems(s) == []
    assert next_key_files(s) == []


def test_leftover_new_key_files_with_garbage_or_a_wrong_key_are_cleared(tmp_path: Path
                                                                        ) -> None:
    """A killed run's key file, one with garbage, one named for a check its key does not
    have, and a legacy `.next` with a never-used key: a rotation runs through, and none is
    left afterwards."""
    s = store(tmp_path, None)
    crash_at(s, "rotate-key-written")
    folder = s.master_key_file.parent
    (folder / "master.key.next-0000000000000000").write_text("not a key\n")
    (folder / "master.key.next-1111111111111111").write_text(
        base64.b64encode(os.urandom(32)).decode() + "\n")
    next_key_path(s).write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    done = rotate(s)
    assert done.returncode == 0, done.stderr
    assert problems(s) == []
    assert next_key_files(s) == []


def test_a_second_host_without_the_new_key_stops_in_one_line_and_nothing_is_lost(
        postgres_database: str, tmp_path: Path) -> None:
    """Two hosts, one PostgreSQL database, each its own LIFECYCLE_HOME and key file (the
    same key, copied). Host A's rotation stalls mid-re-wrap and loses its lease; host B's
    `keys rotate` finds the rotation under way and cannot finish it (the new key is on A):
    one line naming epoch 1, nothing done. A finishes. Then B's rotate and ingest stop in
    one line naming retired epoch 0; with A's key file copied over, B reads everything."""
    a = store(tmp_path / "a", postgres_database)
    home_b = tmp_path / "b" / "lifecycle-data"
    home_b.mkdir(parents=True)
    b = Settings(home=home_b, database_url=postgres_database, master_key=None,
                 master_key_file=home_b / "master.key")
    for name in ("master.key", "signing.key"):  # the same keys on both hosts
        shutil.copy(a.home / name, home_b / name)
        os.chmod(home_b / name, 0o600)
    paused = Paused(a, "rotate-batch", tmp_path / "gate-a")
    try:
        lose_lease(a)
        on_b = rotate(b)
        a_done = paused.resume()
    finally:
        paused.kill()
    assert on_b.returncode != 0 and one_line(on_b), on_b.stderr
    assert "epoch 1" in on_b.stderr, on_b.stderr
    assert a_done.returncode == 0, a_done.stderr
    assert problems(a) == []
    before = state(a)
    again_b = rotate(b)
    assert again_b.returncode == 2 and one_line(again_b), again_b.stderr
    assert "epoch 0" in again_b.stderr, again_b.stderr
    source = tmp_path / "more.jsonl"
    source.write_text('{"id": "b-1", "type": "collected", "subject": "subscriber:b-1", '
                      '"at": "2024-01-02T09:00:00+00:00", "record": "rec-1", '
                      '"data": {"name": "B"}}\n')
    ingest_b = subprocess.run([sys.executable, "-m", "lifecycle", "ingest", str(source)],
                              env=env_for(b), capture_output=True, text=True, timeout=60)
    assert ingest_b.returncode == 2 and one_line(ingest_b), ingest_b.stderr
    assert "epoch 0" in ingest_b.stderr, ingest_b.stderr
    assert state(a) == before
    shutil.copy(a.master_key_file, b.master_key_file)
    assert readable(b) == readable(a) > 0
