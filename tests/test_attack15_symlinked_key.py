"""attack15: `lifecycle keys rotate` when the master key file is a symbolic link to a file
elsewhere, as a Kubernetes secret or a secrets-manager mount gives it
(`master.key -> /secrets/..data/master.key`), and the key-file setting names the link.

Real `lifecycle` processes, both backends. "The deployment" re-creates the link as it was
(pointing at the original secret file) before the next process starts.

Found (fixed: a rotation now refuses a key file that is a link, before anything is written):
the rotation replaces the link by a regular file holding the new key
(`os.replace` over the link) and overwrites the link's target, the operator's secret,
with random bytes (`os.open(path, O_WRONLY)` follows the link). Once the deployment
re-creates the link, the regular file with the only copy of the new key is gone, the
secret holds no key, and every live value is unreadable for good; the one line the user
gets ("cannot be read (not text)") names no fingerprint and says nothing of the loss.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from lifecycle.services.ledger import Ledger
from lifecycle.store.master_key import key_check_value
from lifecycle.store.settings import Settings
from tests.key_file_stores import key_file_cli as cli, named_store, operator_key_file

NOW = datetime(2024, 6, 1, tzinfo=UTC)
SUBJECTS = [f"subscriber:link-{n}" for n in range(6)]


def linked_store(tmp_path: Path, url: str | None) -> tuple[Settings, Path]:
    """A store whose key file setting names `home/master.key`, a link to a secret file
    in a folder of its own (mode 0600 file, key written by the operator); populated."""
    home = tmp_path / "lifecycle-data"
    home.mkdir(mode=0o700)
    secrets = tmp_path / "secrets" / "..data"
    secrets.mkdir(parents=True)
    secret = operator_key_file(secrets / "master.key")
    link = home / "master.key"
    link.symlink_to(secret)
    return named_store(home, link, url, SUBJECTS, "link"), secret


@pytest.fixture(params=["sqlite", "postgres"])
def linked(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Settings, Path]:
    url = request.getfixturevalue("postgres_database") if request.param == "postgres" else None
    return linked_store(tmp_path, url)


def redeploy(link: Path, secret: Path) -> None:
    """What the deployment does on the next start: the link, as it was."""
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(secret)


def epochs(settings: Settings) -> dict[int, tuple[str, str]]:
    engine = sa.create_engine(settings.vault_url)
    try:
        with engine.connect() as conn:
            return {int(e): (s, c) for e, s, c in conn.execute(sa.text(
                "SELECT epoch, state, key_check FROM lifecycle_key_epochs"))}
    finally:
        engine.dispose()


def key_in(path: Path) -> bytes | None:
    try:
        key = base64.b64decode(path.read_text().strip(), validate=True)
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return key if len(key) == 32 else None


def one_line(result: subprocess.CompletedProcess[str]) -> bool:
    text = [line for line in result.stderr.splitlines() if line.startswith("lifecycle:")]
    return len(text) == 1 and "Traceback" not in result.stderr


def reads_every_subject(settings: Settings) -> list[str]:
    """What is wrong when a new process reads a subject, then every subject is read in
    this one (opened from the same settings): empty when all read."""
    shown = cli(settings, "subject", "show", SUBJECTS[1], "--json")
    if shown.returncode != 0 or "Name 1" not in shown.stdout:
        return [f"exit {shown.returncode}: {shown.stderr.strip()[-300:]}"]
    with Ledger(settings) as ledger:
        return [s for n, s in enumerate(SUBJECTS)
                if ledger.subject_view(s)["records"][0]["data"] != {"name": f"Name {n}"}]


def test_a_rotation_keeps_a_symlinked_key_file_a_link_and_its_secret_a_key(
        linked: tuple[Settings, Path]) -> None:
    """With the key file a link to a secret: either the rotation refuses before anything
    is written (exit 2, one line saying what to do; the link, the secret and the epochs as
    they were), or it writes through the link (the link stays a link to the same file,
    which now holds the current epoch's key). Never: the link replaced by a regular file,
    the secret holding no key at all."""
    settings, secret = linked
    link = settings.master_key_file
    before_secret, before_epochs = secret.read_bytes(), epochs(settings)
    rotated = cli(settings, "keys", "rotate")
    assert link.is_symlink(), f"the link was replaced by a regular file: {rotated.stdout}"
    assert Path(os.readlink(link)) == secret
    if rotated.returncode != 0:
        assert rotated.returncode == 2 and one_line(rotated), rotated.stderr
        assert secret.read_bytes() == before_secret
        assert epochs(settings) == before_epochs
        return
    key = key_in(secret)
    assert key is not None, "the secret file holds no key (overwritten with random bytes)"
    current = [c for s, c in epochs(settings).values() if s == "current"]
    assert [key_check_value(key)] == current


def test_after_a_rotation_the_redeployed_link_still_opens_every_value(
        linked: tuple[Settings, Path]) -> None:
    """`keys rotate` (whatever its exit), then the deployment re-creates the link to the
    original secret file: every live value still opens in a new process, or, if the key
    given is not the store's, one line exit 2 naming both fingerprints; no key is lost."""
    settings, secret = linked
    rotated = cli(settings, "keys", "rotate")
    assert rotated.returncode in (0, 2), rotated.stderr
    redeploy(settings.master_key_file, secret)
    assert reads_every_subject(settings) == []


@pytest.mark.parametrize("step", [
    "rotate-recorded",
    "rotate-key-destroyed",
])
def test_a_rotation_killed_with_a_symlinked_key_file_loses_no_key_on_redeploy(
        linked: tuple[Settings, Path], step: str) -> None:
    """Told to die at `step`, then the pod restarts (the link re-created as deployed):
    the run is refused before any step (exit 2, one line), so it never gets there; the
    current epoch's key is where lifecycle reads it, so the store opens in a new process
    and every value reads."""
    settings, secret = linked
    killed = cli(settings, "keys", "rotate", crash_at=step)
    assert killed.returncode == 2 and one_line(killed), killed.stderr
    assert killed.returncode != -signal.SIGKILL
    redeploy(settings.master_key_file, secret)
    assert reads_every_subject(settings) == []
