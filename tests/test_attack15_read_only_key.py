"""attack15: `lifecycle keys rotate` when the key folder or the key file cannot be written
(a read-only secret mount; a Kubernetes `subPath` mount of the one file, which is a bind
mount: writes give EROFS, a rename over it EBUSY).

The tests run as root, so permissions stop nothing: the boundary is simulated in a real
`lifecycle` process whose `os.open` (for writing), `os.replace` and `os.unlink` raise
`OSError(EROFS)` / `OSError(EBUSY)` for the read-only paths, at the exact calls. A probe
with real read-only bind mounts (`mount --bind -o ro`) gave the same outcomes.

Held: a read-only key folder stops the rotation at its first step, one line exit 2,
nothing written; the store reads and a later rotation works.

Found (fixed: the key file is checked before step 1): a read-only key file in a writable folder is met only at step 6, after every live
data key was re-wrapped and `KeysRotated` recorded: exit 2 "configuration error" with the
rotation left under way (and every later run, or daemon tick, re-failing the same way).
Nothing is lost (the new key stays in the new-key file beside it, and the next run once
the file is writable finishes), but a configuration error that a check before step 1
could see is reported after everything was written.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from lifecycle.services.ledger import Ledger
from lifecycle.services.rotation import recorded_rotations
from lifecycle.store.epoch_keys import next_key_files
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, lines
from tests.processes import env_for
from tests.test_attack15_symlinked_key import NOW, epochs, one_line

SUBJECTS = [f"subscriber:ro-{n}" for n in range(6)]

# The CLI with the key folder (ATTACK15_RO_DIR) or the key file (ATTACK15_RO_FILE)
# read-only: creating or writing a file there is EROFS, a rename onto the file EBUSY
# (a mount point), a rename or unlink in the folder EROFS.
READ_ONLY = r"""
import errno, os, sys
ro_dir = os.environ.get("ATTACK15_RO_DIR")
ro_file = os.environ.get("ATTACK15_RO_FILE")
def in_dir(path):
    return ro_dir is not None and os.path.dirname(os.path.abspath(os.fspath(path))) == ro_dir
def is_file(path):
    return ro_file is not None and os.path.abspath(os.fspath(path)) == ro_file
real_open, real_replace, real_unlink = os.open, os.replace, os.unlink
WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
def fake_open(path, flags, *args, **kwargs):
    if isinstance(path, (str, bytes, os.PathLike)) and flags & WRITES and (
            in_dir(path) or is_file(path)):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
    return real_open(path, flags, *args, **kwargs)
def fake_replace(src, dst, *args, **kwargs):
    if is_file(dst):
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), os.fspath(dst))
    if in_dir(src) or in_dir(dst):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(dst))
    return real_replace(src, dst, *args, **kwargs)
def fake_unlink(path, *args, **kwargs):
    if in_dir(path) or is_file(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
    return real_unlink(path, *args, **kwargs)
os.open, os.replace, os.unlink = fake_open, fake_replace, fake_unlink
from lifecycle.cli.main import main
sys.argv = ["lifecycle", *sys.argv[1:]]
main()
"""


def keyed_store(tmp_path: Path, url: str | None, key_file: Path) -> Settings:
    home = tmp_path / "lifecycle-data"
    settings = Settings(home=home, database_url=url, master_key=None,
                        master_key_file=key_file)
    facts = [collected(s, "2024-01-01T09:00:00+00:00", "rec-1", {"name": f"Name {n}"},
                       id=f"ro-{n}") for n, s in enumerate(SUBJECTS)]
    with Ledger(settings) as ledger:
        assert ledger.ingest(lines(facts), NOW).accepted == len(facts)
    return settings


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("postgres_database") if request.param == "postgres" else None


def rotate(settings: Settings, **read_only: Path) -> subprocess.CompletedProcess[str]:
    env = env_for(settings)
    env["LIFECYCLE_MASTER_KEY_FILE"] = str(settings.master_key_file)
    for name, path in read_only.items():
        env[f"ATTACK15_RO_{name.upper()}"] = str(path)
    return subprocess.run([sys.executable, "-c", READ_ONLY, "keys", "rotate"], env=env,
                          capture_output=True, text=True, timeout=120)


def live_epochs(settings: Settings) -> set[int]:
    engine = sa.create_engine(settings.vault_url)
    try:
        with engine.connect() as conn:
            return set(conn.execute(sa.text(
                "SELECT DISTINCT epoch FROM lifecycle_data_keys WHERE wrapped IS NOT NULL"
            )).scalars())
    finally:
        engine.dispose()


def reads(settings: Settings) -> bool:
    with Ledger(settings) as ledger:
        return all(ledger.subject_view(s)["records"][0]["data"] == {"name": f"Name {n}"}
                   for n, s in enumerate(SUBJECTS))


def test_a_read_only_key_folder_stops_the_rotation_before_anything_is_written(
        tmp_path: Path, url: str | None) -> None:
    """Key file in a read-only folder (a secret mount): `keys rotate` is one line, exit 2,
    naming the file it could not write; no epoch begun, no key re-wrapped, no new-key file,
    the key file as it was; the store reads, and once the folder is writable a rotation
    completes."""
    folder = tmp_path / "secrets"
    folder.mkdir(mode=0o700)
    settings = keyed_store(tmp_path, url, folder / "master.key")
    key_bytes, before = settings.master_key_file.read_bytes(), epochs(settings)
    refused = rotate(settings, dir=folder)
    assert refused.returncode == 2 and one_line(refused), refused.stderr
    assert "Read-only file system" in refused.stderr and str(folder) in refused.stderr
    assert epochs(settings) == before and live_epochs(settings) == {0}
    assert settings.master_key_file.read_bytes() == key_bytes
    assert next_key_files(settings) == []
    assert reads(settings)
    done = rotate(settings)
    assert done.returncode == 0, done.stderr
    assert live_epochs(settings) == {1} and reads(settings)


def test_a_read_only_key_file_is_refused_before_any_key_is_rewrapped(
        tmp_path: Path, url: str | None) -> None:
    """Key file read-only in a writable folder (a `subPath` secret mount): a configuration
    error, so it is met before anything is written: one line, exit 2, no epoch begun, no
    data key re-wrapped, no KeysRotated recorded, no new-key file left."""
    settings = keyed_store(tmp_path, url, tmp_path / "lifecycle-data" / "master.key")
    before = epochs(settings)
    refused = rotate(settings, file=settings.master_key_file)
    assert refused.returncode == 2 and one_line(refused), refused.stderr
    assert epochs(settings) == before
    assert live_epochs(settings) == {0}
    with Ledger(settings) as ledger:
        assert recorded_rotations(ledger.store) == []
    assert next_key_files(settings) == []


def test_a_rotation_stopped_by_a_read_only_key_file_loses_nothing_and_finishes_later(
        tmp_path: Path, url: str | None) -> None:
    """Whenever it is met, a read-only key file is one line exit 2 with no traceback; the
    store keeps reading in new processes (the new key in its file beside the key file),
    the key file keeps its bytes, and once it is writable the next run finishes: every
    key under one current epoch, the old one retired, no new-key file left."""
    settings = keyed_store(tmp_path, url, tmp_path / "lifecycle-data" / "master.key")
    key_bytes = settings.master_key_file.read_bytes()
    refused = rotate(settings, file=settings.master_key_file)
    assert refused.returncode == 2 and one_line(refused), refused.stderr
    assert settings.master_key_file.read_bytes() == key_bytes
    assert reads(settings)
    done = rotate(settings)
    assert done.returncode == 0, done.stderr
    states = {e: s for e, (s, _) in epochs(settings).items()}
    assert states == {0: "retired", 1: "current"}
    assert live_epochs(settings) == {1} and reads(settings)
    assert next_key_files(settings) == []
    assert settings.master_key_file.read_bytes() != key_bytes
    assert os.stat(settings.master_key_file).st_mode & 0o077 == 0
