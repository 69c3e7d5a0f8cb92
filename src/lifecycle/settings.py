"""Where lifecycle keeps its data: one setting picks the store (DESIGN.md §7)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lifecycle.errors import ConfigurationError

HOME_ENV = "LIFECYCLE_HOME"
DATABASE_URL_ENV = "LIFECYCLE_DATABASE_URL"
MASTER_KEY_ENV = "LIFECYCLE_MASTER_KEY"
MASTER_KEY_FILE_ENV = "LIFECYCLE_MASTER_KEY_FILE"
DEFAULT_HOME = "./lifecycle-data"


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str | None
    master_key: str | None
    master_key_file: Path

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
    def vault_url(self) -> str:
        return self.sqlalchemy_url or f"sqlite:///{self.home / 'keys.sqlite'}"

    @property
    def views_url(self) -> str:
        return self.sqlalchemy_url or f"sqlite:///{self.home / 'views.sqlite'}"

    def ensure_home(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if environ is None else environ)
    home = Path(env.get(HOME_ENV) or DEFAULT_HOME).expanduser().resolve()
    url = env.get(DATABASE_URL_ENV) or None
    if url is not None and not url.startswith(("postgresql://", "postgres://")):
        raise ConfigurationError(f"{DATABASE_URL_ENV} must be a postgresql:// URL")
    key_file = Path(env.get(MASTER_KEY_FILE_ENV) or home / "master.key")
    return Settings(home, url, env.get(MASTER_KEY_ENV) or None, key_file)
