"""Pulls the notification log and keeps the named projections current.

A pull loop over the recorder works on every backend (SQLite has no subscriptions). Each
batch updates every projection that has not seen it and writes each one's position in
the same transaction as its rows, so a crash never leaves a view ahead of or behind its
position. Views are rebuilt from subject state, so a rebuild from zero gives the same rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from eventsourcing.domain import OriginatorIDError, OriginatorVersionError
from eventsourcing.persistence import Notification

from lifecycle.aggregates.data_subject import DataSubject
from lifecycle.aggregates.policy_register import REGISTER_ID, PolicyRegister
from lifecycle.aggregates.request_case import RequestCase
from lifecycle.store.engines import create_store_engine
from lifecycle.store.event_chain import BrokenEvent
from lifecycle.store import fast_replay
from lifecycle.store.event_store import Partition, SubjectStore
from lifecycle.support.gc_pause import cyclic_gc_paused
from lifecycle.projections import tables
from lifecycle.projections.views import (
    PROJECTIONS,
    RETENTION_EXPIRED,
    Projection,
    ProjectionContext,
)

BATCH = 1000            # events per read of the notification log
WRITE_BATCH = 10_000    # events applied per read-model transaction (at most)
CACHE_LIMIT = 10_000  # aggregates kept between catch-ups (bounds a long sweep's memory)
HANDOVER_LIMIT = 5_000  # aggregates a writer may hand over between two catch-ups
VIEWS_LOCK = 0x6C69666563796331  # advisory lock key: one view writer at a time
# A catch-up that leaves more new objects than this in the cache collects them as it ends
# (`cyclic_gc_paused`): about a thousand subjects of ten events. Not in a rebuild worker.
SETTLE_OBJECTS = 50_000


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    position: int
    head: int

    @property
    def lag(self) -> int:
        return max(0, self.head - self.position)

    def as_dict(self) -> dict[str, int]:
        return {"position": self.position, "head": self.head, "lag": self.lag}


@dataclass(frozen=True)
class _Touched:
    """The aggregates a batch changed after one position, and which of them are new."""
    subjects: list[DataSubject]
    cases: list[RequestCase]
    fresh: set[UUID]
    # Subjects whose every event after the position is a RetentionExpired: how many.
    expired_only: dict[UUID, int]


def create_views_engine(url: str) -> sa.Engine:
    # Read models are derived from the log: after a power cut, losing the last commits
    # (never consistency: rows and positions commit together) only means a re-catch-up.
    engine = create_store_engine(url, tables.metadata,
                                 ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-65536"))
    inspector = sa.inspect(engine)
    retired = {name: table for name, table in tables.RETIRED.items()
               if inspector.has_table(table)}
    if retired:  # otherwise opening the views writes nothing
        quote = engine.dialect.identifier_preparer.quote
        with engine.begin() as conn:
            for name, table in retired.items():
                conn.execute(sa.text(f"DROP TABLE {quote(table)}"))
                conn.execute(tables.positions.delete().where(tables.positions.c.name == name))
    return engine


class ProjectionRunner:
    """Keeps `projections` in `engine` current with the store's log.

    A runner given a `partition` applies only the aggregates in it (and the policy
    register) up to event `stop`: one process's share of a parallel rebuild. It writes
    rows into scratch tables, so it takes no lock, and keeps its positions in memory: the
    rebuild that started it sets the positions of the views its rows end up in.
    """

    def __init__(self, store: SubjectStore, engine: sa.Engine,
                 projections: Sequence[Projection] = PROJECTIONS, *,
                 partition: Partition | None = None, stop: int | None = None) -> None:
        if (partition is None) != (stop is None):
            raise ValueError("a partition is built up to a given event, and only a partition")
        self.store = store
        self.engine = engine
        self.projections = list(projections)
        self.partition = partition
        self.stop = stop
        self._partition_positions: dict[str, int] = {}
        self._cache: dict[UUID, Any] = {}  # subjects and request cases
        self._register: PolicyRegister | None = None
        self._register_loaded = False
        self._handed_over = 0

    def by_name(self, name: str) -> Projection:
        for projection in self.projections:
            if projection.name == name:
                return projection
        known = ", ".join(p.name for p in self.projections)
        raise KeyError(f"no projection named {name!r} (known: {known})")

    def positions(self) -> dict[str, int]:
        if self.partition is not None:
            rows = self._partition_positions
        else:
            with self.engine.connect() as conn:
                rows = dict(conn.execute(sa.select(tables.positions.c.name,
                                                   tables.positions.c.position)).all())
        return {p.name: int(rows.get(p.name, 0)) for p in self.projections}

    def head(self) -> int:
        return int(self.store.recorder.max_notification_id() or 0)

    def status(self) -> list[ProjectionStatus]:
        head = self.head()
        return [ProjectionStatus(name, pos, head) for name, pos in self.positions().items()]

    def catch_up(self, on_progress: Callable[[int], None] | None = None) -> int:
        """Processes every event not yet seen by some projection; returns how many."""
        start = min(self.positions().values(), default=0)
        processed = 0
        self._handed_over = 0
        # Another process may have adopted a policy (and projected it) since the last call.
        self._register_loaded = False
        # A partition's runner is a rebuild worker's, which exits after it: nothing to settle.
        settle = SETTLE_OBJECTS if self.partition is None else None
        with cyclic_gc_paused(settle_above=settle):
            while True:
                batch = self._read(start)
                if not batch:
                    return processed
                self._apply(batch, start)
                start = batch[-1].id
                processed += len(batch)
                if on_progress:
                    on_progress(len(batch))

    def rebuild(self, names: Sequence[str] | None = None) -> int:
        """Empties the named projections (all by default) and replays them from zero, in
        this process (`parallel.rebuild` shares a full rebuild among processes)."""
        chosen = [self.by_name(n) for n in names] if names else self.projections
        with self.engine.begin() as conn:
            self.lock_views(conn)
            for projection in chosen:
                for table in projection.tables:
                    if conn.dialect.name == "postgresql":  # no row-by-row delete and vacuum
                        conn.execute(sa.text(f'TRUNCATE TABLE "{table.name}"'))
                    else:  # SQLite: a DELETE without WHERE already truncates
                        conn.execute(table.delete())
                conn.execute(tables.positions.delete()
                             .where(tables.positions.c.name == projection.name))
        self.forget()
        return self.catch_up()

    def lock_views(self, conn: sa.Connection) -> dict[str, int]:
        """Serialises view writers across processes for this transaction; returns the
        positions as stored now (another process may have moved them)."""
        if self.partition is not None:  # scratch tables: no lock needed, positions in memory
            return dict(self._partition_positions)
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": VIEWS_LOCK})
        else:  # SQLite: take the write lock before reading, not at the first write
            conn.execute(tables.positions.update().where(sa.false()).values(position=0))
        return {name: int(pos) for name, pos in conn.execute(
            sa.select(tables.positions.c.name, tables.positions.c.position))}

    def remember(self, aggregates: Sequence[DataSubject]) -> None:
        """Aggregates just saved in this process (at their stored version): the next
        catch-up applies their events without reading them back from the store."""
        handed = self._handed_over + len(aggregates)
        if (self.partition is None and handed <= HANDOVER_LIMIT
                and len(self._cache) + len(aggregates) <= CACHE_LIMIT):
            self._cache.update((a.id, a) for a in aggregates)
            self._handed_over = handed

    def lend(self, ids: Iterable[UUID]) -> dict[UUID, DataSubject]:
        """The subjects among `ids` this runner holds at the version the store holds now
        (the cache's own objects, not copies), so that a writer in this process decides
        on them without reading them again. A subject the writer changes must be saved
        and handed back (`remember`), or `evict`ed if it is not saved.

        Each is checked against the store's latest version (one key lookup each, no
        event read): a cached subject can be behind the store for as long as this
        process lives, not only since its last catch-up, because another process that
        catches the shared views up moves their positions past events this runner then
        never applies. Deciding on such a copy would keep what is due (a hold released,
        a record collected, elsewhere): those are dropped and not lent. A partition's
        runner lends nothing."""
        if self.partition is not None:
            return {}
        found: dict[UUID, DataSubject] = {}
        for aggregate_id in ids:
            cached = self._cache.get(aggregate_id)
            if isinstance(cached, DataSubject):
                found[aggregate_id] = cached
        if found:
            stored = self.store.stored_versions(list(found))
            for aggregate_id, subject in list(found.items()):
                if stored.get(aggregate_id) != subject.version:
                    del found[aggregate_id]
                    self._cache.pop(aggregate_id, None)
        return found

    def evict(self, ids: Iterable[UUID]) -> None:
        """Drops these aggregates from the cache (changed by a writer and not saved)."""
        for aggregate_id in ids:
            self._cache.pop(aggregate_id, None)

    def forget(self) -> None:
        """Drops what this runner cached, for when the views were replaced under it."""
        self._cache.clear()
        self._register_loaded = False

    # -- internals ----------------------------------------------------------------------

    def _read(self, start: int) -> list[Notification]:
        """The next events after `start`: pages of BATCH, gathered up to WRITE_BATCH so
        that each read-model transaction (statements, commit) serves many events."""
        batch: list[Notification] = []
        if self.partition is not None and self.stop is not None:  # ranges of BATCH ids
            while len(batch) < WRITE_BATCH and start < self.stop:
                upto = min(start + BATCH, self.stop)
                batch.extend(self.store.partition_notifications(self.partition, start, upto))
                start = upto
            return batch
        while len(batch) < WRITE_BATCH:
            page = self.store.recorder.select_notifications(
                start, BATCH, inclusive_of_start=False)
            batch.extend(page)
            if len(page) < BATCH:
                break
            start = page[-1].id
        return batch

    def _apply(self, batch: Sequence[Notification], start: int) -> None:
        """Applies the events after `start` up to the batch's last to every projection
        that has not seen them, with its position, in one transaction."""
        touched_after: list[tuple[int, UUID, str]] = []
        created_at: dict[UUID, int] = {}  # aggregates whose first event is in this batch
        policy_changed_at: int | None = None
        reach = {n.originator_id: n.originator_version for n in batch}  # last in the batch
        self._prefetch(batch, reach)
        for notification in batch:
            aggregate_id = notification.originator_id
            assert isinstance(aggregate_id, UUID)
            if aggregate_id == REGISTER_ID:
                policy_changed_at = notification.id
                continue
            self._advance(aggregate_id, notification, reach[aggregate_id])
            touched_after.append((notification.id, aggregate_id, notification.topic))
            if notification.originator_version == 1:
                created_at[aggregate_id] = notification.id
        register = self._current_register(reload=policy_changed_at is not None)
        last = batch[-1].id
        # Usually every projection has seen the same events: group the work by position
        # (and by the events a projection declares cannot change its rows).
        work: dict[tuple[int, frozenset[str]], _Touched] = {}
        moved: list[str] = []
        with self.engine.begin() as conn:
            stored = self.lock_views(conn)
            for projection in self.projections:
                seen = stored.get(projection.name, 0)
                if seen >= last or seen < start:
                    # done by another process, or moved back by a rebuild that will redo it
                    continue
                unchanged_by: frozenset[str] = getattr(projection, "unchanged_by", frozenset())
                if (seen, unchanged_by) not in work:
                    work[seen, unchanged_by] = self._touched_since(
                        seen, touched_after, created_at, unchanged_by)
                touched = work[seen, unchanged_by]
                context = ProjectionContext(
                    conn=conn, store=self.store, register=register,
                    policy_changed=policy_changed_at is not None and policy_changed_at > seen,
                    cases=touched.cases, fresh=touched.fresh,
                    expired_only=touched.expired_only, partition=self.partition)
                projection.update(context, touched.subjects)
                moved.append(projection.name)
            self._write_positions(conn, moved, last, stored)
        if len(self._cache) > CACHE_LIMIT:
            self._cache.clear()

    def _touched_since(self, seen: int, touched_after: list[tuple[int, UUID, str]],
                       created_at: dict[UUID, int], unchanged_by: frozenset[str]) -> _Touched:
        """The aggregates with events after `seen`, leaving out those whose every such
        event is one of `unchanged_by` (topics that cannot change the projection's rows:
        a sweep's erasure does not touch consents, shares or suppression)."""
        fresh = {aid for aid, nid in created_at.items() if nid > seen}
        expired: dict[UUID, int] = {}
        other_events: set[UUID] = set()
        for nid, aid, topic in touched_after:
            if nid > seen:
                if topic == RETENTION_EXPIRED:
                    expired[aid] = expired.get(aid, 0) + 1
                else:
                    other_events.add(aid)
        touched = _Touched([], [], fresh, {aid: n for aid, n in expired.items()
                                           if aid not in other_events and aid not in fresh})
        for aggregate_id in dict.fromkeys(aid for nid, aid, topic in touched_after
                                          if nid > seen and topic not in unchanged_by):
            aggregate = self._cache[aggregate_id]
            if isinstance(aggregate, DataSubject):
                touched.subjects.append(aggregate)
            elif isinstance(aggregate, RequestCase):
                touched.cases.append(aggregate)
        return touched

    def _current_register(self, reload: bool) -> PolicyRegister | None:
        """The policy register, read again only when the log shows it changed."""
        if reload or not self._register_loaded:
            self._register = self.store.get_register()
            self._register_loaded = True
        return self._register

    def _prefetch(self, batch: Sequence[Notification], reach: dict[Any, int]) -> None:
        """Caches, in one query per 500, the aggregates this batch changes that the cache
        cannot bring to their first version here; each at its latest version if that lies
        within the batch (otherwise `_advance` reads it at the version it needs)."""
        first: dict[Any, int] = {}
        for n in batch:
            first.setdefault(n.originator_id, n.originator_version)
        missing = []
        for aggregate_id, version in first.items():
            if version == 1 or aggregate_id == REGISTER_ID:
                continue
            cached = self._cache.get(aggregate_id)
            if cached is None or not (cached.version == version - 1
                                      or version <= cached.version <= reach[aggregate_id]):
                missing.append(aggregate_id)
        if len(missing) < 2:
            return  # one read either way
        for aggregate in self.store.get_aggregates(missing):
            if aggregate.version <= reach[aggregate.id]:
                self._cache[aggregate.id] = aggregate

    def _advance(self, aggregate_id: UUID, notification: Notification, reach: int) -> None:
        """Brings the cached aggregate to the notification's version, loading it if the
        cache cannot. `reach`: the aggregate's last version in this batch. The event is
        decoded only when it is applied (not for aggregates handed over already past it)."""
        version = notification.originator_version
        decode: Callable[[Notification], Any] = self.store.mapper.to_domain_event
        cached = self._cache.get(aggregate_id)
        try:
            if cached is not None and cached.version == version - 1:
                fast_replay.mutate(decode(notification), cached)
            elif cached is not None and version <= cached.version <= reach:
                pass  # handed over by `remember`: holds this event, and no later than the batch
            elif version == 1:
                self._cache[aggregate_id] = fast_replay.mutate(decode(notification), None)
            else:
                self._cache[aggregate_id] = self.store.repository.get(aggregate_id,
                                                                      version=version)
        except (AssertionError, OriginatorIDError, OriginatorVersionError, TypeError,
                KeyError) as error:
            # Only an event stored behind the application's back gets here (e.g. a copy of
            # an event under a new subject, or one without the attributes its method
            # takes): name it, as the chain check would. The copy it may have half changed
            # is not kept.
            self._cache.pop(aggregate_id, None)
            raise BrokenEvent(notification.id, notification.originator_id, version,
                              "does not follow from its subject's events before it") from error

    def _write_positions(self, conn: sa.Connection, names: list[str], position: int,
                         stored: dict[str, int]) -> None:
        """Moves these projections to `position`, in `conn`'s transaction (with their rows):
        one statement for those with a stored position, one for the others."""
        if self.partition is not None:
            self._partition_positions.update(dict.fromkeys(names, position))
            return
        known = [name for name in names if name in stored]
        if known:
            conn.execute(tables.positions.update().where(tables.positions.c.name.in_(known))
                         .values(position=position))
        new = [{"name": name, "position": position} for name in names if name not in stored]
        if new:
            conn.execute(tables.positions.insert(), new)
