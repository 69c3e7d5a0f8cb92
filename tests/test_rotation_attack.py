"""Attacks on the pipelined re-wrap: an erasure between a range's read and its store, a
reader that raises, hostile key ids in the one-string batch, an erasure locking keys
while a batch stores them.

Real stores (a SQLite file, a fresh PostgreSQL database); keys are written straight into
the vault under epoch 0, as the rotation benchmark does.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lifecycle.services import rotation
from lifecycle.domain.errors import LifecycleError
from lifecycle.services.ledger import Ledger
from lifecycle.support.faults import CRASH_ENV
from lifecycle.store.settings import Settings
from lifecycle.services.rotation import recorded_rotations
from lifecycle.store.vault import CURRENT, RETIRED, RETIRING, KeyVault, RewrapBatch, data_keys
from tests.facts_builder import collected, fact, lines
from tests.processes import env_for, wait_for
from tests.test_rotation_crashes import SUBJECTS, live_keys, populate
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


def test_two_rotations_started_at_once_end_in_one_consistent_state(backend: Settings) -> None:
    """Two `lifecycle keys rotate` processes started at once: each either rotates or says
    in one line that another process is rotating (no traceback); afterwards one epoch is
    current, every other retired and recorded once, and every live key opens under the
    current epoch."""
    before = populate(backend)
    env = env_for(backend)
    runs = [subprocess.Popen([sys.executable, "-m", "lifecycle", "keys", "rotate", "--batch",
                              "40"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    results = [(run.wait(timeout=120), run.communicate()[1]) for run in runs]
    assert any(code == 0 for code, _ in results), results
    for code, err in results:
        assert "Traceback" not in err
        if code != 0:
            assert "another process is rotating" in err and len(err.strip().splitlines()) == 1
    with Ledger(backend) as ledger:
        epochs = ledger.vault.epochs()
        current = [e for e in epochs if e.state == CURRENT]
        assert len(current) == 1
        assert all(e.state == RETIRED for e in epochs if e is not current[0])
        rotations = recorded_rotations(ledger.store)
        assert sorted(r.old_epoch for r in rotations) == sorted(
            e.epoch for e in epochs if e.state == RETIRED)
        assert live_keys(ledger) == before
        with ledger.vault.engine.connect() as conn:
            under = set(conn.execute(sa.select(data_keys.c.epoch).distinct()
                                     .where(data_keys.c.wrapped.is_not(None))).scalars())
        assert under == {current[0].epoch}
        for n, reference in list(enumerate(SUBJECTS))[1::15]:
            assert ledger.subject_view(reference)["records"][0]["data"] == {"name": f"Name {n}"}


MANY = [f"subscriber:busy-{n}" for n in range(3000)]


@pytest.mark.parametrize("crash_at", [None, "rotate-batch:4", "rotate-batch-read:5"])
def test_erasures_during_a_killed_or_whole_rotation_stay_erased(
        backend: Settings, crash_at: str | None) -> None:
    """An ingest erasing a third of the subjects runs while a real `lifecycle keys rotate`
    re-wraps (whole, or killed with SIGKILL mid-way and run again): afterwards every erased
    subject's key is destroyed (no re-wrap brought it back), every other key opens under
    the current epoch, and the old epoch is retired."""
    with Ledger(backend) as ledger:
        ledger.ingest(lines(collected(s, "2024-01-01T09:00:00+00:00", "rec-1",
                                      {"name": f"Busy {n}"}, id=f"busy-{n}")
                            for n, s in enumerate(MANY)), NOW)
    erased = MANY[::3]
    env = env_for(backend)
    rotate_env = dict(env)
    if crash_at:
        rotate_env[CRASH_ENV] = crash_at
    rotate_run = subprocess.Popen([sys.executable, "-m", "lifecycle", "keys", "rotate",
                                   "--batch", "5", "--json"], env=rotate_env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for first in range(0, len(erased), 100):  # erasures in several runs, while it rotates
        ingest = subprocess.run(
            [sys.executable, "-m", "lifecycle", "ingest", "-"], env=env, text=True,
            capture_output=True, timeout=300,
            input="\n".join(lines(fact("erasure-requested", s, "2024-02-01T09:00:00+00:00",
                                        request=f"ER-{n}", id=f"busy-erase-{n}")
                                   for n, s in list(enumerate(erased))[first:first + 100])))
        assert ingest.returncode == 0, ingest.stderr
    _, rotate_err = rotate_run.communicate(timeout=300)
    if crash_at:
        assert rotate_run.returncode == -signal.SIGKILL, rotate_err
        again = subprocess.run([sys.executable, "-m", "lifecycle", "keys", "rotate"], env=env,
                               capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
    else:
        assert rotate_run.returncode == 0, rotate_err
    with Ledger(backend) as ledger:
        vault = ledger.vault
        epochs = {e.epoch: e.state for e in vault.epochs()}
        assert epochs == {0: RETIRED, 1: CURRENT}
        with vault.engine.connect() as conn:
            rows = conn.execute(sa.select(data_keys.c.subject_id, data_keys.c.wrapped,
                                          data_keys.c.epoch, data_keys.c.destroyed_at)).all()
        by_subject: dict[str, list[tuple[bytes | None, int, object]]] = {}
        for subject_id, wrapped, epoch, destroyed_at in rows:
            by_subject.setdefault(subject_id, []).append((wrapped, epoch, destroyed_at))
        views = {s: ledger.subject_view(s)["records"][0]["data"] for s in MANY[:60]}
    live = [r for keys in by_subject.values() for r in keys if r[0] is not None]
    assert all(epoch == 1 and destroyed is None for _, epoch, destroyed in live)
    assert len(live) == len(MANY) - len(erased)
    assert sum(1 for keys in by_subject.values() for r in keys if r[0] is None) == len(erased)
    for n, s in enumerate(MANY[:60]):
        assert views[s] == ("erased" if n % 3 == 0 else {"name": f"Busy {n}"})


def test_a_rotation_that_cannot_move_a_key_stops_with_an_error_instead_of_spinning(
        backend: Settings) -> None:
    """A live key of the retiring epoch that a pass cannot re-wrap (here a row marked
    destroyed whose wrapping was left behind, as a hand-edited vault might hold) stops the
    rotation with one clear error naming only a count: it never passes over the table
    again and again; the epoch stays retiring for a later run."""
    with Ledger(backend) as ledger:
        vault = ledger.vault
        fill(ledger, 20)
        stuck = uuid.uuid4().hex
        put(vault, {stuck: AESGCM.generate_key(bit_length=256)}, 0)
        with vault.engine.begin() as conn:
            conn.execute(data_keys.update().where(data_keys.c.key_id == stuck)
                         .values(destroyed_at=NOW))
        outcome: list[BaseException | None] = []

        def run() -> None:
            try:
                rotation.rotate(backend, vault, ledger.store, NOW, "test", 1000)
                outcome.append(None)
            except BaseException as error:  # noqa: BLE001 - reported below
                outcome.append(error)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(30)
        assert not thread.is_alive(), "the rotation is still passing over the table"
        [error] = outcome
        assert isinstance(error, LifecycleError)
        assert stuck not in str(error) and "1 live key" in str(error)
        assert {e.epoch: e.state for e in vault.epochs()} == {0: RETIRING, 1: CURRENT}


@pytest.mark.parametrize("odd", [False, True])
def test_a_key_destroyed_while_its_batch_waits_to_store_it_stays_destroyed(
        postgres_database: str, tmp_path: Path, odd: bool) -> None:
    """On PostgreSQL a batch whose store waits for an erasure holding one of its keys (the
    erasure commits while the store waits) leaves that key destroyed: the store re-checks
    the row it waited for and brings no wrapping back; the others are re-wrapped. Both
    ways of sending a batch (one string and one blob; per key, `odd`: an id with a space)."""
    with Ledger(postgres_at(postgres_database, tmp_path / "home")) as ledger:
        vault = ledger.vault
        keys = list(fill(ledger, 59))
        extra = "odd key" if odd else uuid.uuid4().hex
        put(vault, {extra: AESGCM.generate_key(bit_length=256)}, 0)
        keys.append(extra)
        victim = keys[30]
        vault.begin_epoch(AESGCM.generate_key(bit_length=256), NOW, "test")
        end, _ = vault.rewrap_extent(0)
        [batch] = vault.read_rewrap(0, 1, 0, end, 1000)
        errors: list[BaseException] = []
        counted: list[int] = []

        def store() -> None:
            try:
                counted.append(vault.apply_rewrap(batch))
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        with vault.engine.connect() as erasure:
            erasure.execute(data_keys.update().where(data_keys.c.key_id == victim)
                            .values(wrapped=None, destroyed_at=NOW, destroyed_by="erasure"))
            thread = threading.Thread(target=store)
            thread.start()
            wait_for(lambda: waiting_on_locks(vault) == 1, 30, "the store to wait")
            erasure.commit()
        thread.join(30)
        assert errors == [] and counted == [59]
        after = stored(ledger)
        assert after[victim] == (None, 0)
        assert vault.live_keys_under(0) == 0 and vault.live_keys_under(1) == 59
