"""When the daemon rotates the master key: the `[keys]` table of the configuration file.

    [keys]
    rotate_every = "P1M"          # ISO 8601 duration: P1Y, P1M, P2W, P7D, PT12H
    rotate_after_erasures = 1000  # keys destroyed since the last rotation

The file is $LIFECYCLE_CONFIG, else $LIFECYCLE_HOME/lifecycle.toml; without it (or
without `[keys]`) the daemon never rotates. Either bound triggers a rotation; so does a
rotation a killed run left under way.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from dateutil.relativedelta import relativedelta

from lifecycle.domain.errors import ConfigurationError

CONFIG_ENV = "LIFECYCLE_CONFIG"
CONFIG_FILE = "lifecycle.toml"
_DURATION = re.compile(r"P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?"
                       r"(?:T(?:(\d+)H)?(?:(\d+)M)?)?")


@dataclass(frozen=True)
class KeyPolicy:
    rotate_every: relativedelta | None = None
    rotate_every_text: str | None = None
    rotate_after_erasures: int | None = None

    def due(self, epoch_since: datetime | None, unsealed: int, under_way: bool,
            now: datetime) -> str | None:
        """Why a rotation is due now (None: it is not)."""
        if under_way:
            return "a rotation is under way"
        if (self.rotate_after_erasures is not None and unsealed
                and unsealed >= self.rotate_after_erasures):
            return f"{unsealed} keys destroyed since the last rotation"
        if (self.rotate_every is not None and epoch_since is not None
                and epoch_since + self.rotate_every <= now):
            return f"the epoch began more than {self.rotate_every_text} ago"
        return None


def parse_duration(text: str, where: str) -> relativedelta:
    match = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None or not any(match.groups()) or text.strip().endswith("T"):
        raise ConfigurationError(f"{where}: {text!r} is not an ISO 8601 duration such as "
                                 "\"P1M\" or \"P7D\"")
    y, mo, w, d, h, mi = (int(g) if g else 0 for g in match.groups())
    delta = relativedelta(years=y, months=mo, weeks=w, days=d, hours=h, minutes=mi)
    if not any((y, mo, w, d, h, mi)):
        raise ConfigurationError(f"{where}: {text!r} must be longer than zero")
    return delta


def config_path(home: Path, environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    given = env.get(CONFIG_ENV)
    return Path(given).expanduser() if given else home / CONFIG_FILE


def load_key_policy(home: Path, environ: dict[str, str] | None = None) -> KeyPolicy:
    """The `[keys]` table of the configuration file (an empty policy without one);
    a bad value is one ConfigurationError naming the file, the field and the value."""
    path = config_path(home, environ)
    if not path.exists():
        if (environ if environ is not None else os.environ).get(CONFIG_ENV):
            raise ConfigurationError(f"{CONFIG_ENV} {path}: no such file")
        return KeyPolicy()
    try:
        document: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"{path}: cannot be read ({type(error).__name__})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(f"{path}: not valid TOML ({error})") from None
    keys = document.get("keys", {})
    if not isinstance(keys, dict):
        raise ConfigurationError(f"{path}: [keys] must be a table")
    unknown = sorted(set(keys) - {"rotate_every", "rotate_after_erasures"})
    if unknown:
        raise ConfigurationError(f"{path}: [keys] {unknown[0]}: unknown setting")
    every_text = keys.get("rotate_every")
    every = None
    if every_text is not None:
        every = parse_duration(every_text, f"{path}: [keys] rotate_every")
    after = keys.get("rotate_after_erasures")
    if after is not None and (isinstance(after, bool) or not isinstance(after, int)
                              or after < 1):
        raise ConfigurationError(f"{path}: [keys] rotate_after_erasures: {after!r} must be "
                                 "a whole number of at least 1")
    return KeyPolicy(every, every_text, after)
