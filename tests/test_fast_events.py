"""Events built directly (lifecycle.aggregates.fast_events) are the library's events.

The aggregates' commands build their events without eventsourcing's per-command machinery.
The event classes are the same (their module paths and names are stored topics), so an
event built directly must be the event the library would have built: the same attributes
in the same order, the same stored bytes, the same aggregate state after it; and stores
written either way must read, replay and grow under the other.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import random
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from eventsourcing.domain import CanCreateTimestamp
from hypothesis import given, settings as hsettings, strategies as st

from lifecycle.aggregates.data_subject import DataSubject, register
from lifecycle.aggregates.fast_events import FastCommand, library_commands
from lifecycle.aggregates.request_case import RequestCase
from lifecycle.services.audit import verify
from lifecycle.services.ledger import Ledger
from lifecycle.services.samples import generate_facts
from lifecycle.store.event_store import SubjectStore
from lifecycle.store.fast_json import FastJSONTranscoder
from lifecycle.store.settings import Settings
from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, UUIDAsHex

POLICIES = Path(__file__).resolve().parents[1] / "config"
T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


def transcoder() -> FastJSONTranscoder:
    found = FastJSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        found.register(transcoding)
    return found


TRANSCODER = transcoder()


@contextmanager
def fixed_clock(at: datetime) -> Iterator[None]:
    with mock.patch.object(CanCreateTimestamp, "create_timestamp", staticmethod(lambda: at)):
        yield


def fast_commands_of(cls: type) -> list[str]:
    return sorted(name for name, attr in vars(cls).items() if isinstance(attr, FastCommand))


def test_every_decorated_command_is_built_directly() -> None:
    """Each `@event` command of the subject and request-case aggregates goes the direct
    way (a new decorated method is covered without anyone remembering to list it)."""
    assert len(fast_commands_of(DataSubject)) >= 25
    assert len(fast_commands_of(RequestCase)) >= 7
    with library_commands(DataSubject, RequestCase):
        assert fast_commands_of(DataSubject) == fast_commands_of(RequestCase) == []
    assert len(fast_commands_of(DataSubject)) >= 25


def subject_with_history() -> DataSubject:
    """A subject whose state gives most commands something to act on."""
    with library_commands(DataSubject), fixed_clock(T0):
        subject = DataSubject("person-1")
        subject.collect("f1", T0, "r1", "contact", "service", "contract", "data-subject",
                        "k" * 32, "k" * 32 + ".c2VhbGVk")
        subject.collect("f2", T0, "r2", "contact", "direct-marketing", "consent",
                        "data-subject", "j" * 32, "j" * 32 + ".c2VhbGVk")
        subject.give_consent("f3", T0, "direct-marketing", "web-form")
        subject.place_hold("f4", T0, "h1", "service", None, None, None)
        subject.request_access("f5", T0, "q1")
        subject.request_erasure("f6", T0, "q2", None)
        subject.restrict("f7", T0, "service", "accuracy")
        subject.share("f8", T0, "Acme", "processor", "service", "contract", ["r1"], [],
                      "GB", None)
        subject.collect_events()
    return subject


texts = st.sampled_from(["r1", "r2", "q1", "q2", "h1", "service", "direct-marketing",
                         "all", "Acme", "legal-claims", "GB", "US", "x", ""]) | st.text(max_size=6)
times = st.datetimes(min_value=datetime(2023, 1, 1), max_value=datetime(2025, 1, 1),
                     timezones=st.just(UTC))
BY_NAME: dict[str, st.SearchStrategy[Any]] = {
    "at": times, "due_at": times, "until": st.none() | times,
    "received_at": st.none() | times,
    "records": st.lists(texts, max_size=3), "categories": st.lists(texts, max_size=2),
    "email_hashes": st.lists(texts, max_size=3), "key_ids": st.lists(texts, max_size=3),
    "months": st.integers(0, 6), "awaiting_identity": st.booleans(),
}


def arguments(command: FastCommand) -> st.SearchStrategy[dict[str, Any]]:
    """Arguments for each of the command's parameters (some left to their defaults)."""
    names = command.signature.names
    required = st.fixed_dictionaries({
        name: BY_NAME.get(name, st.none() | texts) for name in names
        if name not in command.signature.defaults})
    optional = st.fixed_dictionaries({}, optional={
        name: BY_NAME.get(name, st.none() | texts) for name in command.signature.defaults})
    return st.tuples(required, optional).map(lambda both: {**both[0], **both[1]})


def outcome(aggregate: Any, name: str, kwargs: dict[str, Any]) -> Any:
    """What the command does: the error it raises, or the events it pends (attributes in
    order, stored bytes) and the aggregate's state after them."""
    try:
        with fixed_clock(T0 + timedelta(days=400)):
            getattr(aggregate, name)(**copy.deepcopy(kwargs))
    except Exception as error:  # noqa: BLE001 - both ways must fail alike
        return ("raised", type(error), str(error))
    events = aggregate.collect_events()
    built = [(type(e), list(vars(e).items()),
              TRANSCODER.encode({k: v for k, v in vars(e).items()
                                 if k not in ("originator_id", "originator_version")}))
             for e in events]
    return built, aggregate.__dict__


SUBJECT_COMMANDS = fast_commands_of(DataSubject)


@given(data=st.data(), name=st.sampled_from(SUBJECT_COMMANDS))
@hsettings(max_examples=400, deadline=None)
def test_a_subject_event_built_directly_is_the_library_event(data: st.DataObject,
                                                             name: str) -> None:
    """Any command of the subject aggregate with any arguments: built directly, the same
    events (class, attributes in order, stored bytes) and the same state as the library's
    decorator builds, or the same error."""
    kwargs = data.draw(arguments(vars(DataSubject)[name]))
    base = subject_with_history()
    direct = outcome(copy.deepcopy(base), name, kwargs)
    with library_commands(DataSubject):
        library = outcome(copy.deepcopy(base), name, kwargs)
    assert direct == library


def case_with_history() -> RequestCase:
    with library_commands(RequestCase), fixed_clock(T0):
        case = RequestCase.receive("q1", "person-1", "access", T0, awaiting_identity=True)
        case.collect_events()
    return case


@given(data=st.data(), name=st.sampled_from(fast_commands_of(RequestCase)))
@hsettings(max_examples=200, deadline=None)
def test_a_request_case_event_built_directly_is_the_library_event(data: st.DataObject,
                                                                  name: str) -> None:
    """The same for the request case's commands (the statutory clock's steps)."""
    kwargs = data.draw(arguments(vars(RequestCase)[name]))
    base = case_with_history()
    direct = outcome(copy.deepcopy(base), name, kwargs)
    with library_commands(RequestCase):
        library = outcome(copy.deepcopy(base), name, kwargs)
    assert direct == library


@given(reference=st.text(max_size=20), kind=st.sampled_from(["access", "erasure", "bogus"]),
       awaiting=st.booleans() | st.none())
@hsettings(max_examples=100, deadline=None)
def test_a_created_event_built_directly_is_the_library_event(reference: str, kind: str,
                                                             awaiting: bool | None) -> None:
    """A new subject (Registered) and a new request case (Received): the same event and
    state as the library's constructor gives (or the same refusal of a bad kind)."""
    def build(make: Any) -> Any:
        try:
            with fixed_clock(T0):
                aggregate = make()
        except Exception as error:  # noqa: BLE001 - both ways must fail alike
            return ("raised", type(error), str(error))
        (created,) = aggregate.collect_events()
        return type(created), list(vars(created).items()), aggregate.__dict__

    extra = {} if awaiting is None else {"awaiting_identity": awaiting}
    for make in (lambda: register(reference),
                 lambda: RequestCase.receive("q", reference, kind, T0, **extra)):
        direct = build(make)
        with library_commands(DataSubject, RequestCase):
            library = build(make)
        assert direct == library


# -- whole stores ----------------------------------------------------------------------------

MASTER_KEY = base64.b64encode(bytes(range(32))).decode()
SEALED = re.compile(rb"([0-9a-f]{32})\.[A-Za-z0-9+/]+=*")


@contextmanager
def deterministic() -> Iterator[None]:
    """Random bytes (key ids, nonces) and event timestamps the same in every run; the keys
    themselves are the library's own random, so sealed values are compared by key id."""
    generator = random.Random(7)
    ticks = iter(range(10**9))
    with mock.patch.object(os, "urandom", lambda n: generator.randbytes(n)), \
            fixed_clock_ticking(ticks):
        yield


@contextmanager
def fixed_clock_ticking(ticks: Iterator[int]) -> Iterator[None]:
    with mock.patch.object(CanCreateTimestamp, "create_timestamp", staticmethod(
            lambda: T0 + timedelta(microseconds=next(ticks)))):
        yield


def stored(store: SubjectStore) -> list[tuple[Any, int, str, bytes]]:
    return [(n.originator_id, n.originator_version, n.topic, SEALED.sub(rb"\1.*", n.state))
            for n in store.recorder.select_notifications(1, 1_000_000)]


def sample_lines(sample: str) -> list[str]:
    return [json.dumps(fact) for fact in generate_facts(sample, 40, seed=3)]


def ingest_all(settings: Settings, sample: str, lines: list[str]) -> list[Any]:
    with Ledger(settings) as ledger:
        with deterministic():
            ledger.adopt_policy(POLICIES / f"{sample}.toml", datetime(2020, 1, 1, tzinfo=UTC))
            report = ledger.ingest(lines, datetime(2025, 6, 1, tzinfo=UTC))
        assert report.ok, report.rejected[:3]
        return stored(ledger.store)


@pytest.mark.parametrize("sample", ["hqip", "ihpa"])
def test_a_store_written_directly_is_byte_for_byte_the_library_store(
        tmp_path: Path, sample: str) -> None:
    """The same facts ingested with the library's command machinery and with events built
    directly: the same events, in the same order, with the same topics and the same stored
    bytes (sealed values compared by their key id: the keys are random)."""
    lines = sample_lines(sample)

    def settings(name: str) -> Settings:  # one master key: the same keyed hashes
        home = tmp_path / name
        return Settings(home=home, database_url=None, master_key=MASTER_KEY,
                        master_key_file=home / "master.key")

    with library_commands(DataSubject, RequestCase):
        library = ingest_all(settings("library"), sample, lines)
    direct = ingest_all(settings("direct"), sample, lines)
    assert len(library) > len(lines) / 2
    assert {topic for _, _, topic, _ in library} >= {
        "lifecycle.aggregates.data_subject:DataSubject.Registered",
        "lifecycle.aggregates.data_subject:DataSubject.Collected",
        "lifecycle.aggregates.request_case:RequestCase.Received"}
    assert direct == library


def test_a_store_written_by_the_library_machinery_replays_and_grows(
        backend: Settings) -> None:
    """A store whose first half was written through the library's decorators (every store
    before this change): the second half ingests into it with events built directly,
    every subject and case replays to the state the events built, the audit chain
    verifies, and what either half stored replays the same under either code."""
    every = sample_lines("hqip")
    half = len(every) // 2
    with library_commands(DataSubject, RequestCase):
        with Ledger(backend) as ledger:
            ledger.adopt_policy(POLICIES / "hqip.toml", datetime(2020, 1, 1, tzinfo=UTC))
            assert ledger.ingest(every[:half], datetime(2025, 6, 1, tzinfo=UTC)).ok
    with Ledger(backend) as ledger:
        report = ledger.ingest(every[half:], datetime(2025, 6, 1, tzinfo=UTC))
        assert report.ok and report.accepted == len(every) - half
        assert verify(ledger.store, ledger.views).ok
        references = sorted({json.loads(line)["subject"] for line in every})
        subjects = {r: ledger.subject(r) for r in references}
        assert all(s is not None for s in subjects.values())
        with library_commands(DataSubject, RequestCase):
            # Replay is the library's either way; its state is the same.
            again = {r: ledger.store.get_subject(r) for r in references}
        for reference in references:
            assert again[reference] == subjects[reference]
        for reference, subject in subjects.items():
            assert subject is not None
            for record in subject.records.values():
                if record.erased_at is None:
                    assert ledger.open_sealed(list(record.values)) is not None


def test_commands_bind_arguments_as_the_library_does() -> None:
    """Positional and keyword arguments, defaults, and the errors for a missing, repeated
    or unknown argument: as a call of the method would."""
    subject = subject_with_history()
    subject.record_activity("a1", T0, None)
    subject.record_activity(fact_id="a2", at=T0, record=None)
    subject.request_access("a3", T0, "q9")  # kind: its default
    events = subject.collect_events()
    assert [e.fact_id for e in events] == ["a1", "a2", "a3"]  # type: ignore[attr-defined]
    assert events[-1].kind == "access"  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="missing required argument 'record'"):
        subject.record_activity("a4", T0)
    with pytest.raises(TypeError, match="multiple values for argument 'at'"):
        subject.record_activity("a4", T0, None, at=T0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        subject.record_activity("a4", T0, None, colour="red")
    with pytest.raises(TypeError, match="positional arguments"):
        subject.record_activity("a4", T0, None, None)
    assert subject.collect_events() == []


def test_keyword_arguments_in_any_order_store_the_fields_in_the_events_order() -> None:
    """A command given its arguments by keyword, in another order than its parameters',
    or leaning on a default, builds the event the library builds: the same stored bytes
    (the event's fields in their declared order), as a call by position does."""
    def stored_state(call: Any) -> bytes:
        subject = subject_with_history()
        with fixed_clock(T0):
            call(subject)
        (event,) = subject.collect_events()
        state = dict(vars(event))
        state.pop("originator_id")
        state.pop("originator_version")
        return TRANSCODER.encode(state)

    calls = [lambda s: s.record_activity(record=None, at=T0, fact_id="a1"),
             lambda s: s.request_access(request="q9", at=T0, fact_id="a3"),
             lambda s: s.record_activity("a1", T0, None)]
    fast = [stored_state(call) for call in calls]
    with library_commands(DataSubject):
        library = [stored_state(call) for call in calls]
    assert fast == library
