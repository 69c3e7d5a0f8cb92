"""New data keys flushed through the driver keep, row by row, the creation time the
table's insert would have written for that row, whatever the other keys of the same flush
were made at (ing2's flush spells each distinct time once)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from lifecycle.store.settings import Settings
from lifecycle.store.vault import data_keys, open_vault

AT = datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
# The same instant at other offsets (equal to AT as datetimes, spelt apart on SQLite, which
# keeps a time's wall clock), and one at AT's wall clock elsewhere (another instant).
SAME_INSTANT = [AT.astimezone(timezone(timedelta(hours=2))),
                AT.astimezone(timezone(timedelta(hours=-9, minutes=-30)))]
SAME_WALL = AT.replace(tzinfo=timezone(timedelta(hours=5)))


def test_each_flushed_key_keeps_its_own_time_in_a_mixed_flush(backend: Settings) -> None:
    """Rule: in one flush, keys made at the same instant spelt at different offsets (and a
    key at the same wall clock elsewhere) each get the row the table's insert writes for
    their own time: on SQLite the same raw text, on PostgreSQL the same instant."""
    times = [AT, *SAME_INSTANT, SAME_WALL]
    vault = open_vault(backend)
    try:
        for n, at in enumerate(times):
            vault.key_for(f"flushed-{n}", "scope", at)
        vault.flush()
        with vault.engine.begin() as conn:
            conn.execute(data_keys.insert(), [
                {"key_id": f"{n:x<32}", "subject_id": f"inserted-{n}", "scope": "scope",
                 "wrapped": b"w", "created_at": at, "epoch": vault.epoch}
                for n, at in enumerate(times)])
        with vault.engine.connect() as conn:
            raw = dict(conn.exec_driver_sql(
                "SELECT subject_id, created_at FROM lifecycle_data_keys").all())
    finally:
        vault.engine.dispose()
    assert [raw[f"flushed-{n}"] for n in range(len(times))] == [
        raw[f"inserted-{n}"] for n in range(len(times))]


# Offsets PostgreSQL's text input does not take or that are rare: seconds, a microsecond
# (Python's timezone allows both); fold on both sides of a clock change; the year's ends.
ODD = [datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=5, minutes=30, seconds=15))),
       datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(microseconds=1))),
       datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone(-timedelta(hours=23, minutes=59,
                                                                  seconds=59, microseconds=1))),
       datetime(2024, 10, 27, 1, 30, fold=0, tzinfo=ZoneInfo("Europe/London")),
       datetime(2024, 10, 27, 1, 30, fold=1, tzinfo=ZoneInfo("Europe/London")),
       datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)]


def test_a_key_made_at_any_offset_is_flushed_as_the_table_insert_writes_it(
        backend: Settings) -> None:
    """Rule: a key made at an offset of seconds or microseconds, at either side of a clock
    change or at the calendar's ends, is flushed (not refused) with the row the table's
    insert writes for that time: the same raw text on SQLite, the same instant on
    PostgreSQL."""
    vault = open_vault(backend)
    try:
        for n, at in enumerate(ODD):
            vault.key_for(f"flushed-{n}", "scope", at)
            vault.flush()  # each alone: one refused time would hide the others
        with vault.engine.begin() as conn:
            conn.execute(data_keys.insert(), [
                {"key_id": f"{n:x<32}", "subject_id": f"inserted-{n}", "scope": "scope",
                 "wrapped": b"w", "created_at": at, "epoch": vault.epoch}
                for n, at in enumerate(ODD)])
        with vault.engine.connect() as conn:
            raw = dict(conn.exec_driver_sql(
                "SELECT subject_id, created_at FROM lifecycle_data_keys").all())
    finally:
        vault.engine.dispose()
    assert [raw[f"flushed-{n}"] for n in range(len(ODD))] == [
        raw[f"inserted-{n}"] for n in range(len(ODD))]
