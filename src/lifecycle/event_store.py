"""The eventsourcing Application that stores subject aggregates (SQLite or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import Notification, StoredEvent
from eventsourcing.postgres import PostgresAggregateRecorder
from eventsourcing.sqlite import SQLiteAggregateRecorder
from eventsourcing.utils import get_topic
from psycopg.sql import SQL, Identifier

from lifecycle.aggregates.data_subject import DataSubject
from lifecycle.aggregates.policy_register import REGISTER_ID, Adoption, PolicyRegister
from lifecycle.aggregates.request_case import RequestCase
from lifecycle.postgres_recorder import LockLightPostgresRecorder
from lifecycle.settings import Settings, create_private_file

T = TypeVar("T")
# Attempts at saving a batch that lost an optimistic-concurrency race to another writer.
SAVE_RETRIES = 5


BUCKETS = 16  # an aggregate's bucket: the last hex digit of its id


@dataclass(frozen=True)
class Partition:
    """Some of the buckets aggregates fall into, for work split among processes (each
    takes a partition, disjoint from the others'). Both databases can tell an event's
    bucket from its stored aggregate id, without decoding anything."""
    buckets: frozenset[int]

    def __post_init__(self) -> None:
        if not self.buckets or not self.buckets <= set(range(BUCKETS)):
            raise ValueError(f"buckets must be some of 0..{BUCKETS - 1}: {sorted(self.buckets)}")

    def holds(self, aggregate_id: UUID) -> bool:
        return aggregate_id.int % BUCKETS in self.buckets


class SubjectStore(Application[UUID]):
    """Holds every DataSubject aggregate; personal values inside are already sealed."""

    name = "lifecycle"

    def _get(self, aggregate_id: UUID, kind: type[T], version: int | None = None) -> T | None:
        """The aggregate (at `version`, default its latest), or None if it has no events."""
        try:
            found: object = self.repository.get(aggregate_id, version=version)
        except AggregateNotFoundError:
            return None
        assert isinstance(found, kind)
        return found

    def get_subject(self, reference: str) -> DataSubject | None:
        return self._get(DataSubject.create_id(reference), DataSubject)

    def get_subject_by_id(self, subject_id: UUID,
                          version: int | None = None) -> DataSubject | None:
        return self._get(subject_id, DataSubject, version)

    def get_subjects(self, subject_ids: Collection[UUID],
                     chunk: int = 500) -> Iterator[DataSubject]:
        """The latest state of each of these subjects that has events (absent ones are
        skipped), as `get_subject_by_id` gives it, but one query per `chunk` subjects
        instead of one each; yields them chunk by chunk, so memory follows the chunk."""
        for found in self.get_aggregates(subject_ids, chunk):
            assert isinstance(found, DataSubject)
            yield found

    def get_aggregates(self, aggregate_ids: Collection[UUID],
                       chunk: int = 500) -> Iterator[Any]:
        """`get_subjects` for aggregates of any kind."""
        wanted = list(dict.fromkeys(aggregate_ids))
        for start in range(0, len(wanted), chunk):
            yield from self._reconstruct(self._stored_events(wanted[start:start + chunk]))

    def _stored_events(self, ids: list[UUID]) -> list[StoredEvent]:
        """Every stored event of these aggregates, by aggregate and version."""
        recorder = self.recorder
        if isinstance(recorder, SQLiteAggregateRecorder):
            marks = ",".join("?" * len(ids))
            by_hex = {i.hex: i for i in ids}  # stored as hex text
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(
                    f"SELECT originator_id, originator_version, topic, state "
                    f"FROM {recorder.events_table_name} WHERE originator_id IN ({marks}) "
                    f"ORDER BY originator_id, originator_version", list(by_hex))
                return [StoredEvent(originator_id=by_hex[row[0]], originator_version=row[1],
                                    topic=row[2], state=row[3]) for row in cursor.fetchall()]
        if isinstance(recorder, PostgresAggregateRecorder):
            statement = SQL("SELECT originator_id, originator_version, topic, state "
                            "FROM {}.{} WHERE originator_id = ANY(%s) "
                            "ORDER BY originator_id, originator_version").format(
                Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(statement, [ids], binary=True)  # bytea unescaped: a third less
                return [StoredEvent(originator_id=row["originator_id"],
                                    originator_version=row["originator_version"],
                                    topic=row["topic"], state=bytes(row["state"]))
                        for row in cursor.fetchall()]
        return [stored for i in ids for stored in recorder.select_events(i)]

    def _reconstruct(self, stored: list[StoredEvent]) -> Iterator[Any]:
        """Folds events (grouped by aggregate, in version order) into aggregates, as the
        repository does, without its per-event runtime protocol check (a third of the
        cost of a replay)."""
        to_domain_event = self.mapper.to_domain_event
        aggregate: Any = None
        current: object = None
        for record in stored:
            if record.originator_id != current:
                if aggregate is not None:
                    yield aggregate
                aggregate, current = None, record.originator_id
            domain_event: Any = to_domain_event(record)
            aggregate = domain_event.mutate(aggregate)
        if aggregate is not None:
            yield aggregate

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

    def partition_notifications(self, partition: Partition, after: int,
                                upto: int) -> list[Notification]:
        """The notifications after `after` and up to `upto`, in order, of the aggregates
        in `partition` and of the policy register (every partition needs the policy). The
        database filters the rows, so a process reads only its own. A range of ids, not a
        LIMIT: PostgreSQL cannot estimate the filter and would sort the rest of the log
        for every page."""
        recorder = self.recorder
        buckets = sorted(partition.buckets)
        if isinstance(recorder, SQLiteAggregateRecorder):  # ids stored as hex text
            marks = ",".join("?" * len(buckets))
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(
                    f"SELECT rowid, * FROM {recorder.events_table_name} "
                    f"WHERE rowid > ? AND rowid <= ? AND (substr(originator_id, -1) "
                    f"IN ({marks}) OR originator_id = ?) ORDER BY rowid",
                    [after, upto, *(f"{b:x}" for b in buckets), REGISTER_ID.hex])
                return [Notification(id=row["rowid"], originator_id=UUID(row["originator_id"]),
                                     originator_version=row["originator_version"],
                                     topic=row["topic"], state=row["state"])
                        for row in cursor.fetchall()]
        if isinstance(recorder, PostgresAggregateRecorder):
            statement = SQL(
                "SELECT * FROM {}.{} WHERE notification_id > %s AND notification_id <= %s "
                "AND (mod(get_byte(uuid_send(originator_id), 15), 16) = ANY(%s) "
                "OR originator_id = %s) ORDER BY notification_id").format(
                Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(statement, [after, upto, buckets, REGISTER_ID], prepare=True)
                return [Notification(id=row["notification_id"],
                                     originator_id=row["originator_id"],
                                     originator_version=row["originator_version"],
                                     topic=row["topic"], state=bytes(row["state"]))
                        for row in cursor.fetchall()]
        every = recorder.select_notifications(after, upto - after, upto, inclusive_of_start=False)
        return [n for n in every if n.originator_id == REGISTER_ID
                or partition.holds(UUID(str(n.originator_id)))]

    def get_request_case(self, case_id: UUID) -> RequestCase | None:
        return self._get(case_id, RequestCase)

    def get_register(self) -> PolicyRegister | None:
        return self._get(REGISTER_ID, PolicyRegister)

    def latest_adoption(self) -> Adoption | None:
        """The policy adopted last, if any."""
        register = self.get_register()
        return register.latest() if register else None


def persistence_env(settings: Settings) -> dict[str, str]:
    """The eventsourcing settings for the configured store."""
    if settings.database_url is None:
        settings.ensure_home()
        create_private_file(settings.events_path)
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
