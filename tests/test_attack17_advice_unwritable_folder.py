"""attack17: a rotation under way (killed at `rotate-recorded`: every live key re-wrapped,
the new key only in `<key file>.next-…`), then the key folder can no longer be written:
immutable (`chattr +i`, for root the same as a folder it may not write), or on a read-only
file system (the folder bind-mounted read-only over itself). `keys rotate` is refused in
one line naming the `.next-…` file and saying "make the key file hold that key ... and run
again". The key file itself is a regular, writable file (immutable folder), or its source
is writable elsewhere (read-only mount): the operator writes the new key into it, exactly
as the line says, and runs again.

The rule: advice given in a refusal works when followed: the rotation finishes (exit 0,
no rotation under way, every subject reads). Fixed: the copy of the new key the folder
keeps is left (it holds the current key, as the key file does) and removed by the first
rotation after its epoch is retired. It did not: the check passes (the key file
holds the new key), the rotation goes on to `install_next_key`, whose `_drop_copies`
unlinks the `.next-…` copy in the folder that cannot be written: an OSError, "unexpected
error (PermissionError / OSError)", exit 1, before `retire_epoch`: the rotation stays under
way on every run while the folder stays so, and the refusal's advice cannot end it.

SQLite; the key file in a folder of its own; `chattr -i` and `umount` always undone."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lifecycle.services.ledger import Ledger
from lifecycle.store.epoch_keys import next_key_files
from lifecycle.store.settings import Settings
from lifecycle.store.vault import RETIRING
from tests.key_file_stores import key_file_cli as cli, named_store

NOW = datetime(2024, 6, 1, tzinfo=UTC)
SUBJECTS = [f"subscriber:a17f-{n}" for n in range(3)]


def under_way(settings: Settings) -> bool:
    with Ledger(settings) as ledger:
        return any(e.state == RETIRING for e in ledger.vault.epochs())


def killed_rotation(tmp_path: Path) -> tuple[Settings, Path]:
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    settings = named_store(tmp_path / "data", keys / "master.key", None, SUBJECTS, "a17f")
    killed = cli(settings, "keys", "rotate", crash_at="rotate-recorded")
    assert killed.returncode != 0, killed.stdout
    return settings, keys


def refusal_then_advice_followed(settings: Settings, write_key_file) -> tuple[
        subprocess.CompletedProcess[str], subprocess.CompletedProcess[str], bool]:
    refused = cli(settings, "keys", "rotate")
    assert refused.returncode == 2, refused.stderr
    [pending] = next_key_files(settings)
    assert str(pending) in refused.stderr and "make the key file hold that key" in refused.stderr
    write_key_file(pending.read_bytes())  # the key file now holds the new key
    again = cli(settings, "keys", "rotate")
    return refused, again, under_way(settings)


def check_finished(settings: Settings, again: subprocess.CompletedProcess[str],
                   still: bool) -> None:
    assert "Traceback" not in again.stderr
    assert again.returncode == 0 and not still, (
        f"advice followed, the rotation did not finish (exit {again.returncode}, under way "
        f"{still}): {again.stderr.strip()[-300:]}")
    for n, subject in enumerate(SUBJECTS):
        shown = cli(settings, "subject", "show", subject, "--json")
        assert shown.returncode == 0 and f"Name {n}" in shown.stdout, shown.stderr[-300:]


def test_immutable_folder_advice_followed_finishes_the_rotation(tmp_path: Path) -> None:
    """Under way, the key folder immutable, the key file writable: the operator writes the
    new key (from the `.next-…` file the refusal names) into the key file and runs again:
    the rotation finishes and every subject reads."""
    if shutil.which("chattr") is None:
        pytest.skip("no chattr")
    settings, keys = killed_rotation(tmp_path)
    locked = subprocess.run(["chattr", "+i", str(keys)], capture_output=True, text=True)
    if locked.returncode != 0:
        pytest.skip(f"chattr +i: {locked.stderr[:200]}")
    try:
        refused, again, still = refusal_then_advice_followed(
            settings, settings.master_key_file.write_bytes)
    finally:
        subprocess.run(["chattr", "-i", str(keys)], check=True)
    assert "cannot be written" in refused.stderr
    check_finished(settings, again, still)
    [left] = next_key_files(settings)  # the copy the immutable folder kept
    assert left.read_bytes() == settings.master_key_file.read_bytes()
    next_rotation = cli(settings, "keys", "rotate")
    assert next_rotation.returncode == 0, next_rotation.stderr
    assert next_key_files(settings) == [], (
        "a copy of a retired epoch's key stayed on disk after the next rotation")


def test_read_only_folder_advice_followed_finishes_the_rotation(tmp_path: Path) -> None:
    """Under way, the key folder bind-mounted read-only over itself (a read-only volume
    whose source the operator can write): the operator makes the key file hold the new key
    (written through the volume's source) and runs again: the rotation finishes."""
    settings, keys = killed_rotation(tmp_path)
    source = tmp_path / "keys-source"
    shutil.copytree(keys, source)
    if shutil.which("mount") is None:
        pytest.skip("no mount")
    bound = subprocess.run(["mount", "--bind", "-o", "ro", str(source), str(keys)],
                           capture_output=True, text=True)
    if bound.returncode != 0:
        pytest.skip(f"mount: {bound.stderr[:200]}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(keys)], check=True)
        refused, again, still = refusal_then_advice_followed(
            settings, (source / "master.key").write_bytes)
    finally:
        subprocess.run(["umount", str(keys)], check=True)
    assert "cannot be written" in refused.stderr or "read-only" in refused.stderr
    # The volume gone, its source back in place: the state the operator's runs left.
    for leftover in keys.iterdir():
        leftover.unlink()
    for kept in source.iterdir():
        shutil.copy2(kept, keys / kept.name)
    check_finished(settings, again, still)
