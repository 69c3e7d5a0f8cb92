"""Marks of keys an erasure decided on: one per key, the latest decision's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from lifecycle.store.settings import Settings
from lifecycle.store.vault import Shred, open_vault

FIRST = datetime(2025, 7, 1, tzinfo=timezone(timedelta(hours=1)))
LATER = datetime(2025, 7, 2, 6, 30, tzinfo=UTC)
# An offset of seconds and microseconds, which PostgreSQL's text input does not take.
ODD = datetime(2025, 7, 3, 1, 2, 3, 456789,
               tzinfo=timezone(timedelta(hours=5, minutes=30, seconds=15, microseconds=7)))


def test_marking_a_key_again_replaces_its_mark(backend: Settings) -> None:
    """Rule: a key marked twice (a run redone after a crash) keeps one mark, the second
    one's subject, time and reason; the other marks of both runs stay, at their own time
    in UTC whatever offset the erasure was given at."""
    vault = open_vault(backend)
    try:
        vault.mark_doomed([Shred("s1", ["k1", "k2"], FIRST, "rule a (policy)")], FIRST)
        vault.mark_doomed([Shred("s1", ["k2"], LATER, "rule b (policy)"),
                           Shred("s3", ["k3"], LATER, "request r")], LATER)
        marks = {s.key_ids[0]: (s.subject_id, s.at, s.by) for s in vault.doomed()}
    finally:
        vault.engine.dispose()
    assert marks == {"k1": ("s1", FIRST, "rule a (policy)"),
                     "k2": ("s1", LATER, "rule b (policy)"),
                     "k3": ("s3", LATER, "request r")}
    assert all(at.utcoffset() == timedelta(0) for _, at, _ in marks.values())


def test_a_mark_keeps_the_erasure_instant_at_any_offset(backend: Settings) -> None:
    """Rule: a mark keeps the instant its erasure was decided at, whatever offset (of
    seconds or microseconds too) it was given at; read back in UTC."""
    vault = open_vault(backend)
    try:
        vault.mark_doomed([Shred("s1", ["k1"], ODD, "rule a (policy)")], ODD)
        (mark,) = vault.doomed()
    finally:
        vault.engine.dispose()
    assert mark.at == ODD and mark.at.utcoffset() == timedelta(0)
