"""The store's mapper builds each stored event itself (its fields set at once, not by the
frozen dataclass's __init__ one `object.__setattr__` at a time) and stamps the actor into
the event's __dict__ directly: what it gives is exactly the library mapper's stored event
for the same event (same class, fields, field order, equality and hash), for every kind
of event an ingest of the example files stores, on both backends; and an event without an
actor gets the acting one, read back as before.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eventsourcing.persistence import Mapper, StoredEvent

from lifecycle.aggregates.data_subject import register
from lifecycle.services.ledger import Ledger
from lifecycle.store.actor import ACTOR_ATTRIBUTE, ActorMapper, acting_as

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def same(ours: StoredEvent, library: StoredEvent) -> None:
    assert type(ours) is StoredEvent
    assert list(vars(ours).items()) == list(vars(library).items())
    assert ours == library and hash(ours) == hash(library)


def test_stored_events_are_the_librarys(ledger: Ledger) -> None:
    """Every event an ingest of the example files stored, mapped again: the library's."""
    ledger.adopt_policy(ROOT / "config" / "hqip.toml", datetime(2019, 1, 1, tzinfo=UTC))
    text = (ROOT / "examples" / "hqip-facts.jsonl").read_text()
    assert ledger.ingest(iter(text.splitlines()), NOW).accepted > 0
    mapper = ledger.store.mapper
    assert isinstance(mapper, ActorMapper)
    kinds: set[str] = set()
    for notification in ledger.store.recorder.select_notifications(start=1, limit=100_000):
        event: Any = mapper.to_domain_event(notification)
        kinds.add(type(event).__name__)
        same(mapper.to_stored_event(event), Mapper.to_stored_event(mapper, event))
    assert len(kinds) >= 15


def test_actor_is_stamped_as_before(ledger: Ledger) -> None:
    """An event without an actor: the acting one on the event and in its stored state."""
    mapper = ledger.store.mapper
    subject = register("member:actor")
    (event,) = subject.collect_events()
    assert ACTOR_ATTRIBUTE not in vars(event)
    with acting_as("desk user"):
        stored = mapper.to_stored_event(event)
    assert getattr(event, ACTOR_ATTRIBUTE) == "desk user"
    same(stored, Mapper.to_stored_event(mapper, event))
    assert getattr(mapper.to_domain_event(stored), ACTOR_ATTRIBUTE) == "desk user"
