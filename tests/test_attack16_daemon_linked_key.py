"""attack16: the daemon's tick with a rotation under way (a run killed at
`rotate-recorded`) and the key file turned into a link since: each tick goes on (sweeps,
returns its summary), logs the rotation's refusal as one `daemon.rotation` warning that
names the link, and neither replaces the link nor writes its target. In process, SQLite."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lifecycle.daemon import Daemon
from lifecycle.services.key_policy import KeyPolicy
from lifecycle.services.ledger import Ledger
from lifecycle.support.faults import CRASH_ENV
from lifecycle.support.logs import configure_logging
from tests.key_file_stores import named_store
from tests.processes import env_for

NOW = datetime(2024, 6, 1, tzinfo=UTC)


def test_the_daemon_tick_survives_a_linked_key_file_under_a_rotation_under_way(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two ticks: both return a summary (rotated_to_epoch None), each logs one
    `daemon.rotation` failure naming the link; the link and its target are untouched and
    the value still reads."""
    home = tmp_path / "data"
    home.mkdir(mode=0o700)
    key_file = home / "master.key"
    settings = named_store(home, key_file, None, ["subscriber:dl-1"], "dl")
    env = {**env_for(settings), "LIFECYCLE_MASTER_KEY_FILE": str(key_file), CRASH_ENV:
           "rotate-recorded"}
    killed = subprocess.run([sys.executable, "-m", "lifecycle", "keys", "rotate"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert killed.returncode != 0
    secret = tmp_path / "secret.key"
    secret.write_bytes(key_file.read_bytes())
    secret.chmod(0o600)
    key_file.unlink()
    key_file.symlink_to(secret)
    before = secret.read_bytes()
    configure_logging("INFO", json=True)
    capsys.readouterr()
    with Ledger(settings) as ledger:
        daemon = Daemon(ledger, 60, clock=lambda: NOW, key_policy=KeyPolicy())
        try:
            summaries = [daemon.tick(), daemon.tick()]
        finally:
            daemon.close()
        assert ledger.subject_view("subscriber:dl-1")["records"][0]["data"] == {"name": "Name 0"}
    logged = capsys.readouterr().err.splitlines()
    failures = [l for l in logged if "daemon.rotation" in l]
    assert all(s["rotated_to_epoch"] is None for s in summaries)
    assert len(failures) == 2 and all("is a link" in l and '"failed"' in l for l in failures), \
        failures
    assert key_file.is_symlink() and secret.read_bytes() == before
