"""SQLite application recorder that writes the audit chain with the events it stores.

The chain rows and the batch's signed checkpoint (`lifecycle.store.event_chain`) go in the same
transaction as the events, after their INSERT: that INSERT takes SQLite's write lock, so
from there to the commit no other process can append, and the head read under it is the
head the batch continues.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Notification, StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor

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
    originator_text,
    prepare,
    upgrade_message,
)

_CHUNK = 400  # (id, version) pairs per lookup
_MAX_ROWID = 2**63 - 1


class ChainedSQLiteRecorder(ChainingRecorder, SQLiteApplicationRecorder):
    """`SQLiteApplicationRecorder` that chains and signs every batch it stores."""


    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(),
                f"CREATE TABLE IF NOT EXISTS {CHAIN_TABLE} ("
                "position INTEGER PRIMARY KEY, originator_id TEXT NOT NULL, "
                "originator_version INTEGER NOT NULL, event_digest BLOB NOT NULL, "
                "subject_digest BLOB NOT NULL, log_digest BLOB NOT NULL)",
                f"CREATE TABLE IF NOT EXISTS {CHECKPOINT_TABLE} ("
                "seq INTEGER PRIMARY KEY, position INTEGER NOT NULL, "
                "events INTEGER NOT NULL, log_digest BLOB NOT NULL, signed_at TEXT NOT NULL, "
                "key_id TEXT NOT NULL, signature BLOB NOT NULL)",
                f"CREATE TABLE IF NOT EXISTS {UPGRADE_TABLE} (id INTEGER PRIMARY KEY, "
                "target INTEGER NOT NULL, key_id TEXT NOT NULL, signature BLOB NOT NULL)"]

    # -- writing -------------------------------------------------------------------------

    def insert_events(self, stored_events: Sequence[StoredEvent],
                      **kwargs: Any) -> Sequence[int] | None:
        pending = self._pending(stored_events)
        if pending is None:
            return super().insert_events(stored_events, **kwargs)
        signer = self.signer
        assert signer is not None
        with self.datastore.transaction(commit=True) as c:
            ids = self._insert_events(c, stored_events, **kwargs)
            assert ids is not None
            rows = self._append(c, pending, ids, signer)
        self._chained(rows)  # committed
        return ids

    def _insert_events(self, c: SQLiteCursor, stored_events: Sequence[StoredEvent],
                       **kwargs: Any) -> Sequence[int] | None:
        """The library's ids without its statement per event: one `executemany`, then the
        newest rowid. SQLite gives each new row one more than the largest rowid (with or
        without AUTOINCREMENT) while none is MAX_ROWID, and the first INSERT takes the
        write lock, so only these rows go in until the commit: they hold (top - n, top].
        A top of MAX_ROWID (SQLite may then pick rowids at random) falls back to looking
        each row up."""
        if not stored_events:
            return []
        params: list[tuple[Any, int, str, bytes]] = []
        last: Any = None
        originator: Any = None
        for event in stored_events:  # each originator's hex spelt once (its events together)
            if event.originator_id is not last:
                last = event.originator_id
                originator = last.hex if isinstance(last, UUID) else last
            params.append((originator, event.originator_version, event.topic, event.state))
        cursor = c.sqlite_cursor
        cursor.executemany(self.insert_events_statement, params)
        cursor.execute(f"SELECT MAX(rowid) FROM {self.events_table_name}")
        top = int(cursor.fetchone()[0])
        if top < _MAX_ROWID:
            return list(range(top - len(params) + 1, top + 1))
        return [self._rowid(cursor, p[0], p[1]) for p in params]

    def _rowid(self, cursor: Any, originator: str, version: int) -> int:
        cursor.execute(f"SELECT rowid FROM {self.events_table_name} WHERE originator_id = ? "
                       "AND originator_version = ?", (originator, version))
        return int(cursor.fetchone()[0])

    def _append(self, c: SQLiteCursor, pending: Pending, ids: Sequence[int],
                signer: Signer) -> list[ChainRow]:
        head = self._head(c)
        anchor = self._anchor_position(pending)
        if anchor:
            c.execute(f"SELECT log_digest FROM {CHAIN_TABLE} WHERE position = ?", (anchor,))
            found = c.fetchone()
            self._recheck(pending, None if found is None else bytes(found[0]),
                          lambda wanted: self._subject_links(c, wanted))
        rows, checkpoint = extend(pending, ids, head, signer, self._tail(c, ids[0]))
        hexes: dict[str, str] = {}  # each originator's stored spelling, made once
        c.executemany(f"INSERT INTO {CHAIN_TABLE} VALUES (?,?,?,?,?,?)",
                      [(r.position, hexes.get(r.originator)
                        or hexes.setdefault(r.originator, r.originator.replace("-", "")),
                        r.version, r.event_digest, r.subject_digest, r.log_digest)
                       for r in rows])
        c.execute(f"INSERT INTO {CHECKPOINT_TABLE} VALUES (?,?,?,?,?,?,?)", checkpoint.row())
        return rows

    @staticmethod
    def _head(c: SQLiteCursor) -> Checkpoint | None:
        c.execute(f"SELECT * FROM {CHECKPOINT_TABLE} ORDER BY seq DESC LIMIT 1")
        row = c.fetchone()
        return None if row is None else _checkpoint(row)

    def _tail(self, c: SQLiteCursor, first: int) -> Tail:
        c.execute(f"SELECT (SELECT MAX(rowid) FROM {self.events_table_name} WHERE rowid < ?), "
                  f"(SELECT MAX(position) FROM {CHAIN_TABLE})", (first,))
        below, chain_head = c.fetchone()
        return Tail(int(below or 0), int(chain_head or 0))

    def newest_key_id(self) -> str | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT key_id FROM {CHECKPOINT_TABLE} ORDER BY seq DESC LIMIT 1")
            row = c.fetchone()
            return None if row is None else str(row[0])

    def subject_links(self, wanted: list[tuple[str, int]]) -> dict[str, bytes]:
        """The chained subject digest of each (originator, version) that has one."""
        if not wanted:
            return {}
        with self.datastore.transaction(commit=False) as c:
            return self._subject_links(c, wanted)

    def _subject_links(self, c: SQLiteCursor, wanted: list[tuple[str, int]]
                       ) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start:start + _CHUNK]
            pairs = ",".join("(?,?)" for _ in chunk)
            params = [x for o, v in chunk for x in (o.replace("-", ""), v)]
            # The wanted pairs drive the join, each a lookup in the events' key: a row-value
            # IN (VALUES ...) had SQLite scan the whole index of events for every chunk.
            c.execute(f"WITH wanted(o, v) AS (VALUES {pairs}) "
                      f"SELECT e.originator_id, c.subject_digest FROM wanted CROSS JOIN "
                      f"{self.events_table_name} e ON e.originator_id = wanted.o AND "
                      f"e.originator_version = wanted.v JOIN {CHAIN_TABLE} c "
                      f"ON c.position = e.rowid", params)
            found.update((originator_text(o), bytes(d)) for o, d in c.fetchall())
        return found

    def upgrade_row(self) -> tuple[int, str, bytes] | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT target, key_id, signature FROM {UPGRADE_TABLE} WHERE id = 1")
            row = c.fetchone()
        return None if row is None else (int(row[0]), str(row[1]), bytes(row[2]))

    def begin_upgrade(self, signer: Signer, target: int) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.execute(f"INSERT OR IGNORE INTO {UPGRADE_TABLE} VALUES (1, ?, ?, ?)",
                      (target, signer.fingerprint, signer.sign(upgrade_message(target))))

    def chain_backlog(self, signer: Signer, limit: int, upto: int) -> int:
        with self.datastore.transaction(commit=True) as c:
            c.execute(f"DELETE FROM {CHECKPOINT_TABLE} WHERE 0")  # takes the write lock
            head = self._head(c)
            c.execute(f"SELECT rowid, * FROM {self.events_table_name} WHERE rowid > ? "
                      "AND rowid <= ? ORDER BY rowid LIMIT ?",
                      (0 if head is None else head.position, upto, limit))
            batch = c.fetchall()
            if not batch:
                return 0
            pending = prepare(StoredEvent(r["originator_id"], r["originator_version"],
                                          r["topic"], r["state"]) for r in batch)
            pending.previous = self._subject_links(c, pending.wanted())
            self._append(c, pending, [r["rowid"] for r in batch], signer)
        return len(batch)

    # -- reading -------------------------------------------------------------------------

    def chain_heads(self) -> tuple[int, int, int]:
        """(newest event position, newest chain position, newest checkpoint number), in one
        snapshot (0 for none)."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT (SELECT MAX(rowid) FROM {self.events_table_name}), "
                      f"(SELECT MAX(position) FROM {CHAIN_TABLE}), "
                      f"(SELECT MAX(seq) FROM {CHECKPOINT_TABLE})")
            log_head, chain_head, checkpoints = c.fetchone()
        return int(log_head or 0), int(chain_head or 0), int(checkpoints or 0)

    def lowest_position(self) -> int:
        """The lowest stored event position (1 for none): the application never stores one
        below 1, but the database takes it, and a subject's history would load it."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT MIN(rowid) FROM {self.events_table_name}")
            low = c.fetchone()[0]
        return 1 if low is None else int(low)

    def chained_events(self, originator_id: UUID) -> list[tuple[Notification, bytes | None]]:
        """One originator's stored events in version order, each with its chained event
        digest (None when the chain has no row at its position)."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT e.rowid, e.originator_version, e.topic, e.state, "
                      f"c.event_digest FROM {self.events_table_name} e LEFT JOIN "
                      f"{CHAIN_TABLE} c ON c.position = e.rowid WHERE e.originator_id = ? "
                      "ORDER BY e.originator_version", (originator_id.hex,))
            return [(Notification(id=r[0], originator_id=originator_id,
                                  originator_version=r[1], topic=r[2], state=r[3]),
                     None if r[4] is None else bytes(r[4])) for r in c.fetchall()]

    def chain_digests(self, after: int, upto: int) -> dict[int, bytes]:
        """Position -> event digest of the chain rows in (after, upto]."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT position, event_digest FROM {CHAIN_TABLE} "
                      "WHERE position > ? AND position <= ?", (after, upto))
            return dict(c.fetchall())

    def checkpoints(self) -> list[Checkpoint]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT * FROM {CHECKPOINT_TABLE} ORDER BY seq")
            return [_checkpoint(row) for row in c.fetchall()]

    def chain_rows(self, after: int, upto: int, limit: int) -> list[ChainRow]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT * FROM {CHAIN_TABLE} WHERE position > ? AND position <= ? "
                      "ORDER BY position LIMIT ?", (after, upto, limit))
            return [ChainRow(*row) for row in c.fetchall()]


def _checkpoint(row: Any) -> Checkpoint:
    seq, position, events, log_digest, signed_at, key_id, signature = tuple(row)
    return Checkpoint(int(seq), int(position), int(events), bytes(log_digest), str(signed_at),
                      str(key_id), bytes(signature))
