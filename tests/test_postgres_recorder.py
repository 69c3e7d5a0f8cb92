"""The PostgreSQL recorder that encodes a batch before taking the events table lock.

Real PostgreSQL only (a fresh database per test, from conftest's `postgres_database`);
skipped with the reason when the server is unreachable, failed under CI.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID, uuid4

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder

from lifecycle.store.event_store import SubjectStore, open_subject_store
from lifecycle.store.postgres_recorder import LockLightPostgresRecorder
from lifecycle.store.settings import load_settings

TOPIC = "lifecycle.aggregates.data_subject:DataSubject.FactRecorded"
# States that text-mode bytea escaping has to get right, and binary mode must not mangle.
AWKWARD_STATES = [
    b"",
    b"\x00",
    b"\\",
    b"\\\\x00",
    b"\\x5c'\"{}(),",
    bytes(range(256)),
    b"\x00" * 1000 + b"\xff",
]


@pytest.fixture
def store(postgres_database: str, tmp_path: Path) -> Iterator[SubjectStore]:
    """The store as the CLI opens it: settings from LIFECYCLE_DATABASE_URL."""
    settings = load_settings({"LIFECYCLE_DATABASE_URL": postgres_database,
                              "LIFECYCLE_HOME": str(tmp_path / "home")})
    opened = open_subject_store(settings)
    yield opened
    opened.close()


def recorder_of(store: SubjectStore) -> LockLightPostgresRecorder:
    recorder = store.recorder
    assert isinstance(recorder, LockLightPostgresRecorder)
    return recorder


def events(count: int, *, start: int = 1, originator: UUID | None = None) -> list[StoredEvent]:
    """`count` events; one originator each unless `originator` is given."""
    return [StoredEvent(originator_id=originator or uuid4(),
                        originator_version=(start + n if originator else 1),
                        topic=f"{TOPIC}.{n}",
                        state=AWKWARD_STATES[n % len(AWKWARD_STATES)] + n.to_bytes(4, "big"))
            for n in range(count)]


def row(event: StoredEvent) -> tuple[UUID, int, str, bytes]:
    return (UUID(str(event.originator_id)), event.originator_version, event.topic, event.state)


def test_a_store_opened_from_the_database_url_records_through_the_subclass(
        store: SubjectStore) -> None:
    """LIFECYCLE_DATABASE_URL selects LockLightPostgresRecorder (via eventsourcing's
    APPLICATION_RECORDER_TOPIC) and a small pool: 2 connections, at most 6."""
    recorder = recorder_of(store)
    assert isinstance(recorder, PostgresApplicationRecorder)
    assert (recorder.datastore.pool.min_size, recorder.datastore.pool.max_size) == (2, 6)


def test_inserted_events_read_back_identically_in_insert_order(store: SubjectStore) -> None:
    """Each batch's returned notification ids belong to its events in order, increase
    across batches, and every id, version, topic and state byte reads back unchanged;
    the rows equal those the library's own recorder stores for the same events."""
    recorder = recorder_of(store)
    subject = uuid4()
    first = events(40) + events(5, originator=subject)
    second = [*events(3, start=6, originator=subject),
              StoredEvent(originator_id=str(uuid4()), originator_version=1, topic=TOPIC,
                          state=b"\\\x00")]  # a str originator id is accepted too
    ids = [*(recorder.insert_events(first) or []), *(recorder.insert_events(second) or [])]
    inserted = first + second
    assert len(ids) == len(inserted)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)

    notifications = recorder.select_notifications(start=None, limit=1000)
    assert [n.id for n in notifications] == ids
    assert [row(n) for n in notifications] == [row(e) for e in inserted]
    assert [row(e) for e in recorder.select_events(subject)] == [
        row(e) for e in inserted if e.originator_id == subject]

    reference = PostgresApplicationRecorder(recorder.datastore,
                                            events_table_name="reference_events")
    reference.create_table()
    reference.insert_events(first)
    reference.insert_events(second)
    assert [row(n) for n in reference.select_notifications(start=None, limit=1000)] == [
        row(n) for n in notifications]


def test_a_duplicate_version_raises_integrity_error_and_stores_none_of_its_batch(
        store: SubjectStore) -> None:
    """A batch holding an (originator_id, version) already stored, or twice, raises
    eventsourcing's IntegrityError (ingest and sweep retry on it) and stores none of its
    events; the recorder goes on inserting afterwards."""
    recorder = recorder_of(store)
    stored = events(3)
    recorder.insert_events(stored)
    head = recorder.max_notification_id()

    newcomer = events(1)
    with pytest.raises(IntegrityError):
        recorder.insert_events([*newcomer, stored[1]])
    twice = events(1)
    with pytest.raises(IntegrityError):
        recorder.insert_events([*twice, *twice])
    assert recorder.max_notification_id() == head
    assert recorder.select_events(newcomer[0].originator_id) == []
    assert recorder.select_events(twice[0].originator_id) == []

    ids = recorder.insert_events(newcomer)
    assert ids is not None and head is not None and ids[0] > head
    assert [row(e) for e in recorder.select_events(newcomer[0].originator_id)] == [
        row(newcomer[0])]


def test_each_insert_notifies_the_events_channel(store: SubjectStore,
                                                 postgres_database: str) -> None:
    """Like the library's recorder, an insert sends NOTIFY on the table's channel, which
    eventsourcing's LISTEN/NOTIFY subscriptions wait on."""
    recorder = recorder_of(store)
    with psycopg.connect(postgres_database, autocommit=True) as listener:
        listener.execute(f'LISTEN "{recorder.channel_name}"')
        recorder.insert_events(events(2))
        received = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.channel for n in received] == [recorder.channel_name]


def test_an_insert_waits_for_the_exclusive_table_lock(store: SubjectStore,
                                                      postgres_database: str) -> None:
    """Writers still serialise on LOCK TABLE ... IN EXCLUSIVE MODE (notification ids in
    commit order): an insert waits while another transaction holds the lock, then
    completes. (The holder writes no event: one stored behind the recorder would be
    unchained, and the recorder refuses to chain over it.)"""
    recorder = recorder_of(store)
    table = f'"{recorder.datastore.schema}"."{recorder.events_table_name}"'
    outcome: list[object] = []
    with psycopg.connect(postgres_database) as holder:
        holder.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
        writer = threading.Thread(target=lambda: outcome.append(
            recorder.insert_events(events(2))))
        writer.start()
        deadline = time.monotonic() + 10
        waiting = 0
        while not waiting and time.monotonic() < deadline:
            with psycopg.connect(postgres_database, autocommit=True) as probe:
                found = probe.execute(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND mode = 'ExclusiveLock'"
                    " AND relation = %s::regclass", (table,)).fetchone()
            waiting = found[0] if found else 0
            time.sleep(0.05)
        assert waiting == 1 and not outcome
        holder.commit()
    writer.join(10)
    assert outcome and isinstance(outcome[0], list) and len(outcome[0]) == 2


def test_processes_opening_the_store_at_the_same_moment_all_succeed(
        store: SubjectStore) -> None:
    """Opening the store creates (or re-creates) its tables and functions; openers that run
    it at the same moment take turns instead of one failing with "tuple concurrently
    updated" (each thread here is its own database session, as a process would be)."""
    recorder = recorder_of(store)
    openers, rounds = 5, 15
    barrier = threading.Barrier(openers)
    failures: list[BaseException] = []

    def open_repeatedly() -> None:
        for _ in range(rounds):
            barrier.wait(timeout=60)
            try:
                recorder.create_table()
            except BaseException as error:  # noqa: BLE001 - collected for the assertion
                failures.append(error)

    threads = [threading.Thread(target=open_repeatedly) for _ in range(openers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
