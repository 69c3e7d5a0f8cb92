"""How a rotation re-wraps: ranges of the table in several threads, each key once, in
place on PostgreSQL.

Real stores (a SQLite file, a fresh PostgreSQL database); keys are written straight into
the vault under epoch 0, as the rotation benchmark does.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings as hypothesis_settings
from hypothesis import strategies as st

from lifecycle.services.ledger import Ledger
from lifecycle.services.rotation import rotate
from lifecycle.store.settings import Settings
from lifecycle.store.vault import FILLFACTOR, RETIRED, create_vault_engine, data_keys

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def fill(ledger: Ledger, count: int) -> dict[str, bytes]:
    """`count` live keys under epoch 0, written as the vault writes them: key id -> secret."""
    vault = ledger.vault
    secrets = {uuid.uuid4().hex: AESGCM.generate_key(bit_length=256) for _ in range(count)}
    rows = [{"key_id": key_id, "subject_id": str(uuid.uuid4()), "scope": "s",
             "wrapped": vault._wrap(key_id, secret, 0), "created_at": NOW, "epoch": 0}
            for key_id, secret in secrets.items()]
    if rows:
        with vault.engine.begin() as conn:
            conn.execute(data_keys.insert(), rows)
    return secrets


def stored(ledger: Ledger) -> dict[str, tuple[bytes | None, int]]:
    with ledger.vault.engine.connect() as conn:
        return {k: (w, e) for k, w, e in conn.execute(
            sa.select(data_keys.c.key_id, data_keys.c.wrapped, data_keys.c.epoch))}


def pages(ledger: Ledger) -> int:
    with ledger.vault.engine.connect() as conn:
        return int(conn.execute(sa.text(
            "SELECT pg_relation_size('lifecycle_data_keys') / "
            "current_setting('block_size')::int")).scalar_one())


def sqlite_at(home: Path) -> Settings:
    return Settings(home=home, database_url=None, master_key=None,
                    master_key_file=home / "master.key")


@hypothesis_settings(max_examples=8, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(count=st.integers(0, 300), batch=st.integers(1, 120), workers=st.integers(1, 4),
       destroy=st.sets(st.integers(0, 299), max_size=60))
def test_every_live_key_is_rewrapped_once_whatever_the_batch_and_workers(
        tmp_path_factory: pytest.TempPathFactory, count: int, batch: int, workers: int,
        destroy: set[int]) -> None:
    """Whatever the number of keys, the batch size and the threads, a rotation leaves every
    live key under the new epoch, opening to the same secret, counts each exactly once,
    and leaves every destroyed key destroyed."""
    settings = sqlite_at(tmp_path_factory.mktemp("rewrap") / "home")
    with Ledger(settings) as ledger:
        secrets = fill(ledger, count)
        doomed = [k for n, k in enumerate(secrets) if n in destroy]
        ledger.vault.destroy(doomed, NOW, "test")
        report = rotate(settings, ledger.vault, ledger.store, NOW, "test", batch, workers)
        assert report.rewrapped == count - len(doomed) == report.live_keys
        after = stored(ledger)
        for key_id, secret in secrets.items():
            wrapped, epoch = after[key_id]
            if key_id in doomed:
                assert wrapped is None
                continue
            assert epoch == report.new_epoch
            assert wrapped is not None
            assert ledger.vault._unwrap(key_id, wrapped, epoch) == secret
        assert {e.epoch: e.state for e in ledger.vault.epochs()}[0] == RETIRED


def test_a_range_denser_than_its_share_is_rewrapped_in_transactions_of_at_most_batch(
        backend: Settings) -> None:
    """A range is re-wrapped `limit` keys per transaction: a range of 50 keys with limit
    7 re-wraps all 50 (8 transactions), and a second run over it finds none left."""
    with Ledger(backend) as ledger:
        fill(ledger, 50)
        vault = ledger.vault
        vault.begin_epoch(AESGCM.generate_key(bit_length=256), NOW, "test")
        end, live = vault.rewrap_extent(0)
        assert live == 50
        commits: list[int] = []
        sa.event.listen(vault.engine, "commit", lambda conn: commits.append(1))
        assert vault.rewrap_range(0, 1, 0, end, 7) == 50
        assert len(commits) == 8
        assert vault.rewrap_range(0, 1, 0, end, 7) == 0
        assert vault.live_keys_under(0) == 0


def test_postgres_rewraps_each_key_in_place(postgres_database: str, tmp_path: Path) -> None:
    """On PostgreSQL a rotation writes each key's new row version on the key's own page (a
    HOT update: no index entry, no new page): the table has no more pages after the
    rotation than before, though every key on every page was re-wrapped. (With pages
    filled to 70%, as before, a third of the keys moved and the table grew by half.)"""
    settings = Settings(home=tmp_path / "home", database_url=postgres_database,
                        master_key=None, master_key_file=tmp_path / "home" / "master.key")
    with Ledger(settings) as ledger:
        fill(ledger, 3000)
        before = pages(ledger)
        report = rotate(settings, ledger.vault, ledger.store, NOW, "test", 500, 2)
        assert report.rewrapped == 3000
        assert pages(ledger) <= before


def test_a_postgres_table_filled_to_70_percent_is_moved_to_the_new_fillfactor(
        postgres_database: str) -> None:
    """A vault table made with fillfactor 70 (before, so with no schema record either) is
    set to FILLFACTOR when opened; one an operator set otherwise is left as it is."""
    engine = create_vault_engine(postgres_database)
    try:
        def options() -> list[str] | None:
            with engine.connect() as conn:
                return conn.execute(sa.text(  # type: ignore[no-any-return]
                    "SELECT reloptions FROM pg_class WHERE relname = 'lifecycle_data_keys'"
                )).scalar()

        assert options() == [f"fillfactor={FILLFACTOR}"]
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE lifecycle_data_keys SET (fillfactor = 70)"))
            conn.execute(sa.text("DROP TABLE lifecycle_vault_schema"))
        create_vault_engine(postgres_database).dispose()
        assert options() == [f"fillfactor={FILLFACTOR}"]
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE lifecycle_data_keys SET (fillfactor = 90)"))
            conn.execute(sa.text("DROP TABLE lifecycle_vault_schema"))
        create_vault_engine(postgres_database).dispose()
        assert options() == ["fillfactor=90"]
    finally:
        engine.dispose()
