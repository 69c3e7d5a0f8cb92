"""The vault's faster paths write what the slower ones did. New data keys reach the vault
through the driver (one JSON array on PostgreSQL, the driver's executemany on SQLite), not
the table's insert: the rows must be the rows that insert would have written, and the keys
must open what they sealed. Values are sealed as orjson spells them: they must open to
what json's spelling opened to."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings as hsettings, strategies as st
import sqlalchemy as sa

from lifecycle.store.settings import Settings
from lifecycle.store.vault import KeyVault, data_keys, metadata, open_vault

AT = datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
ELSEWHERE = datetime(2025, 3, 4, 7, 6, 7, tzinfo=timezone(timedelta(hours=2)))
_ENGINE = sa.create_engine("sqlite://")
metadata.create_all(_ENGINE)
_VAULT = KeyVault(_ENGINE, bytes(32))
_KEY = _VAULT.key_for("subject", "scope", AT)


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


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
    | st.text(), lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


@given(_JSON_VALUES)
@hsettings(max_examples=300, deadline=None)
def test_a_sealed_value_opens_as_json_would_have_sealed_it(value: object) -> None:
    """A value is sealed as orjson spells it when it can: it opens to what json's own
    spelling (the one sealed before) opens to, for any JSON value: non-ASCII text, lone
    surrogates, NaN, big integers and nested keys included."""
    expected = json.loads(json.dumps(value, separators=(",", ":"), sort_keys=True))
    opened = _VAULT.open(_VAULT.seal(_KEY, value))
    assert json.dumps(opened, sort_keys=True) == json.dumps(expected, sort_keys=True)


def test_what_json_refuses_to_seal_stays_refused() -> None:
    """A datetime (never a fact's value) is refused as json refuses it."""
    with pytest.raises(TypeError):
        _VAULT.seal(_KEY, {"at": AT})
