"""Opening a store checks its home before writing (docs: a read-only home is one line and
exit 2); a file another process creates and removes meanwhile (SQLite's rollback journal
of a concurrent writer) is not a reason to refuse."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lifecycle.domain.errors import ConfigurationError
from lifecycle.store import settings as settings_module
from lifecycle.store.settings import Settings


def home_with_journal(tmp_path: Path) -> tuple[Settings, Path]:
    home = tmp_path / "home"
    home.mkdir()
    journal = home / "keys.sqlite-journal"
    journal.write_bytes(b"journal")
    return Settings(home=home, database_url=None, master_key=None,
                    master_key_file=home / "master.key"), journal


def test_a_journal_removed_while_the_home_is_checked_is_no_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A concurrent writer's journal that vanishes between being seen and being checked
    (its transaction committed) leaves the home writable: check_home passes."""
    settings, journal = home_with_journal(tmp_path)
    real_access = os.access

    def access_after_commit(path: object, mode: int) -> bool:
        if Path(str(path)) == journal:
            journal.unlink(missing_ok=True)  # the other process's commit, just now
        return real_access(path, mode)  # type: ignore[arg-type]

    monkeypatch.setattr(settings_module.os, "access", access_after_commit)
    settings.check_home()


def test_a_journal_that_is_not_a_regular_file_is_still_refused(tmp_path: Path) -> None:
    """A store file that is a folder is one line naming it, as before."""
    settings, journal = home_with_journal(tmp_path)
    journal.unlink()
    journal.mkdir()
    with pytest.raises(ConfigurationError, match="keys.sqlite-journal is not a regular file"):
        settings.check_home()
