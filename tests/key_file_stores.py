"""Stores for the key-file tests: an operator's key file, and a store keyed by it holding
one named record per subject (what a rotation re-wraps and a reader must still open)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from lifecycle.support.faults import CRASH_ENV
from tests.facts_builder import collected, lines
from tests.processes import env_for

NOW = datetime(2024, 6, 1, tzinfo=UTC)


def operator_key_file(path: Path) -> Path:
    """A key file as an operator writes one: base64 of 32 random bytes, mode 0600."""
    path.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    path.chmod(0o600)
    return path


def named_store(home: Path, key_file: Path, url: str | None, subjects: list[str],
                prefix: str) -> Settings:
    """A store at `home` keyed by `key_file` (an operator's, written if there is none),
    holding for subject n one record `rec-1` with {"name": "Name n"} (fact ids prefix-n)."""
    if not os.path.lexists(key_file):
        operator_key_file(key_file)
    settings = Settings(home=home, database_url=url, master_key=None, master_key_file=key_file)
    facts = [collected(s, "2024-01-01T09:00:00+00:00", "rec-1", {"name": f"Name {n}"},
                       id=f"{prefix}-{n}") for n, s in enumerate(subjects)]
    with Ledger(settings) as ledger:
        assert ledger.ingest(lines(facts), NOW).accepted == len(facts)
    return settings


def key_file_cli(settings: Settings, *args: str, crash_at: str | None = None
                 ) -> subprocess.CompletedProcess[str]:
    """`lifecycle ARGS` in a process of its own, on the store with its key file named by
    LIFECYCLE_MASTER_KEY_FILE, killed at `crash_at` if given."""
    env = env_for(settings)
    env["LIFECYCLE_MASTER_KEY_FILE"] = str(settings.master_key_file)
    if crash_at:
        env[CRASH_ENV] = crash_at
    return subprocess.run([sys.executable, "-m", "lifecycle", *args], env=env,
                          capture_output=True, text=True, timeout=120)


# Run first in a process of its own: every read of a /proc path fails, as without /proc.
WITHOUT_PROC = """
import pathlib
real = pathlib.Path.read_text
def read_text(self, *a, **k):
    if str(self).startswith("/proc"):
        raise FileNotFoundError(2, "No such file or directory", str(self))
    return real(self, *a, **k)
pathlib.Path.read_text = read_text
"""
