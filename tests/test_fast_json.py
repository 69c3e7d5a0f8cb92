"""The store's event transcoder writes the library's JSON format, only faster.

Events written by `FastJSONTranscoder` must read back as the library's `JSONTranscoder`
would have written them (old stores and old code stay compatible), and anything the fast
path cannot spell as the library does falls back to the library's encoder.
"""

from __future__ import annotations

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
    TranscodingNotRegisteredError,
    UUIDAsHex,
)
from hypothesis import given, settings as hsettings, strategies as st

from lifecycle.services.audit import verify
from lifecycle.store.event_store import SubjectStore
from lifecycle.store.fast_json import FastJSONTranscoder
from lifecycle.services.ledger import Ledger
from lifecycle.services.samples import generate_facts
from lifecycle.store.settings import Settings


def transcoders() -> tuple[JSONTranscoder, FastJSONTranscoder]:
    library, fast = JSONTranscoder(), FastJSONTranscoder()
    for transcoder in (library, fast):
        for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
            transcoder.register(transcoding)
    return library, fast


LIBRARY, FAST = transcoders()

times = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1),
                     timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=-5))]))
no_float_leaves = (st.text() | st.integers(-2**63, 2**63 - 1) | st.booleans() | st.none()
                   | times)
odd_leaves = (st.floats(allow_nan=True, allow_infinity=True) | st.integers() | st.uuids()
              | st.decimals(allow_nan=False) | st.text(alphabet=st.characters(
                  blacklist_categories=("Cs",))))


def values(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                        max_leaves=20)


def events(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.text(max_size=10), values(leaves), max_size=8)


@given(events(no_float_leaves))
@hsettings(max_examples=300, deadline=None)
def test_plain_events_are_written_byte_for_byte_as_the_library_writes_them(
        event: dict[str, Any]) -> None:
    """Strings, integers, booleans, nulls and datetimes in dicts and lists: the same bytes
    as the library's encoder."""
    assert FAST.encode(event) == LIBRARY.encode(event)


@given(events(odd_leaves | no_float_leaves)
       | st.dictionaries(st.integers(), st.text(), min_size=1, max_size=3)
       | st.tuples(st.text()).map(lambda t: {"tuple": t}))
@hsettings(max_examples=300, deadline=None)
def test_any_event_reads_back_as_the_library_would_have_written_it(event: Any) -> None:
    """Floats (NaN and infinities too), big integers, UUIDs, Decimals, tuples, non-string
    keys: what the fast encoder writes decodes, by the library, to what the library's own
    bytes decode to (floats may be spelt differently, never valued differently)."""
    expected = LIBRARY.encode(event)
    written = FAST.encode(event)
    assert LIBRARY.encode(LIBRARY.decode(written)) == LIBRARY.encode(LIBRARY.decode(expected))
    assert json.loads(written) == json.loads(expected) or written == expected


@pytest.mark.parametrize("moment", [
    datetime(1, 1, 1, tzinfo=UTC), datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2024, 2, 29, 0, 0, 0, 1, tzinfo=UTC), datetime(2024, 6, 1, 12, 30, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 100000, tzinfo=UTC, fold=1),
    datetime(2024, 6, 1, 12, 30, tzinfo=timezone(timedelta(seconds=30))),
    datetime(2024, 6, 1, 12, 30, 0, 5)])
def test_a_datetime_is_spelt_as_isoformat_spells_it(moment: datetime) -> None:
    """A UTC time's text is written by orjson, not `isoformat`: the same characters, from
    year 1 to 9999, with or without microseconds; any other zone (orjson rounds an offset
    with seconds) or none is `isoformat`'s own."""
    event = {"at": moment, "nested": [{"until": moment}]}
    assert FAST.encode(event) == LIBRARY.encode(event)


def test_a_uuid_is_not_written_as_a_bare_string() -> None:
    """orjson would write a UUID as a plain string (it would read back as a str): it is the
    library's {"_type_": "uuid_hex"}, as before."""
    event = {"ids": [UUID(int=7)], "at": datetime(2024, 1, 1, tzinfo=UTC)}
    assert FAST.encode(event) == LIBRARY.encode(event)
    assert LIBRARY.decode(FAST.encode(event))["ids"] == [UUID(int=7)]


@pytest.mark.parametrize("value", [float("nan"), 2**70, Decimal("1.5"), "\ud800", ("a", 1)])
def test_what_orjson_would_spell_differently_or_refuse_goes_to_the_library(value: Any) -> None:
    """NaN (orjson: null), integers beyond 64 bits, Decimals, lone surrogates, tuples: the
    library's encoder writes them, or raises the library's error."""
    event = {"value": value}
    try:
        expected: bytes | type[BaseException] = LIBRARY.encode(event)
    except Exception as error:  # noqa: BLE001 - the same failure is expected
        expected = type(error)
    if isinstance(expected, bytes):
        assert FAST.encode(event) == expected
    else:
        with pytest.raises(expected):
            FAST.encode(event)


def test_an_unknown_type_raises_the_library_error() -> None:
    """A type without a transcoding is refused as the library refuses it."""
    with pytest.raises(TranscodingNotRegisteredError):
        FAST.encode({"value": object()})


def lines(first: int, count: int) -> list[str]:
    facts = generate_facts("hqip", 12, seed=11)
    return [json.dumps(fact) for fact in facts[first:first + count]]


POLICY = Path(__file__).resolve().parents[1] / "config" / "hqip.toml"


def adopted(ledger: Ledger) -> Ledger:
    ledger.adopt_policy(POLICY, datetime(2020, 1, 1, tzinfo=UTC))
    return ledger


def stored_states(store: SubjectStore) -> list[bytes]:
    return [n.state for n in store.recorder.select_notifications(1, 100_000)]


def test_the_store_writes_the_library_format(backend: Settings) -> None:
    """Every event an ingest stores is exactly what the library's transcoder writes for
    it: old code reads a new store."""
    with Ledger(backend) as ledger:
        adopted(ledger)
        assert isinstance(ledger.store.mapper.transcoder, FastJSONTranscoder)
        all_lines = lines(0, 10_000)
        assert ledger.ingest(all_lines, datetime.now(UTC)).ok
        states = stored_states(ledger.store)
    assert len(states) > len(all_lines) / 2
    for state in states:
        assert LIBRARY.encode(LIBRARY.decode(state)) == state


def test_a_store_written_by_the_library_encoder_replays_and_grows(
        backend: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store whose first half was written by the library's encoder (as every store
    before this transcoder): the rest ingests into it, every subject loads, the values open,
    and the audit chain verifies across both halves."""
    every = lines(0, 10_000)
    half = len(every) // 2
    with monkeypatch.context() as patched:
        patched.setattr(FastJSONTranscoder, "encode", JSONTranscoder.encode)
        with Ledger(backend) as ledger:
            adopted(ledger)
            assert ledger.ingest(every[:half], datetime.now(UTC)).ok
            old_states = stored_states(ledger.store)
    with Ledger(backend) as ledger:
        assert stored_states(ledger.store) == old_states
        report = ledger.ingest(every[half:], datetime.now(UTC))
        assert report.ok and report.accepted == len(every) - half
        assert verify(ledger.store, ledger.views).ok
        references = {json.loads(line)["subject"] for line in every}
        for reference in references:
            subject = ledger.subject(reference)
            for record in subject.records.values():
                if record.erased_at is None:
                    assert ledger.open_sealed(list(record.values)) is not None
        collected = [json.loads(line) for line in every]
        collected = [c for c in collected if c["type"] == "collected"]
        assert collected
        demo = ledger.subject(collected[0]["subject"])
        record = demo.records[collected[0]["record"]]
        if record.erased_at is None and not record.rectifications:
            assert ledger.open_sealed([record.values[0]]) == collected[0]["data"]
