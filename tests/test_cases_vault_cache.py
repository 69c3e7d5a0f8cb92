"""The vault's unwrapped-key cache is bounded (least recently used first) and never drops
a key not stored yet; a reader that checks on open sees a key destroyed elsewhere."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lifecycle.store import vault as vault_module
from lifecycle.store.vault import open_vault
from lifecycle.domain.errors import KeyDestroyed
from lifecycle.store.settings import Settings

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def test_the_key_cache_is_bounded_and_keeps_unstored_keys(
        sqlite_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening values under 50 keys with a bound of 10 keeps at most 10 unwrapped keys,
    every value still opens (read again from the vault), and keys created but not yet
    stored survive any trim."""
    monkeypatch.setattr(vault_module, "CIPHER_CACHE", 10)
    vault = open_vault(sqlite_settings)
    sealed = []
    for n in range(50):
        key_id = vault.key_for(f"s-{n}", "r", NOW)
        sealed.append(vault.seal(key_id, {"n": n}))
    vault.flush()
    vault.forget_loaded()
    assert [vault.open(v)["n"] for v in sealed] == list(range(50))
    assert len(vault._ciphers) <= 10
    unstored = [vault.key_for(f"new-{n}", "r", NOW) for n in range(20)]
    values = [vault.seal(k, n) for n, k in enumerate(unstored)]
    for v in sealed:
        vault.open(v)
    assert [vault.open(v) for v in values] == list(range(20))
    vault.engine.dispose()


def test_a_checking_reader_sees_a_key_destroyed_by_another_vault(
        sqlite_settings: Settings) -> None:
    """Two vaults on one store (two processes): the reader opened a value, the other
    destroys the key; with check_destroyed_on_open the reader's next open raises."""
    writer = open_vault(sqlite_settings)
    key_id = writer.key_for("s-1", "r", NOW)
    value = writer.seal(key_id, "x")
    writer.flush()
    reader = open_vault(sqlite_settings)
    reader.check_destroyed_on_open = True
    assert reader.open(value) == "x"
    writer.destroy([key_id], NOW, "test")
    with pytest.raises(KeyDestroyed):
        reader.open(value)
    writer.engine.dispose()
    reader.engine.dispose()
