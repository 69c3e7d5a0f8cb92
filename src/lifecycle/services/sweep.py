"""Retention sweeps: erase (crypto-shred) or flag for review everything due at `at`.

Idempotent and crash-safe: the due list comes from the schedule projection (an index on
disposal time, so the cost follows the number of due items, not the store's size), and
every item is re-checked against the subject's current state before anything is written.
A second sweep at the same time therefore records nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

import sqlalchemy as sa
from eventsourcing.persistence import IntegrityError

from lifecycle.aggregates.data_subject import DataSubject
from lifecycle.aggregates.policy_register import Adoption
from lifecycle.store.vault import KeyVault, Shred
from lifecycle.domain.errors import ArgumentRefused
from lifecycle.store.event_store import SAVE_RETRIES, SubjectStore
from lifecycle.domain.facts import CLOCK_SKEW
from lifecycle.support.gc_pause import PeriodicCollection, cyclic_gc_paused
from lifecycle.support.run_clock import RunClock
from lifecycle.policy.loader import policy_from_document
from lifecycle.policy.model import Policy
from lifecycle.projections import tables
from lifecycle.domain.retention import pause_reason, plan
from lifecycle.services.shredding import destroy_recorded, save_marked

BATCH_SUBJECTS = int(os.environ.get("LIFECYCLE_SWEEP_BATCH", "200"))
# The sweep's collector pause is broken by a full collection every so many batches.
COLLECT_EVERY_BATCHES = 50


@dataclass
class SweepReport:
    at: datetime
    dry_run: bool
    erased: list[dict[str, Any]] = field(default_factory=list)
    reviews: list[dict[str, Any]] = field(default_factory=list)
    paused: list[dict[str, Any]] = field(default_factory=list)
    # Subjects that could not be swept (reported by reference; the others went on).
    failed: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "dry_run": self.dry_run,
                "erased": len(self.erased), "reviews": len(self.reviews),
                "paused": len(self.paused), "failed": len(self.failed), "items": {
                    "erased": self.erased, "reviews": self.reviews, "paused": self.paused,
                    "failed": self.failed}}


def refuse_future_sweep(at: datetime, now: datetime) -> None:
    """An erasure cannot be undone, so a sweep never runs ahead of the clock by more than
    CLOCK_SKEW (a mistyped year would shred what is not due); a dry run may (a what-if)."""
    if at > now + CLOCK_SKEW:
        minutes = int(CLOCK_SKEW.total_seconds()) // 60
        raise ArgumentRefused(
            f"sweep at {at.isoformat()}: later than now ({now.isoformat(timespec='seconds')}) "
            f"by more than {minutes} minutes; an erasure cannot be undone, so nothing was "
            "done (for a what-if use sweep --dry-run or forecast)")


def due_items(engine: sa.Engine, at: datetime) -> dict[UUID, list[str]]:
    """Records whose disposal time has come, grouped by subject (an index range scan)."""
    query = (sa.select(tables.schedule.c.subject_id, tables.schedule.c.record)
             .where(tables.schedule.c.done.is_(False))
             .where(tables.schedule.c.dispose_at <= at)
             .order_by(tables.schedule.c.dispose_at, tables.schedule.c.subject_id))
    grouped: dict[UUID, list[str]] = {}
    with engine.connect() as conn:
        for subject_id, record in conn.execute(query):
            grouped.setdefault(UUID(subject_id), []).append(record)
    return grouped


class SubjectCache(Protocol):
    """Subjects this process already holds at a stored version (the projection runner's):
    `lend` gives those it has, `remember` takes back the ones saved, `evict` drops the ones
    changed and not saved."""

    def lend(self, ids: Iterable[UUID]) -> dict[UUID, DataSubject]: ...

    def remember(self, aggregates: Sequence[DataSubject]) -> None: ...

    def evict(self, ids: Iterable[UUID]) -> None: ...


class Sweeper:
    def __init__(self, store: SubjectStore, vault: KeyVault, engine: sa.Engine,
                 cache: SubjectCache | None = None) -> None:
        self.store = store
        self.vault = vault
        self.engine = engine
        # Subjects held already are not read again; the saved ones go back to it (the
        # projections then apply their events without reading them).
        self.cache = cache

    def sweep(self, at: datetime, started: datetime, dry_run: bool = False,
              on_item: Callable[[str, dict[str, Any]], None] | None = None) -> SweepReport:
        if not dry_run:
            refuse_future_sweep(at, started)
        report = SweepReport(at, dry_run)
        adoption = self.store.latest_adoption()
        if adoption is None:
            return report
        policy = policy_from_document(adoption.document)
        clock = RunClock(started)  # marks are dated when written
        due = list(due_items(self.engine, at).items())
        # The collector would rescan every aggregate the process holds (the projections'
        # cache) as a batch allocates, and again at each resume: paused for the whole
        # sweep, with a full collection every so many batches (`PeriodicCollection`).
        collection = PeriodicCollection(COLLECT_EVERY_BATCHES)
        with cyclic_gc_paused():
            for start in range(0, len(due), BATCH_SUBJECTS):
                self._sweep_batch(dict(due[start:start + BATCH_SUBJECTS]), at, clock,
                                  policy, adoption, report, dry_run, on_item)
                collection.step()
        if not dry_run:
            with self.engine.begin() as conn:
                conn.execute(tables.sweep_runs.insert().values(
                    swept_at=at, started_at=started, erased=len(report.erased),
                    reviews=len(report.reviews), paused=len(report.paused), dry_run=False))
        return report

    def _sweep_batch(self, batch: dict[UUID, list[str]], at: datetime, clock: RunClock,
                     policy: Policy, adoption: Adoption, report: SweepReport, dry_run: bool,
                     on_item: Callable[[str, dict[str, Any]], None] | None) -> None:
        """Sweeps one batch of subjects, saves its events, then destroys the keys its
        erasures decided on: once a batch is recorded, no key of it stays live while the
        sweep goes on (a crash in between leaves marks that the next run destroys)."""
        busy = False
        for attempt in range(SAVE_RETRIES):
            outcome = SweepReport(at, dry_run)
            shreds: list[Shred] = []
            touched: list[DataSubject] = []
            # Subjects the cache holds are not read again (a retry reads them all); the
            # rest in one query (a replay each, not a round trip each).
            cache = self.cache if attempt == 0 else None
            lent = cache.lend(batch) if cache is not None else {}
            loaded = dict(lent)
            loaded.update((s.id, s) for s in self.store.get_subjects(
                [i for i in batch if i not in lent]))
            spoiled: list[UUID] = []  # lent subjects changed here and not saved
            saved = False
            try:
                for subject_id, records in batch.items():
                    subject = loaded.get(subject_id)
                    if subject is None:
                        continue
                    shred: dict[str, str] = {}
                    decided = SweepReport(at, dry_run)  # reported only if it all holds
                    try:
                        self._sweep_subject(subject, records, at, clock.now(), policy,
                                            adoption, decided, shred)
                    except Exception as error:  # noqa: BLE001 - one subject never stops the rest
                        # Its events of this sweep are not saved, its keys not destroyed,
                        # and what it decided before failing is not reported as done.
                        outcome.failed.append({"subject": subject.reference,
                                               "error": type(error).__name__})
                        spoiled.append(subject_id)
                        continue
                    for kind in ("erased", "reviews", "paused"):
                        getattr(outcome, kind).extend(getattr(decided, kind))
                    shreds.extend(Shred(str(subject.id), [key_id], at, by)
                                  for key_id, by in shred.items())
                    if subject.pending_events:
                        touched.append(subject)
                if dry_run:
                    break
                try:
                    # Record before destroy: the events first, the keys after
                    # (lifecycle.services.shredding).
                    save_marked(self.store, self.vault, touched, shreds, clock.now())
                except IntegrityError:
                    if attempt == SAVE_RETRIES - 1:
                        busy = True  # nothing of this batch saved, nothing destroyed
                        break
                    continue  # another sweeper or writer moved these subjects: redo the batch
                saved = True
            finally:
                if cache is not None and lent:
                    if not saved:
                        spoiled.extend(s.id for s in touched)
                    cache.evict(i for i in spoiled if i in lent)
            destroy_recorded(self.vault, shreds)
            if touched and self.cache is not None:
                self.cache.remember(touched)
            break
        if busy:
            self._sweep_busy(batch, at, clock, policy, adoption, report, dry_run, on_item)
            return
        for kind in ("erased", "reviews", "paused", "failed"):
            items: list[dict[str, Any]] = getattr(outcome, kind)
            getattr(report, kind).extend(items)
            for item in items:
                if on_item:
                    on_item(kind, item)

    def _sweep_busy(self, batch: dict[UUID, list[str]], at: datetime, clock: RunClock,
                    policy: Policy, adoption: Adoption, report: SweepReport, dry_run: bool,
                    on_item: Callable[[str, dict[str, Any]], None] | None) -> None:
        """A batch whose save lost to other writers at every attempt: its subjects one by
        one, so that a subject other writers keep changing is reported by reference and
        the others are swept (the next sweep takes it up again)."""
        if len(batch) > 1:
            for subject_id, records in batch.items():
                self._sweep_batch({subject_id: records}, at, clock, policy, adoption, report,
                                  dry_run, on_item)
            return
        [subject_id] = batch
        subject = self.store.get_subject_by_id(subject_id)
        item = {"subject": subject.reference if subject is not None else str(subject_id),
                "error": f"changed by other writers at each of {SAVE_RETRIES} attempts"}
        report.failed.append(item)
        if on_item:
            on_item("failed", item)

    def _sweep_subject(self, subject: DataSubject, records: list[str], at: datetime,
                       now: datetime, policy: Policy, adoption: Adoption,
                       outcome: SweepReport, shred: dict[str, str]) -> None:
        for name in records:
            record = subject.records.get(name)
            if record is None:
                continue
            if record.erased_at is not None:
                continue
            disposal = plan(subject, record, policy, adoption)
            if disposal is None or disposal.dispose_at > at:
                continue  # the schedule was behind the subject: not due after all
            item = {"subject": subject.reference, **disposal.as_dict()}
            paused_by = pause_reason(subject, record, at, now)
            if paused_by is not None:
                outcome.paused.append({**item, "paused_by": paused_by})
            elif disposal.action == "review":
                if subject.flag_review(at, name, disposal.rule, disposal.policy,
                                       disposal.due_at):
                    outcome.reviews.append(item)
            else:
                key_id = subject.expire(at, name, disposal.rule, disposal.policy,
                                        disposal.trigger, disposal.due_at)
                if key_id is not None:
                    shred[key_id] = f"rule {disposal.rule} ({disposal.policy})"
                    outcome.erased.append(item)
