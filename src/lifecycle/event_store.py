"""The eventsourcing Application that stores subject aggregates (SQLite or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any
from urllib.parse import unquote, urlparse
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.postgres import PostgresAggregateRecorder
from eventsourcing.sqlite import SQLiteAggregateRecorder
from eventsourcing.utils import get_topic
from psycopg.sql import SQL, Identifier

from lifecycle.aggregates.data_subject import DataSubject
from lifecycle.aggregates.policy_register import REGISTER_ID, PolicyRegister
from lifecycle.aggregates.request_case import RequestCase
from lifecycle.postgres_recorder import LockLightPostgresRecorder
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

    def existing(self, subject_ids: Collection[UUID]) -> set[UUID]:
        """Which of these aggregates have events: one query per 500 ids, not one each
        (ingest meets thousands of new subjects). Uses the recorder's own table."""
        wanted = list(subject_ids)
        found: set[UUID] = set()
        recorder = self.recorder
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            if isinstance(recorder, SQLiteAggregateRecorder):
                marks = ",".join("?" * len(chunk))
                with recorder.datastore.transaction(commit=False) as cursor:
                    cursor.execute(
                        f"SELECT originator_id FROM {recorder.events_table_name} "
                        f"WHERE originator_version = 1 AND originator_id IN ({marks})",
                        [i.hex for i in chunk])
                    found.update(UUID(row[0]) for row in cursor.fetchall())
            elif isinstance(recorder, PostgresAggregateRecorder):
                statement = SQL("SELECT originator_id FROM {}.{} WHERE originator_version = 1 "
                                "AND originator_id = ANY(%s)").format(
                    Identifier(recorder.datastore.schema),
                    Identifier(recorder.events_table_name))
                with recorder.datastore.transaction(commit=False) as cursor:
                    cursor.execute(statement, [chunk])
                    found.update(UUID(str(row["originator_id"])) for row in cursor.fetchall())
            else:
                found.update(i for i in chunk if recorder.select_events(i, limit=1))
        return found

    def get_request_case(self, case_id: UUID) -> RequestCase | None:
        try:
            case: object = self.repository.get(case_id)
        except AggregateNotFoundError:
            return None
        assert isinstance(case, RequestCase)
        return case

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
        # Batches are encoded before the events table is locked, not under the lock.
        "APPLICATION_RECORDER_TOPIC": get_topic(LockLightPostgresRecorder),
        # A CLI process uses one connection at a time (library default: 5 + 10 overflow).
        "POSTGRES_POOL_SIZE": "2",
        "POSTGRES_MAX_OVERFLOW": "4",
    }
    return env


def open_subject_store(settings: Settings, extra: dict[str, Any] | None = None) -> SubjectStore:
    env = persistence_env(settings)
    env.update(extra or {})
    return SubjectStore(env=env)
