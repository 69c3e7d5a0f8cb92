"""attack16: a rotation under way (a run killed at `rotate-recorded`: every live key is
re-wrapped under the new epoch, whose key is only in `<key file>.next-…` beside the key
file), then the deployment turns the key file into a link to a secret holding the same
(old) key. `keys rotate` is refused (exit 2, one line). The operator does what the line
says: points LIFECYCLE_MASTER_KEY_FILE at a regular file in a folder lifecycle may write,
the current key given by LIFECYCLE_MASTER_KEY_COMMAND ("the new key goes to that file").
That was the advice for a new rotation; followed during one under way, it left the new key
behind at the old path and nothing read. Fixed: the refusal of a rotation under way names
the file holding its new key and says to make the key file hold it.

Real `lifecycle` processes, both backends.
"""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lifecycle.store.epoch_keys import next_key_files
from lifecycle.store.settings import Settings
from tests.key_file_stores import key_file_cli as cli, named_store

NOW = datetime(2024, 6, 1, tzinfo=UTC)
SUBJECTS = [f"subscriber:uw-{n}" for n in range(4)]


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    url = request.getfixturevalue("postgres_database") if request.param == "postgres" else None
    home = tmp_path / "lifecycle-data"
    home.mkdir(mode=0o700)
    return named_store(home, home / "master.key", url, SUBJECTS, "uw")


def one_line(result: subprocess.CompletedProcess[str]) -> bool:
    text = [l for l in result.stderr.splitlines() if l.startswith("lifecycle:")]
    return len(text) == 1 and "Traceback" not in result.stderr


def under_way_then_linked(settings: Settings, tmp_path: Path) -> Path:
    """Kills a rotation at `rotate-recorded`, then moves the (old) key to a secret file and
    makes the key file a link to it; returns the secret."""
    killed = cli(settings, "keys", "rotate", crash_at="rotate-recorded")
    assert killed.returncode != 0, killed.stdout
    key_file = settings.master_key_file
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    secret = secrets / "master.key"
    secret.write_bytes(key_file.read_bytes())
    secret.chmod(0o600)
    key_file.unlink()
    key_file.symlink_to(secret)
    return secret


def test_reads_and_the_refusal_hold_while_the_key_file_is_a_link(
        store: Settings, tmp_path: Path) -> None:
    """While a rotation is under way and the key file became a link: a new process still
    reads every subject (the new key beside the key file), and `keys rotate` is refused
    in one line (exit 2) that says the rotation stays under way; nothing is replaced."""
    secret = under_way_then_linked(store, tmp_path)
    before = secret.read_bytes()
    for n, subject in enumerate(SUBJECTS):
        shown = cli(store, "subject", "show", subject, "--json")
        assert shown.returncode == 0 and f"Name {n}" in shown.stdout, shown.stderr
    refused = cli(store, "keys", "rotate")
    assert refused.returncode == 2 and one_line(refused), refused.stderr
    assert "is a link" in refused.stderr and "under way" in refused.stderr
    assert store.master_key_file.is_symlink() and secret.read_bytes() == before


def test_following_the_refusal_finishes_the_rotation_under_way(
        store: Settings, tmp_path: Path) -> None:
    """The refusal of a rotation under way names the file holding its new key and tells
    the operator to make the key file hold that key. Done both ways the line offers (the
    key written into the secret the link points to; or a regular file holding it in the
    link's place): `keys rotate` finishes the rotation, and every subject reads. The rule:
    advice given in a refusal works when followed. (Before, the line gave the advice for a
    new rotation, which moved the key file away from the new key: nothing read.)"""
    secret = under_way_then_linked(store, tmp_path)
    refused = cli(store, "keys", "rotate")
    assert refused.returncode == 2 and one_line(refused), refused.stderr
    [pending] = next_key_files(store)
    assert str(pending) in refused.stderr and "under way" in refused.stderr
    secret.write_bytes(pending.read_bytes())  # the key written where the link points
    finished = cli(store, "keys", "rotate")
    assert finished.returncode == 0, finished.stderr.strip()[-400:]
    assert store.master_key_file.is_symlink() and next_key_files(store) == []
    for n, subject in enumerate(SUBJECTS):
        shown = cli(store, "subject", "show", subject, "--json")
        assert shown.returncode == 0 and f"Name {n}" in shown.stdout, shown.stderr[-300:]


def test_a_regular_file_in_the_links_place_finishes_the_rotation_under_way(
        store: Settings, tmp_path: Path) -> None:
    """The other way the refusal offers: the link replaced by a regular file holding the
    new key (copied from the file the line names): the rotation finishes, every subject
    reads, and the key file stays a regular file, mode 0600."""
    under_way_then_linked(store, tmp_path)
    refused = cli(store, "keys", "rotate")
    assert refused.returncode == 2, refused.stderr
    [pending] = next_key_files(store)
    key_file = store.master_key_file
    key_file.unlink()
    key_file.write_bytes(pending.read_bytes())
    key_file.chmod(0o600)
    finished = cli(store, "keys", "rotate")
    assert finished.returncode == 0, finished.stderr.strip()[-400:]
    assert not key_file.is_symlink() and os.stat(key_file).st_mode & 0o077 == 0
    for n, subject in enumerate(SUBJECTS):
        shown = cli(store, "subject", "show", subject, "--json")
        assert shown.returncode == 0 and f"Name {n}" in shown.stdout, shown.stderr[-300:]
