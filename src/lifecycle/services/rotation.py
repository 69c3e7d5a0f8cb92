"""`lifecycle keys rotate`: a new master-key epoch, every live data key re-wrapped under
it, the rotation recorded, the old epoch's key destroyed.

The steps, each safe to be killed after (LIFECYCLE_CRASH_AT names them, ROTATION_STEPS):

1. rotate-key-written: the new key is written beside the key file;
2. rotate-epoch-begun: the new epoch is current (new keys are wrapped under it), the old
   one retiring; one transaction, which also stores the hash keys under the new epoch;
3. rotate-batch-read (rotate-batch-read:N): a range of live keys read and wrapped under
   the new epoch, nothing written (with one worker, on PostgreSQL, while the batches
   before are being stored);
   rotate-batch (rotate-batch:N): each batch of live keys re-wrapped, one transaction
   (batches of disjoint ranges of the table; see `_paced` for one worker, the default,
   which makes room for other writers);
4. rotate-rewrapped: no live key is left under the old epoch;
5. rotate-recorded: the KeysRotated event is saved;
6. rotate-key-destroyed: the new key has replaced the old one in the key file;
7. rotate-retired: the old epoch is marked retired.

A run finds a retiring epoch (a rotation killed after step 2) and finishes it instead of
starting another. A data key is wrapped under the retiring epoch or the current one until
step 4, and only the current one after, so none is ever left under no live epoch. Online:
ingest and the daemon keep running (their new keys go under the current epoch, see
`lifecycle.store.vault`); one process rotates at a time (the rotation lease).
"""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from lifecycle.aggregates.key_rotations import ROTATIONS_ID, KeyRotations, Rotation
from lifecycle.store.epoch_keys import (find_epoch_key, install_next_key,
                                         operator_key_source, remove_next_key,
                                         refuse_unreplaceable_key_file, remove_unused_next_keys,
                                         write_next_key)
from lifecycle.store.master_key import key_check_value
from lifecycle.store.vault import (CURRENT, RETIRED, RETIRING, EpochRow, KeyVault,
                                   RewrapBatch, RotationOvertaken)
from lifecycle.domain.errors import LifecycleError
from lifecycle.store.event_store import SubjectStore
from lifecycle.support.faults import crash_point
from lifecycle.services.key_policy import KeyPolicy
from lifecycle.store.lease import Lease, lease_for
from lifecycle.store.settings import Settings

ACTOR_ENV = "LIFECYCLE_ACTOR"
ROTATION_LEASE = "rotation"
BATCH = 20_000  # keys per transaction: about half a second of a writer's lock
# Threads re-wrapping ranges at once. More help on PostgreSQL (each has its own server
# process, which updates while the others wrap) but take the cores ingest needs: with 2,
# ingest during a rotation fell to 0.36 of idle (the guarantee is 0.5). One worker
# pipelines on PostgreSQL and makes room while others write (`_paced`): the default,
# unless the operator asks for more (`keys rotate --workers`, e.g. with ingest stopped).
WORKERS = 1
# While other processes write events (ingest, sweeps), a rotation with one worker goes
# range by range and pauses YIELD_PAUSE times each range's time after it (see `_paced`),
# until a while after the event log last moved (`Pacer`): alone it pipelines at full speed.
YIELD_PAUSE = 2.0
YIELD_HOLD_S = 2.0
YIELD_SPAN = 1.5
YIELD_HOLD_MAX_S = 60.0
# Alone on PostgreSQL: batches stored at once by one worker (each its own transaction and
# server process), while the next range is read and wrapped (see `_paced`).
STORES = 2
ROTATION_STEPS = ("rotate-key-written", "rotate-epoch-begun", "rotate-batch-read",
                  "rotate-batch", "rotate-rewrapped", "rotate-recorded", "rotate-key-destroyed",
                  "rotate-retired")


class RotationBusy(LifecycleError):
    """Another process is rotating the master key."""


def default_actor() -> str:
    """Who acts: $LIFECYCLE_ACTOR, else the operating-system user."""
    actor = os.environ.get(ACTOR_ENV, "").strip()
    if actor:
        return actor
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


@dataclass(frozen=True)
class RotationReport:
    old_epoch: int
    new_epoch: int
    old_fingerprint: str
    new_fingerprint: str
    resumed: bool          # this run finished a rotation an earlier run began
    rewrapped: int         # live keys re-wrapped, by every run of this rotation
    live_keys: int         # live keys under the new epoch when it was recorded
    recorded: bool         # this run saved the KeysRotated event
    destroyed: bool        # this run retired the old epoch (once per rotation)
    at: datetime
    by: str
    operator_key: str | None  # where the operator supplies the old key, to retire it

    def as_dict(self) -> dict[str, Any]:
        return {"old_epoch": self.old_epoch, "new_epoch": self.new_epoch,
                "old_fingerprint": self.old_fingerprint,
                "new_fingerprint": self.new_fingerprint, "resumed": self.resumed,
                "rewrapped": self.rewrapped, "live_keys": self.live_keys,
                "recorded": self.recorded, "old_epoch_destroyed": self.destroyed,
                "at": self.at.isoformat(), "by": self.by,
                "operator_key_to_retire": self.operator_key}


def recorded_rotations(store: SubjectStore) -> list[Rotation]:
    try:
        found: Any = store.repository.get(ROTATIONS_ID)
    except AggregateNotFoundError:
        return []
    assert isinstance(found, KeyRotations)
    return list(found.rotations)


def _record(store: SubjectStore, old: EpochRow, new: EpochRow, now: datetime, by: str,
            live: int) -> bool:
    """Saves the KeysRotated event unless it is recorded; False if it was (by an earlier
    run, or by another process that saved it first)."""
    for attempt in range(2):
        try:
            found: Any = store.repository.get(ROTATIONS_ID)
        except AggregateNotFoundError:
            found = KeyRotations()
        assert isinstance(found, KeyRotations)
        started = new.created_at or now
        if not found.record(old.epoch, new.epoch, old.fingerprint, new.fingerprint, started,
                            now, new.created_by or by, new.rewrapped, live):
            return False
        try:
            store.save(found)
        except IntegrityError:
            if attempt:
                raise
            continue  # another process saved the rotations first: read them again
        return True
    return False


def rotate(settings: Settings, vault: KeyVault, store: SubjectStore, now: datetime,
           actor: str | None = None, batch: int = BATCH,
           workers: int | None = None) -> RotationReport:
    """Rotates the master key, or finishes the rotation a killed run began (see the
    module), re-wrapping batches of `batch` keys in `workers` threads (None: WORKERS).
    Raises RotationBusy if another process is rotating."""
    by = actor or default_actor()
    if workers is None:
        workers = WORKERS
    lease = lease_for(settings, ROTATION_LEASE)
    if not lease.acquire():
        raise RotationBusy("another process is rotating the master key; nothing was done")
    try:
        return _rotate(settings, vault, store, now, by, batch, workers, lease)
    finally:
        lease.release()


def _epoch_checks(vault: KeyVault) -> tuple[int, set[str]]:
    """The current epoch and the key check of every epoch not retired, as the vault holds
    them now."""
    epochs = vault.epochs()
    return (max(e.epoch for e in epochs if e.state == CURRENT),
            {e.key_check for e in epochs if e.state != RETIRED})


def _keep_lease(lease: Lease) -> None:
    """Before a step that changes the epochs or the key file: the lease must still be
    this process's (a session the server dropped is re-taken if nobody else holds it).
    It only narrows the window: what keeps two rotations apart is that an epoch begins
    only over the epoch its rotation saw current, and no rotation removes another's
    new-key file."""
    if not lease.acquire():
        raise RotationBusy("this rotation lost its lease to another process, which "
                           "finishes it; nothing more was done here")


class Pacer:
    """Whether a rotation should make room for others: yes while the event log moves (an
    ingest, a sweep, the desk's writes: every writer saves events; the rotation saves
    none until it has re-wrapped every key), and for a hold after it last moved: at
    least YIELD_HOLD_S, and YIELD_SPAN times the last gap between two moves (a slow
    ingest commits a batch every few seconds), at most YIELD_HOLD_MAX_S.
    `clock`: seconds, monotonic."""

    def __init__(self, store: SubjectStore, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self._store, self._clock = store, clock
        self._mark = self._high_water()
        self._moved_at: float | None = None
        self._hold = YIELD_HOLD_S

    def _high_water(self) -> int:
        recorder: Any = self._store.recorder
        return int(recorder.max_notification_id() or 0)

    def others_writing(self) -> bool:
        mark, now = self._high_water(), self._clock()
        if mark != self._mark:
            if self._moved_at is not None:
                self._hold = min(YIELD_HOLD_MAX_S,
                                 max(YIELD_HOLD_S, YIELD_SPAN * (now - self._moved_at)))
            self._mark, self._moved_at = mark, now
        return self._moved_at is not None and now - self._moved_at < self._hold


def _rewrap_pass(vault: KeyVault, old: int, new: int, batch: int, workers: int,
                 pacer: Pacer | None) -> int:
    """One pass over the vault table: every live key of epoch `old` re-wrapped under
    `new`, in ranges of places holding about `batch` keys each, one transaction per range.
    One worker: see `_paced`. More workers re-wrap `workers` ranges at a time, each thread
    on its own connection, making no room for others. Returns how many live keys of `old`
    there were to begin with (0: none, nothing done)."""
    end, live = vault.rewrap_extent(old)
    if live == 0:
        return 0
    step = max(1, end * batch // live)  # places per range: about `batch` keys
    ranges = [(start, min(start + step, end)) for start in range(0, end, step)]
    if workers <= 1:
        _paced(vault, old, new, ranges, batch, pacer)
        return live
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rewrap") as pool:
        try:
            futures = [pool.submit(vault.rewrap_range, old, new, start, stop, batch)
                       for start, stop in ranges]
            for done in as_completed(futures):
                done.result()
                crash_point("rotate-batch")
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return live


def _read(vault: KeyVault, old: int, new: int, place: tuple[int, int], batch: int
          ) -> list[RewrapBatch]:
    found = vault.read_rewrap(old, new, place[0], place[1], batch)
    crash_point("rotate-batch-read")
    return found


def _paced(vault: KeyVault, old: int, new: int, ranges: list[tuple[int, int]], batch: int,
           pacer: Pacer | None, sleep: Callable[[float], None] = time.sleep) -> None:
    """The ranges in order. Alone (the pacer sees no other writer), and where a read does
    not wait for a commit (`vault.overlaps_reads`: PostgreSQL), pipelined: range n+1 is
    read and wrapped in a reader thread while the batches before are stored, STORES
    transactions at a time, each on its own connection (psycopg releases the GIL while
    it waits), so AES-GCM in the client overlaps the server's updates, which run in
    parallel. On SQLite alone: range by range (a reader and a committing writer wait for
    each other). While others write: the stores in flight finish, then range by range,
    one transaction at a time, each range followed by a pause of YIELD_PAUSE times its
    time (the rotation takes at most about a third of one core, and on SQLite leaves the
    write lock free twice as long as it held it: SQLite's busy wait retries up to 100 ms
    apart, and with a pause as long as the hold ingest kept only 0.47-0.77 of its rate).
    Killed anywhere, what was read ahead is lost work only: a key stays under `old`,
    live, until the transaction storing its new wrapping commits."""
    ahead: Future[list[RewrapBatch]] | None = None
    stores: list[Future[int]] = []

    def settle(keep: int) -> None:  # at most `keep` stores left in flight
        while len(stores) > keep:
            stores.pop(0).result()
            crash_point("rotate-batch")

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rewrap-read") as reader, \
            ThreadPoolExecutor(max_workers=STORES, thread_name_prefix="rewrap-store") as writer:
        try:
            for n, place in enumerate(ranges):
                started = time.monotonic()
                batches = (ahead.result() if ahead is not None
                           else _read(vault, old, new, place, batch))
                polite = pacer is not None and pacer.others_writing()
                ahead = None
                if polite or not vault.overlaps_reads:
                    settle(0)
                    for one in batches:
                        vault.apply_rewrap(one)
                        crash_point("rotate-batch")
                    if polite:
                        sleep(YIELD_PAUSE * (time.monotonic() - started))
                    continue
                if n + 1 < len(ranges):
                    ahead = reader.submit(_read, vault, old, new, ranges[n + 1], batch)
                for one in batches:
                    settle(STORES - 1)
                    stores.append(writer.submit(vault.apply_rewrap, one))
            settle(0)
        except BaseException:
            reader.shutdown(wait=True, cancel_futures=True)
            writer.shutdown(wait=True, cancel_futures=True)
            raise


def _rotate(settings: Settings, vault: KeyVault, store: SubjectStore, now: datetime,
            by: str, batch: int, workers: int, lease: Lease) -> RotationReport:
    epochs = vault.epochs()
    retiring = next((e for e in epochs if e.state == RETIRING), None)
    resumed = retiring is not None
    refuse_unreplaceable_key_file(settings, next(
        e.key_check for e in epochs if e.state == CURRENT) if resumed else None)
    if retiring is None:
        seen = next(e for e in epochs if e.state == CURRENT).epoch
        key = write_next_key(settings, seen)
        crash_point("rotate-key-written")
        _keep_lease(lease)
        try:  # only if `seen` is still current and no rotation is under way
            vault.begin_epoch(key, now, by, after=seen)
        except RotationOvertaken as overtaken:
            remove_next_key(settings, key_check_value(key))  # it wrapped nothing
            raise RotationBusy(f"another process rotated the master key meanwhile "
                               f"({overtaken}); nothing was done") from None
        crash_point("rotate-epoch-begun")
        remove_unused_next_keys(settings, lambda: _epoch_checks(vault))
        epochs = vault.epochs()
        retiring = next((e for e in epochs if e.state == RETIRING), None)
        if retiring is None:  # its lease lost, this rotation was finished elsewhere
            raise RotationBusy("another process finished this rotation of the master key "
                               "(this run had lost its lease); nothing more to do")
    current = next(e for e in epochs if e.state == CURRENT)
    # The new key must be on disk (not only in this process) before anything is wrapped
    # under it: a process that wraps its new keys, or the next run, reads it from there.
    if find_epoch_key(settings, current.key_check) is None:
        raise LifecycleError(
            f"the key of master-key epoch {current.epoch} (fingerprint "
            f"{current.fingerprint}) is in neither the key file {settings.master_key_file} "
            "nor a new-key file beside it; nothing was re-wrapped")
    vault.epoch_key(current.epoch, current.key_check)
    pacer = Pacer(store)
    before = 0
    # Keys stored just before the switch, past a pass's end: one more pass. No key of the
    # retiring epoch is stored after the switch, so a pass that leaves as many as it found
    # moved none and the next would too: stop rather than pass over the table forever.
    while left := _rewrap_pass(vault, retiring.epoch, current.epoch, batch, workers, pacer):
        if left == before:
            raise LifecycleError(
                f"the key rotation cannot re-wrap {left} live key{'s' if left != 1 else ''} "
                f"of master-key epoch {retiring.epoch} (a pass over the vault moved none); "
                "the rotation is still under way: check the vault's data-key table")
        before = left
    crash_point("rotate-rewrapped")
    current = next(e for e in vault.epochs() if e.epoch == current.epoch)
    live = vault.live_keys_under(current.epoch)
    recorded = _record(store, retiring, current, now, by, live)
    crash_point("rotate-recorded")
    _keep_lease(lease)
    if not install_next_key(settings, current.key_check):
        raise LifecycleError(
            f"the new master key (fingerprint {current.fingerprint}) is in neither the key "
            f"file {settings.master_key_file} nor a new-key file beside it")
    crash_point("rotate-key-destroyed")
    destroyed = vault.retire_epoch(retiring.epoch, now)
    vault.forget_epoch_key(retiring.epoch)
    crash_point("rotate-retired")
    remove_unused_next_keys(settings, lambda: _epoch_checks(vault))
    vault.reclaim(force=True)
    rotation = next(r for r in recorded_rotations(store) if r.new_epoch == current.epoch)
    return RotationReport(retiring.epoch, current.epoch, retiring.fingerprint,
                          current.fingerprint, resumed, rotation.rewrapped,
                          rotation.live_keys, recorded, destroyed, rotation.at, rotation.by,
                          operator_key_source(settings))


def rotate_if_due(settings: Settings, vault: KeyVault, store: SubjectStore,
                  policy: KeyPolicy, now: datetime, actor: str) -> RotationReport | None:
    """Rotates when the `[keys]` policy says so or a rotation is under way (the daemon's
    tick); None when neither. Raises RotationBusy if another process is rotating."""
    under_way = any(e.state == RETIRING for e in vault.epochs())
    if policy.rotate_every is None and policy.rotate_after_erasures is None and not under_way:
        return None  # no policy and nothing to finish: no need to count erasures
    keys = epoch_status(vault, now)
    since = datetime.fromisoformat(keys["since"]) if keys["since"] else None
    if policy.due(since, keys["unsealed_erasures"], under_way, now) is None:
        return None
    return rotate(settings, vault, store, now, actor)


# -- when erasures hold in every copy ----------------------------------------------------
#
# A destroyed key keeps the epoch it was last wrapped under: every copy taken while it was
# live holds it under that epoch or an earlier one, so its erasure is final in every copy
# once that epoch is retired (no clock is compared: erasure times are fact times).

def final_in_backups_of(vault: KeyVault, destroyed: dict[str, dict[str, Any]]
                        ) -> str | None:
    """For a certificate: from when every key it names (the `destroyed` mapping of
    `KeyVault.destroyed`) is destroyed in every copy; None while any is not (yet)."""
    if not destroyed or any(v.get("destroyed_at") is None for v in destroyed.values()):
        return None
    retired = {e.epoch: e.retired_at for e in vault.epochs() if e.state == RETIRED}
    finals = [retired.get(epoch) for epoch in vault.epochs_of(destroyed).values()]
    if not finals or any(f is None for f in finals):
        return None
    return max(f for f in finals if f is not None).isoformat()


def epoch_status(vault: KeyVault, now: datetime) -> dict[str, Any]:
    """The current epoch, its age, a rotation under way, and the erasures not yet final in
    copies (still readable in a copy taken before them, with a key not yet retired)."""
    epochs = vault.epochs()
    current = next((e for e in epochs if e.state == CURRENT), None)
    retiring = next((e for e in epochs if e.state == RETIRING), None)
    count, oldest = vault.unsealed_destructions()
    started = current.created_at if current is not None else None
    if started is None:
        started = vault.first_key_at()
    return {
        "epoch": current.epoch if current else 0,
        "fingerprint": current.fingerprint if current else None,
        "since": started.isoformat() if started else None,
        "age_days": round((now - started).total_seconds() / 86400, 1) if started else None,
        "rotation_under_way": retiring is not None,
        "unsealed_erasures": count,
        "oldest_unsealed_erasure": oldest.isoformat() if oldest else None,
    }
