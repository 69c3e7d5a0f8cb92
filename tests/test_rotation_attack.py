"""Attacks on the pipelined re-wrap: an erasure between a range's read and its store, a
reader that raises, hostile key ids in the one-string batch, an erasure locking keys
while a batch stores them.

Real stores (a SQLite file, a fresh PostgreSQL database); keys are written straight into
the vault under epoch 0, as the rotation benchmark does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lifecycle.services import rotation
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from lifecycle.store.vault import KeyVault, RewrapBatch, data_keys
from tests.processes import wait_for
from tests.test_rotation_pacing import FakePacer, postgres_at, put, ranges_of
from tests.test_rotation_rewrap import NOW, fill, stored


def test_a_key_destroyed_after_its_range_was_read_stays_destroyed(backend: Settings) -> None:
    """A key destroyed (erased) after its range was read and wrapped under the new epoch,
    before that batch is stored, stays destroyed: the store brings no wrapping back."""
    with Ledger(backend) as ledger:
        vault = ledger.vault
        secrets = fill(ledger, 50)
        vault.begin_epoch(AESGCM.generate_key(bit_length=256), NOW, "test")
        end, _ = vault.rewrap_extent(0)
        batches = vault.read_rewrap(0, 1, 0, end, 20)
        victims = list(secrets)[::7]
        assert vault.destroy(victims, NOW, "erasure") == len(victims)
        for one in batches:
            vault.apply_rewrap(one)
        after = stored(ledger)
        for key_id in victims:
            assert after[key_id] == (None, 0)
        assert vault.live_keys_under(0) == 0
        assert vault.live_keys_under(1) == len(secrets) - len(victims)


def test_a_reader_that_raises_stops_the_rotation_with_its_error_and_no_hang(
        backend: Settings) -> None:
    """A read of a range that raises (in the reader thread on PostgreSQL) ends `_paced`
    with that error, promptly; what was stored is stored whole (each key under one epoch,
    opening), and the next run finishes the rest."""
    with Ledger(backend) as ledger:
        vault = ledger.vault
        secrets = fill(ledger, 200)
        vault.begin_epoch(AESGCM.generate_key(bit_length=256), NOW, "test")
        ranges = ranges_of(vault, 40)
        read = vault.read_rewrap
        calls = []

        def read_rewrap(old: int, new: int, start: int, stop: int,
                        limit: int | None = None) -> list[RewrapBatch]:
            calls.append(start)
            if len(calls) == 3:
                raise RuntimeError("reader failed")
            return read(old, new, start, stop, limit)

        vault.read_rewrap = read_rewrap  # type: ignore[method-assign]
        began = time.monotonic()
        with pytest.raises(RuntimeError, match="reader failed"):
            rotation._paced(vault, 0, 1, ranges, 40, FakePacer(False))
        assert time.monotonic() - began < 20
        del vault.read_rewrap
        assert 0 < vault.live_keys_under(0) < 200
        rotation._paced(vault, 0, 1, ranges_of(vault, 40), 40, FakePacer(False))
        after = stored(ledger)
        for key_id, secret in secrets.items():
            wrapped, epoch = after[key_id]
            assert epoch == 1 and wrapped is not None
            assert vault._unwrap(key_id, wrapped, 1) == secret


@pytest.mark.parametrize("key_id", ["", "x", " ", "a,b", "'q\"", "é ü", "\u00a0", "\\"])
def test_a_lone_key_of_any_id_is_rewrapped(backend: Settings, key_id: str) -> None:
    """A batch of one key is re-wrapped whatever its id (empty, a space, a comma, quotes,
    unicode, a backslash): no live key is left under the old epoch (a rotation would pass
    over the table again and again)."""
    with Ledger(backend) as ledger:
        vault = ledger.vault
        secret = AESGCM.generate_key(bit_length=256)
        put(vault, {key_id: secret}, 0)
        vault.begin_epoch(AESGCM.generate_key(bit_length=256), NOW, "test")
        end, live = vault.rewrap_extent(0)
        assert live == 1
        assert vault.rewrap_range(0, 1, 0, end, 20) == 1
        wrapped, epoch = stored(ledger)[key_id]
        assert epoch == 1 and wrapped is not None
        assert vault._unwrap(key_id, wrapped, 1) == secret


@pytest.mark.parametrize("ids", [["", "a"], ["a", ""], ["", ""], ["a", "", "b"],
                                 ["é", "ü", "\u3000"]])
def test_batches_of_hostile_ids_are_rewrapped(backend: Settings, ids: list[str]) -> None:
    """Batches whose ids are empty, or unicode: every key ends under the new epoch."""
    ids = list(dict.fromkeys(ids))
    with Ledger(backend) as ledger:
        vault = ledger.vault
        secrets = {key_id: AESGCM.generate_key(bit_length=256) for key_id in ids}
        put(vault, secrets, 0)
        vault.begin_epoch(AESGCM.generate_key(bit_length=256), NOW, "test")
        end, _ = vault.rewrap_extent(0)
        assert vault.rewrap_range(0, 1, 0, end, 20) == len(ids)
        assert vault.live_keys_under(0) == 0


def waiting_on_locks(vault: KeyVault) -> int:
    with vault.engine.connect() as conn:
        return int(conn.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'")).scalar_one())


def test_an_erasure_of_keys_a_rewrap_batch_is_storing_waits_and_succeeds(
        postgres_database: str, tmp_path: Path) -> None:
    """On PostgreSQL an erasure destroying several keys (in one transaction, in any
    order) while a re-wrap batch is storing them is not refused (no deadlock between
    the two): it waits for the batch, then destroys them; they stay destroyed."""
    with Ledger(postgres_at(postgres_database, tmp_path / "home")) as ledger:
        vault = ledger.vault
        keys = list(fill(ledger, 150))
        first, middle, last = keys[0], keys[75], keys[149]  # in the table's order
        vault.begin_epoch(AESGCM.generate_key(bit_length=256), NOW, "test")
        end, _ = vault.rewrap_extent(0)
        [batch] = vault.read_rewrap(0, 1, 0, end, 1000)
        errors: list[BaseException] = []

        def run(work: Callable[[], object]) -> threading.Thread:
            def body() -> None:
                try:
                    work()
                except BaseException as error:  # noqa: BLE001 - reported below
                    errors.append(error)
            thread = threading.Thread(target=body)
            thread.start()
            return thread

        with vault.engine.connect() as holder:
            holder.execute(sa.select(data_keys.c.key_id).where(data_keys.c.key_id == middle)
                           .with_for_update())
            store = run(lambda: vault.apply_rewrap(batch))  # locks `first`, waits on `middle`
            wait_for(lambda: waiting_on_locks(vault) == 1, 30, "the store to wait")
            erasure = run(lambda: vault.destroy_all([([last], NOW, "erasure 1"),
                                                     ([first], NOW, "erasure 2")]))
            wait_for(lambda: waiting_on_locks(vault) == 2, 30, "the erasure to wait")
            holder.rollback()
        store.join(30)
        erasure.join(30)
        assert errors == []
        after = stored(ledger)
        assert after[first][0] is None and after[last][0] is None
        assert vault.live_keys_under(0) == 0
        assert vault.live_keys_under(1) == 148
