"""attack16: the key file passes the rotation's first check, then the deployment changes
it while the rotation runs (paused at `rotate-recorded`, after the check, before step 6
installs the new key): it becomes a link to a secret, or a secret is bind-mounted on it.
Step 6 must not write through the link nor replace the link/mount, must leave the secret
as it was, must tell the user in one line (exit 2), and every value must still read.

Real `lifecycle` processes, SQLite (step 6 touches files only); the bind mount is real (root) and always undone."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.key_file_stores import named_store
from tests.processes import env_for

NOW = datetime(2024, 6, 1, tzinfo=UTC)
SUBJECTS = [f"subscriber:chg-{n}" for n in range(4)]

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
from lifecycle.cli.main import main
sys.argv = ["lifecycle", *sys.argv[1:]]
main()
"""


@pytest.fixture(params=["sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    url = request.getfixturevalue("postgres_database") if request.param == "postgres" else None
    home = tmp_path / "lifecycle-data"
    home.mkdir(mode=0o700)
    return named_store(home, home / "master.key", url, SUBJECTS, "chg")


def env(settings: Settings) -> dict[str, str]:
    found = env_for(settings)
    found["LIFECYCLE_MASTER_KEY_FILE"] = str(settings.master_key_file)
    return found


def paused_rotation(settings: Settings, gate: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", PAUSING_CLI, "keys", "rotate"],
        env={**env(settings), "ATTACK_PAUSE_AT": "rotate-recorded",
             "ATTACK_PAUSE_GATE": str(gate)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reached = Path(f"{gate}.reached")
    deadline = time.monotonic() + 60
    while not reached.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reached.exists(), process.communicate()
    return process


def resume(process: subprocess.Popen[str], gate: Path) -> subprocess.CompletedProcess[str]:
    gate.write_text("go")
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lifecycle", *args], env=env(settings),
                          capture_output=True, text=True, timeout=120)


def one_line(result: subprocess.CompletedProcess[str]) -> bool:
    text = [l for l in result.stderr.splitlines() if l.startswith("lifecycle:")]
    return len(text) == 1 and "Traceback" not in result.stderr


def reads_all(settings: Settings) -> None:
    shown = cli(settings, "subject", "show", SUBJECTS[2], "--json")
    assert shown.returncode == 0 and "Name 2" in shown.stdout, shown.stderr[-300:]
    with Ledger(settings) as ledger:
        assert [ledger.subject_view(s)["records"][0]["data"] for s in SUBJECTS] == [
            {"name": f"Name {n}"} for n in range(len(SUBJECTS))]


def secret_copy(settings: Settings, tmp_path: Path) -> Path:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    secret = secrets / "master.key"
    secret.write_bytes(settings.master_key_file.read_bytes())
    secret.chmod(0o600)
    return secret


def test_a_link_made_during_the_rotation_is_neither_replaced_nor_written_through(
        store: Settings, tmp_path: Path) -> None:
    """The key file becomes a link to a secret (the same key) while the rotation is at
    `rotate-recorded`: the rotation stops in one line (exit 2), the link and the secret
    are as they were, every value reads, and the next `keys rotate` refuses in one line
    saying the file is a link."""
    gate = tmp_path / "gate"
    process = paused_rotation(store, gate)
    try:
        secret = secret_copy(store, tmp_path)
        before = secret.read_bytes()
        store.master_key_file.unlink()
        store.master_key_file.symlink_to(secret)
        done = resume(process, gate)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert done.returncode == 2 and one_line(done), (done.returncode, done.stderr[-400:])
    assert store.master_key_file.is_symlink() and secret.read_bytes() == before
    reads_all(store)
    again = cli(store, "keys", "rotate")
    assert again.returncode == 2 and one_line(again) and "is a link" in again.stderr


def test_a_file_mounted_during_the_rotation_is_not_replaced(
        store: Settings, tmp_path: Path) -> None:
    """A secret is bind-mounted on the key file while the rotation is at `rotate-recorded`:
    the rotation stops in one line (exit 2), the secret keeps its key, every value reads,
    and the next `keys rotate` refuses in one line saying it is mounted on its own."""
    if shutil.which("mount") is None:
        pytest.skip("no mount")
    gate = tmp_path / "gate"
    process = paused_rotation(store, gate)
    mounted = False
    try:
        secret = secret_copy(store, tmp_path)
        before = secret.read_bytes()
        bound = subprocess.run(["mount", "--bind", str(secret), str(store.master_key_file)],
                               capture_output=True, text=True)
        if bound.returncode != 0:
            pytest.skip(f"cannot bind-mount: {bound.stderr[:200]}")
        mounted = True
        done = resume(process, gate)
        assert done.returncode == 2 and one_line(done), (done.returncode, done.stderr[-400:])
        assert secret.read_bytes() == before
        reads_all(store)
        again = cli(store, "keys", "rotate")
        assert again.returncode == 2 and one_line(again), again.stderr
        assert "mounted on its own" in again.stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        if mounted:
            subprocess.run(["umount", str(store.master_key_file)], check=True)
