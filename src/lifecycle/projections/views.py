"""The named projections. Each replaces the rows of the subjects a batch touched."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from eventsourcing.utils import get_topic

from lifecycle.aggregates.data_subject import DataSubject
from lifecycle.aggregates.policy_register import PolicyRegister
from lifecycle.aggregates.request_case import RequestCase
from lifecycle.store.event_store import Partition, SubjectStore
from lifecycle.policy.loader import policy_from_document
from lifecycle.projections import tables
from lifecycle.projections.bulk import insert_rows, json_text, update_rows
from lifecycle.projections.documents import document_after_erasures, subject_document
from lifecycle.domain.retention import plan

# A sweep's own events: they mark records erased or flagged for review, and never change
# a subject's consents, shares or suppression. The views built from those alone declare
# them `unchanged_by`, so a sweep does not rewrite their rows for every subject it erases.
SWEEP_EVENTS = frozenset(
    get_topic(getattr(DataSubject, name)) for name in ("RetentionExpired", "ReviewDue"))
RETENTION_EXPIRED = get_topic(getattr(DataSubject, "RetentionExpired"))


@dataclass
class ProjectionContext:
    conn: sa.Connection
    store: SubjectStore
    register: PolicyRegister | None
    policy_changed: bool
    cases: Sequence[RequestCase] = ()
    # Aggregates created after this projection's position: none of them has a row yet,
    # so their rows are inserted without a DELETE first.
    fresh: Collection[UUID] = frozenset()
    # A partition of a parallel rebuild: its rows only (on PostgreSQL the other partitions
    # write the same scratch tables).
    partition: Partition | None = None
    # Subjects whose every event after this projection's position is a RetentionExpired
    # (a sweep's erasure of records): only which records are erased changed. With the
    # number of those events, where known (each appended one erasure).
    expired_only: Collection[UUID] | Mapping[UUID, int] = frozenset()

    def stale_ids(self, aggregates: Iterable[DataSubject | RequestCase]) -> list[str]:
        """The ids whose existing rows must be deleted before the new ones go in."""
        return [str(a.id) for a in aggregates if a.id not in self.fresh]


class Projection(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def tables(self) -> Sequence[sa.Table]: ...

    def update(self, ctx: ProjectionContext, subjects: Sequence[DataSubject]) -> None: ...


def _replace(conn: sa.Connection, table: sa.Table, stale_ids: list[str],
             rows: list[dict[str, object]], key: str = "subject_id",
             encoded: Collection[str] = ()) -> None:
    if conn.dialect.name == "postgresql":
        if stale_ids:  # one array parameter: the same statement whatever the count
            conn.execute(table.delete().where(table.c[key] == sa.any_(
                sa.bindparam("stale", stale_ids, type_=ARRAY(sa.String)))))
    else:
        for start in range(0, len(stale_ids), 500):
            conn.execute(table.delete().where(table.c[key].in_(stale_ids[start:start + 500])))
    insert_rows(conn, table, rows, encoded)


class SubjectsProjection:
    """Current state of each subject (values still sealed), for `subject show` and exports."""

    name = "subjects"
    tables = (tables.subjects,)

    def update(self, ctx: ProjectionContext, subjects: Sequence[DataSubject]) -> None:
        after_erasures = self._after_erasures(ctx, subjects)
        rest = subjects
        if after_erasures:
            # Updated in place (on SQLite one statement a row, not two): of a row, an
            # erasure by retention changes only these (`records` counts erased ones too).
            update_rows(ctx.conn, tables.subjects, [{
                "subject_id": str(s.id), "version": s.version,
                "erased": sum(1 for r in s.records.values() if r.erased_at is not None),
                "document": after_erasures[s.id],
            } for s in subjects if s.id in after_erasures], key="subject_id",
                encoded=("document",))
            rest = [s for s in subjects if s.id not in after_erasures]
        _replace(ctx.conn, tables.subjects, ctx.stale_ids(rest), [
            self._row(s, json_text(subject_document(s))) for s in rest], encoded=("document",))

    @staticmethod
    def _row(s: DataSubject, document: str) -> dict[str, object]:
        return {
            "subject_id": str(s.id), "reference": s.reference, "version": s.version,
            "records": len(s.records),
            "erased": sum(1 for r in s.records.values() if r.erased_at is not None),
            "suppressed": s.suppressed_at is not None,
            "last_activity_at": s.last_activity_at,
            "document": document,
        }

    @staticmethod
    def _after_erasures(ctx: ProjectionContext, subjects: Sequence[DataSubject]
                        ) -> dict[UUID, str]:
        """The document texts of the subjects whose only events since are erasures by
        retention, from their stored ones where `document_after_erasures` can tell."""
        if ctx.partition is not None or not ctx.expired_only:
            return {}
        ids = [str(s.id) for s in subjects if s.id in ctx.expired_only]
        if not ids:
            return {}
        table, conn = tables.subjects, ctx.conn
        query = sa.select(table.c.subject_id, sa.cast(table.c.document, sa.Text))
        stored: dict[str, str] = {}
        if conn.dialect.name == "postgresql":
            stored.update(conn.execute(query.where(table.c.subject_id == sa.any_(
                sa.bindparam("ids", ids, type_=ARRAY(sa.String))))).all())
        else:
            for start in range(0, len(ids), 500):
                stored.update(conn.execute(query.where(
                    table.c.subject_id.in_(ids[start:start + 500]))).all())
        found: dict[UUID, str] = {}
        for s in subjects:
            text = stored.get(str(s.id))
            if text is not None:
                document = document_after_erasures(text, s)
                if document is not None:
                    found[s.id] = document
        return found


class ScheduleProjection:
    """When each record is disposed of, under which rule and policy; indexed by time."""

    name = "retention-schedule"
    tables = (tables.schedule,)

    def update(self, ctx: ProjectionContext, subjects: Sequence[DataSubject]) -> None:
        if ctx.policy_changed:
            known = self._known_subjects(ctx)  # the subjects view already has `subjects`
            if ctx.partition is None:
                ctx.conn.execute(tables.schedule.delete())
            else:
                _replace(ctx.conn, tables.schedule, [str(i) for i in known], [])
            self._write(ctx, list(subjects), replace=False)
            for chunk in self._other_subjects(ctx, known, {s.id for s in subjects}):
                self._write(ctx, chunk, replace=False)
        else:
            expired = [s for s in subjects if s.id in ctx.expired_only]
            self._drop_erased(ctx, expired)
            self._write(ctx, [s for s in subjects if s.id not in ctx.expired_only],
                        replace=True)

    @staticmethod
    def _drop_erased(ctx: ProjectionContext, subjects: list[DataSubject]) -> None:
        """Subjects whose only change is records erased by retention: those records'
        rows go (an erased record has no disposal). The other rows stay as they are: a
        record's plan reads its own erasure, never another record's, so they would be
        written again unchanged."""
        erased = [(str(s.id), r.record)
                  for s in subjects for r in s.records.values() if r.erased_at is not None]
        if not erased:
            return
        table, conn = tables.schedule, ctx.conn
        if conn.dialect.name == "postgresql":  # two array parameters, one statement
            quote = conn.dialect.identifier_preparer.quote
            conn.execute(sa.text(
                f"DELETE FROM {quote(table.name)} WHERE (subject_id, record) IN "
                "(SELECT * FROM unnest(CAST(:ids AS VARCHAR[]), CAST(:records AS VARCHAR[])))"),
                {"ids": [i for i, _ in erased], "records": [r for _, r in erased]})
            return
        conn.execute(table.delete().where(  # SQLite: one executemany, a key lookup each
            table.c.subject_id == sa.bindparam("id"), table.c.record == sa.bindparam("record")),
            [{"id": i, "record": r} for i, r in erased])

    @staticmethod
    def _known_subjects(ctx: ProjectionContext) -> list[UUID]:
        """The subjects in the subjects view (of this partition, in a parallel rebuild)."""
        ids = [UUID(row[0]) for row in ctx.conn.execute(
            sa.select(tables.subjects.c.subject_id).order_by(tables.subjects.c.subject_id))]
        partition = ctx.partition
        return ids if partition is None else [i for i in ids if partition.holds(i)]

    def _other_subjects(self, ctx: ProjectionContext, known: list[UUID], given: set[UUID]
                        ) -> Iterator[list[DataSubject]]:
        """Every other known subject, loaded from the store (a new policy re-plans all)."""
        ids = [i for i in known if i not in given]
        for start in range(0, len(ids), 1000):
            loaded = (ctx.store.get_subject_by_id(i) for i in ids[start:start + 1000])
            yield [s for s in loaded if s is not None]

    def _write(self, ctx: ProjectionContext, subjects: list[DataSubject], replace: bool) -> None:
        adoption = ctx.register.latest() if ctx.register else None
        rows: list[dict[str, object]] = []
        if adoption is not None:
            policy = policy_from_document(adoption.document)
            for s in subjects:
                for record in s.records.values():
                    disposal = plan(s, record, policy, adoption)
                    if disposal is None:
                        continue
                    rows.append({
                        "subject_id": str(s.id), "record": record.record,
                        "reference": s.reference, "purpose": record.purpose,
                        "rule": disposal.rule, "policy": disposal.policy,
                        "trigger": disposal.trigger, "trigger_at": disposal.trigger_at,
                        "due_at": disposal.due_at, "dispose_at": disposal.dispose_at,
                        "action": disposal.action,
                        "done": disposal.action == "review" and s.review_flagged(
                            record.record, disposal.rule, disposal.due_at),
                    })
        _replace(ctx.conn, tables.schedule, ctx.stale_ids(subjects) if replace else [], rows)


class SuppressionProjection:
    """Keyed hashes of suppressed e-mails, with the subjects that suppressed them and
    each time they did (lifted listings too): never the e-mail itself; survives erasure."""

    name = "suppression-listings"
    tables = (tables.suppression,)
    unchanged_by = SWEEP_EVENTS

    def update(self, ctx: ProjectionContext, subjects: Sequence[DataSubject]) -> None:
        rows: list[dict[str, object]] = [
            {"email_hash": digest, "subject_id": str(s.id), "since": since, "until": until}
            for s in subjects if s.suppression_held_from
            for digest, listings in s.listed_addresses().items()
            for since, until in listings]
        _replace(ctx.conn, tables.suppression, ctx.stale_ids(subjects), rows)


class ConsentsProjection:
    name = "consents"
    tables = (tables.consents,)
    unchanged_by = SWEEP_EVENTS

    def update(self, ctx: ProjectionContext, subjects: Sequence[DataSubject]) -> None:
        rows: list[dict[str, object]] = [
            {"subject_id": str(s.id), "purpose": c.purpose, "given_at": c.given_at,
             "withdrawn_at": c.withdrawn_at, "in_force": c.withdrawn_at is None}
            for s in subjects for c in s.consents.values()]
        _replace(ctx.conn, tables.consents, ctx.stale_ids(subjects), rows)


class DisclosuresProjection:
    name = "disclosures"
    tables = (tables.disclosures,)
    unchanged_by = SWEEP_EVENTS

    def update(self, ctx: ProjectionContext, subjects: Sequence[DataSubject]) -> None:
        rows: list[dict[str, object]] = [
            {"subject_id": str(s.id), "seq": n, "recipient": sh.recipient, "role": sh.role,
             "purpose": sh.purpose, "basis": sh.basis, "country": sh.country,
             "safeguard": sh.safeguard, "at": sh.at, "records": sh.records,
             "categories": sh.categories}
            for s in subjects for n, sh in enumerate(s.shares)]
        _replace(ctx.conn, tables.disclosures, ctx.stale_ids(subjects), rows)


class NotificationsProjection:
    """Art 19 items: each recipient to tell of each erasure, open until acknowledged."""

    name = "erasure-notifications"
    tables = (tables.notifications,)

    def update(self, ctx: ProjectionContext, subjects: Sequence[DataSubject]) -> None:
        # An erasure by retention of a subject that shared nothing has no one to tell:
        # its rows, none before, stay none.
        subjects = [s for s in subjects if s.shares or s.id not in ctx.expired_only]
        replaced: list[DataSubject] = []
        rows: list[dict[str, object]] = []
        for s in subjects:
            new = self._new_erasures(ctx, s)
            if new is None:
                replaced.append(s)
            rows.extend(
                {"subject_id": str(s.id), "erasure": n.erasure, "recipient": n.recipient,
                 "reference": s.reference, "records": n.records, "erased_at": n.erased_at,
                 "acknowledged_at": n.acknowledged_at}
                for n in s.notifications() if new is None or n.erasure in new)
        _replace(ctx.conn, tables.notifications, ctx.stale_ids(replaced), rows)

    @staticmethod
    def _new_erasures(ctx: ProjectionContext, s: DataSubject) -> set[str] | None:
        """For a subject whose only events since are erasures by retention, the erasures
        they added (their rows are added; the rows there stay as they are: a notification
        reads the subject's shares, acknowledgements and records' categories, which those
        events leave alone, and its own erasure's); None where a row there could change
        (an erasure merged into an earlier one of the same name) or the count is unknown."""
        counts = ctx.expired_only
        count = counts.get(s.id, 0) if isinstance(counts, Mapping) else 0
        if not 0 < count <= len(s.erasures):
            return None
        new = {e.ref for e in s.erasures[-count:]}
        if len(new) < count or any(e.ref in new for e in s.erasures[:-count]):
            return None
        return new


class RequestsProjection:
    """Every rights request with its status and current statutory deadline."""

    name = "requests"
    tables = (tables.requests,)

    def update(self, ctx: ProjectionContext, subjects: Sequence[DataSubject]) -> None:
        rows: list[dict[str, object]] = [{
            "case_id": str(c.id), "request": c.request, "reference": c.subject, "kind": c.kind,
            "status": c.status, "received_at": c.received_at, "deadline": c.deadline,
            "paused": c.is_paused, "extended_months": c.extended_months,
            "closed_at": c.closed_at,
        } for c in ctx.cases]
        _replace(ctx.conn, tables.requests, ctx.stale_ids(ctx.cases), rows, key="case_id")


# Order matters: the schedule reads the subjects table when a new policy is adopted.
PROJECTIONS: tuple[Projection, ...] = (
    SubjectsProjection(), ScheduleProjection(), SuppressionProjection(),
    ConsentsProjection(), DisclosuresProjection(), RequestsProjection(),
    NotificationsProjection(),
)
