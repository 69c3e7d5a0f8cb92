"""Shared fixtures: every ledger test runs on SQLite and on PostgreSQL.

PostgreSQL comes from $LIFECYCLE_TEST_POSTGRES_URL (default: the local server on
127.0.0.1:5432). Each test gets a database of its own. Without a reachable server the
PostgreSQL variants skip with the reason, except under CI, where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings

POSTGRES_URL = os.environ.get("LIFECYCLE_TEST_POSTGRES_URL",
                              "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin_connect() -> object:
    import psycopg

    return psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)


def postgres_unavailable() -> str | None:
    try:
        with _admin_connect():  # type: ignore[attr-defined]
            return None
    except Exception as error:  # noqa: BLE001 - any failure means "not here"
        return f"PostgreSQL not reachable at {POSTGRES_URL}: {type(error).__name__}"


@pytest.fixture(scope="session", autouse=True)
def private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests (and the processes they start) keep the bank-holiday cache to themselves."""
    from lifecycle.domain.bank_holidays import CACHE_DIR_ENV

    before = os.environ.get(CACHE_DIR_ENV)
    os.environ[CACHE_DIR_ENV] = str(tmp_path_factory.mktemp("lifecycle-cache"))
    yield
    if before is None:
        os.environ.pop(CACHE_DIR_ENV, None)
    else:
        os.environ[CACHE_DIR_ENV] = before


def require_postgres() -> str:
    """The server's URL; skips the test with the reason when unreachable (fails under CI)."""
    reason = postgres_unavailable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI requires PostgreSQL: {reason}")
        pytest.skip(reason)
    return POSTGRES_URL


@pytest.fixture(scope="session")
def postgres_server() -> str:
    return require_postgres()


@pytest.fixture
def postgres_database(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    name = f"lifecycle_test_{uuid.uuid4().hex[:12]}"
    with _admin_connect() as conn:  # type: ignore[attr-defined]
        conn.execute(f'CREATE DATABASE "{name}"')
    base = postgres_server.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with _admin_connect() as conn:  # type: ignore[attr-defined]
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Settings for a clean store: the embedded SQLite default or a fresh PostgreSQL database."""
    home = tmp_path / "lifecycle-data"
    url = None
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_database")
    yield Settings(home=home, database_url=url, master_key=None,
                   master_key_file=home / "master.key")


@pytest.fixture
def ledger(backend: Settings) -> Iterator[Ledger]:
    with Ledger(backend) as opened:
        yield opened


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    home = tmp_path / "lifecycle-data"
    return Settings(home=home, database_url=None, master_key=None,
                    master_key_file=home / "master.key")
