"""Tamper evidence: verify the stored log against the audit chain written with it.

The chain and its signed checkpoints are written in the same transaction as the events
(`lifecycle.store.event_chain`), so every stored event has its chain row from the moment it is
stored. `verify(store, engine)` reads the stored events again in log order, recomputes
every digest, checks every checkpoint's signature and reports each problem with its
position (notification id), originator id and version:

- `altered`    the stored event's digest differs from the chained one (a changed byte);
- `removed`    the chain has an event the store no longer holds;
- `unchained`  the store holds an event the chain does not (written behind the
               application's back, or its chain row was deleted);
- `reordered`  a genuine event moved to another position, or an originator's versions are
               out of order;
- `chain-altered` the chain itself does not hash (a link was changed, or rows removed);
- `checkpoint` a checkpoint is missing, altered, not signed by this store's signing key,
               or disagrees with the chain (the newest must be at the chain's last row);
- `anchor-mismatch` the log does not reproduce a head kept outside the system.

Verification never decodes an event, so crypto-shredding (destroying keys in the vault)
cannot break it. What it proves, and what only an anchor proves, is in the README.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from eventsourcing.persistence import Notification

from lifecycle.aggregates.policy_register import REGISTER_ID
from lifecycle.store.signing_key import Verifier
from lifecycle.domain.errors import LifecycleError
from lifecycle.store.event_chain import (
    LOG_GENESIS,
    ChainRow,
    Checkpoint,
    event_digest,
    link,
    originator_text,
    subject_genesis,
)
from lifecycle.store.event_store import (
    ChainedRecorder,
    SubjectStore,
    chain_backlog,
    chained_recorder,
    first_event_of_a_chaining_version,
)
from lifecycle.projections import tables

PAGE = 10_000   # events read per page when verifying

ALTERED, REMOVED, UNCHAINED, REORDERED = "altered", "removed", "unchained", "reordered"
CHAIN_ALTERED, CHECKPOINT, ANCHOR_MISMATCH = "chain-altered", "checkpoint", "anchor-mismatch"


def chain_lag(store: SubjectStore) -> int:
    """Stored events past the chain's newest row: 0 unless the log was altered or an
    older store's upgrade is under way (the chain is written with the events)."""
    log_head, chain_head, _ = chained_recorder(store).chain_heads()
    return max(log_head - chain_head, 0)


class ChainNotEmpty(Exception):
    """`chain_older_store` on a store whose chain already has rows or checkpoints."""


def chain_older_store(store: SubjectStore) -> int:
    """Chains every stored event of a store written before the chain was kept with the
    events, once; refused when the chain has anything in it (an emptied chain is
    tampering, not a backlog). Vouches only for the log as it stands now."""
    _, chain_head, checkpoints = chained_recorder(store).chain_heads()
    if chain_head or checkpoints:
        raise ChainNotEmpty(f"the audit chain already holds events up to position "
                            f"{chain_head} and {checkpoints} checkpoint(s)")
    stamped = first_event_of_a_chaining_version(store)
    if stamped is not None:
        raise ChainNotEmpty(f"the event at position {stamped} was stored by a version that "
                            "chains every event as it stores it: its missing chain was "
                            "removed (tampering), not never written")
    recorder = chained_recorder(store)
    assert recorder.signer is not None
    log_head, _, _ = recorder.chain_heads()
    recorder.begin_upgrade(recorder.signer, log_head)
    return chain_backlog(store)


# -- refusing to build on an altered log ---------------------------------------------------

class LogAltered(LifecycleError):
    """The stored log does not match its audit chain: reads that would build on it stop."""

    def __init__(self, problem: Problem, more: int = 0) -> None:
        self.problem = problem
        others = f" (and {more} more)" if more else ""
        super().__init__(f"the event log was altered: {problem.describe()}{others}; "
                         "`lifecycle audit verify` lists every change")


def check_originators(store: SubjectStore, originator_ids: list[UUID],
                      reference: str | None = None) -> None:
    """Raises LogAltered unless every stored event of these originators matches its chain
    row (what a subject's history or export does before decoding it): an altered,
    undecodable, forged or removed event is named with its position."""
    recorder = chained_recorder(store)
    for originator_id in originator_ids:
        originator = originator_text(originator_id)
        name = reference if originator_id == originator_ids[0] else None
        expected_version = 1
        for event, chained in recorder.chained_events(originator_id):
            found = event_digest(originator, event.originator_version, event.topic,
                                 event.state)
            detail = None
            if chained is None:
                detail = "the chain has no row for this stored event"
            elif chained != found:
                detail = "the stored bytes do not match the chained digest"
            elif event.originator_version != expected_version:
                detail = f"version {expected_version} is missing before it"
            if detail is not None:
                raise LogAltered(Problem(ALTERED, event.id, originator, event.originator_version,
                                         detail, topic=event.topic, subject=name))
            expected_version += 1


# -- anchors -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Anchor:
    """A head kept outside the system: the log digest at a position, and optionally the
    fingerprint of the key that signed it."""

    position: int
    log_digest: str
    key_id: str | None = None

    @classmethod
    def parse(cls, text: str) -> Anchor:
        """`POSITION:DIGEST` or `POSITION:DIGEST:KEY`, as `audit anchor` prints it."""
        parts = [p.strip().lower() for p in text.strip().split(":")]
        if len(parts) not in (2, 3) or not parts[0].isdigit() or not _hex(parts[1], 64) or (
                len(parts) == 3 and not _hex(parts[2], 16)):
            raise ValueError(f"{text!r} is not POSITION:SHA256-HEX[:KEY-FINGERPRINT]")
        return cls(int(parts[0]), parts[1], parts[2] if len(parts) == 3 else None)

    def __str__(self) -> str:
        text = f"{self.position}:{self.log_digest}"
        return text if self.key_id is None else f"{text}:{self.key_id}"


def _hex(text: str, length: int) -> bool:
    return len(text) == length and all(c in "0123456789abcdef" for c in text)


def signed_head(store: SubjectStore) -> dict[str, Any] | None:
    """The newest checkpoint, as an auditor keeps it: None for an empty store."""
    recorder = chained_recorder(store)
    marks = recorder.checkpoints()
    if not marks:
        return None
    return describe_checkpoint(marks[-1], recorder)


def describe_checkpoint(mark: Checkpoint, recorder: ChainedRecorder) -> dict[str, Any]:
    signer = recorder.signer
    public_key = signer.verifier.public_key.hex() if signer is not None else None
    return {"checkpoint": mark.seq, "position": mark.position, "events": mark.events,
            "log_digest": mark.log_digest.hex(), "signed_at": mark.signed_at,
            "key_fingerprint": mark.key_id, "public_key": public_key,
            "signature": mark.signature.hex(),
            "anchor": str(Anchor(mark.position, mark.log_digest.hex(), mark.key_id))}


# -- the report ---------------------------------------------------------------------------

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
    head: int                      # the chain's last position
    log_head: int                  # the newest stored notification id
    events_checked: int = 0        # stored events read and hashed
    chained: int = 0               # chain rows read
    checkpoints: int = 0           # checkpoints whose signature was checked
    key_fingerprint: str | None = None
    problems: list[Problem] = field(default_factory=list)
    checkpoint: dict[str, Any] | None = None
    anchor: str | None = None      # the anchor that was checked, if any

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def unchained(self) -> int:
        return sum(p.kind == UNCHAINED for p in self.problems)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "events_checked": self.events_checked,
                "chained": self.chained, "checkpoints": self.checkpoints,
                "head": self.head, "log_head": self.log_head, "unchained": self.unchained,
                "key_fingerprint": self.key_fingerprint, "checkpoint": self.checkpoint,
                "anchor_checked": self.anchor,
                "problems": [p.as_dict() for p in self.problems]}

    def render(self) -> list[str]:
        """Human-readable lines, one per problem after a summary."""
        state = "ok" if self.ok else f"{len(self.problems)} problem(s)"
        lines = [f"audit verify: {state}; {self.events_checked} events checked up to "
                 f"position {self.log_head}, {self.checkpoints} signed checkpoints "
                 f"(key {self.key_fingerprint})"]
        if self.anchor is not None:
            lines.append(f"anchor checked: {self.anchor}")
        lines += [f"  {problem.describe()}" for problem in self.problems]
        return lines


# -- verification -------------------------------------------------------------------------

@dataclass(slots=True)
class _Originator:
    text: str  # the id as digests spell it
    chained_version: int = 0
    chained_digest: bytes | None = None
    stored_version: int = 0

    def stored(self, version: int) -> bool:
        """Records a stored version; whether it came after a later one (out of order)."""
        out_of_order = version <= self.stored_version
        self.stored_version = max(self.stored_version, version)
        return out_of_order


@dataclass
class _Mismatch:
    notification: Notification
    expected: bytes
    found: bytes
    out_of_order: bool


def verify(store: SubjectStore, engine: sa.Engine | None, anchor: Anchor | None = None,
           page: int = PAGE) -> VerifyReport:
    """Recomputes every digest from the stored events and compares with the chain; checks
    every checkpoint. `engine` (the read models) only names subjects in problems."""
    return _Verifier(store, engine, anchor, page).run()


class _Verifier:
    def __init__(self, store: SubjectStore, engine: sa.Engine | None, anchor: Anchor | None,
                 page: int) -> None:
        self.store, self.engine, self.anchor, self.page = store, engine, anchor, page
        self.recorder = chained_recorder(store)
        assert self.recorder.signer is not None, "open the store with open_subject_store"
        self.verifier: Verifier = self.recorder.signer.verifier
        self.problems: list[Problem] = []
        self.mismatches: list[_Mismatch] = []
        self.originators: dict[UUID, _Originator] = {}
        self.prev_log = LOG_GENESIS   # the chain's own previous log link
        self.recomputed = LOG_GENESIS  # the log link recomputed from the stored events
        self.anchor_digest: str | None = None
        self.marks: dict[int, list[Checkpoint]] = {}
        self.rows = 0

    def run(self) -> VerifyReport:
        checked, self.recorder.checked_reads = self.recorder.checked_reads, False
        try:  # every problem is reported here, not raised at the first one
            return self._run()
        finally:
            self.recorder.checked_reads = checked

    def _run(self) -> VerifyReport:
        marks, (log_head, chain_head, _) = self._agreeing_heads()
        bound = max(log_head, chain_head)
        report = VerifyReport(head=chain_head, log_head=log_head,
                              key_fingerprint=self.verifier.fingerprint,
                              anchor=None if self.anchor is None else str(self.anchor))
        self._check_checkpoints(marks, chain_head)
        if log_head and not chain_head:
            self._problem(CHAIN_ALTERED, None, "the chain is empty but the store holds "
                          f"events up to position {log_head}")
        report.events_checked, report.chained = self._merge(bound)
        for position, left in sorted(self.marks.items()):
            for mark in left:
                self._problem(CHECKPOINT, position, f"checkpoint #{mark.seq} is at a position "
                              "the chain has no row for")
        self._resolve_mismatches(bound)
        self._check_anchor(bound)
        report.checkpoints = len(marks)
        if marks:
            report.checkpoint = describe_checkpoint(marks[-1], self.recorder)
            report.checkpoint["recomputed"] = self.recomputed.hex()
        report.problems = self._named(sorted(
            self.problems, key=lambda p: (p.position or 0, p.kind)))
        return report

    def _agreeing_heads(self, attempts: int = 20
                        ) -> tuple[list[Checkpoint], tuple[int, int, int]]:
        """The checkpoints and the heads, read again while writers commit between the two
        reads (the newest checkpoint is at the chain's last row in every committed state).
        A store where they never agree was tampered with and is reported as such."""
        marks = self.recorder.checkpoints()
        heads = self.recorder.chain_heads()
        for _ in range(attempts):
            newest = marks[-1].position if marks else 0
            if newest == heads[1]:
                break
            if newest < heads[1]:
                marks = self.recorder.checkpoints()  # a batch committed after the marks
            else:
                heads = self.recorder.chain_heads()  # ... or after the heads
        return marks, heads

    def _problem(self, kind: str, position: int | None, detail: str) -> None:
        self.problems.append(Problem(kind, position, None, None, detail))

    # -- checkpoints -------------------------------------------------------------------------

    def _check_checkpoints(self, marks: list[Checkpoint], chain_head: int) -> None:
        expected_seq = 1
        for mark in marks:
            if mark.seq != expected_seq:
                self._problem(CHECKPOINT, mark.position,
                              f"checkpoints #{expected_seq} to #{mark.seq - 1} are missing"
                              if mark.seq > expected_seq else
                              f"checkpoint #{mark.seq} is out of sequence")
            expected_seq = mark.seq + 1
            if mark.key_id != self.verifier.fingerprint:
                self._problem(CHECKPOINT, mark.position,
                              f"checkpoint #{mark.seq} names key {mark.key_id}, not this "
                              f"store's signing key {self.verifier.fingerprint}")
            elif not mark.verified_by(self.verifier):
                self._problem(CHECKPOINT, mark.position,
                              f"checkpoint #{mark.seq} is not signed by this store's signing "
                              "key: it was altered or forged")
            self.marks.setdefault(mark.position, []).append(mark)
        newest = marks[-1].position if marks else 0
        if chain_head and newest != chain_head:
            self._problem(CHECKPOINT, chain_head,
                          f"the newest checkpoint is at position {newest}, not at the chain's "
                          f"last row ({chain_head}): checkpoints or chain rows were removed")

    # -- the walk ------------------------------------------------------------------------

    def _merge(self, bound: int) -> tuple[int, int]:
        stored, chained = self._stored(bound), self._chain(bound)
        event, row = next(stored, None), next(chained, None)
        checked = rows = 0
        while event is not None or row is not None:
            if row is None or (event is not None and event.id < row.position):
                assert event is not None
                self._unchained(event)
                checked += 1
                event = next(stored, None)
            elif event is None or row.position < event.id:
                self._chain_row(row, None)
                self.problems.append(Problem(
                    REMOVED, row.position, originator_text(row.originator), row.version,
                    "the chain has this event; the store no longer holds it",
                    expected=row.event_digest.hex()))
                self._passed_anchor(row.position, None)
                rows += 1
                row = next(chained, None)
            else:
                self._chain_row(row, event)
                checked += 1
                rows += 1
                event, row = next(stored, None), next(chained, None)
        return checked, rows

    def _stored(self, bound: int) -> Iterator[Notification]:
        # From the lowest stored position, not from 1: an event forged at 0 or below is
        # loaded with its subject's history, so it must not escape the walk.
        start = min(0, self.recorder.lowest_position() - 1)
        while start < bound:
            batch = self.recorder.select_notifications(
                start, self.page, stop=bound, inclusive_of_start=False)
            if not batch:
                return
            yield from batch
            start = batch[-1].id

    def _chain(self, bound: int) -> Iterator[ChainRow]:
        start = 0
        while start < bound:
            rows = self.recorder.chain_rows(start, bound, self.page)
            if not rows:
                return
            yield from rows
            start = rows[-1].position

    def _state(self, originator_id: object) -> _Originator:
        """The walk's state of one originator, keyed by its UUID."""
        key = originator_id if isinstance(originator_id, UUID) else UUID(str(originator_id))
        state = self.originators.get(key)
        if state is None:
            state = self.originators[key] = _Originator(str(key))
        return state

    def _digest(self, event: Notification, state: _Originator) -> bytes:
        return event_digest(state.text, event.originator_version, event.topic, event.state)

    def _unchained(self, event: Notification) -> None:
        state = self._state(event.originator_id)
        digest = self._digest(event, state)
        self.recomputed = link(self.recomputed, digest)
        self._passed_anchor(event.id, self.recomputed.hex())
        state.stored(event.originator_version)
        self.problems.append(Problem(
            UNCHAINED, event.id, state.text, event.originator_version,
            "the store holds this event; the chain does not (written behind the "
            "application's back, or its chain row was deleted)",
            topic=event.topic, found=digest.hex()))

    def _chain_row(self, row: ChainRow, event: Notification | None) -> None:
        """Checks one chain row against its predecessors, its checkpoints and, when there
        is one, the stored event at its position."""
        position, _, version, digest, subject_digest, log_digest = row
        chained_log = None
        state = None
        if event is not None:
            stored = self._state(event.originator_id)
            found = self._digest(event, stored)
            recomputed = link(self.recomputed, found)
            if found == digest:  # the same originator: its digest covers the id
                state = stored
                if self.recomputed == self.prev_log:
                    chained_log = recomputed  # the same SHA-256 input: hash it once
            self.recomputed = recomputed
            self._passed_anchor(position, recomputed.hex())
            out_of_order = stored.stored(event.originator_version)
            if found != digest:
                self.mismatches.append(_Mismatch(event, digest, found, out_of_order))
        if state is None:
            state = self._state(row.originator)

        def broken(detail: str, kind: str = CHAIN_ALTERED) -> None:
            self.problems.append(Problem(kind, position, state.text, version, detail))

        if (chained_log or link(self.prev_log, digest)) != log_digest:
            broken("the log link does not hash from the previous one: chain rows were "
                   "changed or removed")
        if link(state.chained_digest or subject_genesis(state.text),
                digest) != subject_digest:
            broken("the subject link does not hash from this originator's previous one")
        if version != state.chained_version + 1:
            broken(f"version {version} is chained after version {state.chained_version} "
                   "of the same originator", REORDERED)
        self.rows += 1
        if position in self.marks:
            for mark in self.marks.pop(position):
                if mark.log_digest != log_digest or mark.events != self.rows:
                    broken(f"checkpoint #{mark.seq} disagrees with the chain", CHECKPOINT)
        self.prev_log = log_digest
        state.chained_version, state.chained_digest = version, subject_digest

    # -- after the walk ---------------------------------------------------------------------

    def _resolve_mismatches(self, bound: int) -> None:
        """Altered, or a genuine event moved from another position (reordered)."""
        if not self.mismatches:
            return
        wanted = {m.found: m for m in self.mismatches}
        moved_from: dict[bytes, int] = {}
        for row in self._chain(bound):
            mismatch = wanted.get(row.event_digest)
            if mismatch is not None and row.position != mismatch.notification.id:
                moved_from[mismatch.found] = row.position
        for m in self.mismatches:
            n = m.notification
            origin = moved_from.get(m.found)
            if origin is not None:
                kind, detail = REORDERED, f"this is the event chained at position {origin}"
            elif m.out_of_order:
                kind, detail = REORDERED, "stored after a later version of the same originator"
            else:
                kind, detail = ALTERED, "the stored bytes do not match the chained digest"
                if not self._decodes(n):
                    detail += "; it no longer decodes"
            self.problems.append(Problem(kind, n.id, originator_text(n.originator_id),
                                         n.originator_version, detail, topic=n.topic,
                                         expected=m.expected.hex(), found=m.found.hex()))

    def _decodes(self, notification: Notification) -> bool:
        try:
            self.store.mapper.to_domain_event(notification)
        except Exception:  # noqa: BLE001 - any failure to decode is what is asked
            return False
        return True

    def _passed_anchor(self, position: int, digest: str | None) -> None:
        if self.anchor is not None and position == self.anchor.position:
            self.anchor_digest = digest or "missing"

    def _check_anchor(self, bound: int) -> None:
        anchor = self.anchor
        if anchor is None:
            return
        if anchor.key_id is not None and anchor.key_id != self.verifier.fingerprint:
            self.problems.append(Problem(
                ANCHOR_MISMATCH, anchor.position, None, None,
                f"the anchor was signed with key {anchor.key_id}; this store's signing key "
                f"is {self.verifier.fingerprint}"))
        found = self.anchor_digest
        if found == anchor.log_digest:
            return
        if found is None:
            detail = f"no stored event at the anchor's position (the log ends at {bound})"
        elif found == "missing":
            detail = "the event at the anchor's position is no longer stored"
        else:
            detail = f"the stored log up to here hashes to {found}, not the anchor's digest"
        self.problems.append(Problem(ANCHOR_MISMATCH, anchor.position, None, None,
                                     detail, expected=anchor.log_digest,
                                     found=None if found == "missing" else found))

    def _named(self, problems: list[Problem]) -> list[Problem]:
        """Adds each originator's reference: from the subjects view, else its first event."""
        ids = {p.originator_id for p in problems if p.originator_id}
        if not ids:
            return problems
        names = {str(REGISTER_ID): "policy-register"}
        if self.engine is not None:
            try:
                with self.engine.connect() as conn:
                    names.update((str(sid), str(ref)) for sid, ref in conn.execute(
                        sa.select(tables.subjects.c.subject_id, tables.subjects.c.reference)
                        .where(tables.subjects.c.subject_id.in_(sorted(ids)))))
            except sa.exc.SQLAlchemyError:
                pass  # read models missing or damaged: named by their first events
        for originator in sorted(ids - names.keys())[:1000]:
            reference = self.store.reference_of(originator)
            if reference is not None:
                names[originator] = reference
        return [Problem(p.kind, p.position, p.originator_id, p.originator_version, p.detail,
                        p.topic, names.get(p.originator_id or ""), p.expected, p.found)
                for p in problems]
