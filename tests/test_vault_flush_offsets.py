"""New data keys flushed through the driver keep, row by row, the creation time the
table's insert would have written for that row, whatever the other keys of the same flush
were made at (ing2's flush spells each distinct time once)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

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
