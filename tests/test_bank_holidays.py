"""The England and Wales calendar comes from the `holidays` library, via a disk cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import holidays
import pytest

from lifecycle.domain import bank_holidays
from lifecycle.domain.bank_holidays import CACHE_DIR_ENV, cache_path, england_and_wales


def library_calendar(year: int) -> dict[date, str]:
    return {d: str(n) for d, n in
            holidays.country_holidays("GB", subdiv="ENG", years=year).items()}


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_DIR_ENV, str(folder))
    return folder


def test_a_new_process_reads_the_cache_instead_of_importing_every_country(
        cache_dir: Path) -> None:
    """The first lookup stores the library's dates; a later process gets the same dates
    from the file without importing the library's country data (the 0.25 s it saves)."""
    script = ("import sys, json; from lifecycle.domain.bank_holidays import england_and_wales; "
              "days = england_and_wales(2025); "
              "print(json.dumps([sorted(d.isoformat() for d in days), "
              "'holidays.countries' in sys.modules]))")
    env = {**os.environ, CACHE_DIR_ENV: str(cache_dir)}
    first = json.loads(subprocess.run([sys.executable, "-c", script], env=env, check=True,
                                      capture_output=True, text=True).stdout)
    second = json.loads(subprocess.run([sys.executable, "-c", script], env=env, check=True,
                                       capture_output=True, text=True).stdout)
    expected = sorted(d.isoformat() for d in library_calendar(2025))
    assert first == [expected, True]
    assert second == [expected, False]
    assert "2025-04-18" in expected  # Good Friday 2025


def test_a_damaged_cache_file_is_replaced_with_the_librarys_dates(cache_dir: Path) -> None:
    """Whatever is in a damaged file, the answer is the library's and the file is rewritten."""
    path = cache_path()
    path.parent.mkdir(parents=True)
    path.write_text('{"2024": {"2024-13-45": "Not a day"}, "2023": [')
    assert england_and_wales(2024) == library_calendar(2024)
    assert england_and_wales(2024) == library_calendar(2024)
    stored = json.loads(path.read_text())
    assert stored["2024"]["2024-12-25"] == "Christmas Day"


def test_each_holidays_release_has_its_own_cache_file(cache_dir: Path) -> None:
    """A new `holidays` release never reads dates cached from an older one."""
    from importlib.metadata import version

    assert cache_path().name.endswith(f"-holidays-{version('holidays')}.json")
    stale = cache_path().with_name("bank-holidays-GB-ENG-holidays-0.0.json")
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps({"2026": {"2026-06-01": "Invented Day"}}))
    assert england_and_wales(2026) == library_calendar(2026)


def test_an_unusable_cache_directory_still_gives_the_librarys_dates(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache that cannot be written (here: its directory is a file) is simply not used."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv(CACHE_DIR_ENV, str(blocker / "sub"))
    assert bank_holidays.england_and_wales(2024) == library_calendar(2024)
    assert bank_holidays.england_and_wales(2024) == library_calendar(2024)  # asked again
    assert list(tmp_path.iterdir()) == [blocker] and blocker.read_text() == ""
