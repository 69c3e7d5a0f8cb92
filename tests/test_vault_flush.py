"""New data keys reach the vault through the driver (one JSON array on PostgreSQL, the
driver's executemany on SQLite), not the table's insert: the rows must be the rows that
insert would have written, and the keys must open what they sealed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from lifecycle.store.settings import Settings
from lifecycle.store.vault import data_keys, open_vault

AT = datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
ELSEWHERE = datetime(2025, 3, 4, 7, 6, 7, tzinfo=timezone(timedelta(hours=2)))


def test_flushed_keys_are_the_rows_the_table_insert_writes(backend: Settings) -> None:
    """Each flushed key's row reads back, raw (the driver's value, no type processing), as
    the same row written by the table's insert: the same time text on SQLite, the same
    instant on PostgreSQL, for a UTC time and one at another offset; the epoch is the
    vault's; nothing is destroyed; and a vault that reads the keys back opens the values
    sealed under them."""
    vault = open_vault(backend)
    try:
        sealed = {scope: vault.seal(vault.key_for("subject-1", scope, at), {"scope": scope})
                  for scope, at in (("utc", AT), ("offset", ELSEWHERE))}
        vault.flush()
        with vault.engine.begin() as conn:
            conn.execute(data_keys.insert(), [
                {"key_id": f"{scope:x<32}", "subject_id": "subject-2", "scope": scope,
                 "wrapped": b"w", "created_at": at, "epoch": vault.epoch}
                for scope, at in (("utc", AT), ("offset", ELSEWHERE))])
        with vault.engine.connect() as conn:
            raw = conn.exec_driver_sql(
                "SELECT subject_id, scope, created_at, epoch, destroyed_at, destroyed_by, "
                "wrapped FROM lifecycle_data_keys").all()
        by_subject = {(r[0], r[1]): r for r in raw}
        for scope in ("utc", "offset"):
            flushed, inserted = by_subject[("subject-1", scope)], by_subject[("subject-2", scope)]
            assert flushed[2:6] == inserted[2:6]
            assert isinstance(flushed[6], bytes | memoryview) and len(bytes(flushed[6])) > 32
        vault.forget_loaded()
        vault._ciphers.clear()
        assert {scope: vault.open(value)["scope"] for scope, value in sealed.items()} == {
            "utc": "utc", "offset": "offset"}
    finally:
        vault.engine.dispose()
