"""Running `lifecycle` as real child processes in tests: their environment, commands and
what they leave in the key vault."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
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


def run_together(settings: Settings, commands: list[list[str]], timeout: float
                 ) -> list[subprocess.CompletedProcess[str]]:
    """Starts every command (argv after the interpreter) at once against `settings`' store
    and waits for all; a process still running when the test fails is killed."""
    started = [subprocess.Popen([sys.executable, *argv], env=env_for(settings),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for argv in commands]
    done: list[subprocess.CompletedProcess[str]] = []
    try:
        for process in started:
            stdout, stderr = process.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess(process.args, process.returncode,
                                                    stdout, stderr))
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return done


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


def keyed_store(backend: str, tmp_path: Path, master_key: str,
                postgres_url: Callable[[], str]) -> Settings:
    """Settings for a clean store with a fixed master key: the embedded SQLite default, or a
    fresh PostgreSQL database (`postgres_url` gives it) when `backend` is "postgres"."""
    home = tmp_path / "lifecycle-data"
    url = postgres_url() if backend == "postgres" else None
    return Settings(home=home, database_url=url, master_key=master_key,
                    master_key_file=home / "master.key")


@contextmanager
def checked_out(repository: Path, revision: str, where: Path) -> Iterator[Path]:
    """`revision` of `repository` as a detached worktree at `where`, removed afterwards;
    raises LookupError (git's reason) where the clone does not hold it."""
    made = subprocess.run(["git", "-C", str(repository), "worktree", "add", "--detach",
                           str(where), revision], capture_output=True, text=True)
    if made.returncode != 0:
        raise LookupError(made.stderr.strip())
    try:
        yield where
    finally:
        subprocess.run(["git", "-C", str(repository), "worktree", "remove", "--force",
                        str(where)], capture_output=True)


def old_source(factory: Any, repository: Path, revision: str, label: str) -> Iterator[Path]:
    """For a module fixture: the `src` folder of `revision` checked out in a temporary
    worktree (removed afterwards); skips the test where the clone does not hold it."""
    import pytest
    try:
        with checked_out(repository, revision, factory.mktemp(label) / "tree") as tree:
            yield tree / "src"
    except LookupError as missing:
        pytest.skip(f"cannot check out {revision}: {missing}")
