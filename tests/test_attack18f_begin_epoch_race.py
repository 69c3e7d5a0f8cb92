"""attack18f: a second `begin_epoch` (another rotation's switch) racing a first on
PostgreSQL. The second's `SELECT ... WHERE state='current' FOR UPDATE` waits on epoch 0's
row; once the first commits, that row is 'retiring' and the new current row is not in the
statement's snapshot, so the query yields no row and `.one()` raises NoResultFound instead
of RotationOvertaken (which `_rotate` turns into RotationBusy and uses to remove its
unused next-key file)."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from lifecycle.services.ledger import Ledger
from lifecycle.store.master_key import key_check_value
from lifecycle.store.settings import Settings
from lifecycle.store.vault import CURRENT, RETIRING, RotationOvertaken, key_epochs


@pytest.fixture
def pg_ledger(postgres_database: str, tmp_path: Path) -> Ledger:
    home = tmp_path / "home"
    settings = Settings(home=home, database_url=postgres_database, master_key=None,
                        master_key_file=home / "master.key")
    return Ledger(settings)


def test_begin_epoch_waiting_on_a_switch_is_overtaken(pg_ledger: Ledger) -> None:
    """Rule: a rotation whose begin_epoch waited on another's epoch switch is told it was
    overtaken (RotationOvertaken), never an unexpected database error."""
    with pg_ledger as ledger:
        vault = ledger.vault
        assert vault.epoch == 0
        other_key = os.urandom(32)
        raised: list[BaseException | None] = []
        with vault.engine.connect() as switch:
            with switch.begin():
                switch.execute(sa.select(key_epochs).where(key_epochs.c.state == CURRENT)
                               .with_for_update())
                switch.execute(key_epochs.update().where(key_epochs.c.epoch == 0)
                               .values(state=RETIRING))
                switch.execute(key_epochs.insert().values(
                    epoch=1, key_check=key_check_value(other_key), fingerprint="test",
                    state=CURRENT, created_at=datetime.now(UTC), created_by="test",
                    rewrapped=0))

                def second_rotation() -> None:
                    try:
                        vault.begin_epoch(os.urandom(32), datetime.now(UTC), "t2", after=0)
                        raised.append(None)
                    except BaseException as error:  # noqa: BLE001
                        raised.append(error)

                waiting = threading.Thread(target=second_rotation)
                waiting.start()
                time.sleep(1.0)
                assert not raised, "the second begin_epoch must wait for the switch"
            waiting.join(timeout=30)
        assert len(raised) == 1
        assert isinstance(raised[0], RotationOvertaken), repr(raised[0])


def _race_begin_epoch(vault) -> BaseException | None:
    """Holds another rotation's switch (epoch 0 retiring, 1 current) open for a second
    while this vault's begin_epoch(after=0) runs; returns what begin_epoch raised."""
    other_key = os.urandom(32)
    raised: list[BaseException | None] = []
    with vault.engine.connect() as switch:
        with switch.begin():
            switch.execute(key_epochs.update().where(key_epochs.c.epoch == 0)
                           .values(state=RETIRING))
            switch.execute(key_epochs.insert().values(
                epoch=1, key_check=key_check_value(other_key), fingerprint="test",
                state=CURRENT, created_at=datetime.now(UTC), created_by="test",
                rewrapped=0))

            def second_rotation() -> None:
                try:
                    vault.begin_epoch(os.urandom(32), datetime.now(UTC), "t2", after=0)
                    raised.append(None)
                except BaseException as error:  # noqa: BLE001
                    raised.append(error)

            waiting = threading.Thread(target=second_rotation)
            waiting.start()
            time.sleep(1.0)
            assert not raised, "the second begin_epoch must wait for the switch"
        waiting.join(timeout=30)
    assert len(raised) == 1
    return raised[0]


def test_sqlite_begin_epoch_waiting_on_a_switch_is_overtaken(sqlite_settings: Settings) -> None:
    """Rule (held on SQLite): begin_epoch takes the write lock before reading, so one
    waiting on another's switch reads the switched epochs and is overtaken; the epochs
    stay as the first switch left them."""
    with Ledger(sqlite_settings) as ledger:
        vault = ledger.vault
        error = _race_begin_epoch(vault)
        assert isinstance(error, RotationOvertaken), repr(error)
        states = {e.epoch: e.state for e in vault.epochs()}
        assert states == {0: RETIRING, 1: CURRENT}
