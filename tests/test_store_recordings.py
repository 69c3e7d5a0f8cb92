"""`SubjectStore.save` makes the library's recordings (an object pair per stored event) only
when something reads them: `_notify`, the library's hook for them, overridden. Either way
the events are stored alike."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from eventsourcing.persistence import Recording

from lifecycle.aggregates.data_subject import DataSubject, register
from lifecycle.services.ledger import Ledger

AT = datetime(2024, 1, 1, tzinfo=UTC)


def _subject_with_activity(reference: str) -> DataSubject:
    subject = register(reference)
    subject.record_activity("rec-activity-1", AT, None)
    return subject


def test_a_save_nobody_listens_to_makes_no_recordings(ledger: Ledger) -> None:
    """With the library's `_notify` (it does nothing), `save` stores the events and makes
    no recording: none is returned."""
    subject = _subject_with_activity("member:recordings-1")
    assert ledger.store.save(subject) == []
    stored = ledger.store.get_subject_by_id(subject.id)
    assert stored is not None and stored.has_seen("rec-activity-1")
    assert stored.version == 2


def test_a_listening_store_hears_every_saved_event_with_its_position(ledger: Ledger) -> None:
    """A store whose `_notify` is overridden gets a recording of every event it saves, each
    with the event's position in the log, as the library gives them."""
    heard: list[Recording[UUID]] = []
    ledger.store._notify = heard.extend  # type: ignore[method-assign, assignment]
    subject = _subject_with_activity("member:recordings-2")
    returned = ledger.store.save(subject)
    assert returned == heard
    assert [r.domain_event.originator_version for r in heard] == [1, 2]
    assert [r.notification.originator_id for r in heard] == [subject.id, subject.id]
    positions = [r.notification.id for r in heard]
    assert positions == sorted(positions) and positions[0] is not None
    assert positions[0] == ledger.store.position_of(subject.id, 1)
