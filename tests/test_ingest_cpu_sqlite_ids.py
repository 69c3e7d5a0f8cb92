"""The chained SQLite recorder stores a batch with one `executemany` and works its events'
notification ids out from the newest rowid: those ids, and the rows stored, must be exactly
what the library's recorder (one INSERT per event, each id from `lastrowid`) gives, after
any mix of batches, deleted rows (rowids SQLite then hands out again) and another
connection's writes; with processes writing at once each returned id must be its event's
rowid; and at SQLite's largest rowid (where it picks rowids at random) the ids are still
the rows' own. Real SQLite files.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore
from hypothesis import given, settings as hsettings, strategies as st
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lifecycle.store.signing_key import Signer
from lifecycle.store.sqlite_recorder import ChainedSQLiteRecorder

TABLE = "stored_events"


def chained(path: Path) -> ChainedSQLiteRecorder:
    # The store's lock timeout (lifecycle.store.event_store): writers wait their turn.
    recorder = ChainedSQLiteRecorder(SQLiteDatastore(db_name=str(path), lock_timeout=30))
    recorder.create_table()
    recorder.signer = Signer(Ed25519PrivateKey.from_private_bytes(bytes(range(32))), "test")
    return recorder


def plain(path: Path) -> SQLiteApplicationRecorder:
    recorder = SQLiteApplicationRecorder(SQLiteDatastore(db_name=str(path)))
    recorder.create_table()
    return recorder


def insert(recorder: ChainedSQLiteRecorder, events: list[StoredEvent]) -> list[int]:
    """The recorder's own INSERT of a batch, without the chain (which refuses a store
    whose rows others deleted or wrote: the ids' rule is what is under test here)."""
    with recorder.datastore.transaction(commit=True) as c:
        ids = recorder._insert_events(c, events)
    assert ids is not None
    return list(ids)


def rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as connection:
        return connection.execute(
            f"SELECT rowid, originator_id, originator_version, topic, state FROM {TABLE} "
            "ORDER BY rowid").fetchall()


def run(path: Path, statement: str) -> None:
    connection = sqlite3.connect(path)
    with connection:
        connection.execute(statement)
    connection.close()


# A batch: per originator (of a few), how many new events; a deletion: which stored rows
# (by rank from the newest, so the top rowids that SQLite then reuses come up often).
batches = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(lambda n: ("batch", n))
deletions = st.lists(st.integers(0, 12), min_size=1, max_size=4).map(lambda r: ("delete", r))
others = st.integers(1, 3).map(lambda n: ("other", n))
operations = st.lists(st.one_of(batches, deletions, others), min_size=1, max_size=12)


@hsettings(max_examples=60, deadline=None)
@given(operations)
def test_ids_and_rows_are_the_librarys(tmp_path_factory: pytest.TempPathFactory,
                                       steps: list[tuple[str, Any]]) -> None:
    """Same operations on the chained recorder's INSERT and on the library's: the same ids
    returned for every batch (and each id its event's rowid), the same rows at the same
    rowids."""
    base = tmp_path_factory.mktemp("ids")
    ours_path, theirs_path = base / "ours.db", base / "theirs.db"
    ours, theirs = chained(ours_path), plain(theirs_path)
    versions: dict[UUID, int] = {}
    originators = [uuid4() for _ in range(4)]
    for kind, argument in steps:
        if kind == "batch":
            events = []
            for originator, count in zip(originators, argument):
                for _ in range(count):
                    versions[originator] = versions.get(originator, 0) + 1
                    events.append(StoredEvent(originator, versions[originator], "t:T",
                                              uuid4().bytes))
            got = insert(ours, events)
            assert got == theirs.insert_events(events)
            assert got is not None and len(got) == len(events)
            stored = {(o, v): rowid for rowid, o, v, _, _ in rows(ours_path)}
            assert list(got) == [stored[(UUID(str(e.originator_id)).hex,
                                         e.originator_version)] for e in events]
        elif kind == "delete":
            for rank in argument:
                for path in (ours_path, theirs_path):
                    run(path, f"DELETE FROM {TABLE} WHERE rowid = (SELECT rowid FROM {TABLE} "
                              f"ORDER BY rowid DESC LIMIT 1 OFFSET {rank})")
        else:
            for n in range(argument):
                name = uuid4().hex
                for path in (ours_path, theirs_path):
                    run(path, f"INSERT INTO {TABLE} VALUES ('{name}', 1, 't:T', x'00')")
        assert rows(ours_path) == rows(theirs_path)
    ours.datastore.close()
    theirs.datastore.close()


def test_largest_rowid_falls_back_to_each_rows_own(tmp_path: Path) -> None:
    """With a row at SQLite's largest rowid the next rowids are random: each returned id
    is still the rowid its event was stored at."""
    path = tmp_path / "top.db"
    recorder = chained(path)
    run(path, f"INSERT INTO {TABLE} (rowid, originator_id, originator_version, topic, state) "
              f"VALUES ({2**63 - 1}, 'top', 1, 't:T', x'00')")
    originator = uuid4()
    events = [StoredEvent(originator, v, "t:T", b"s") for v in range(1, 6)]
    got = insert(recorder, events)
    stored = {(o, v): rowid for rowid, o, v, _, _ in rows(path)}
    assert got == [stored[(originator.hex, v)] for v in range(1, 6)]
    recorder.datastore.close()


WRITER = """
import sys, json
from pathlib import Path
from uuid import uuid4
import pytest
from eventsourcing.persistence import StoredEvent
from tests.test_ingest_cpu_sqlite_ids import chained
recorder = chained(Path(sys.argv[1]))
out = []
for batch in range(int(sys.argv[2])):
    originator = uuid4()
    events = [StoredEvent(originator, v, "t:T", b"s") for v in range(1, 1 + batch % 7 + 1)]
    ids = recorder.insert_events(events)
    out += [[originator.hex, e.originator_version, i] for e, i in zip(events, ids)]
print(json.dumps(out))
"""


def test_processes_writing_at_once_get_their_rows_ids(tmp_path: Path) -> None:
    """Three processes storing chained batches into one file at once: every id one of them
    was given is the rowid its event was stored at, and no id was given twice."""
    path = tmp_path / "shared.db"
    chained(path).datastore.close()
    root = Path(__file__).resolve().parent.parent
    started = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), "60"], cwd=root,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(3)]
    given_ids: list[tuple[str, int, int]] = []
    for process in started:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        given_ids += [(o, v, i) for o, v, i in json.loads(out)]
    stored = {(o, v): rowid for rowid, o, v, _, _ in rows(path)}
    assert len(stored) == len(given_ids) == 3 * sum(b % 7 + 1 for b in range(60))
    assert sorted(i for _, _, i in given_ids) == sorted(stored.values())
    for originator, version, rowid in given_ids:
        assert stored[(originator, version)] == rowid
