"""Events read back the fast way (lifecycle.store.fast_json decode, lifecycle.store.
fast_replay) are what the library reads: the same event objects and the same aggregates.

Reading decodes with orjson and applies each decorated method directly. The stored
format is the library's JSONTranscoder format, so whatever the library's decoder and
`mutate` make of stored bytes, the fast way must make too: the same event class, the same
attributes in the same order with the same types, the same aggregate state, and the same
errors for bytes the library refuses.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    StoredEvent,
    UUIDAsHex,
)
from hypothesis import given, settings as hsettings, strategies as st

from lifecycle.aggregates.data_subject import DataSubject
from lifecycle.aggregates.request_case import RequestCase
from lifecycle.services.ledger import Ledger
from lifecycle.services.samples import generate_facts
from lifecycle.store import fast_replay
from lifecycle.store.fast_json import FastJSONTranscoder
from lifecycle.store.settings import Settings
from tests.test_fast_events import (
    arguments,
    case_with_history,
    fast_commands_of,
    fixed_clock,
    subject_with_history,
    T0,
)

POLICIES = Path(__file__).resolve().parents[1] / "config"
NOW = datetime(2025, 6, 1, tzinfo=UTC)


def library_transcoder() -> JSONTranscoder:
    found = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        found.register(transcoding)
    return found


def fast_transcoder() -> FastJSONTranscoder:
    found = FastJSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        found.register(transcoding)
    return found


LIBRARY, FAST = library_transcoder(), fast_transcoder()


def typed(value: Any) -> Any:
    """A value with the type of every part spelled out (1 == 1.0 == True otherwise)."""
    if isinstance(value, dict):
        return ("dict", [(typed(k), typed(v)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return (type(value).__name__, [typed(v) for v in value])
    if isinstance(value, float) and value != value:
        return ("float", "nan")
    if isinstance(value, datetime):
        return ("datetime", value.isoformat(), str(value.tzinfo))
    return (type(value).__name__, value)


def decoded(transcoder: JSONTranscoder, data: bytes) -> Any:
    try:
        return typed(transcoder.decode(data))
    except Exception as error:  # noqa: BLE001 - both ways must refuse alike
        return ("raised", type(error).__name__)


# -- decoding --------------------------------------------------------------------------------

leaves = (st.none() | st.booleans() | st.integers() | st.text()
          | st.floats(allow_nan=True, allow_infinity=True)
          | st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=1))]))
          | st.uuids() | st.decimals(allow_nan=False, allow_infinity=False))
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                      max_leaves=20)


@given(state=st.dictionaries(st.text(max_size=10), values, max_size=6))
@hsettings(max_examples=600, deadline=None)
def test_any_state_the_library_writes_decodes_as_the_library_decodes_it(
        state: dict[str, Any]) -> None:
    """Any event state the library's encoder writes (nested lists and objects, datetimes
    with offsets, UUIDs, Decimals, big integers, floats, NaN, any text): the same value,
    part for part and type for type."""
    data = LIBRARY.encode(state)
    assert decoded(FAST, data) == decoded(LIBRARY, data)


edge_texts = st.sampled_from([
    b"NaN", b"-Infinity", b'{"a": 1e400}', b"18446744073709551616", b"-9223372036854775809",
    b'{"n": 123456789012345678901234567890}', b'"\\ud800"', b'{"s": "\\udfff x"}',
    b"\xef\xbb\xbf{}", b'{"a":1,"a":2}', b"-0", b"[1.0000000000000002, 5e-324]",
    b'{"_type_": "datetime_iso", "_data_": "2024-01-01T00:00:00+00:00"}',
    b'{"_type_": "nope", "_data_": 1}', b'{"_type_": "datetime_iso", "_data_": 5}',
    b'{"_type_": "datetime_iso", "_data_": "not a time"}',
    b'{"x": {"_type_": "uuid_hex", "_data_": "0123456789abcdef0123456789abcdef"}}',
    b'{"_type_": "datetime_iso", "_data_": "2024-01-01T00:00:00", "more": 1}',
    b'{"_type_": {"_type_": "uuid_hex", "_data_": "0123456789abcdef0123456789abcdef"},'
    b' "_data_": "x"}', b'"\x01"', b"{", b"", b" [ ] ", b"\xff\xfe", b"1.5", b"true",
])


@given(data=edge_texts | st.binary(max_size=40)
       | st.text(alphabet='{}[]":,0123456789.eE-+ _abdnrtuxyz\\', max_size=40)
       .map(lambda text: text.encode()))
@hsettings(max_examples=800, deadline=None)
def test_any_bytes_decode_or_fail_as_the_library_does(data: bytes) -> None:
    """Bytes the library would refuse (damaged events, NaN, numbers or surrogates orjson
    reads otherwise) are refused the same way or read the same way."""
    assert decoded(FAST, data) == decoded(LIBRARY, data)


# -- whole stores ----------------------------------------------------------------------------

def event_parts(event: Any) -> Any:
    return type(event), typed(list(vars(event).items()))


@pytest.mark.parametrize("sample", ["hqip", "ihpa"])
def test_every_stored_event_and_aggregate_reads_as_the_library_reads_it(
        backend: Settings, sample: str) -> None:
    """A store with every kind of event the samples, a sweep and erasure requests give:
    each stored event decodes to the library's event, and each aggregate replayed the
    fast way (`get_aggregates`) has the state the library's repository replays."""
    facts = generate_facts(sample, 60, seed=5)
    with Ledger(backend) as ledger:
        ledger.adopt_policy(POLICIES / f"{sample}.toml", datetime(2020, 1, 1, tzinfo=UTC))
        report = ledger.ingest([json.dumps(f) for f in facts], NOW)
        assert report.ok, report.rejected[:3]
        ledger.sweep(datetime(2025, 6, 1, tzinfo=UTC), NOW)
        store = ledger.store
        library: Mapper[UUID] = Mapper(transcoder=library_transcoder())
        notifications = store.recorder.select_notifications(1, 1_000_000)
        topics = set()
        decode_row = store.mapper.decode_row  # type: ignore[attr-defined]
        for notification in notifications:
            expected = event_parts(library.to_domain_event(notification))
            assert event_parts(store.mapper.to_domain_event(notification)) == expected
            assert event_parts(decode_row(notification.originator_id,
                                          notification.originator_version,
                                          notification.topic, notification.state)) == expected
            topics.add(notification.topic.rsplit(".", 1)[-1])
        assert {"Registered", "Collected", "RetentionExpired", "Erased",
                "Received"} <= topics, topics
        ids = list(dict.fromkeys(n.originator_id for n in notifications))
        fast = {a.id: a for a in store.get_aggregates(ids)}
        assert len(fast) == len(ids)
        for aggregate_id in ids:
            replayed = store.repository.get(aggregate_id)
            assert type(fast[aggregate_id]) is type(replayed)
            assert typed(vars(fast[aggregate_id])) == typed(vars(replayed))


# -- applying one event ----------------------------------------------------------------------

def applied(aggregate: Any, event: Any, apply: Any) -> Any:
    try:
        result = apply(event, aggregate)
    except Exception as error:  # noqa: BLE001 - both ways must fail alike
        return ("raised", type(error).__name__, str(error))
    assert result is aggregate
    return typed(vars(aggregate))


def library_mutate(event: Any, aggregate: Any) -> Any:
    return event.mutate(aggregate)


def one_event(base: Any, name: str, kwargs: dict[str, Any]) -> Any | None:
    """The event the command pends on a copy of `base`, or None if it refuses."""
    aggregate = copy.deepcopy(base)
    try:
        with fixed_clock(T0 + timedelta(days=400)):
            getattr(aggregate, name)(**copy.deepcopy(kwargs))
    except Exception:  # noqa: BLE001 - a refused command has no event to apply
        return None
    events = aggregate.collect_events()
    return events[0] if events else None


@given(data=st.data(), name=st.sampled_from(fast_commands_of(DataSubject)),
       shift=st.sampled_from([0, 0, 0, 1, -1]))
@hsettings(max_examples=400, deadline=None)
def test_a_subject_event_applies_as_the_library_applies_it(
        data: st.DataObject, name: str, shift: int) -> None:
    """Any event of the subject aggregate, applied the fast way, leaves the state the
    library's `mutate` leaves; one out of sequence (a version off by one) is refused with
    the library's error."""
    base = subject_with_history()
    event = one_event(base, name, data.draw(arguments(vars(DataSubject)[name])))
    if event is None:
        return
    if shift:
        event = copy.copy(event)
        object.__setattr__(event, "originator_version", event.originator_version + shift)
    fast = applied(copy.deepcopy(base), event, fast_replay.mutate)
    assert fast == applied(copy.deepcopy(base), event, library_mutate)


@given(data=st.data(), name=st.sampled_from(fast_commands_of(RequestCase)))
@hsettings(max_examples=150, deadline=None)
def test_a_request_case_event_applies_as_the_library_applies_it(
        data: st.DataObject, name: str) -> None:
    """The same for the request case's events."""
    base = case_with_history()
    event = one_event(base, name, data.draw(arguments(vars(RequestCase)[name])))
    if event is None:
        return
    fast = applied(copy.deepcopy(base), event, fast_replay.mutate)
    assert fast == applied(copy.deepcopy(base), event, library_mutate)


def test_an_event_of_another_subject_is_refused_as_the_library_refuses_it() -> None:
    """An event whose originator is another aggregate: the library's error."""
    base = subject_with_history()
    event = one_event(base, "record_activity", {"fact_id": "a", "at": T0, "record": None})
    other = copy.deepcopy(base)
    object.__setattr__(other, "_id", UUID(int=7))
    assert applied(copy.deepcopy(other), event, fast_replay.mutate) == applied(
        copy.deepcopy(other), event, library_mutate)
    assert applied(copy.deepcopy(other), event, fast_replay.mutate)[0] == "raised"


def test_every_decorated_subject_event_is_applied_directly() -> None:
    """The subject's and request case's events all take the direct way (a class with an
    `apply` of its own would take the library's), and a created event the library's."""
    for cls in (DataSubject, RequestCase):
        for name in fast_commands_of(cls):
            event_cls = vars(cls)[name].event_cls
            assert fast_replay._plain_decorated(event_cls) is not None, event_cls
    assert fast_replay._plain_decorated(getattr(DataSubject, "Registered")) is None


# -- JSON columns of the views ---------------------------------------------------------------

json_leaves = (st.none() | st.booleans() | st.integers() | st.text()
               | st.floats(allow_nan=True, allow_infinity=True))
json_values = st.recursive(json_leaves, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=20)


@given(value=json_values)
@hsettings(max_examples=600, deadline=None)
def test_a_json_column_value_reads_back_as_json_dumps_writes_it(value: Any) -> None:
    """A view's JSON value (a subject document, a list of records) written the fast way
    reads back as the same value, part for part and type for type, as json.dumps's text
    (NaN, huge integers, lone surrogates: json.dumps writes them, as before)."""
    from lifecycle.projections.bulk import json_text

    assert typed(json.loads(json_text(value))) == typed(json.loads(json.dumps(value)))


@pytest.mark.parametrize("state", [b"{", b"[1, 2]", b'{"_type_": "nope", "_data_": 1}',
                                   b'{"at": {"_type_": "datetime_iso", "_data_": "x"}}'])
def test_a_damaged_event_read_from_its_columns_is_named_as_before(
        backend: Settings, state: bytes) -> None:
    """An event whose stored state does not decode, read the fast way (from its columns,
    as a batched read of subjects does), raises the BrokenEvent that names it, as the
    mapper's ordinary decoding does."""
    from lifecycle.store.event_chain import BrokenEvent

    with Ledger(backend) as ledger:
        subject_id = UUID(int=5)
        topic = "lifecycle.aggregates.data_subject:DataSubject.Registered"
        mapper = ledger.store.mapper
        with pytest.raises(BrokenEvent) as fast:
            mapper.decode_row(subject_id, 1, topic, state)  # type: ignore[attr-defined]
        with pytest.raises(BrokenEvent) as ordinary:
            mapper.to_domain_event(StoredEvent(originator_id=subject_id, originator_version=1,
                                               topic=topic, state=state))
        assert str(fast.value) == str(ordinary.value)
