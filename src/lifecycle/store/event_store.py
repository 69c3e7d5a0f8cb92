"""The eventsourcing Application that stores subject aggregates (SQLite or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import unquote, urlparse
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    JSONTranscoder,
    Mapper,
    Notification,
    Recording,
    StoredEvent,
    Transcoder,
    find_id_convertor,
)
from eventsourcing.postgres import PostgresAggregateRecorder
from eventsourcing.sqlite import SQLiteAggregateRecorder
from eventsourcing.utils import get_topic, resolve_topic
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from lifecycle.aggregates.data_subject import DataSubject
from lifecycle.aggregates.policy_register import REGISTER_ID, Adoption, PolicyRegister
from lifecycle.aggregates.request_case import RequestCase
from lifecycle.store.signing_key import (
    Signer,
    create_signing_key,
    given_signing_key,
    missing_key_error,
)
from lifecycle.domain.errors import ConfigurationError
from lifecycle.store.event_chain import UPGRADE_PAGE, BrokenEvent, ChainBroken
from lifecycle.store import fast_replay
from lifecycle.store.fast_json import FastJSONTranscoder
from lifecycle.support.logs import get_logger
from lifecycle.store.postgres_recorder import LockLightPostgresRecorder
from lifecycle.store.settings import Settings, create_private_file
from lifecycle.store.sqlite_recorder import ChainedSQLiteRecorder

ChainedRecorder = ChainedSQLiteRecorder | LockLightPostgresRecorder
log = get_logger("lifecycle.event_store")

T = TypeVar("T")
# Attempts at saving a batch that lost an optimistic-concurrency race to another writer.
SAVE_RETRIES = 5


CHECKED_READS = "LIFECYCLE_CHECKED_READS"  # the store's env flag (see check_reads)
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


class _NamingMapper(Mapper[UUID]):
    """The application's mapper, raising `BrokenEvent` (which names the event) instead of
    whatever a damaged event makes the decoder raise."""

    locate: Callable[[UUID | str, int], int | None] | None = None

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        try:
            return super().to_domain_event(stored_event)
        except Exception as error:  # noqa: BLE001 - any decoder failure means a damaged event
            position = getattr(stored_event, "id", None)
            if position is None and self.locate is not None:
                try:
                    position = self.locate(stored_event.originator_id,
                                           stored_event.originator_version)
                except Exception:  # noqa: BLE001 - the name without a position then
                    position = None
            raise BrokenEvent(position, stored_event.originator_id,
                              stored_event.originator_version,
                              f"does not decode ({type(error).__name__})") from None


    def decode_row(self, originator_id: UUID, version: int, topic: str,
                   state: bytes) -> Any:
        """`to_domain_event` of one stored event given as its columns: for a mapper that
        decodes as the library's `Mapper` does (no cipher, no compressor, no decoding of
        its own), the same steps without building a StoredEvent first, with the event
        class, its id conversion and its class version looked up once per topic. An
        event to upcast, or one that fails to decode, goes the ordinary way (which names
        a damaged event)."""
        if self._plain_reading():
            try:
                key = (topic, type(originator_id))
                found = _read_plans.get(key)
                if found is None:
                    cls = resolve_topic(topic)
                    found = _read_plans[key] = (
                        cls, find_id_convertor(cls, cast("Hashable", key[1])),
                        getattr(cls, "class_version", 1))
                cls, convert_id, class_version = found
                event_state: dict[str, Any] = self.transcoder.decode(state)
                event_state["originator_id"] = convert_id(originator_id)
                event_state["originator_version"] = version
                if event_state.pop("class_version", 1) >= class_version:
                    domain_event: Any = object.__new__(cls)
                    object.__setattr__(domain_event, "__dict__", event_state)
                    return domain_event
            except Exception:  # noqa: BLE001 - decoded again below, as the library does
                pass
        return self.to_domain_event(StoredEvent(originator_id=originator_id,
                                                originator_version=version, topic=topic,
                                                state=state))

    def _plain_reading(self) -> bool:
        if self.cipher is not None or self.compressor is not None:
            return False
        kind = type(self)
        plain = _plain_classes.get(kind)
        if plain is None:
            mro = kind.__mro__
            between = mro[mro.index(_NamingMapper) + 1:mro.index(Mapper)]
            plain = _plain_classes[kind] = not any("to_domain_event" in vars(base)
                                                   for base in between)
        return plain


# Per topic and id type: the event class, its id conversion and its class version.
_read_plans: dict[tuple[str, type], tuple[type, Callable[[Any], Any], int]] = {}
# Per mapper class: whether it decodes as the library's Mapper does.
_plain_classes: dict[type, bool] = {}
_naming_classes: dict[type[Any], type[Any]] = {}
# What applying an event raises when it was stored without what its method takes.
APPLY_ERRORS = (TypeError, KeyError)


def _naming(mapper: Mapper[UUID]) -> Mapper[UUID]:
    """The same mapper (whatever its class), naming the events it cannot decode."""
    kind = type(mapper)
    if not issubclass(kind, _NamingMapper):
        if kind not in _naming_classes:
            _naming_classes[kind] = type(f"Naming{kind.__name__}", (_NamingMapper, kind), {})
        mapper.__class__ = _naming_classes[kind]
    return mapper



@contextmanager
def reading(recorder: PostgresAggregateRecorder) -> Iterator[Cursor[DictRow]]:
    """A cursor for one read statement, outside a transaction (see
    `LockLightPostgresRecorder.reading`)."""
    with recorder.datastore.get_connection() as conn, conn.cursor() as cursor:
        yield cursor

class SubjectStore(Application[UUID]):
    """Holds every DataSubject aggregate; personal values inside are already sealed."""

    name = "lifecycle"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(self.mapper, _NamingMapper):
            self.mapper.locate = self.position_of
        recorder = self.recorder
        if isinstance(recorder, ChainedSQLiteRecorder | LockLightPostgresRecorder):
            recorder.name_of = self.reference_of
            recorder.checked_reads = self.env.get(CHECKED_READS) == "y"

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        """The library's `save`, collecting the pending events of plain aggregates without
        its runtime-protocol `isinstance` checks (typing's Protocol checks walk the
        protocol's attributes on every call: a few percent of an ingest). Anything else
        (a bare event, None, keyword arguments) goes to the library's own."""
        if kwargs or not all(isinstance(obj, Aggregate) for obj in objs):
            return super().save(*objs, **kwargs)
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        for aggregate in objs:
            processing_event.events.extend(aggregate.collect_events())
            processing_event.aggregates[aggregate.id] = aggregate
        # What the library's `save` does with its processing event.
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        self.notify(processing_event.events)  # (deprecated hook; the library calls it)
        return recordings

    def _record(self, processing_event: ProcessingEvent[UUID]) -> list[Recording[UUID]]:
        """The library's `_record` (encode, insert, cache), without the recordings (an
        object pair per event, about 2% of an ingest) when nothing reads them: their one
        reader is `_notify`, which does nothing unless overridden (by a subclass, or on
        the instance)."""
        if getattr(self._notify, "__func__", None) is not Application._notify:
            return super()._record(processing_event)
        stored = list(map(self.mapper.to_stored_event, processing_event.events))
        self.recorder.insert_events(stored, tracking=processing_event.tracking,
                                    **processing_event.saved_kwargs)
        if self.repository.cache and not self.repository.fastforward:
            for aggregate_id, aggregate in processing_event.aggregates.items():
                self.repository.cache.put(aggregate_id, aggregate)
        return []

    def check_reads(self) -> None:
        """From now on every page of the log this store (and any process opened with its
        env, such as a shared rebuild's) reads is checked against the audit chain: the first
        stored event that does not match raises BrokenEvent, before it is used."""
        self.env[CHECKED_READS] = "y"
        chained_recorder(self).checked_reads = True

    def reference_of(self, originator_id: object) -> str | None:
        """The `reference` an aggregate's first event records, if it still decodes."""
        try:
            stored = self.recorder.select_events(UUID(str(originator_id)), lte=1)
            event = self.mapper.to_domain_event(stored[0]) if stored else None
        except Exception:  # noqa: BLE001 - a damaged first event: no name, no harm
            return None
        reference = getattr(event, "reference", None)
        return reference if isinstance(reference, str) else None

    def construct_mapper(self) -> Mapper[UUID]:
        return _naming(super().construct_mapper())

    def construct_transcoder(self) -> Transcoder:
        # The library's JSON format, written faster (lifecycle.store.fast_json).
        transcoder = self.factory.transcoder()
        if type(transcoder) is JSONTranscoder:
            transcoder = FastJSONTranscoder()
        if isinstance(transcoder, JSONTranscoder):
            self.register_transcodings(transcoder)
        return transcoder

    def position_of(self, originator_id: UUID | str, version: int) -> int | None:
        """The notification id (position in the log) of one stored event."""
        recorder = self.recorder
        if isinstance(recorder, SQLiteAggregateRecorder):
            hex_id = originator_id.hex if isinstance(originator_id, UUID) else str(
                originator_id).replace("-", "")
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(f"SELECT rowid FROM {recorder.events_table_name} "
                               "WHERE originator_id = ? AND originator_version = ?",
                               (hex_id, version))
                row = cursor.fetchone()
                return None if row is None else int(row[0])
        if isinstance(recorder, PostgresAggregateRecorder):
            statement = SQL("SELECT notification_id FROM {}.{} WHERE originator_id = %s "
                            "AND originator_version = %s").format(
                Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
            with reading(recorder) as cursor:
                cursor.execute(statement, (UUID(str(originator_id)), version))
                found = cursor.fetchone()
                return None if found is None else int(found["notification_id"])
        return None

    def _get(self, aggregate_id: UUID, kind: type[T], version: int | None = None) -> T | None:
        """The aggregate (at `version`, default its latest), or None if it has no events."""
        try:
            found: object = self.repository.get(aggregate_id, version=version,
                                                projector_func=self._project_naming)
        except AggregateNotFoundError:
            return None
        assert isinstance(found, kind)
        return found

    def _project_naming(self, aggregate: Any, events: Iterable[Any]) -> Any:
        """The library's projector, naming an event its method cannot take (`broken`)."""
        for domain_event in events:
            try:
                aggregate = domain_event.mutate(aggregate)
            except APPLY_ERRORS as error:
                raise self.broken(domain_event) from error
        return aggregate

    def broken(self, domain_event: Any) -> BrokenEvent:
        """The error naming (position, subject, version) an event its method could not
        take: stored without the attributes the method needs (TypeError) or naming what
        its subject lacks (KeyError). Only an event written behind the application's back
        gets there."""
        originator, version = domain_event.originator_id, domain_event.originator_version
        return BrokenEvent(self.position_of(originator, version), originator, version,
                           "does not follow from its subject's events before it",
                           name=self.reference_of(originator))

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

    def _stored_events(self, ids: list[UUID]) -> list[tuple[UUID, int, str, bytes]]:
        """Every stored event of these aggregates (id, version, topic, state), by
        aggregate and version."""
        recorder = self.recorder
        if isinstance(recorder, SQLiteAggregateRecorder):
            marks = ",".join("?" * len(ids))
            by_hex = {i.hex: i for i in ids}  # stored as hex text
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(
                    f"SELECT originator_id, originator_version, topic, state "
                    f"FROM {recorder.events_table_name} WHERE originator_id IN ({marks}) "
                    f"ORDER BY originator_id, originator_version", list(by_hex))
                return [(by_hex[row[0]], row[1], row[2], row[3]) for row in cursor.fetchall()]
        if isinstance(recorder, PostgresAggregateRecorder):
            statement = SQL("SELECT originator_id, originator_version, topic, state "
                            "FROM {}.{} WHERE originator_id = ANY(%s) "
                            "ORDER BY originator_id, originator_version").format(
                Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
            with reading(recorder) as cursor:
                cursor.execute(statement, [ids], binary=True)  # bytea unescaped: a third less
                return [(row["originator_id"], row["originator_version"], row["topic"],
                         bytes(row["state"])) for row in cursor.fetchall()]
        return [(UUID(str(stored.originator_id)), stored.originator_version, stored.topic,
                 stored.state) for i in ids for stored in recorder.select_events(i)]

    def _reconstruct(self, stored: list[tuple[UUID, int, str, bytes]]) -> Iterator[Any]:
        """Folds events (grouped by aggregate, in version order) into aggregates, as the
        repository does, without its per-event runtime protocol check (a third of the
        cost of a replay), with each event decoded from its columns (`decode_row`) and
        its method applied directly (`fast_replay`)."""
        mapper = self.mapper
        decode: Callable[[UUID, int, str, bytes], Any] = (
            mapper.decode_row if isinstance(mapper, _NamingMapper)
            else lambda i, v, t, s: mapper.to_domain_event(StoredEvent(
                originator_id=i, originator_version=v, topic=t, state=s)))
        aggregate: Any = None
        current: object = None
        for originator_id, version, topic, state in stored:
            if originator_id != current:
                if aggregate is not None:
                    yield aggregate
                aggregate, current = None, originator_id
            aggregate = fast_replay.mutate(decode(originator_id, version, topic, state),
                                           aggregate)
        if aggregate is not None:
            yield aggregate

    def stored_versions(self, aggregate_ids: Collection[UUID]) -> dict[UUID, int]:
        """The latest stored version of each of these aggregates that has events: one
        query per 500 ids, each a lookup in the events' key (no event is read)."""
        wanted = list(aggregate_ids)
        found: dict[UUID, int] = {}
        recorder = self.recorder
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            if isinstance(recorder, SQLiteAggregateRecorder):
                marks = ",".join("?" * len(chunk))
                by_hex = {i.hex: i for i in chunk}  # stored as hex text
                with recorder.datastore.transaction(commit=False) as cursor:
                    cursor.execute(
                        f"SELECT originator_id, MAX(originator_version) FROM "
                        f"{recorder.events_table_name} WHERE originator_id IN ({marks}) "
                        "GROUP BY originator_id", list(by_hex))
                    found.update((by_hex[row[0]], int(row[1])) for row in cursor.fetchall())
            elif isinstance(recorder, PostgresAggregateRecorder):
                # A subquery per id (a backward lookup in the key): with `= ANY ... GROUP
                # BY` the planner scans the whole table.
                statement = SQL("SELECT u.id, (SELECT MAX(e.originator_version) FROM {}.{} e "
                                "WHERE e.originator_id = u.id) AS version "
                                "FROM unnest(%s::uuid[]) AS u(id)").format(
                    Identifier(recorder.datastore.schema),
                    Identifier(recorder.events_table_name))
                with reading(recorder) as cursor:
                    cursor.execute(statement, [chunk])
                    found.update((UUID(str(row["id"])), int(row["version"]))
                                 for row in cursor.fetchall() if row["version"] is not None)
            else:
                for aggregate_id in chunk:
                    last = recorder.select_events(aggregate_id, desc=True, limit=1)
                    if last:
                        found[aggregate_id] = last[0].originator_version
        return found

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
                with reading(recorder) as cursor:
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
                found = [Notification(id=row["rowid"], originator_id=UUID(row["originator_id"]),
                                      originator_version=row["originator_version"],
                                      topic=row["topic"], state=row["state"])
                         for row in cursor.fetchall()]
            self._check_partition(found, after, upto)
            return found
        if isinstance(recorder, PostgresAggregateRecorder):
            statement = SQL(
                "SELECT * FROM {}.{} WHERE notification_id > %s AND notification_id <= %s "
                "AND (mod(get_byte(uuid_send(originator_id), 15), 16) = ANY(%s) "
                "OR originator_id = %s) ORDER BY notification_id").format(
                Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
            with reading(recorder) as cursor:
                cursor.execute(statement, [after, upto, buckets, REGISTER_ID], prepare=True)
                found = [Notification(id=row["notification_id"],
                                      originator_id=row["originator_id"],
                                      originator_version=row["originator_version"],
                                      topic=row["topic"], state=bytes(row["state"]))
                         for row in cursor.fetchall()]
            self._check_partition(found, after, upto)
            return found
        every = recorder.select_notifications(after, upto - after, upto, inclusive_of_start=False)
        return [n for n in every if n.originator_id == REGISTER_ID
                or partition.holds(UUID(str(n.originator_id)))]

    def _check_partition(self, found: list[Notification], after: int, upto: int) -> None:
        recorder = self.recorder
        if isinstance(recorder, ChainedSQLiteRecorder | LockLightPostgresRecorder) and \
                recorder.checked_reads and found:
            recorder.check(found, after, upto, whole_range=False)

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
            # Writes the audit chain with each batch of events.
            "APPLICATION_RECORDER_TOPIC": get_topic(ChainedSQLiteRecorder),
        }
    url = urlparse(settings.database_url)
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": (url.path or "/postgres").lstrip("/"),
        "POSTGRES_HOST": url.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": unquote(url.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(url.password or ""),
        # Batches are encoded before the events table is locked, not under the lock, and
        # the audit chain is written with each batch.
        "APPLICATION_RECORDER_TOPIC": get_topic(LockLightPostgresRecorder),
        # A CLI process uses one connection at a time (library default: 5 + 10 overflow).
        "POSTGRES_POOL_SIZE": "2",
        "POSTGRES_MAX_OVERFLOW": "4",
    }
    return env


def open_subject_store(settings: Settings, extra: dict[str, Any] | None = None) -> SubjectStore:
    """Opens the store with its signing key attached (see `attach_signing_key`)."""
    env = persistence_env(settings)
    env["MAPPER_TOPIC"] = "lifecycle.store.actor:ActorMapper"  # stamps who stored each event
    env.update(extra or {})
    store = SubjectStore(env=env)
    try:
        attach_signing_key(store, settings)
    except BaseException:
        store.close()
        raise
    return store


def chained_recorder(store: SubjectStore) -> ChainedRecorder:
    recorder = store.recorder
    assert isinstance(recorder, ChainedSQLiteRecorder | LockLightPostgresRecorder), recorder
    return recorder


def attach_signing_key(store: SubjectStore, settings: Settings) -> Signer:
    """Gives the store's recorder the key that signs its checkpoints.

    A store without a checkpoint may have its key created (mode 0600). A store whose
    chain has checkpoints needs the key they were signed with: none given is a
    configuration error (a new key would sign a second chain). When the key is created
    here and the store already holds events, they are written by a version that did not
    chain them: they are chained now, once (`chain_backlog`). A key that existed before
    never chains a backlog on its own: an emptied chain is reported by `audit verify`,
    not silently redone (`lifecycle audit chain` does it on request).
    """
    recorder = chained_recorder(store)
    signer = given_signing_key(settings)
    log_head, chain_head, checkpoints = recorder.chain_heads()
    created = False
    if signer is None:
        if checkpoints:
            raise missing_key_error(settings, recorder.newest_key_id() or "?")
        stamped = (first_event_of_a_chaining_version(store)
                   if log_head and not chain_head else None)
        if stamped is not None:
            raise ConfigurationError(
                f"the audit chain and its signing key are missing, but the event at position "
                f"{stamped} was stored by a version that chains every event: restore "
                f"{settings.signing_key_path.name} and the chain from a backup (a new key "
                "would vouch for a log nobody checked)")
        signer, created = create_signing_key(settings), True
    recorder.signer = signer
    if created and log_head and not chain_head and not checkpoints:
        recorder.begin_upgrade(signer, log_head)
    if log_head > chain_head:
        # An upgrade begun here, or begun by a process killed midway (or still at it):
        # chained on up to the head it began with, a page per transaction.
        target = recorder.upgrade_target(signer.verifier)
        if target is not None and target > chain_head:
            try:
                chained = chain_backlog(store)
            except ChainBroken as error:  # left as it is: `audit verify` reports it
                log.error("audit.upgrade_refused", reason=str(error))
            else:
                log.warning("audit.chained_on_upgrade", events=chained,
                            key=signer.fingerprint)
    return signer


ACTOR_STAMP = b'"actor":'  # in the state of every event stored by a version that chains


def first_event_of_a_chaining_version(store: SubjectStore,
                                      page: int = UPGRADE_PAGE) -> int | None:
    """The position of the first stored event that names its actor, or None. Actors and
    the chain came in one release: such an event was chained as it was stored, so a chain
    missing under it was removed, not never written."""
    recorder = chained_recorder(store)
    start: int | None = None
    while batch := recorder.select_notifications(start, page,
                                                 inclusive_of_start=start is None):
        for notification in batch:
            if ACTOR_STAMP in bytes(notification.state):
                return notification.id
        start = batch[-1].id
    return None


def chain_backlog(store: SubjectStore, page: int = UPGRADE_PAGE) -> int:
    """Chains the stored events after the chain's head up to the signed head its upgrade
    began with (`begin_upgrade`), a page per transaction; returns how many this process
    chained. Only for a store written before the chain was kept with its events. Safe to
    run again after a kill, and by several processes at once."""
    recorder = chained_recorder(store)
    signer = recorder.signer
    assert signer is not None
    target = recorder.upgrade_target(signer.verifier)
    total = 0
    while target is not None and (chained := recorder.chain_backlog(signer, page, target)):
        total += chained
    return total
