"""A rotation while ingest runs: online, and no key is stored under a retiring epoch."""

from __future__ import annotations

import json
import subprocess
import sys

import sqlalchemy as sa

from lifecycle.store.vault import CURRENT, RETIRED, data_keys
from lifecycle.services.ledger import Ledger
from lifecycle.store.settings import Settings
from tests.facts_builder import collected, lines
from tests.processes import env_for, wait_for
from tests.test_rotation_crashes import NOW

FIRST, CHUNK = 100, 2000  # CHUNK: one ingest batch (lifecycle.services.ingest.BATCH_LINES)
CHUNKS = 15


def facts(start: int, stop: int) -> list[str]:
    return lines(collected(f"subscriber:on-{n}", "2024-01-01T09:00:00+00:00", "rec-1",
                           {"name": f"Online {n}"}, id=f"on-{n}") for n in range(start, stop))


def stored_keys(settings: Settings) -> int:
    engine = sa.create_engine(settings.vault_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count())
                                    .select_from(data_keys)).scalar_one())
    finally:
        engine.dispose()


def test_keys_stored_while_a_rotation_runs_end_under_the_new_epoch(backend: Settings) -> None:
    """An ingest process that started under epoch 0 keeps storing keys while another
    process rotates (it stored keys both before the switch, re-wrapped, and after it,
    wrapped under the new epoch at once): afterwards epoch 0 is retired, every key is
    wrapped under the new epoch and every value opens."""
    with Ledger(backend) as ledger:
        ledger.ingest(facts(0, FIRST), NOW)
    env = env_for(backend)
    ingest = subprocess.Popen([sys.executable, "-m", "lifecycle", "ingest", "-"], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert ingest.stdin is not None
    # An ingest reads its whole input before applying it in fact-time order: the file is
    # long enough that it is still storing keys, batch after batch, while the rotation runs.
    sent = FIRST + CHUNKS * CHUNK
    ingest.stdin.write("\n".join(facts(FIRST, sent)) + "\n")
    ingest.stdin.close()
    wait_for(lambda: stored_keys(backend) > FIRST, 120, "the ingest to store keys")
    rotate = subprocess.Popen([sys.executable, "-m", "lifecycle", "keys", "rotate", "--batch",
                               "10", "--json"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    out, err = rotate.communicate(timeout=120)
    assert rotate.returncode == 0, err
    assert ingest.wait(timeout=300) == 0, ingest.stderr.read() if ingest.stderr else ""
    rewrapped = json.loads(out)["rewrapped"]
    assert FIRST < rewrapped < sent, (rewrapped, sent)
    with Ledger(backend) as ledger:
        states = {e.epoch: e.state for e in ledger.vault.epochs()}
        assert states == {0: RETIRED, 1: CURRENT}
        with ledger.vault.engine.connect() as conn:
            epochs = dict(conn.execute(sa.select(data_keys.c.epoch, sa.func.count())
                                       .group_by(data_keys.c.epoch)).all())
        assert epochs == {1: sent}
        for n in (0, FIRST - 1, FIRST, rewrapped, sent - 1):
            view = ledger.subject_view(f"subscriber:on-{n}")
            assert view["records"][0]["data"] == {"name": f"Online {n}"}


def test_a_vault_written_before_epochs_opens_and_rotates(backend: Settings) -> None:
    """A vault from before epochs (no epoch column, no epochs table, no schema record)
    opens with its key, its keys count as epoch 0, and a rotation moves them all to epoch 1."""
    from lifecycle.services.rotation import rotate

    with Ledger(backend) as ledger:
        ledger.ingest(facts(0, 20), NOW)
    engine = sa.create_engine(backend.vault_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE lifecycle_data_keys DROP COLUMN epoch")
            for table in ("lifecycle_key_epochs", "lifecycle_vault_secrets",
                          "lifecycle_vault_schema"):
                conn.exec_driver_sql(f"DROP TABLE {table}")
    finally:
        engine.dispose()
    with Ledger(backend) as ledger:
        assert [(e.epoch, e.state) for e in ledger.vault.epochs()] == [(0, CURRENT)]
        assert ledger.subject_view("subscriber:on-3")["records"][0]["data"] == {
            "name": "Online 3"}
        report = rotate(backend, ledger.vault, ledger.store, NOW, "test")
        assert (report.old_epoch, report.new_epoch, report.rewrapped) == (0, 1, 20)
    with Ledger(backend) as ledger:
        assert ledger.subject_view("subscriber:on-19")["records"][0]["data"] == {
            "name": "Online 19"}
