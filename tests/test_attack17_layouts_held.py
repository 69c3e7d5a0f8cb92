"""attack17, probes that held: `refuse_unreplaceable_key_file` on ordinary layouts whose
key file a rotation can replace (a tmpfs on the key folder, a volume bind-mounted on the
key folder, an overlay file system, /proc unreadable) raises nothing, and the key file is
then really replaceable by a rename; and a key file bind-mounted on its own, during a
rotation under way, is finished by following the refusal (the new key written into the
mounted file). Real mounts (root); each undone in `finally`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from lifecycle.services.ledger import Ledger
from lifecycle.store.epoch_keys import next_key_files, refuse_unreplaceable_key_file
from lifecycle.store.settings import Settings
from lifecycle.store.vault import RETIRING
from lifecycle.support.faults import CRASH_ENV
from tests.key_file_stores import WITHOUT_PROC, named_store, operator_key_file
from tests.processes import env_for

SUBJECTS = ["subscriber:a17h-0"]


@contextmanager
def mounted(*argv: str) -> Iterator[None]:
    if shutil.which("mount") is None:
        pytest.skip("no mount")
    done = subprocess.run(["mount", *argv], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mount {' '.join(argv)}: {done.stderr.strip()[:200]}")
    try:
        yield
    finally:
        subprocess.run(["umount", argv[-1]], check=True)


def settings_for(key_file: Path) -> Settings:
    return Settings(home=key_file.parent, database_url=None, master_key=None,
                    master_key_file=key_file)


def accepted_and_replaceable(key_file: Path) -> None:
    refuse_unreplaceable_key_file(settings_for(key_file), under_way=None)
    new = key_file.with_name("master.key.probe")
    new.write_text("bmV3\n")
    os.replace(new, key_file)  # what install_next_key does
    assert key_file.read_text() == "bmV3\n"


@pytest.mark.parametrize("layout", ["tmpfs", "volume", "overlay"])
def test_a_replaceable_key_file_on_a_mounted_folder_is_accepted(
        tmp_path: Path, layout: str) -> None:
    """A regular key file in a folder that is itself a mount point (a tmpfs, a volume
    bind-mounted on the folder, an overlay's merged folder, the file from its lower layer)
    is replaceable by a rename: no refusal."""
    keys = tmp_path / "keys"
    keys.mkdir()
    if layout == "tmpfs":
        argv = ["-t", "tmpfs", "-o", "mode=0700,size=1m", "tmpfs", str(keys)]
    elif layout == "volume":
        volume = tmp_path / "volume"
        volume.mkdir()
        argv = ["--bind", str(volume), str(keys)]
    else:
        lower, upper, work = (tmp_path / n for n in ("lower", "upper", "work"))
        for folder in (lower, upper, work):
            folder.mkdir()
        operator_key_file(lower / "master.key")
        argv = ["-t", "overlay", "overlay", "-o",
                f"lowerdir={lower},upperdir={upper},workdir={work}", str(keys)]
    with mounted(*argv):
        key_file = keys / "master.key"
        if layout != "overlay":
            operator_key_file(key_file)
        accepted_and_replaceable(key_file)


def test_proc_unreadable_gives_no_false_refusal(tmp_path: Path) -> None:
    """/proc not mounted (every read of a /proc path fails, in a process of its own): a
    regular key file in a writable folder is still accepted."""
    key_file = operator_key_file(tmp_path / "master.key")
    script = WITHOUT_PROC + f"""
import pathlib
from lifecycle.store.epoch_keys import refuse_unreplaceable_key_file
from lifecycle.store.settings import Settings
p = pathlib.Path({str(key_file)!r})
refuse_unreplaceable_key_file(Settings(home=p.parent, database_url=None, master_key=None,
                                       master_key_file=p), under_way=None)
print("accepted")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0 and "accepted" in done.stdout, done.stderr[-400:]


def test_bind_mounted_key_file_under_way_finishes_by_the_advice(tmp_path: Path) -> None:
    """A rotation under way (killed at `rotate-recorded`), then the key file bind-mounted
    on its own (writable, from a secret's file holding the old key): refused in one line
    naming the `.next-…` file; the new key written into the key file as the line says,
    `keys rotate` finishes (no rotation under way), the mount stays, the subject reads."""
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    settings = named_store(tmp_path / "data", keys / "master.key", None, SUBJECTS, "a17h")
    env = env_for(settings)
    env["LIFECYCLE_MASTER_KEY_FILE"] = str(settings.master_key_file)

    def cli(*args: str, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
        run_env = {**env, CRASH_ENV: crash_at} if crash_at else env
        return subprocess.run([sys.executable, "-m", "lifecycle", *args], env=run_env,
                              capture_output=True, text=True, timeout=120)

    assert cli("keys", "rotate", crash_at="rotate-recorded").returncode != 0
    secret = tmp_path / "secret.key"
    shutil.copy2(settings.master_key_file, secret)
    with mounted("--bind", str(secret), str(settings.master_key_file)):
        refused = cli("keys", "rotate")
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        [pending] = next_key_files(settings)
        assert "mounted on its own" in refused.stderr and str(pending) in refused.stderr
        settings.master_key_file.write_bytes(pending.read_bytes())
        finished = cli("keys", "rotate")
        assert finished.returncode == 0, finished.stderr.strip()[-400:]
        assert next_key_files(settings) == []
        with Ledger(settings) as ledger:
            assert not any(e.state == RETIRING for e in ledger.vault.epochs())
        shown = cli("subject", "show", SUBJECTS[0], "--json")
        assert shown.returncode == 0 and "Name 0" in shown.stdout, shown.stderr[-300:]

