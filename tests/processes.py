"""Running `lifecycle` as real child processes in tests: their environment, commands and
what they leave in the key vault."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from lifecycle.store.vault import data_keys
from lifecycle.store.settings import Settings

_STORE_VARIABLES = ("LIFECYCLE_DATABASE_URL", "LIFECYCLE_MASTER_KEY",
                    "LIFECYCLE_MASTER_KEY_FILE", "LIFECYCLE_SWEEP_BATCH", "LIFECYCLE_ACTOR",
                    "LIFECYCLE_ALLOW_OPEN_KEY",
                    "LIFECYCLE_MASTER_KEY_COMMAND", "LIFECYCLE_CONFIG",
                    "LIFECYCLE_SIGNING_KEY", "LIFECYCLE_SIGNING_KEY_FILE")


def env_for(settings: Settings) -> dict[str, str]:
    """This test's environment (the private cache included), pointed at `settings`' store
    and nothing else the caller's environment may name."""
    env = {**os.environ, "LIFECYCLE_HOME": str(settings.home)}
    for name in _STORE_VARIABLES:
        env.pop(name, None)
    if settings.database_url:
        env["LIFECYCLE_DATABASE_URL"] = settings.database_url
    if settings.master_key:
        env["LIFECYCLE_MASTER_KEY"] = settings.master_key
    if settings.signing_key:
        env["LIFECYCLE_SIGNING_KEY"] = settings.signing_key
    if settings.signing_key_file:
        env["LIFECYCLE_SIGNING_KEY_FILE"] = str(settings.signing_key_file)
    return env


def lifecycle(settings: Settings, *args: str, stdin: str | None = None
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lifecycle", *args], env=env_for(settings),
                          input=stdin, capture_output=True, text=True, timeout=60)


def json_of(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> float:
    """Polls until `condition` holds; returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"timed out waiting for {what}"
        time.sleep(0.05)
    return time.monotonic() - started


def destroyed_keys(settings: Settings) -> int:
    engine = sa.create_engine(settings.vault_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(data_keys)
                                    .where(data_keys.c.destroyed_at.is_not(None))).scalar_one())
    finally:
        engine.dispose()
