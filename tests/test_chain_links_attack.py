"""Attacks on the SQLite chain-link query (09050e6: the wanted (subject, version) pairs
drive a join into the events' key). A writer that did not store a subject's previous
event reads its link back: many subjects at once (several chunks), old and new subjects
mixed, subjects with many versions; the links read must be exactly those stored, the
chain must verify after, and a missing link must still refuse the write."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from lifecycle.services.audit import verify
from lifecycle.services.ledger import Ledger
from lifecycle.store.event_chain import ChainBroken
from lifecycle.store.event_store import chained_recorder
from lifecycle.store.settings import Settings
from lifecycle.store import sqlite_recorder
from tests.test_audit_verify import RawStore, problems

NOW = datetime(2025, 6, 1, tzinfo=UTC)


def activity(n: int, subject: str) -> str:
    at = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=n)
    return json.dumps({"id": f"{subject}/a{n}", "type": "activity", "subject": subject,
                       "at": at.isoformat()})


def latest_positions(ledger: Ledger) -> dict[str, tuple[int, int]]:
    """Each subject's (position, version) of its latest stored event, by originator."""
    found: dict[str, tuple[int, int]] = {}
    for n in ledger.store.recorder.select_notifications(1, 1_000_000):
        found[str(n.originator_id)] = (n.id, n.originator_version)
    return found


def test_links_read_back_for_many_subjects_old_and_new_verify(backend: Settings,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """Another writer adds to 900 subjects it never wrote (some with 12 versions, the
    others with 1), and to 100 new ones, in one batch read back in chunks of 7: every
    fact lands, and the chain verifies. On SQLite the links the query gives are, pair
    for pair, those a lookup of each pair gives."""
    monkeypatch.setattr(sqlite_recorder, "_CHUNK", 7)
    old = [f"old-{n}" for n in range(900)]
    with Ledger(backend) as first:
        facts = [activity(n, ref) for ref in old for n in range(1 if ref[-1] != "7" else 12)]
        assert first.ingest(facts, NOW).ok
    with Ledger(backend) as second:
        asked: list[int] = []
        recorder = chained_recorder(second.store)
        original = recorder.subject_links

        def counting(wanted: list[tuple[str, int]]) -> dict[str, bytes]:
            asked.append(len(wanted))
            return original(wanted)

        monkeypatch.setattr(recorder, "subject_links", counting)
        mixed = [activity(100, ref) for ref in old] + [activity(1, f"new-{n}")
                                                        for n in range(100)]
        report = second.ingest(mixed, NOW)
        assert report.ok and report.accepted == len(mixed)
        assert sum(asked) == 900, asked
        assert verify(second.store, second.views).ok
        if backend.database_url is None:
            latest = latest_positions(second)
            wanted = [(o, v - 1) for o, (_, v) in latest.items() if v > 1]
            links = original(wanted)
            assert len(links) == len(wanted) >= 900
            conn = sqlite3.connect(backend.events_path)
            try:
                for originator, version in wanted:
                    (digest,) = conn.execute(
                        "SELECT c.subject_digest FROM stored_events e JOIN "
                        "lifecycle_event_chain c ON c.position = e.rowid WHERE "
                        "e.originator_id = ? AND e.originator_version = ?",
                        (originator.replace("-", ""), version)).fetchone()
                    assert links[originator] == bytes(digest), originator
            finally:
                conn.close()


def test_a_missing_link_among_many_refuses_the_whole_batch(backend: Settings,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """One subject's latest chain row deleted behind the application's back, among 500
    subjects whose links a writer reads back in chunks (with new subjects in the same
    batch): the write is refused naming the audit chain, nothing is stored, and `audit
    verify` reports what it reported before."""
    monkeypatch.setattr(sqlite_recorder, "_CHUNK", 7)
    old = [f"old-{n}" for n in range(500)]
    with Ledger(backend) as first:
        assert first.ingest([activity(n, ref) for ref in old for n in range(2)], NOW).ok
        latest = latest_positions(first)
        victim = str(first.subject("old-321").id)  # type: ignore[union-attr]
    raw = RawStore(backend)
    raw.run("DELETE FROM lifecycle_event_chain WHERE position = ?", latest[victim][0])
    stored = raw.ids()
    with Ledger(backend) as before:
        found = problems(verify(before.store, before.views))
    assert found
    with Ledger(backend) as second:
        mixed = [activity(100, ref) for ref in old] + [activity(1, "new-1")]
        with pytest.raises(ChainBroken, match="audit chain"):
            second.ingest(mixed, NOW)
        assert raw.ids() == stored
        assert problems(verify(second.store, second.views)) == found
