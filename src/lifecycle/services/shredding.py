"""Record before destroy: the one order in which an erasure is written.

1. new data keys are stored (before any event that uses them);
2. the keys an erasure decided on are marked in the vault;
3. the events recording the erasure are saved;
4. the keys are destroyed and their marks removed;
5. on PostgreSQL the vault table is vacuumed (outside any transaction; in a long sweep at
   most every 2 s, and on every daemon tick), so its live files stop holding the
   destroyed rows; SQLite zeroes them as they are freed.

Killed after 2 and before 3, nothing was erased and nothing recorded: the mark is dropped
later and re-running the same input erases. Killed after 3, the erasure is recorded and its
keys are still marked: `finish_interrupted` (run by every ingest, sweep and daemon tick)
destroys them. So no key is destroyed without its recorded reason, and no recorded erasure
stays undone past the next run.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate

from lifecycle.store.vault import DOOMED_GRACE, KeyVault, Shred
from lifecycle.store.event_store import SubjectStore
from lifecycle.support.faults import crash_point


def save_then_destroy(store: SubjectStore, vault: KeyVault, aggregates: Sequence[Aggregate],
                      shreds: Sequence[Shred], now: datetime) -> int:
    """Saves the aggregates' events and destroys the keys their erasures decided on, in
    that order (see the module). Returns how many keys were live and are now destroyed.
    Raises the store's IntegrityError, before anything is destroyed, if another writer
    saved one of the aggregates first."""
    save_marked(store, vault, aggregates, shreds, now)
    return destroy_recorded(vault, shreds)


def save_marked(store: SubjectStore, vault: KeyVault, aggregates: Sequence[Aggregate],
                shreds: Sequence[Shred], now: datetime) -> None:
    """Steps 1-3: stores new keys, marks the doomed ones, saves the events. The keys are
    then recorded as erased and still marked: `destroy_recorded` (or, after a crash,
    `finish_interrupted`) destroys them. Raises the store's IntegrityError as above."""
    vault.flush()
    crash_point("keys-stored")
    vault.mark_doomed(shreds, now)
    crash_point("marks-stored")
    if aggregates:
        store.save(*aggregates)
    crash_point("events-saved")


def destroy_recorded(vault: KeyVault, shreds: Sequence[Shred]) -> int:
    """Step 4, for keys whose erasure `save_marked` recorded: destroys them and their marks.
    Returns how many were live."""
    destroyed = vault.destroy_all((s.key_ids, s.at, s.by) for s in shreds)
    crash_point("keys-destroyed")
    if destroyed:
        vault.reclaim()  # PostgreSQL: the destroyed rows leave the table's live files
    return destroyed


def finish_interrupted(store: SubjectStore, vault: KeyVault, now: datetime) -> int:
    """Destroys the marked keys whose erasure the log records; drops the marks of erasures
    never recorded once they are older than the grace (a run may still be saving them).
    Idempotent. Returns how many keys it destroyed."""
    marks = vault.doomed()
    if not marks:
        return 0
    recorded: list[Shred] = []
    unrecorded: list[str] = []
    by_subject: dict[str, list[Shred]] = {}
    for mark in marks:
        by_subject.setdefault(mark.subject_id, []).append(mark)
    # Each key's erasure as the log records it: its time and reason, not the mark's (two
    # runs may have marked one key; only one of them recorded its erasure).
    erased_by_subject = {subject.id: {key_id: (erasure.at, erasure.by)
                                      for erasure in subject.erasures
                                      for key_id in erasure.key_ids}
                         for subject in store.get_subjects([UUID(s) for s in by_subject])}
    for subject_id, subject_marks in by_subject.items():
        erased = erased_by_subject.get(UUID(subject_id), {})
        for mark in subject_marks:
            logged = erased.get(mark.key_ids[0])
            if logged is not None:
                recorded.append(Shred(subject_id, mark.key_ids, logged[0], logged[1]))
            else:
                unrecorded.append(mark.key_ids[0])
    destroyed = vault.destroy_all((s.key_ids, s.at, s.by) for s in recorded)
    if unrecorded:
        vault.drop_marks(unrecorded, older_than=now - DOOMED_GRACE)
    if destroyed:
        vault.reclaim()
    return destroyed
