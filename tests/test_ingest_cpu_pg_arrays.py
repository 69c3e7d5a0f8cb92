"""The PostgreSQL recorder sends the events' columns and the chain rows' as binary arrays it
builds itself: the server must get exactly the arrays psycopg would have sent for the same
lists. For any values (bigints over the whole int8 range, UUIDs, ASCII and other topics,
states of any bytes, empty ones included) each built array, cast as the recorder casts it,
is byte for byte (array_send) the array of the list psycopg dumps; and a value outside
int8 is refused, as the server refuses it. Real PostgreSQL.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent
from hypothesis import given, settings as hsettings, strategies as st

from lifecycle.store.postgres_recorder import bytea_array, event_columns, int8_array
from tests.conftest import require_postgres

INT8 = st.integers(-(2**63), 2**63 - 1)


@pytest.fixture(scope="module")
def server() -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(require_postgres(), autocommit=True) as connection:
        yield connection


def same_on_server(server: psycopg.Connection[Any], kind: str, ours: Any,
                   theirs: list[Any]) -> None:
    found = server.execute(f"SELECT array_send(%b::{kind}[]) = array_send(%b::{kind}[]), "
                           f"array_send(%b::{kind}[])", (ours, theirs, ours)).fetchone()
    assert found is not None and found[0] is True, (kind, bytes(found[1]) if found else None)


@hsettings(max_examples=150, deadline=None)
@given(st.lists(INT8, max_size=20), st.lists(st.binary(max_size=40), max_size=20))
def test_int8_and_bytea_arrays_are_psycopgs(server: psycopg.Connection[Any],
                                            numbers: list[int], blobs: list[bytes]) -> None:
    """bigint[] and bytea[] built here: the server holds what psycopg's lists give it."""
    same_on_server(server, "bigint", int8_array(numbers), numbers)
    same_on_server(server, "bytea", bytea_array(blobs), blobs)


topics = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1,
                 max_size=30) | st.text(st.characters(exclude_categories=["Cs"],
                                                      min_codepoint=1), min_size=1)


@hsettings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.uuids(), st.integers(1, 2**63 - 1), topics,
                          st.binary(max_size=60)), min_size=1, max_size=20),
       st.booleans())
def test_event_columns_are_psycopgs(server: psycopg.Connection[Any],
                                    events: list[tuple[uuid.UUID, int, str, bytes]],
                                    as_text: bool) -> None:
    """The events' four columns (ids as UUIDs or as text, one aggregate's events together
    or not): the server holds what psycopg's lists of the same values give it."""
    stored = [StoredEvent(str(o) if as_text else o, v, t, s) for o, v, t, s in events]
    ids, versions, names, states = event_columns(stored)
    same_on_server(server, "uuid", ids, [o for o, _, _, _ in events])
    same_on_server(server, "bigint", versions, [v for _, v, _, _ in events])
    same_on_server(server, "text", names, [t for _, _, t, _ in events])
    same_on_server(server, "bytea", states, [s for _, _, _, s in events])


def test_beyond_int8_is_refused() -> None:
    """A value outside int8 is refused before anything is sent."""
    with pytest.raises(struct.error):
        int8_array([2**63])
