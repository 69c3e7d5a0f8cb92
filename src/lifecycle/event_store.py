"""The eventsourcing Application that stores subject aggregates (SQLite or PostgreSQL)."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlparse
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application

from lifecycle.aggregates.data_subject import DataSubject
from lifecycle.aggregates.policy_register import REGISTER_ID, PolicyRegister
from lifecycle.settings import Settings


class SubjectStore(Application[UUID]):
    """Holds every DataSubject aggregate; personal values inside are already sealed."""

    name = "lifecycle"

    def get_subject(self, reference: str) -> DataSubject | None:
        try:
            subject: object = self.repository.get(DataSubject.create_id(reference))
        except AggregateNotFoundError:
            return None
        assert isinstance(subject, DataSubject)
        return subject

    def get_subject_by_id(self, subject_id: UUID,
                          version: int | None = None) -> DataSubject | None:
        try:
            subject: object = self.repository.get(subject_id, version=version)
        except AggregateNotFoundError:
            return None
        assert isinstance(subject, DataSubject)
        return subject

    def get_register(self) -> PolicyRegister | None:
        try:
            register: object = self.repository.get(REGISTER_ID)
        except AggregateNotFoundError:
            return None
        assert isinstance(register, PolicyRegister)
        return register


def persistence_env(settings: Settings) -> dict[str, str]:
    """The eventsourcing settings for the configured store."""
    if settings.database_url is None:
        settings.ensure_home()
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(settings.events_path),
            "SQLITE_LOCK_TIMEOUT": "30",
        }
    url = urlparse(settings.database_url)
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": (url.path or "/postgres").lstrip("/"),
        "POSTGRES_HOST": url.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": unquote(url.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(url.password or ""),
    }
    return env


def open_subject_store(settings: Settings, extra: dict[str, Any] | None = None) -> SubjectStore:
    env = persistence_env(settings)
    env.update(extra or {})
    return SubjectStore(env=env)
