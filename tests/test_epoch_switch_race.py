"""Keys flushed while a rotation switches the current epoch are wrapped under the new
epoch, never under the one being retired (PostgreSQL: the flush's statement waits on the
old epoch's row, which the switch moves out of "current", while the new row is not in the
statement's snapshot; the flush once fell back to this process's own, retiring epoch, and
the rotation then left those keys behind: a suite run found 1,500 live keys under a
retired epoch's predecessor)."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from lifecycle.store.master_key import key_check_value
from lifecycle.store.vault import CURRENT, RETIRING, key_epochs


@pytest.fixture
def pg_ledger(postgres_database: str, tmp_path: object) -> Ledger:
    from pathlib import Path

    home = Path(str(tmp_path)) / "home"
    settings = Settings(home=home, database_url=postgres_database, master_key=None,
                        master_key_file=home / "master.key")
    return Ledger(settings)


def test_a_flush_waiting_on_an_epoch_switch_takes_the_new_epoch(pg_ledger: Ledger) -> None:
    """A rotation's switch holds the current epoch's row; a flush started meanwhile waits,
    and once the switch commits it reads the new current epoch (1), not the retiring one
    (0) this process still holds."""
    with pg_ledger as ledger:
        vault = ledger.vault
        assert vault.epoch == 0
        new_key = os.urandom(32)
        vault._epoch_keys[1] = new_key  # as the rotating process holds it
        read: list[int] = []
        with vault.engine.connect() as switch:
            with switch.begin():
                switch.execute(sa.select(key_epochs).where(key_epochs.c.state == CURRENT)
                               .with_for_update())
                switch.execute(key_epochs.update().where(key_epochs.c.epoch == 0)
                               .values(state=RETIRING))
                switch.execute(key_epochs.insert().values(
                    epoch=1, key_check=key_check_value(new_key), fingerprint="test",
                    state=CURRENT,
                    created_at=datetime.now(UTC), created_by="test", rewrapped=0))

                def flush_side() -> None:
                    with vault.engine.begin() as conn:
                        read.append(vault._lock_current_epoch(conn))

                waiting = threading.Thread(target=flush_side)
                waiting.start()
                time.sleep(1.0)  # the flush's statement now waits on epoch 0's row
                assert not read, "the flush must wait for the switch"
            waiting.join(timeout=30)
        assert read == [1]
