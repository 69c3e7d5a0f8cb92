"""England and Wales bank holidays from the `holidays` library, kept in a disk cache.

Importing any one country of `holidays` imports every country it knows: about 0.25 s of
CPU, paid by each short-lived `lifecycle` process (an ingest, a `requests list`) that
computes a statutory deadline. The years computed are kept in one JSON file per
library release, under $LIFECYCLE_CACHE_DIR, else $XDG_CACHE_HOME/lifecycle, else
~/.cache/lifecycle. The dates are always the library's: a missing, unreadable or
damaged file only means asking the library again, and a new release gets a new file.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import date
from importlib.metadata import version
from pathlib import Path
from typing import Final

COUNTRY: Final = "GB"
SUBDIVISION: Final = "ENG"  # England and Wales share one bank-holiday calendar
CACHE_DIR_ENV: Final = "LIFECYCLE_CACHE_DIR"


def cache_path() -> Path:
    base = os.environ.get(CACHE_DIR_ENV)
    if base:
        folder = Path(base)
    else:
        folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lifecycle"
    return folder / f"bank-holidays-{COUNTRY}-{SUBDIVISION}-holidays-{version('holidays')}.json"


def england_and_wales(year: int) -> dict[date, str]:
    """The bank holidays of one year, by date, with the library's names."""
    path = cache_path()
    stored = _read(path)
    cached = stored.get(str(year))
    if isinstance(cached, dict):
        try:
            return {date.fromisoformat(day): str(name) for day, name in cached.items()}
        except ValueError:
            pass  # damaged: ask the library again
    computed = _from_library(year)
    stored[str(year)] = {day.isoformat(): name for day, name in computed.items()}
    _write(path, stored)
    return computed


def _from_library(year: int) -> dict[date, str]:
    import holidays  # imported here: the import is the cost the cache saves

    calendar = holidays.country_holidays(COUNTRY, subdiv=SUBDIVISION, years=year)
    return {day: str(name) for day, name in calendar.items()}


def _read(path: Path) -> dict[str, object]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _write(path: Path, stored: dict[str, object]) -> None:
    """Atomically (another process may be reading); a cache that cannot be written is
    simply not used."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent,
                                         prefix=path.name, suffix=".tmp",
                                         delete=False) as handle:
            json.dump(stored, handle, sort_keys=True)
    except OSError:
        return
    try:
        os.replace(handle.name, path)
    except OSError:
        Path(handle.name).unlink(missing_ok=True)
