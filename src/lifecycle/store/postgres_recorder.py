"""PostgreSQL application recorder that does its Python work before taking the table lock.

The library's recorder sends `LOCK TABLE ... IN EXCLUSIVE MODE` and only then builds one
composite value per event, text-dumped with a regex escape of every bytea state: ~140 ms
per ingest batch while every other writer waits. Here the batch becomes four plain
columns before the lock and is sent as binary arrays (no escaping), so the lock covers
little more than the INSERT itself. Lock, NOTIFY, transaction, pipeline, error mapping
and returned notification ids stay the library's: `insert_events` only builds the
columns and delegates; `_insert_stored_events` swaps the INSERT statement.

It also writes the audit chain (`lifecycle.store.event_chain`) in the same transaction: the
event digests and the subjects' previous links are read before the lock; under it, once
the notification ids are known (`_fetch_ids_after_insert_events`), the head checkpoint is
read, the batch's log links computed and signed, and the chain rows and checkpoint sent
in the same pipeline. The EXCLUSIVE lock that keeps notification ids in commit order also
makes the chain's writers take turns.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain, repeat
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Notification, ProgrammingError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
import psycopg
from psycopg import Cursor
from psycopg.adapt import Buffer, Dumper
from psycopg.pq import Format
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier

from lifecycle.store.lease import advisory_key
from lifecycle.store.signing_key import Signer
from lifecycle.store.event_chain import (
    ChainingRecorder,
    CHAIN_TABLE,
    CHECKPOINT_TABLE,
    ChainRow,
    Checkpoint,
    Pending,
    Tail,
    UPGRADE_TABLE,
    extend,
    prepare,
    upgrade_message,
)


# -- arrays sent ready-made --------------------------------------------------------------
# psycopg dumps a list parameter in Python, a call or two per element: some 0.4 µs an
# element, ten arrays per batch (four of events, six of chain rows), partly under the
# table lock. These build the same binary arrays (PostgreSQL's array_send format: the
# values the server stores are the same) with the per-element work in C, before the lock
# where they can; psycopg sends them as they are.

class _PackedArray(bytes):
    """A one-dimensional array without NULLs in PostgreSQL's binary format."""


class _Int8Array(_PackedArray):
    pass


class _UUIDArray(_PackedArray):
    pass


class _TextArray(_PackedArray):
    pass


class _ByteaArray(_PackedArray):
    pass


def _dumper(array_oid: int) -> type[Dumper]:
    class PackedDumper(Dumper):
        format = Format.BINARY

        def dump(self, obj: Any) -> Buffer | None:
            return obj  # type: ignore[no-any-return]

    PackedDumper.oid = array_oid
    return PackedDumper


for _kind, _type in ((_Int8Array, "int8"), (_UUIDArray, "uuid"), (_TextArray, "text"),
                     (_ByteaArray, "bytea")):
    _info = psycopg.postgres.types.get(_type)
    assert _info is not None
    psycopg.adapters.register_dumper(_kind, _dumper(_info.array_oid))

_HEAD = struct.Struct(">iiiii")  # dimensions (1), has NULLs (0), element oid, length, from 1
_EMPTY_HEAD = struct.Struct(">iii")
_LENGTH = struct.Struct(">i")
_INT8 = struct.Struct(">iq")  # an int8 element: its length (8), its value
_UUID_LENGTH = _LENGTH.pack(16)
_OIDS = {_Int8Array: 20, _UUIDArray: 2950, _TextArray: 25, _ByteaArray: 17}


def _packed(kind: type[_PackedArray], count: int, elements: Iterable[bytes]) -> Any:
    oid = _OIDS[kind]
    head = _HEAD.pack(1, 0, oid, count, 1) if count else _EMPTY_HEAD.pack(0, 0, oid)
    return kind(head + b"".join(elements))


def int8_array(values: Sequence[int]) -> Any:
    """bigint[] of `values` (struct.error for one outside int8, as the server would
    refuse it)."""
    return _packed(_Int8Array, len(values), map(_INT8.pack, repeat(8), values))


def bytea_array(values: Sequence[bytes]) -> Any:
    return _packed(_ByteaArray, len(values),
                   chain.from_iterable(zip(map(_LENGTH.pack, map(len, values)), values)))


Columns = tuple[Any, Any, Any, Any]  # the events' uuid[], bigint[], text[], bytea[]


def event_columns(stored_events: Sequence[StoredEvent]) -> Columns:
    """The four columns of stored events, as ready-made arrays (a topic not all ASCII,
    whose bytes depend on the connection's encoding: the topics as a list psycopg dumps).
    An aggregate's events come together: its id is packed once."""
    ids: list[bytes] = []
    versions: list[int] = []
    topics: list[bytes] = []
    states: list[bytes] = []
    texts: list[str] = []
    spelt: dict[str, bytes] = {}  # topic -> its element
    ascii_topics = True
    last: Any = None
    packed_id = b""
    for event in stored_events:
        originator_id = event.originator_id
        if originator_id is not last:
            last = originator_id
            packed_id = _UUID_LENGTH + (originator_id if isinstance(originator_id, UUID)
                                        else UUID(originator_id)).bytes
        ids.append(packed_id)
        versions.append(event.originator_version)
        topic = event.topic
        element = spelt.get(topic)
        if element is None:
            ascii_topics = ascii_topics and topic.isascii()
            element = spelt[topic] = _LENGTH.pack(len(topic)) + topic.encode("ascii",
                                                                             "replace")
        topics.append(element)
        texts.append(topic)
        states.append(event.state)
    count = len(ids)
    return (_packed(_UUIDArray, count, ids), int8_array(versions),
            _packed(_TextArray, count, topics) if ascii_topics else texts,
            bytea_array(states))


TABLES_LOCK = "event-tables"


class _ChainFailed(BaseException):
    """Carries an error of chaining a batch out of the library's transaction, rolling it
    back (the library catches every Exception there and commits before raising it)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class LockLightPostgresRecorder(ChainingRecorder, PostgresApplicationRecorder):
    """`PostgresApplicationRecorder` with the batch built before the table lock, that
    chains and signs every batch it stores."""


    def __init__(self, datastore: PostgresDatastore, *,
                 events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        if datastore.originator_id_type != "uuid":
            msg = f"{type(self).__name__} needs ORIGINATOR_ID_TYPE uuid"
            raise ProgrammingError(msg)
        # %b: binary parameters, so bytea states go as raw bytes, not escaped text.
        self.insert_columns_statement = SQL(
            "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%b::uuid[], %b::bigint[], %b::text[], %b::bytea[]) "
            "RETURNING notification_id"
        ).format(schema=Identifier(datastore.schema),
                 table=Identifier(self.events_table_name))
        self.chain_table = SQL("{}.{}").format(Identifier(datastore.schema),
                                               Identifier(CHAIN_TABLE))
        self.checkpoint_table = SQL("{}.{}").format(Identifier(datastore.schema),
                                                    Identifier(CHECKPOINT_TABLE))
        self.events_table = SQL("{}.{}").format(Identifier(datastore.schema),
                                                Identifier(self.events_table_name))
        self.upgrade_table = SQL("{}.{}").format(Identifier(datastore.schema),
                                                 Identifier(UPGRADE_TABLE))
        self.sql_create_statements += [
            SQL("CREATE TABLE IF NOT EXISTS {} (position bigint PRIMARY KEY, "
                "originator_id uuid NOT NULL, originator_version bigint NOT NULL, "
                "event_digest bytea NOT NULL, subject_digest bytea NOT NULL, "
                "log_digest bytea NOT NULL)").format(self.chain_table),
            SQL("CREATE TABLE IF NOT EXISTS {} (seq bigint PRIMARY KEY, "
                "position bigint NOT NULL, events bigint NOT NULL, log_digest bytea NOT NULL, "
                "signed_at text NOT NULL, key_id text NOT NULL, signature bytea NOT NULL)"
                ).format(self.checkpoint_table),
            SQL("CREATE TABLE IF NOT EXISTS {} (id integer PRIMARY KEY, target bigint NOT NULL, "
                "key_id text NOT NULL, signature bytea NOT NULL)").format(self.upgrade_table)]
        self.insert_chain_statement = SQL(
            "INSERT INTO {} (position, originator_id, originator_version, event_digest, "
            "subject_digest, log_digest) SELECT * FROM unnest(%b::bigint[], %b::uuid[], "
            "%b::bigint[], %b::bytea[], %b::bytea[], %b::bytea[])").format(self.chain_table)
        self.insert_checkpoint_statement = SQL(
            "INSERT INTO {} VALUES (%s, %s, %s, %s, %s, %s, %s)").format(self.checkpoint_table)
        # The newest checkpoint (NULLs for none) with what the chain stands on (`Tail`).
        self.head_statement: Composed = SQL(
            "SELECT (SELECT MAX(notification_id) FROM {} WHERE notification_id < %s) AS below, "
            "(SELECT MAX(position) FROM {}) AS chain_head, "
            "(SELECT log_digest FROM {} WHERE position = %s) AS anchor_digest, "
            "k.* FROM (SELECT 1) AS one "
            "LEFT JOIN (SELECT * FROM {} ORDER BY seq DESC LIMIT 1) AS k ON true").format(
            self.events_table, self.chain_table, self.chain_table, self.checkpoint_table)

    @contextmanager
    def reading(self) -> Iterator[Cursor[DictRow]]:
        """A cursor for one read statement on the pool's autocommit connection: no BEGIN
        and ROLLBACK around it (two round trips of three; a read transaction under READ
        COMMITTED gives no snapshot beyond its statement anyway), and the connection's
        prepared statements survive (a rolled-back read transaction drops them all)."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            yield curs

    def _create_table(self, curs: Cursor[DictRow]) -> None:
        # Two processes opening a store at the same moment would run the library's
        # `CREATE OR REPLACE FUNCTION` and `CREATE TABLE IF NOT EXISTS` together, and
        # PostgreSQL fails one of them ("tuple concurrently updated"): a lock held to this
        # transaction's end makes them take turns, whoever the caller.
        curs.execute("SELECT pg_advisory_xact_lock(%s)", [advisory_key(TABLES_LOCK)])
        super()._create_table(curs)

    def insert_events(self, stored_events: Sequence[StoredEvent],
                      **kwargs: Any) -> Sequence[int] | None:
        # Built here, before the parent checks out a connection and opens the
        # transaction; the parent hands kwargs on to _insert_stored_events.
        columns = event_columns(stored_events)
        pending = self._pending(stored_events)
        try:
            notification_ids: Sequence[int] | None = super().insert_events(
                stored_events, lifecycle_columns=columns, lifecycle_chain=pending, **kwargs)
        except _ChainFailed as failed:
            raise failed.error from None
        if pending is not None and pending.rows:
            self._chained(pending.rows)  # committed
        return notification_ids

    def _fetch_ids_after_insert_events(self, curs: Cursor[DictRow],
                                       stored_events: Sequence[StoredEvent],
                                       **kwargs: Any) -> Sequence[int] | None:
        notification_ids = super()._fetch_ids_after_insert_events(
            curs, stored_events, **kwargs)
        pending: Pending | None = kwargs.get("lifecycle_chain")
        columns: Columns | None = kwargs.get("lifecycle_columns")
        if pending is not None and notification_ids:  # still under the table lock
            assert self.signer is not None and columns is not None
            try:
                pending.rows = self._append(curs, pending, notification_ids, columns[0],
                                            self.signer)
            except Exception as error:
                # The library keeps an Exception raised here until its transaction has
                # committed the events: unchained. Not an Exception, this one rolls back.
                raise _ChainFailed(error) from error
        return notification_ids

    def _append(self, curs: Cursor[DictRow], pending: Pending, positions: Sequence[int],
                originators: Any, signer: Signer) -> list[ChainRow]:
        """`originators`: the rows' uuid[] (a list, or the events' ready-made array)."""
        curs.execute(self.head_statement, (positions[0], self._anchor_position(pending)),
                     prepare=True)
        found = curs.fetchone()
        assert found is not None
        anchored = found["anchor_digest"]
        self._recheck(pending, None if anchored is None else bytes(anchored),
                      lambda wanted: self._subject_links(curs, wanted))
        tail = Tail(int(found["below"] or 0), int(found["chain_head"] or 0))
        head = None if found["seq"] is None else _checkpoint(found)
        rows, checkpoint = extend(pending, positions, head, signer, tail)
        curs.execute(self.insert_chain_statement, (
            int8_array([r.position for r in rows]), originators,
            int8_array([r.version for r in rows]),
            bytea_array([r.event_digest for r in rows]),
            bytea_array([r.subject_digest for r in rows]),
            bytea_array([r.log_digest for r in rows])))
        curs.execute(self.insert_checkpoint_statement, checkpoint.row())
        return rows

    def newest_key_id(self) -> str | None:
        with self.reading() as curs:
            curs.execute(SQL("SELECT key_id FROM {} ORDER BY seq DESC LIMIT 1").format(
                self.checkpoint_table))
            row = curs.fetchone()
            return None if row is None else str(row["key_id"])

    def subject_links(self, wanted: list[tuple[str, int]]) -> dict[str, bytes]:
        """The chained subject digest of each (originator, version) that has one."""
        if not wanted:
            return {}
        with self.reading() as curs:
            return self._subject_links(curs, wanted)

    def _subject_links(self, curs: Cursor[DictRow], wanted: list[tuple[str, int]]
                       ) -> dict[str, bytes]:
        if not wanted:
            return {}
        statement = SQL(
            "SELECT e.originator_id, c.subject_digest FROM {} e JOIN {} c "
            "ON c.position = e.notification_id JOIN unnest(%s::uuid[], %s::bigint[]) "
            "AS w(id, v) ON e.originator_id = w.id AND e.originator_version = w.v"
        ).format(self.events_table, self.chain_table)
        curs.execute(statement, ([UUID(o) for o, _ in wanted], [v for _, v in wanted]))
        return {str(row["originator_id"]): bytes(row["subject_digest"])
                for row in curs.fetchall()}

    def upgrade_row(self) -> tuple[int, str, bytes] | None:
        with self.reading() as curs:
            curs.execute(SQL("SELECT target, key_id, signature FROM {} WHERE id = 1").format(
                self.upgrade_table))
            row = curs.fetchone()
        return None if row is None else (int(row["target"]), str(row["key_id"]),
                                         bytes(row["signature"]))

    def begin_upgrade(self, signer: Signer, target: int) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(SQL("INSERT INTO {} VALUES (1, %s, %s, %s) ON CONFLICT (id) DO NOTHING"
                             ).format(self.upgrade_table),
                         (target, signer.fingerprint, signer.sign(upgrade_message(target))))

    def chain_backlog(self, signer: Signer, limit: int, upto: int) -> int:
        with self.datastore.transaction(commit=True) as curs:
            self._lock_table(curs)
            curs.execute(self.head_statement, (0, 0))
            found = curs.fetchone()
            head = None if found is None or found["seq"] is None else _checkpoint(found)
            curs.execute(SQL("SELECT * FROM {} WHERE notification_id > %s AND "
                             "notification_id <= %s ORDER BY notification_id LIMIT %s"
                             ).format(self.events_table),
                         (0 if head is None else head.position, upto, limit))
            batch = curs.fetchall()
            if not batch:
                return 0
            pending = prepare(StoredEvent(r["originator_id"], r["originator_version"],
                                          r["topic"], bytes(r["state"])) for r in batch)
            pending.previous = self._subject_links(curs, pending.wanted())
            self._append(curs, pending, [r["notification_id"] for r in batch],
                         [r["originator_id"] for r in batch], signer)
        return len(batch)

    # -- reading the chain -------------------------------------------------------------

    def chain_heads(self) -> tuple[int, int, int]:
        """(newest event position, newest chain position, newest checkpoint number), in one
        snapshot (0 for none)."""
        with self.reading() as curs:
            curs.execute(SQL("SELECT (SELECT MAX(notification_id) FROM {}) AS log, "
                             "(SELECT MAX(position) FROM {}) AS chain, "
                             "(SELECT MAX(seq) FROM {}) AS marks").format(
                self.events_table, self.chain_table, self.checkpoint_table))
            row = curs.fetchone()
        assert row is not None
        return int(row["log"] or 0), int(row["chain"] or 0), int(row["marks"] or 0)

    def lowest_position(self) -> int:
        """The lowest stored event position (1 for none): the application never stores one
        below 1, but the database takes it, and a subject's history would load it."""
        with self.reading() as curs:
            curs.execute(SQL("SELECT MIN(notification_id) AS low FROM {}").format(
                self.events_table))
            row = curs.fetchone()
        return 1 if row is None or row["low"] is None else int(row["low"])

    def chained_events(self, originator_id: UUID) -> list[tuple[Notification, bytes | None]]:
        """One originator's stored events in version order, each with its chained event
        digest (None when the chain has no row at its position)."""
        with self.reading() as curs:
            curs.execute(SQL("SELECT e.notification_id, e.originator_version, e.topic, "
                             "e.state, c.event_digest FROM {} e LEFT JOIN {} c "
                             "ON c.position = e.notification_id WHERE e.originator_id = %s "
                             "ORDER BY e.originator_version").format(
                self.events_table, self.chain_table), (originator_id,))
            return [(Notification(id=r["notification_id"], originator_id=originator_id,
                                  originator_version=r["originator_version"],
                                  topic=r["topic"], state=bytes(r["state"])),
                     None if r["event_digest"] is None else bytes(r["event_digest"]))
                    for r in curs.fetchall()]

    def chain_digests(self, after: int, upto: int) -> dict[int, bytes]:
        """Position -> event digest of the chain rows in (after, upto]."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SQL("SELECT position, event_digest FROM {} WHERE position > %s "
                             "AND position <= %s").format(self.chain_table), (after, upto),
                         prepare=True)
            return {row["position"]: bytes(row["event_digest"]) for row in curs.fetchall()}

    def checkpoints(self) -> list[Checkpoint]:
        with self.reading() as curs:
            curs.execute(SQL("SELECT * FROM {} ORDER BY seq").format(self.checkpoint_table))
            return [_checkpoint(row) for row in curs.fetchall()]

    def chain_rows(self, after: int, upto: int, limit: int) -> list[ChainRow]:
        with self.reading() as curs:
            curs.execute(SQL("SELECT * FROM {} WHERE position > %s AND position <= %s "
                             "ORDER BY position LIMIT %s").format(self.chain_table),
                         (after, upto, limit), prepare=True)
            return [ChainRow(row["position"], row["originator_id"],
                             row["originator_version"], bytes(row["event_digest"]),
                             bytes(row["subject_digest"]), bytes(row["log_digest"]))
                    for row in curs.fetchall()]

    def _insert_stored_events(self, curs: Cursor[DictRow],
                              stored_events: Sequence[StoredEvent],
                              **kwargs: Any) -> None:
        columns: Columns | None = kwargs.get("lifecycle_columns")
        if columns is None:  # a caller that bypassed insert_events: the library's way
            super()._insert_stored_events(curs, stored_events, **kwargs)
            return
        self._lock_table(curs)
        self._notify_channel(curs)
        curs.execute(self.insert_columns_statement, columns)


def _checkpoint(row: DictRow) -> Checkpoint:
    return Checkpoint(int(row["seq"]), int(row["position"]), int(row["events"]),
                      bytes(row["log_digest"]), str(row["signed_at"]), str(row["key_id"]),
                      bytes(row["signature"]))
