"""`extend` builds its chain rows with tuple.__new__ (not the NamedTuple's Python __new__):
each is still a ChainRow, field for field the one ChainRow(...) builds, for any batch
(originators as UUIDs, hex or text, repeated or not, positions not contiguous)."""

from __future__ import annotations

from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eventsourcing.persistence import StoredEvent
from hypothesis import given, settings as hsettings, strategies as st

from lifecycle.store.event_chain import ChainRow, Tail, extend, prepare
from lifecycle.store.signing_key import Signer

SIGNER = Signer(Ed25519PrivateKey.from_private_bytes(bytes(32)), "test")


@hsettings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3), st.sampled_from(["uuid", "hex", "text"]),
                          st.binary(max_size=20)), min_size=1, max_size=12),
       st.integers(1, 2**40), st.integers(1, 5))
def test_rows_are_chain_rows(batch: list[tuple[int, str, bytes]], start: int,
                             step: int) -> None:
    """Every row: a ChainRow, its fields those ChainRow(...) of the same values has."""
    versions: dict[int, int] = {}
    events = []
    for who, spelling, state in batch:
        versions[who] = versions.get(who, 0) + 1
        uuid = UUID(int=who)
        originator: UUID | str = (uuid if spelling == "uuid" else
                                  uuid.hex if spelling == "hex" else str(uuid))
        events.append(StoredEvent(originator, versions[who], "a:Done", state))
    pending = prepare(events)
    positions = [start + n * step for n in range(len(events))]
    rows, checkpoint = extend(pending, positions, None, SIGNER, Tail(0, 0))
    assert len(rows) == len(events) and checkpoint.position == positions[-1]
    for row, position in zip(rows, positions, strict=True):
        assert type(row) is ChainRow
        rebuilt = ChainRow(*row)
        assert row == rebuilt and row._asdict() == rebuilt._asdict()
        assert row.position == position and type(row.position) is int
