"""attack18e: the SQLite backup holds the key vault still (`_vault_held_still`, a read
lock) while it copies; README: "writers wait for it, up to 30 s". A desk runs beside it.

README (desk): bad input 422, unknown 404; never an unexpected error for what the service
can name. A backup is an ordinary, routine operation beside a running desk.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from lifecycle.services import backup as backup_module
from lifecycle.store.settings import Settings
from tests.web_service import Service, start_service

FACT = {"id": "w1", "type": "collected", "subject": "m:7", "at": "2025-01-02T10:00:00Z",
        "record": "signup", "category": "contact", "purpose": "enquiries",
        "basis": "legitimate-interests", "source": "data-subject",
        "data": {"email": "zebedee.quillfeather@example.org"}}


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    home = tmp_path / "home"
    settings = Settings(home=home, database_url=None, master_key=None,
                        master_key_file=home / "master.key")
    started = start_service(settings, tmp_path)
    yield started
    started.stop()


def _post_fact(service: Service, out: dict[str, Any], timeout: float) -> None:
    with service.client("dpo") as client:
        began = time.monotonic()
        try:
            answer = client.post("/api/facts", content=json.dumps(FACT) + "\n",
                                 timeout=timeout)
            out["post"] = (answer.status_code, answer.text[:200],
                           round(time.monotonic() - began, 1))
        except httpx.HTTPError as error:
            out["post"] = (type(error).__name__, round(time.monotonic() - began, 1))


class _SlowLog:
    """sqlite3 as the backup module sees it, with the event log's copy taking `pause`
    seconds (a large log)."""

    def __init__(self, pause: float) -> None:
        self.pause = pause

    def __getattr__(self, name: str) -> Any:
        return getattr(sqlite3, name)

    def connect(self, path: Any, *args: Any, **kwargs: Any) -> Any:
        connection = sqlite3.connect(path, *args, **kwargs)
        if str(path).endswith("events.sqlite"):
            return _Pausing(connection, self.pause)
        return connection


class _Pausing:
    def __init__(self, connection: sqlite3.Connection, pause: float) -> None:
        self.connection, self.pause = connection, pause

    def backup(self, target: Any, **kwargs: Any) -> None:
        if self.pause:
            time.sleep(self.pause)
        self.connection.backup(target.connection if isinstance(target, _Pausing) else target,
                               **kwargs)

    def __enter__(self) -> _Pausing:
        self.connection.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self.connection.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.connection, name)


def test_a_desk_write_during_a_backup_waits_for_it_and_goes_through(
        service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Held: README: the backup holds the vault still while it copies and "writers wait for
    it, up to 30 s". A backup whose event-log copy takes 2 s (then a tiny vault) and a desk
    ingest started during it: the ingest is stored within a few seconds of the backup's
    end (well inside 30 s), and the backup completes."""
    monkeypatch.setattr(backup_module, "sqlite3", _SlowLog(2.0))
    target = tmp_path / "backup"
    done: dict[str, Any] = {}

    def take() -> None:
        try:
            done["report"] = backup_module.take_backup(service.settings, target,
                                                       datetime.now(UTC))
        except Exception as error:  # noqa: BLE001 - reported by the test
            done["error"] = repr(error)

    backup = threading.Thread(target=take, daemon=True)
    backup.start()
    time.sleep(0.5)
    out: dict[str, Any] = {}
    _post_fact(service, out, timeout=10)      # the backup needs ~2 s in all
    assert out["post"][0] == 200, out
    backup.join(15)
    assert "report" in done, done
    shutil.rmtree(target, ignore_errors=True)


def test_desk_reads_answer_during_a_backup_while_a_write_waits(
        service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backup whose event-log copy takes 8 s (a large log) holds the vault still; a desk
    ingest started during it waits (README: "writers wait for it, up to 30 s"). A desk read
    of a person meanwhile must answer 200 (reads change no key; the README promises at
    worst the documented wait, never an unexpected error), the write is stored, the backup
    completes, and the service log holds no traceback."""
    monkeypatch.setattr(backup_module, "sqlite3", _SlowLog(8.0))
    done: dict[str, Any] = {}

    def take() -> None:
        try:
            done["report"] = backup_module.take_backup(service.settings, tmp_path / "bk",
                                                       datetime.now(UTC))
        except Exception as error:  # noqa: BLE001 - reported by the test
            done["error"] = repr(error)

    backup = threading.Thread(target=take, daemon=True)
    backup.start()
    time.sleep(0.5)
    out: dict[str, Any] = {}
    writer = threading.Thread(target=_post_fact, args=(service, out, 60), daemon=True)
    writer.start()
    time.sleep(0.7)
    with service.client("dpo") as client:
        began = time.monotonic()
        read = client.get("/api/subjects/m:1", timeout=30)
        took = round(time.monotonic() - began, 1)
    writer.join(40)
    backup.join(40)
    assert "report" in done and out["post"][0] == 200, (done, out)
    assert "unexpected error" not in read.text, (read.status_code, read.text, took)
    assert read.status_code == 200, read.text
    assert "Traceback" not in service.log_text()
