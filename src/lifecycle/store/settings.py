"""Where lifecycle keeps its data: one setting picks the store; the home is checked before use."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from lifecycle.domain.errors import ConfigurationError

HOME_ENV = "LIFECYCLE_HOME"
DATABASE_URL_ENV = "LIFECYCLE_DATABASE_URL"
MASTER_KEY_ENV = "LIFECYCLE_MASTER_KEY"
MASTER_KEY_FILE_ENV = "LIFECYCLE_MASTER_KEY_FILE"
# "1": a key file readable by group or others is used (with a warning), not refused.
ALLOW_OPEN_KEY_ENV = "LIFECYCLE_ALLOW_OPEN_KEY"
MASTER_KEY_COMMAND_ENV = "LIFECYCLE_MASTER_KEY_COMMAND"
SIGNING_KEY_ENV = "LIFECYCLE_SIGNING_KEY"
SIGNING_KEY_FILE_ENV = "LIFECYCLE_SIGNING_KEY_FILE"
DEFAULT_HOME = "./lifecycle-data"
# The SQLite files of a home's store, with the journal and WAL files that come and go.
STORE_FILES = tuple(f"{name}{suffix}" for name in ("events.sqlite", "keys.sqlite", "views.sqlite")
                    for suffix in ("", "-journal", "-wal", "-shm"))


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str | None
    master_key: str | None
    master_key_file: Path
    allow_open_key: bool = False
    # A command that prints the master key (base64), run when no key is in the environment.
    master_key_command: str | None = None
    # The audit chain's checkpoint signing key (`lifecycle.store.signing_key`).
    signing_key: str | None = None
    signing_key_file: Path | None = None  # default: signing.key in the home

    @property
    def signing_key_path(self) -> Path:
        return self.signing_key_file or self.home / "signing.key"

    @property
    def events_path(self) -> Path:
        return self.home / "events.sqlite"

    @property
    def sqlalchemy_url(self) -> str | None:
        """The PostgreSQL URL in SQLAlchemy's spelling (psycopg 3 driver)."""
        if self.database_url is None:
            return None
        return "postgresql+psycopg://" + self.database_url.split("://", 1)[1]

    @property
    def vault_path(self) -> Path | None:
        """The SQLite key vault file (None on PostgreSQL)."""
        return None if self.database_url else self.home / "keys.sqlite"

    @property
    def vault_place(self) -> str:
        """The key vault, as error messages name it (never with a password)."""
        if self.database_url is None:
            return f"key vault {self.home / 'keys.sqlite'}"
        name = urlparse(self.database_url).path.lstrip("/") or "postgres"
        return f"key vault in PostgreSQL database {name}"

    @property
    def vault_url(self) -> str:
        return self.sqlalchemy_url or f"sqlite:///{self.home / 'keys.sqlite'}"

    @property
    def views_url(self) -> str:
        return self.sqlalchemy_url or f"sqlite:///{self.home / 'views.sqlite'}"

    def check_home(self) -> None:
        """Raises ConfigurationError (one line: the home and what is wrong) unless the home
        and the store files in it can be written, or the home can be created. Writes
        nothing. Root passes the permission checks, as it would the writes."""
        home = self.home
        if home.exists():
            if not home.is_dir():
                raise self.home_error("is not a directory")
            if not os.access(home, os.W_OK | os.X_OK):
                raise self.home_error("is not writable")
            for name in STORE_FILES:
                path = home / name
                try:
                    is_file = stat.S_ISREG(path.stat().st_mode)
                except FileNotFoundError:
                    if path.is_symlink():
                        raise self.home_error(f"{name} is not a regular file") from None
                    continue  # absent, or a journal another process has just removed
                except OSError:
                    is_file = False
                if not is_file:
                    raise self.home_error(f"{name} is not a regular file")
                if not os.access(path, os.R_OK | os.W_OK) and path.exists():
                    raise self.home_error(f"{name} is not writable")
            return
        parent = home.parent
        while not parent.exists() and not parent.is_symlink() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise self.home_error(f"cannot be created: {parent} is not a directory")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise self.home_error(f"cannot be created: {parent} is not writable")

    def ensure_home(self) -> None:
        """Creates the home (mode 0700, for its owner only) unless it exists."""
        try:
            self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        except FileExistsError:
            raise self.home_error("is not a directory") from None
        except OSError as error:
            raise self.home_error(f"cannot be created: {error.strerror}") from None

    def home_error(self, what: str) -> ConfigurationError:
        return ConfigurationError(f"{HOME_ENV} {self.home}: {what}")

    def open_error(self, error: Exception) -> ConfigurationError:
        """The store could not be opened (a file or server refused): one line naming the
        home or the database and the reason the system gave (no values, no password)."""
        if isinstance(error, OSError) and error.strerror:
            reason = f"{error.filename}: {error.strerror}" if error.filename else error.strerror
        else:
            reason = str(getattr(error, "orig", None) or error) or type(error).__name__
        reason = (reason.strip().splitlines() or [type(error).__name__])[0][:200]
        if "database is locked" in reason:
            reason += (" (another lifecycle run, such as a backup, held it for more than 30 s;"
                       " run this again once it has finished)")
        if self.database_url is None:
            return self.home_error(f"cannot open the store: {reason}")
        name = urlparse(self.database_url).path.lstrip("/") or "postgres"
        return ConfigurationError(
            f"{DATABASE_URL_ENV}: cannot open PostgreSQL database {name}: {reason}")


def create_private_file(path: Path) -> None:
    """Creates `path` empty with mode 0600 unless it exists: a store file, before SQLite
    opens it (SQLite gives its -journal, -wal and -shm files the database file's mode).
    A file that cannot be created is left for SQLite to report."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:
        pass


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if environ is None else environ)
    home = Path(env.get(HOME_ENV) or DEFAULT_HOME).expanduser().resolve()
    url = env.get(DATABASE_URL_ENV) or None
    if url is not None and not url.startswith(("postgresql://", "postgres://")):
        raise ConfigurationError(f"{DATABASE_URL_ENV} must be a postgresql:// URL")
    key_file = Path(env.get(MASTER_KEY_FILE_ENV) or home / "master.key")
    signing_file = env.get(SIGNING_KEY_FILE_ENV)
    return Settings(home, url, env.get(MASTER_KEY_ENV) or None, key_file,
                    allow_open_key=env.get(ALLOW_OPEN_KEY_ENV) == "1",
                    master_key_command=env.get(MASTER_KEY_COMMAND_ENV) or None,
                    signing_key=env.get(SIGNING_KEY_ENV) or None,
                    signing_key_file=Path(signing_file).expanduser() if signing_file else None)
