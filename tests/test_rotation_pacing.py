"""How a rotation with one worker shares the machine: pipelined alone, range by range with
pauses while others write; and the batch statements whatever the keys look like.

Real stores (a SQLite file, a fresh PostgreSQL database); keys are written straight into
the vault under epoch 0, as the rotation benchmark does.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import sqlalchemy as sa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lifecycle.services import rotation
from lifecycle.services.ledger import Ledger
from lifecycle.services.rotation import (YIELD_HOLD_S, YIELD_PAUSE, YIELD_SPAN, Pacer,
                                         rotate)
from lifecycle.store.settings import Settings
from lifecycle.store.vault import KeyVault, RewrapBatch, data_keys
from tests.facts_builder import collected, lines
from tests.test_rotation_rewrap import NOW, fill, stored


class FakePacer(Pacer):
    def __init__(self, writing: bool) -> None:
        self.writing = writing

    def others_writing(self) -> bool:
        return self.writing


def ranges_of(vault: KeyVault, batch: int) -> list[tuple[int, int]]:
    end, live = vault.rewrap_extent(0)
    step = max(1, end * batch // live)
    return [(start, min(start + step, end)) for start in range(0, end, step)]


def logged(vault: KeyVault, log: list[str], before_apply: threading.Event | None = None,
           read_ahead: threading.Event | None = None) -> None:
    """Logs each read and apply of `vault` (instance attributes shadow the methods)."""
    read, apply = vault.read_rewrap, vault.apply_rewrap

    def read_rewrap(old: int, new: int, start: int, stop: int,
                    limit: int | None = None) -> list[RewrapBatch]:
        found = read(old, new, start, stop, limit)
        log.append(f"read {start}")
        if read_ahead is not None and start > 0:
            read_ahead.set()
        return found

    def apply_rewrap(batch: RewrapBatch) -> int:
        if before_apply is not None and batch.start == 0:
            log.append(f"ahead {before_apply.wait(timeout=30)}")
        log.append(f"apply {batch.start}")
        return apply(batch)

    vault.read_rewrap = read_rewrap  # type: ignore[method-assign]
    vault.apply_rewrap = apply_rewrap  # type: ignore[method-assign]


def test_the_pacer_sees_others_write_while_the_event_log_moves_and_a_hold_after(
        backend: Settings) -> None:
    """Others write while the event log's high-water mark moves, and until YIELD_HOLD_S
    after it last moved; not before anything moved, not after the hold."""
    clock = [100.0]
    with Ledger(backend) as ledger:
        pacer = Pacer(ledger.store, lambda: clock[0])
        assert not pacer.others_writing()
        ledger.ingest(lines([collected("subscriber:pace-1", "2024-01-01T09:00:00+00:00",
                                       "rec-1", {"name": "P"}, id="pace-1")]), NOW)
        assert pacer.others_writing()
        clock[0] += YIELD_HOLD_S / 2
        assert pacer.others_writing()
        clock[0] += YIELD_HOLD_S / 2
        assert not pacer.others_writing()


def test_the_pacer_holds_longer_for_a_writer_that_moves_the_log_seldom(
        backend: Settings) -> None:
    """A writer whose batches land 10 s apart (a slow ingest) is still seen between them:
    the hold after a move is YIELD_SPAN times the last gap between moves (here 15 s)."""
    clock = [100.0]
    with Ledger(backend) as ledger:
        pacer = Pacer(ledger.store, lambda: clock[0])
        for n in range(2):
            ledger.ingest(lines([collected(f"subscriber:slow-{n}", "2024-01-01T09:00:00+00:00",
                                           "rec-1", {"name": "S"}, id=f"slow-{n}")]), NOW)
            assert pacer.others_writing()
            clock[0] += 10
        assert YIELD_SPAN * 10 > 10 + YIELD_HOLD_S
        assert pacer.others_writing()  # 10 s after the last move: within 15
        clock[0] += YIELD_SPAN * 10 - 10
        assert not pacer.others_writing()


def test_while_others_write_each_range_is_read_then_stored_then_paused(
        backend: Settings) -> None:
    """While the pacer sees others write, a range is read only after the one before is
    stored (no read ahead), and after each range the rotation sleeps YIELD_PAUSE times
    the range's time; every key ends under the new epoch."""
    with Ledger(backend) as ledger:
        vault = ledger.vault
        secrets = fill(ledger, 200)
        vault.begin_epoch(AESGCM.generate_key(bit_length=256), NOW, "test")
        ranges = ranges_of(vault, 40)
        assert len(ranges) >= 4
        log: list[str] = []
        logged(vault, log)
        slept: list[float] = []
        rotation._paced(vault, 0, 1, ranges, 40, FakePacer(True), slept.append)
        assert log == [f"{verb} {start}" for start, _ in ranges for verb in ("read", "apply")]
        assert len(slept) == len(ranges) and all(s > 0 for s in slept)
        assert YIELD_PAUSE > 0
        assert {k: e for k, (_, e) in stored(ledger).items()} == dict.fromkeys(secrets, 1)


def postgres_at(url: str, home: Path) -> Settings:
    return Settings(home=home, database_url=url, master_key=None,
                    master_key_file=home / "master.key")


def test_alone_on_postgres_the_next_range_is_read_while_one_is_stored(
        postgres_database: str, tmp_path: Path) -> None:
    """Alone, on PostgreSQL, the next range is read and wrapped while the range before
    is being stored (its store waits until the read ahead is done), with no pause."""
    with Ledger(postgres_at(postgres_database, tmp_path / "home")) as ledger:
        vault = ledger.vault
        fill(ledger, 200)
        vault.begin_epoch(AESGCM.generate_key(bit_length=256), NOW, "test")
        ranges = ranges_of(vault, 40)
        log: list[str] = []
        ahead = threading.Event()
        logged(vault, log, before_apply=ahead, read_ahead=ahead)
        slept: list[float] = []
        rotation._paced(vault, 0, 1, ranges, 40, FakePacer(False), slept.append)
        assert "ahead True" in log
        assert log.index(f"read {ranges[1][0]}") < log.index("apply 0")
        assert slept == []
        assert vault.live_keys_under(0) == 0


def test_alone_on_postgres_stores_run_at_once_and_each_key_is_rewrapped(
        postgres_database: str, tmp_path: Path) -> None:
    """Alone, on PostgreSQL, STORES batches are stored at once (the first store is still
    open when the second begins), and every key still ends under the new epoch, opening
    to its secret."""
    assert rotation.STORES >= 2
    with Ledger(postgres_at(postgres_database, tmp_path / "home")) as ledger:
        vault = ledger.vault
        secrets = fill(ledger, 200)
        vault.begin_epoch(AESGCM.generate_key(bit_length=256), NOW, "test")
        ranges = ranges_of(vault, 40)
        second = threading.Event()
        overlapped: list[bool] = []
        apply = vault.apply_rewrap

        def apply_rewrap(batch: RewrapBatch) -> int:
            if batch.start == 0:
                overlapped.append(second.wait(timeout=30))
            elif batch.start == ranges[1][0]:
                second.set()
            return apply(batch)

        vault.apply_rewrap = apply_rewrap  # type: ignore[method-assign]
        rotation._paced(vault, 0, 1, ranges, 40, FakePacer(False))
        assert overlapped == [True]
        after = stored(ledger)
        for key_id, secret in secrets.items():
            wrapped, epoch = after[key_id]
            assert epoch == 1 and wrapped is not None
            assert vault._unwrap(key_id, wrapped, 1) == secret


def test_alone_on_sqlite_a_range_is_read_only_after_the_one_before_is_stored(
        sqlite_settings: Settings) -> None:
    """On SQLite a reader and a committing writer wait for each other: alone too, each
    range is read only after the one before is stored, with no pause."""
    with Ledger(sqlite_settings) as ledger:
        vault = ledger.vault
        fill(ledger, 200)
        vault.begin_epoch(AESGCM.generate_key(bit_length=256), NOW, "test")
        ranges = ranges_of(vault, 40)
        log: list[str] = []
        logged(vault, log)
        slept: list[float] = []
        rotation._paced(vault, 0, 1, ranges, 40, FakePacer(False), slept.append)
        assert log == [f"{verb} {start}" for start, _ in ranges for verb in ("read", "apply")]
        assert slept == []


def put(vault: KeyVault, keys: dict[str, bytes], epoch: int) -> None:
    with vault.engine.begin() as conn:
        conn.execute(data_keys.insert(), [
            {"key_id": key_id, "subject_id": str(uuid.uuid4()), "scope": "s",
             "wrapped": vault._wrap(key_id, secret, epoch), "created_at": NOW,
             "epoch": epoch} for key_id, secret in keys.items()])


def test_keys_with_a_space_in_their_id_or_of_another_width_are_rewrapped_too(
        backend: Settings) -> None:
    """A batch is sent as one string of ids and one blob of fixed-width wrappings; a batch
    with keys whose id holds the separator, or whose wrapping has another width (a
    16-byte secret), goes the per-key way: every live key still ends under the new epoch
    and opens."""
    with Ledger(backend) as ledger:
        vault = ledger.vault
        secrets = fill(ledger, 30)
        spaced = {f"odd key {n}": AESGCM.generate_key(bit_length=256) for n in range(6)}
        put(vault, spaced, 0)
        assert rotate(backend, vault, ledger.store, NOW, "test", 1000).rewrapped == 36
        narrow = {uuid.uuid4().hex: AESGCM.generate_key(bit_length=128) for _ in range(6)}
        put(vault, narrow, 1)
        assert rotate(backend, vault, ledger.store, NOW, "test", 1000).rewrapped == 42
        after = stored(ledger)
        for key_id, secret in {**secrets, **spaced, **narrow}.items():
            wrapped, epoch = after[key_id]
            assert epoch == 2 and wrapped is not None
            assert vault._unwrap(key_id, wrapped, 2) == secret
        with vault.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(data_keys)
                                .where(data_keys.c.epoch != 2)).scalar_one() == 0
