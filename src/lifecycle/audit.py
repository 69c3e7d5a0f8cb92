"""Tamper evidence: keep the audit hash chain current and verify the stored log against it.

`AuditChain(store, engine).catch_up()` follows the notification log (its own tracked
position, big pages straight from the recorder) and links every new stored event into the
chain (see `lifecycle.projections.audit_chain`). `verify(store, engine)` reads the stored
events again in log order, recomputes every digest and reports each problem with its
position (notification id), originator id and version:

- `altered`   the stored event's digest differs from the chained one (a changed byte);
- `removed`   the chain has an event the store no longer holds;
- `inserted`  the store holds an event, in a gap inside the chain, that was never chained;
- `unchained` the chain's newest rows were removed (see `chain-altered`): the stored events
              they covered can no longer be checked;
- `reordered` a genuine event moved to another position, or an originator's versions are
              out of order;
- `chain-altered` the chain itself does not hash (a link, a checkpoint or the tracked
              position was changed, or chain rows were removed);
- `anchor-mismatch` the log does not reproduce a checkpoint kept outside the system.

Events beyond the chain head are only "not yet chained" (reported as `unchained`, the lag),
not tampering. Verification never decodes an event, so crypto-shredding (destroying keys in
the vault) cannot break it. A chain in the same database as the log detects tampering by
anyone who does not also recompute the chain; against someone who does, keep `anchor` (the
report's `POSITION:DIGEST`) somewhere else and pass it back to `verify`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple
from uuid import UUID

import sqlalchemy as sa
from eventsourcing.persistence import Notification

from lifecycle.aggregates.policy_register import REGISTER_ID
from lifecycle.event_store import SubjectStore
from lifecycle.projections import tables
from lifecycle.projections.runner import ProjectionStatus
from lifecycle.projections.audit_chain import (
    LOG_GENESIS,
    NAME,
    AuditChainProjection,
    PositionMoved,
    chain,
    checkpoints,
    event_digest,
    link,
    subject_genesis,
)

BATCH = 5000    # events chained per transaction
PAGE = 10_000   # events read per page when verifying

ALTERED, REMOVED, INSERTED, REORDERED = "altered", "removed", "inserted", "reordered"
UNCHAINED, CHAIN_ALTERED, ANCHOR_MISMATCH = "unchained", "chain-altered", "anchor-mismatch"


# -- keeping the chain current ------------------------------------------------------------

class AuditChain:
    """Follows the log on its own and links every new stored event into the chain."""

    def __init__(self, store: SubjectStore, engine: sa.Engine, batch: int = BATCH,
                 projection: AuditChainProjection | None = None) -> None:
        self.store = store
        self.engine = engine
        self.batch = batch
        self.projection = projection or AuditChainProjection()

    def position(self) -> int:
        with self.engine.connect() as conn:
            return self.projection.head(conn).position

    def status(self) -> ProjectionStatus:
        return ProjectionStatus(NAME, self.position(),
                           int(self.store.recorder.max_notification_id() or 0))

    def catch_up(self, now: datetime | None = None,
                 on_progress: Callable[[int], None] | None = None,
                 attempts: int = 5) -> int:
        """Chains every stored event after the head; returns how many.

        One transaction per batch of `batch` events (rows, checkpoints and position
        together). When another process chained the same events first, the batch rolls
        back and is retried from the new head.
        """
        chained = conflicts = 0
        while True:
            try:
                with self.engine.begin() as conn:
                    head = self.projection.head(conn, lock=True)
                    batch = self.store.recorder.select_notifications(
                        head.position, self.batch, inclusive_of_start=False)
                    if batch:
                        self.projection.append(conn, batch, now or datetime.now(UTC), head)
            except (PositionMoved, sa.exc.IntegrityError, sa.exc.OperationalError):
                conflicts += 1
                if conflicts >= attempts:
                    raise
                time.sleep(0.05 * conflicts)
                continue
            if not batch:
                return chained
            chained += len(batch)
            if on_progress:
                on_progress(len(batch))


# -- the report ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Anchor:
    """A checkpoint kept outside the system: the log digest at a position."""

    position: int
    log_digest: str

    @classmethod
    def parse(cls, text: str) -> Anchor:
        """`POSITION:DIGEST`, as printed by `audit verify`."""
        position, sep, digest = text.strip().partition(":")
        digest = digest.strip().lower()
        if not sep or not position.strip().isdigit() or len(digest) != 64 or any(
                c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"{text!r} is not POSITION:SHA256-HEX")
        return cls(int(position), digest)

    def __str__(self) -> str:
        return f"{self.position}:{self.log_digest}"


@dataclass(frozen=True)
class Problem:
    kind: str
    position: int | None
    originator_id: str | None
    originator_version: int | None
    detail: str
    topic: str | None = None
    subject: str | None = None  # the controller's reference, where the views know it
    expected: str | None = None  # the chained digest
    found: str | None = None     # the digest recomputed from the store

    @property
    def event(self) -> str | None:
        return None if self.topic is None else self.topic.rpartition(".")[2]

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "position": self.position,
                "originator_id": self.originator_id,
                "originator_version": self.originator_version, "subject": self.subject,
                "event": self.event, "topic": self.topic, "detail": self.detail,
                "expected": self.expected, "found": self.found}

    def describe(self) -> str:
        where = f"position {self.position}" if self.position is not None else "chain"
        who = self.subject or self.originator_id
        what = "" if who is None else f" {who}"
        if self.originator_version is not None:
            what += f" v{self.originator_version}"
        if self.event:
            what += f" ({self.event})"
        return f"{self.kind} at {where}:{what}: {self.detail}" if what else \
            f"{self.kind} at {where}: {self.detail}"


@dataclass
class VerifyReport:
    head: int                      # the chain's tracked position
    log_head: int                  # the newest stored notification id
    events_checked: int = 0        # stored events compared with the chain
    chained: int = 0               # chain rows read
    problems: list[Problem] = field(default_factory=list)
    checkpoint: dict[str, Any] | None = None
    anchor: str | None = None      # the anchor that was checked, if any

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def unchained(self) -> int:
        """Events stored after the chain head: not yet chained (lag), not tampering."""
        return max(0, self.log_head - self.head)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "events_checked": self.events_checked,
                "chained": self.chained, "head": self.head, "log_head": self.log_head,
                "unchained": self.unchained, "checkpoint": self.checkpoint,
                "anchor_checked": self.anchor,
                "problems": [p.as_dict() for p in self.problems]}

    def render(self) -> list[str]:
        """Human-readable lines, one per problem after a summary."""
        state = "ok" if self.ok else f"{len(self.problems)} problem(s)"
        lines = [f"audit verify: {state}; {self.events_checked} events checked up to "
                 f"position {self.head}, {self.unchained} not yet chained"]
        if self.checkpoint is not None:
            lines.append(f"checkpoint: {self.checkpoint['anchor']} "
                         f"({self.checkpoint['events']} events)")
        lines += [f"  {problem.describe()}" for problem in self.problems]
        return lines


# -- verification -------------------------------------------------------------------------

class ChainRow(NamedTuple):
    notification_id: int
    seq: int
    originator_id: str
    originator_version: int
    topic: str
    event_digest: str
    subject_digest: str
    log_digest: str


@dataclass(slots=True)
class _Originator:
    chained_version: int = 0
    chained_digest: str | None = None
    stored_version: int = 0


@dataclass
class _Mismatch:
    notification: Notification
    expected: str
    found: str
    out_of_order: bool


def verify(store: SubjectStore, engine: sa.Engine, anchor: Anchor | None = None,
           page: int = PAGE) -> VerifyReport:
    """Recomputes every digest from the stored events and compares with the chain."""
    return _Verifier(store, engine, anchor, page).run()


class _Verifier:
    def __init__(self, store: SubjectStore, engine: sa.Engine, anchor: Anchor | None,
                 page: int) -> None:
        self.store, self.engine, self.anchor, self.page = store, engine, anchor, page
        self.problems: list[Problem] = []
        self.mismatches: list[_Mismatch] = []
        self.originators: dict[str, _Originator] = {}
        self.prev_seq, self.prev_log = 0, LOG_GENESIS
        self.recomputed = LOG_GENESIS
        self.anchor_digest: str | None = None
        self.marks: dict[int, list[Any]] = {}
        self.chain_max = 0

    def run(self) -> VerifyReport:
        with self.engine.connect() as conn:  # one statement: a consistent snapshot
            position, chain_max, checkpoint_id = conn.execute(sa.select(
                sa.select(tables.positions.c.position)
                .where(tables.positions.c.name == NAME).scalar_subquery(),
                sa.select(sa.func.max(chain.c.notification_id)).scalar_subquery(),
                sa.select(sa.func.max(checkpoints.c.id)).scalar_subquery())).one()
            marks = conn.execute(sa.select(checkpoints)
                                 .where(checkpoints.c.id <= (checkpoint_id or 0))
                                 .order_by(checkpoints.c.id)).all()
        head = int(position or 0)
        self.chain_max = int(chain_max or 0)
        bound = max(head, self.chain_max)
        report = VerifyReport(head=head,
                              log_head=int(self.store.recorder.max_notification_id() or 0),
                              anchor=None if self.anchor is None else str(self.anchor))
        self._check_position(head, int(chain_max or 0), marks)
        for mark in marks:
            if mark.position > bound:
                self.problems.append(Problem(
                    CHAIN_ALTERED, int(mark.position), None, None,
                    f"checkpoint #{mark.id} is beyond the end of the chain ({bound}): "
                    "chain rows were removed"))
            self.marks.setdefault(int(mark.position), []).append(mark)
        report.events_checked, report.chained = self._merge(bound)
        for position, left in sorted(self.marks.items()):
            if position <= bound:
                self.problems += [Problem(
                    CHAIN_ALTERED, position, None, None,
                    f"checkpoint #{mark.id} ({mark.kind}) is at a position the chain "
                    "has no row for") for mark in left]
        self._resolve_mismatches(bound)
        self._check_anchor(bound)
        if marks:
            last = marks[-1]
            report.checkpoint = {
                "position": int(last.position), "events": int(last.events),
                "log_digest": last.log_digest, "created_at": last.created_at.isoformat(),
                "recomputed": self.recomputed,
                "anchor": f"{int(last.position)}:{last.log_digest}"}
        report.problems = self._named(sorted(
            self.problems, key=lambda p: (p.position or 0, p.kind)))
        return report

    # -- the walk ------------------------------------------------------------------------

    def _merge(self, bound: int) -> tuple[int, int]:
        stored, chained = self._stored(bound), self._chain(bound)
        event, row = next(stored, None), next(chained, None)
        checked = rows = 0
        while event is not None or row is not None:
            if row is None or (event is not None and event.id < row.notification_id):
                assert event is not None
                self._stored_event(event, None)
                checked += 1
                event = next(stored, None)
            elif event is None or row.notification_id < event.id:
                self._chain_row(row)
                self.problems.append(Problem(
                    REMOVED, int(row.notification_id), row.originator_id,
                    int(row.originator_version),
                    "the chain has this event; the store no longer holds it",
                    topic=row.topic, expected=row.event_digest))
                self._passed_anchor(int(row.notification_id), None)
                rows += 1
                row = next(chained, None)
            else:
                digest = self._chain_row(row, event)
                self._stored_event(event, row, digest)
                checked += 1
                rows += 1
                event, row = next(stored, None), next(chained, None)
        return checked, rows

    def _stored(self, bound: int) -> Iterator[Notification]:
        start = 0
        while start < bound:
            batch = self.store.recorder.select_notifications(
                start, self.page, stop=bound, inclusive_of_start=False)
            if not batch:
                return
            yield from batch
            start = batch[-1].id

    def _chain(self, bound: int) -> Iterator[ChainRow]:
        columns = (chain.c.notification_id, chain.c.seq, chain.c.originator_id,
                   chain.c.originator_version, chain.c.topic, chain.c.event_digest,
                   chain.c.subject_digest, chain.c.log_digest)
        start = 0
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(sa.select(*columns)
                                    .where(chain.c.notification_id > start)
                                    .where(chain.c.notification_id <= bound)
                                    .order_by(chain.c.notification_id)
                                    .limit(self.page)).all()
            if not rows:
                return
            for row in rows:
                yield ChainRow(*row)
            start = int(rows[-1][0])

    def _stored_event(self, event: Notification, row: ChainRow | None,
                      known: tuple[str, str, str] | None = None) -> None:
        if known is not None:  # (originator, digest, log link) from _chain_row
            originator, digest, self.recomputed = known
        else:
            originator = str(event.originator_id)
            digest = event_digest(originator, event.originator_version, event.topic,
                                  event.state)
            self.recomputed = link(self.recomputed, digest)
        self._passed_anchor(event.id, self.recomputed)
        state = self.originators.get(originator)
        if state is None:
            state = self.originators[originator] = _Originator()
        out_of_order = event.originator_version <= state.stored_version
        state.stored_version = max(state.stored_version, event.originator_version)
        if row is None and event.id > self.chain_max:
            self.problems.append(Problem(
                UNCHAINED, event.id, str(event.originator_id), event.originator_version,
                "below the tracked position but after the chain's last row: "
                "cannot be checked", topic=event.topic, found=digest))
        elif row is None:
            self.problems.append(Problem(
                INSERTED, event.id, str(event.originator_id), event.originator_version,
                "stored inside the chained range but never chained", topic=event.topic,
                found=digest))
        elif digest != row.event_digest:
            self.mismatches.append(_Mismatch(event, row.event_digest, digest, out_of_order))

    def _chain_row(self, row: ChainRow,
                   event: Notification | None = None) -> tuple[str, str, str] | None:
        """Checks one chain row; with the stored event at the same position, returns
        (originator, recomputed digest, recomputed log link) so it is hashed only once."""
        nid, seq, originator, version, topic, digest, subject_digest, log_digest = row
        known: tuple[str, str, str] | None = None
        chained_log: str | None = None
        if event is not None:
            stored_originator = str(event.originator_id)
            found = event_digest(stored_originator, event.originator_version, event.topic,
                                 event.state)
            recomputed = link(self.recomputed, found)
            if found == digest and self.recomputed == self.prev_log:
                chained_log = recomputed  # the same SHA-256 input: hash it once
            known = (stored_originator, found, recomputed)

        def broken(detail: str, kind: str = CHAIN_ALTERED) -> None:
            self.problems.append(Problem(kind, nid, originator, version, detail, topic=topic))

        if seq != self.prev_seq + 1:
            broken(f"chain sequence jumps from {self.prev_seq} to {seq}: "
                   "chain rows were removed or inserted before this one")
        if (chained_log or link(self.prev_log, digest)) != log_digest:
            broken("the log link does not hash from the previous one")
        state = self.originators.get(originator)
        if state is None:
            state = self.originators[originator] = _Originator()
        if link(state.chained_digest or subject_genesis(originator),
                digest) != subject_digest:
            broken("the subject link does not hash from this originator's previous one")
        if version != state.chained_version + 1:
            broken(f"version {version} is chained after version {state.chained_version} "
                   "of the same originator", REORDERED)
        if nid in self.marks:
            for mark in self.marks.pop(nid):
                if mark.log_digest != log_digest or int(mark.events) != seq:
                    broken(f"checkpoint #{mark.id} ({mark.kind}) disagrees with the chain")
        self.prev_seq, self.prev_log = seq, log_digest
        state.chained_version, state.chained_digest = version, subject_digest
        return known

    # -- after the walk ---------------------------------------------------------------------

    def _check_position(self, head: int, chain_max: int, marks: Sequence[Any]) -> None:
        if head < chain_max:
            self.problems.append(Problem(
                CHAIN_ALTERED, chain_max, None, None,
                f"chain rows beyond the tracked position {head}"))
        elif head > chain_max:
            self.problems.append(Problem(
                CHAIN_ALTERED, head, None, None,
                f"the tracked position is {head} but the chain ends at {chain_max}: "
                "chain rows were removed"))
        if head and (not marks or int(marks[-1].position) != head):
            self.problems.append(Problem(
                CHAIN_ALTERED, head, None, None,
                "the latest checkpoint is not at the chain head"))

    def _resolve_mismatches(self, bound: int) -> None:
        """Altered, or a genuine event moved from another position (reordered)."""
        if not self.mismatches:
            return
        wanted = {m.found: m for m in self.mismatches}
        moved_from: dict[str, int] = {}
        for row in self._chain(bound):
            mismatch = wanted.get(row.event_digest)
            if mismatch is not None and int(row.notification_id) != mismatch.notification.id:
                moved_from[mismatch.found] = int(row.notification_id)
        for m in self.mismatches:
            n = m.notification
            origin = moved_from.get(m.found)
            if origin is not None:
                kind, detail = REORDERED, f"this is the event chained at position {origin}"
            elif m.out_of_order:
                kind, detail = REORDERED, "stored after a later version of the same originator"
            else:
                kind, detail = ALTERED, "the stored bytes do not match the chained digest"
            self.problems.append(Problem(kind, n.id, str(n.originator_id),
                                         n.originator_version, detail, topic=n.topic,
                                         expected=m.expected, found=m.found))

    def _passed_anchor(self, position: int, digest: str | None) -> None:
        if self.anchor is not None and position == self.anchor.position:
            self.anchor_digest = digest or "missing"

    def _check_anchor(self, bound: int) -> None:
        if self.anchor is None:
            return
        found = self.anchor_digest
        if found == self.anchor.log_digest:
            return
        if found is None:
            detail = (f"no stored event at the anchor's position "
                      f"(chain ends at {bound})")
        elif found == "missing":
            detail = "the event at the anchor's position is no longer stored"
        else:
            detail = f"the stored log up to here hashes to {found}, not the anchor's digest"
        self.problems.append(Problem(ANCHOR_MISMATCH, self.anchor.position, None, None,
                                     detail, expected=self.anchor.log_digest,
                                     found=None if found == "missing" else found))

    def _named(self, problems: list[Problem]) -> list[Problem]:
        """Adds each originator's reference: from the subjects view, else its first event."""
        ids = {p.originator_id for p in problems if p.originator_id}
        if not ids:
            return problems
        names = {str(REGISTER_ID): "policy-register"}
        with self.engine.connect() as conn:  # the views engine made every read-model table
            names.update((str(sid), str(ref)) for sid, ref in conn.execute(
                sa.select(tables.subjects.c.subject_id, tables.subjects.c.reference)
                .where(tables.subjects.c.subject_id.in_(sorted(ids)))))
        for originator in ids - names.keys():
            reference = self._first_event_reference(originator)
            if reference is not None:
                names[originator] = reference
        return [Problem(p.kind, p.position, p.originator_id, p.originator_version, p.detail,
                        p.topic, names.get(p.originator_id or ""), p.expected, p.found)
                for p in problems]

    def _first_event_reference(self, originator: str) -> str | None:
        """The `reference` recorded by the originator's first event, if it still decodes."""
        try:
            stored = self.store.recorder.select_events(UUID(originator), lte=1)
            if not stored:
                return None
            reference = getattr(self.store.mapper.to_domain_event(stored[0]),
                                "reference", None)
        except Exception:  # noqa: BLE001 - a tampered or foreign event: no name, no harm
            return None
        return reference if isinstance(reference, str) else None
