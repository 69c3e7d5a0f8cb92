"""A recorder continues the subject links of the batches it committed without reading them
back, and never chains over a link it does not have.

Each stored event's subject digest links it to the subject's previous event. A subject an
ingest saves in several batches (its facts spread in fact-time order) continues from the
link of its own last batch: the recorder remembers the links of what it committed. What
another writer stored in between is read from the store, as before, and the chain verifies
whatever the interleaving.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eventsourcing.persistence import StoredEvent

from lifecycle.services.audit import verify
from lifecycle.services.ledger import Ledger
from lifecycle.store.event_chain import (LOG_GENESIS, Tail, event_digest, extend, link,
                                         originator_text, prepare, subject_genesis)
from lifecycle.store.event_store import chained_recorder
from lifecycle.store.signing_key import Signer
from lifecycle.store.settings import Settings

NOW = datetime(2025, 6, 1, tzinfo=UTC)


def activity(n: int, subject: str = "person-1") -> str:
    at = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(hours=n)
    return json.dumps({"id": f"{subject}/a{n}", "type": "activity", "subject": subject,
                       "at": at.isoformat()})


def spy_links(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> list[list[Any]]:
    """The (originator, version) pairs each batch read back from the store."""
    recorder = chained_recorder(ledger.store)
    asked: list[list[Any]] = []
    original = recorder.subject_links

    def subject_links(wanted: list[tuple[str, int]]) -> dict[str, bytes]:
        asked.append(list(wanted))
        return original(wanted)

    monkeypatch.setattr(recorder, "subject_links", subject_links)
    return asked


def test_a_subject_saved_again_continues_its_own_link_without_reading_it(
        backend: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second save of a subject by the same process reads no link back; the chain
    verifies."""
    with Ledger(backend) as ledger:
        asked = spy_links(ledger, monkeypatch)
        assert ledger.ingest([activity(1), activity(2)], NOW).ok
        assert ledger.ingest([activity(3)], NOW).ok
        assert ledger.ingest([activity(4), activity(5, "person-2")], NOW).ok
        assert all(wanted == [] for wanted in asked), asked
        assert verify(ledger.store, ledger.views).ok


def test_a_link_another_writer_moved_on_is_read_from_the_store(
        backend: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two writers take turns on one subject: each continues from what the other stored
    (read back, not remembered), every fact lands once and the chain verifies."""
    with Ledger(backend) as first, Ledger(backend) as second:
        asked = spy_links(first, monkeypatch)
        assert first.ingest([activity(1)], NOW).ok
        assert second.ingest([activity(2)], NOW).ok
        assert first.ingest([activity(3)], NOW).ok
        assert second.ingest([activity(4)], NOW).ok
        assert first.ingest([activity(5)], NOW).ok
        assert any(wanted for wanted in asked)  # what `second` stored was read back
        subject = first.subject("person-1")
        assert subject is not None
        assert [at for at, _ in subject.activities] == [
            datetime(2024, 1, 1, tzinfo=UTC) + timedelta(hours=n) for n in range(1, 6)]
        assert verify(first.store, first.views).ok


def test_a_batch_is_digested_and_linked_as_the_chain_defines_it() -> None:
    """`prepare` and `extend` pack an originator's and a topic's fields once per batch and
    write the links out: each event digest is still `event_digest` of its fields, each
    subject digest the link from its subject's previous one (from genesis for a version
    1), each log digest the link from the one before."""
    first, second = UUID(int=1), UUID(int=2)
    events = [StoredEvent(first, 1, "a:Created", b"{}"), StoredEvent(first, 2, "a:Done", b"x"),
              StoredEvent(second.hex, 1, "a:Created", b"{}"),
              StoredEvent(str(second), 2, "b:Other", bytearray(b"y" * 300)),
              StoredEvent(first, 3, "a:Done", b"")]
    pending = prepare(events)
    texts = [originator_text(e.originator_id) for e in events]
    assert pending.digests == [event_digest(t, e.originator_version, e.topic, bytes(e.state))
                               for t, e in zip(texts, events, strict=True)]
    signer = Signer(Ed25519PrivateKey.generate(), "test")
    rows, _ = extend(pending, [1, 2, 3, 4, 5], None, signer, Tail(0, 0))
    log, subjects = LOG_GENESIS, {}
    for row, text, digest in zip(rows, texts, pending.digests, strict=True):
        log = link(log, digest)
        subjects[text] = link(subjects.get(text) or subject_genesis(text), digest)
        assert (row.event_digest, row.subject_digest, row.log_digest) == (
            digest, subjects[text], log)


def test_links_are_read_by_key_not_by_a_scan_of_the_events_sqlite(
        sqlite_settings: Settings) -> None:
    """SQLite reads the links a batch needs by looking each wanted event up in the
    events' key: its query plan scans no index or table of events (a scan grows with the
    store, not with the batch). The links read are those of the wanted events."""
    import sqlite3

    with Ledger(sqlite_settings) as ledger:
        assert ledger.ingest([activity(n, f"person-{n}") for n in range(6)], NOW).ok
        recorder = chained_recorder(ledger.store)
        events = ledger.store.recorder.select_notifications(1, 100)
        wanted = [(str(n.originator_id), n.originator_version) for n in events[:3]]
        statements: list[tuple[str, list[Any]]] = []

        class Recording:
            def execute(self, statement: str, params: list[Any]) -> None:
                statements.append((statement, params))

            def fetchall(self) -> list[Any]:
                return []

        recorder._subject_links(Recording(), wanted)  # type: ignore[arg-type]
        links = recorder.subject_links(wanted)
        assert set(links) == {o for o, _ in wanted}
    ((statement, params),) = statements
    with sqlite3.connect(sqlite_settings.events_path) as conn:
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {statement}", params)]
    assert not [step for step in plan if step.startswith("SCAN e")], plan
