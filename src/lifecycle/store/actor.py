"""Who did it: every stored event names its actor (UK GDPR Art 5(2), accountability).

The actor is stamped on each event as it is stored, by the application's mapper
(:class:`ActorMapper`), so no aggregate, command or event class has to carry it: the event's
stored state gains an `actor` attribute, which the library's decoding puts back on the
domain event (and the aggregates' methods, which name their parameters, never see).
Events stored before this existed have none and read :data:`UNKNOWN`.

Which actor: the one set for the current context (:func:`acting_as`, e.g. a signed-in user
of a service, per request), else the store's default (the Ledger's: the command line's OS
user or `--actor`, the daemon's identity), else none.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import get_topic

from lifecycle.domain.errors import ArgumentRefused

ACTOR_ENV = "LIFECYCLE_ACTOR"
ACTOR_ATTRIBUTE = "actor"
UNKNOWN = "unknown"  # what an event stored before actors were recorded reads
MAX_LENGTH = 200

_current: ContextVar[str | None] = ContextVar("lifecycle_actor", default=None)

# The library's StoredEvent is a frozen dataclass of these four fields, whose __init__ sets
# each through object.__setattr__ (half the time of storing an event's state): while it
# stays so, `to_stored_event` fills a new one's __dict__ in that order itself.
_STORED_FIELDS = ("originator_id", "originator_version", "topic", "state")
_PLAIN_STORED_EVENT = (
    tuple(f.name for f in dataclasses.fields(StoredEvent)) == _STORED_FIELDS
    and "__slots__" not in vars(StoredEvent) and not hasattr(StoredEvent, "__post_init__")
    and vars(StoredEvent).get("__setattr__") is not None)  # (frozen: its own __setattr__)


def checked_actor(name: str, where: str = "--actor") -> str:
    """The actor name, trimmed; refused (one line naming `where`) when empty, longer than
    MAX_LENGTH or holding control characters (it is shown in logs and reports)."""
    trimmed = name.strip()
    if not trimmed:
        raise ArgumentRefused(f"{where}: the actor name is empty")
    if len(trimmed) > MAX_LENGTH:
        raise ArgumentRefused(f"{where}: the actor name is longer than {MAX_LENGTH} characters")
    if any(unicodedata.category(c).startswith("C") for c in trimmed):
        raise ArgumentRefused(f"{where}: the actor name holds a control character")
    return trimmed


def os_user() -> str:
    """The operating-system user running this process (its uid if it has no name)."""
    try:
        return checked_actor(getpass.getuser(), "OS user")
    except (OSError, KeyError, ArgumentRefused):
        return f"uid {os.getuid()}"


def command_line_actor(given: str | None, environ: dict[str, str] | None = None) -> str:
    """The command line's actor: `--actor NAME`, else $LIFECYCLE_ACTOR, else the OS user."""
    env = os.environ if environ is None else environ
    if given is not None:
        return checked_actor(given, "--actor")
    if env.get(ACTOR_ENV):
        return checked_actor(env[ACTOR_ENV], ACTOR_ENV)
    return os_user()


def daemon_actor(holder: str, lease: str) -> str:
    """The daemon's identity: its host and pid (`holder`) and the lease it works under."""
    return f"daemon {holder} ({lease} lease)"


@contextmanager
def acting_as(actor: str) -> Iterator[None]:
    """Events stored in this context (this thread or task) name `actor`: what a service
    sets per request, over the store's default."""
    token = _current.set(checked_actor(actor, "actor"))
    try:
        yield
    finally:
        _current.reset(token)


def current_actor() -> str | None:
    return _current.get()


class ActorMapper(Mapper[UUID]):
    """The library's mapper, stamping the acting actor on each event it stores."""

    default_actor: str | None = None

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        actor = _current.get() or self.default_actor
        attributes = vars(domain_event)
        if actor is not None and ACTOR_ATTRIBUTE not in attributes:
            # On the event object too, so it reads as it will when decoded (frozen class:
            # into its __dict__, as object.__setattr__ puts it).
            attributes[ACTOR_ATTRIBUTE] = actor
        if self.compressor is not None or self.cipher is not None:
            return super().to_stored_event(domain_event)
        # The library's `to_stored_event` (same state, same bytes) in one call: about a
        # tenth of an ingest's CPU goes through here, once per stored event.
        kind = type(domain_event)
        state = dict(attributes)
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        class_version = getattr(kind, "class_version", 1)
        if class_version > 1:
            state["class_version"] = class_version
        topic = get_topic(kind)
        if not _PLAIN_STORED_EVENT:
            return StoredEvent(originator_id, originator_version, topic,
                               self.transcoder.encode(state))
        stored: StoredEvent = object.__new__(StoredEvent)
        fields = stored.__dict__
        fields["originator_id"] = originator_id
        fields["originator_version"] = originator_version
        fields["topic"] = topic
        fields["state"] = self.transcoder.encode(state)
        return stored


def actor_of(domain_event: Any) -> str:
    """Who stored the event; UNKNOWN for one stored before actors were recorded."""
    actor = getattr(domain_event, ACTOR_ATTRIBUTE, None)
    return actor if isinstance(actor, str) and actor else UNKNOWN


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None


def fact_time(domain_event: Any) -> datetime | None:
    """When the step took effect: its `at`, or when a request was received."""
    at = getattr(domain_event, "at", None) or getattr(domain_event, "received_at", None)
    return at if isinstance(at, datetime) else None


def step(domain_event: Any) -> dict[str, Any]:
    """One step of a timeline: the event's name, its fact time, when it was recorded,
    and who recorded it."""
    return {"step": type(domain_event).__name__, "at": _iso(fact_time(domain_event)),
            "recorded_at": _iso(getattr(domain_event, "timestamp", None)),
            "actor": actor_of(domain_event)}


def timeline(events: Iterable[Any], as_of: datetime | None = None) -> list[dict[str, Any]]:
    """The steps of these events, in stored order; with `as_of`, only those in effect by
    then (a step without a fact time always counts)."""
    steps = []
    for domain_event in events:
        at = fact_time(domain_event)
        if as_of is not None and at is not None and at > as_of:
            continue
        steps.append(step(domain_event))
    return steps


def adoptions_with_adopters(store: Any, upto: int | None = None) -> list[dict[str, Any]]:
    """Each policy adoption (up to number `upto`), with who adopted it."""
    from lifecycle.aggregates.policy_register import REGISTER_ID  # (keeps this module light)

    register = store.get_register()
    if register is None:
        return []
    adopted = [e for e in store.events.get(REGISTER_ID) if type(e).__name__ == "PolicyAdopted"]
    actors = [actor_of(e) for e in adopted]
    return [{"label": a.label, "adopted_at": a.adopted_at.isoformat(),
             "content_hash": a.content_hash,
             "adopted_by": actors[i] if i < len(actors) else UNKNOWN}
            for i, a in enumerate(register.adoptions) if upto is None or a.number <= upto]


def add_adopters(ropa: dict[str, Any], store: Any) -> dict[str, Any]:
    """A record of processing with who adopted its policy, and every adoption up to it."""
    adoptions = adoptions_with_adopters(store, ropa["policy"]["adoption"])
    ropa["policy"]["adopted_by"] = adoptions[-1]["adopted_by"] if adoptions else UNKNOWN
    ropa["adoptions"] = adoptions
    return ropa
