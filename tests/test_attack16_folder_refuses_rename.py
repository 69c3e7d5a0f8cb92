"""attack16: the key file is a regular, writable file, but its folder refuses a rename
into it (immutable, `chattr +i`; for a non-root user the same as a folder it may not
write). docs/guarantees.md: "Before the first [step], it checks that its last step will be
able to replace the key file ... refused, one line, exit 2, nothing written."

A rotation under way (killed at `rotate-epoch-begun`, its new key already beside the key
file), then the folder becomes immutable: the next `keys rotate` re-wraps every live key
under the new epoch and only then fails at step 6. SQLite; the key file in a folder of
its own (the store's folder stays writable); `chattr -i` always undone."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from lifecycle.store.vault import RETIRING
from tests.key_file_stores import key_file_cli as cli, named_store

NOW = datetime(2024, 6, 1, tzinfo=UTC)
SUBJECTS = [f"subscriber:imm-{n}" for n in range(5)]


def under_retiring(settings: Settings) -> int:
    with Ledger(settings) as ledger:
        retiring = next(e for e in ledger.vault.epochs() if e.state == RETIRING)
        return ledger.vault.live_keys_under(retiring.epoch)


def test_a_resumed_rotation_whose_key_folder_refuses_renames_is_refused_before_rewrapping(
        tmp_path: Path) -> None:
    """A rotation under way, its key folder now refusing renames: `keys rotate` is refused
    (exit 2, one line) before it re-wraps anything: the live keys still under the retiring
    epoch are as many as before the run."""
    if shutil.which("chattr") is None:
        pytest.skip("no chattr")
    home = tmp_path / "data"
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    settings = named_store(home, keys / "master.key", None, SUBJECTS, "imm")
    killed = cli(settings, "keys", "rotate", crash_at="rotate-epoch-begun")
    assert killed.returncode != 0
    before = under_retiring(settings)
    assert before == len(SUBJECTS)
    locked = subprocess.run(["chattr", "+i", str(keys)], capture_output=True, text=True)
    if locked.returncode != 0:
        pytest.skip(f"chattr +i: {locked.stderr[:200]}")
    try:
        run = cli(settings, "keys", "rotate")
        after = under_retiring(settings)
    finally:
        subprocess.run(["chattr", "-i", str(keys)], check=True)
    assert run.returncode == 2, run.stderr
    assert after == before, (f"re-wrapped {before - after} keys before failing at step 6: "
                             f"{run.stderr.strip()[-300:]}")
