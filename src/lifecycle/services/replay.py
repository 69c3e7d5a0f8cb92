"""Auditor replay: the state as of a moment, rebuilt from the event log into fresh read models.

`replay(store, until, views_url)` reads the whole notification log, in pages, up to the
head it saw when it started; groups each data subject's events; rebuilds every subject as
it stood at `until` with :func:`lifecycle.services.dsar.subject_as_of` (fact time decides, not
recording time); and writes the result into a fresh, empty set of the live read-model
tables (:mod:`lifecycle.projections.tables`) with the live projection classes, so the
replayed read models have exactly the shape of the live ones. The retention schedule is
planned under the adoption in force at `until`. The report is then read back from those
fresh tables.

Replay is a pure read of the event store: it never saves an event and never opens the key
vault, so personal values stay sealed (reports say "sealed", or "erased" once shredded).

A subject exists at `until` from its first fact at or before `until`: the registration
event itself carries no fact time (only the time it was recorded, which for history
ingested late is after the facts it introduces).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any
from uuid import UUID

import sqlalchemy as sa

from lifecycle.aggregates.data_subject import DataSubject
from lifecycle.aggregates.policy_register import (
    REGISTER_ID,
    Adoption,
    PolicyRegister,
)
from lifecycle.services.dsar import applies_at, subject_as_of
from lifecycle.domain.errors import LifecycleError, SubjectNotFound
from lifecycle.store.event_store import SubjectStore
from lifecycle.projections import tables
from lifecycle.projections.documents import ERASED, open_document, retention_entry
from lifecycle.projections.runner import create_views_engine
from lifecycle.projections.views import (
    ConsentsProjection,
    DisclosuresProjection,
    Projection,
    ProjectionContext,
    ScheduleProjection,
    SubjectsProjection,
    SuppressionProjection,
)

PAGE = 1000
WRITE_CHUNK = 1000
SEALED = "sealed"
VIEWS_FILE = "views.sqlite"

# The subject read models, in the live order (the schedule follows the subjects table).
REPLAYED: tuple[Projection, ...] = (
    SubjectsProjection(), ScheduleProjection(), SuppressionProjection(),
    ConsentsProjection(), DisclosuresProjection(),
)


class ReplayTargetNotFresh(LifecycleError):
    """The read models to replay into already hold rows (replay only writes fresh ones)."""


@dataclass
class LogContents:
    """What one pass over the notification log found, grouped per aggregate."""

    head: int
    events_read: int = 0
    subjects: dict[UUID, list[Any]] = field(default_factory=dict)
    register: PolicyRegister | None = None
    policy_events: int = 0
    other_events: int = 0


def read_log(store: SubjectStore, on_progress: Callable[[int], None] | None = None,
             page: int = PAGE) -> LogContents:
    """Reads every notification up to the head seen at the start, in pages, in order.

    Subject events are grouped per originator in stored order; the policy register is
    rebuilt on the side; events of any other aggregate are counted and left alone.
    """
    recorder = store.recorder
    contents = LogContents(head=int(recorder.max_notification_id() or 0))
    start = 0
    while start < contents.head:
        batch = recorder.select_notifications(start, page, stop=contents.head,
                                              inclusive_of_start=False)
        if not batch:
            break
        for notification in batch:
            domain_event: Any = store.mapper.to_domain_event(notification)
            if notification.originator_id == REGISTER_ID:
                contents.register = domain_event.mutate(contents.register)
                contents.policy_events += 1
            elif isinstance(domain_event, DataSubject.Event):
                subject_id = notification.originator_id
                assert isinstance(subject_id, UUID)
                contents.subjects.setdefault(subject_id, []).append(domain_event)
            else:
                contents.other_events += 1
        contents.events_read += len(batch)
        start = batch[-1].id
        if on_progress is not None:
            on_progress(len(batch))
    return contents


def adoption_in_force(register: PolicyRegister | None, at: datetime) -> Adoption | None:
    return register.in_force_or_none(at) if register is not None else None


def register_as_of(register: PolicyRegister | None,
                   adoption: Adoption | None) -> PolicyRegister | None:
    """A copy of the register whose latest adoption is the one in force at the moment
    replayed, so the schedule projection plans under that policy (never a later one)."""
    if register is None or adoption is None:
        return None
    view = copy.copy(register)
    view.adoptions = list(register.adoptions[:adoption.number])
    return view


@dataclass
class ReplayReport:
    """The state as of `as_of`, as read back from the replayed read models."""

    as_of: datetime
    head: int
    events_read: int
    events_applied: int
    events_later: int
    policy_events: int
    other_events: int
    subjects: int
    records: int
    records_held: int
    records_erased: int
    consents_in_force: int
    consents_by_purpose: dict[str, int]
    disclosures: list[dict[str, Any]]
    suppressed: int
    retention_due: int
    retention_due_by_rule: dict[str, int]
    policy: dict[str, Any] | None
    read_models: str | None
    subject: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "policy": self.policy,
            "events": {"head": self.head, "read": self.events_read,
                       "applied": self.events_applied, "after_as_of": self.events_later,
                       "policy_register": self.policy_events, "other": self.other_events},
            "subjects": self.subjects,
            "records": {"total": self.records, "held": self.records_held,
                        "erased": self.records_erased},
            "consents_in_force": self.consents_in_force,
            "consents_in_force_by_purpose": self.consents_by_purpose,
            "disclosures_by_recipient": self.disclosures,
            "suppressed": self.suppressed,
            "retention_due": {"total": self.retention_due,
                              "by_rule": self.retention_due_by_rule},
            "read_models": self.read_models,
            "subject": self.subject,
        }


@dataclass
class Rebuilt:
    """The subjects as they stood at `as_of`, and how many events went into them."""

    subjects: list[DataSubject]
    applied: int
    later: int


def rebuild_subjects(contents: LogContents, as_of: datetime,
                     broken: Callable[[Any], Exception] | None = None) -> Rebuilt:
    """Every subject with a fact at or before `as_of`, rebuilt by `subject_as_of` (an event
    its method cannot take raises `broken`'s error)."""
    subjects: list[DataSubject] = []
    applied = later = 0
    for events in contents.subjects.values():
        counted = sum(1 for e in events[1:] if applies_at(e, as_of))  # after Registered
        if counted == 0:
            later += len(events)  # no fact by then: the subject did not exist yet
            continue
        subject = subject_as_of(events, as_of, broken)
        assert subject is not None
        subjects.append(subject)
        applied += 1 + counted
        later += len(events) - 1 - counted
    return Rebuilt(subjects, applied, later)


def write_read_models(engine: sa.Engine, store: SubjectStore, subjects: Sequence[DataSubject],
                      register: PolicyRegister | None, position: int) -> None:
    """Writes the subjects into empty read-model tables with the live projections, and
    each projection's position (the log head replayed), in one transaction."""
    with engine.begin() as conn:
        for table in (tables.subjects, tables.positions):
            if conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one():
                raise ReplayTargetNotFresh(
                    "the read models to replay into already hold rows; use an empty directory")
        context = ProjectionContext(conn=conn, store=store, register=register,
                                    policy_changed=False)
        for start in range(0, len(subjects), WRITE_CHUNK):
            chunk = subjects[start:start + WRITE_CHUNK]
            for projection in REPLAYED:
                projection.update(context, chunk)
        conn.execute(tables.positions.insert(),
                     [{"name": p.name, "position": position} for p in REPLAYED])


def sealed_document(document: dict[str, Any], retention: dict[str, dict[str, Any]]
                    ) -> dict[str, Any]:
    """A subject's replayed document with every value left sealed: never decrypted."""
    open_document(document, lambda sealed: ERASED if sealed == [] else SEALED,
                  lambda reason: None if reason is None else SEALED)
    for record in document["records"]:
        record["retention"] = retention.get(record["record"])
    return document


def read_report(engine: sa.Engine, as_of: datetime, reference: str | None
                ) -> dict[str, Any]:
    """The figures of the report, read from the (replayed) read models."""
    s, c, d, sched = tables.subjects, tables.consents, tables.disclosures, tables.schedule
    with engine.connect() as conn:
        subjects, records, erased, suppressed = conn.execute(sa.select(
            sa.func.count(), sa.func.coalesce(sa.func.sum(s.c.records), 0),
            sa.func.coalesce(sa.func.sum(s.c.erased), 0),
            sa.func.count().filter(s.c.suppressed.is_(True)))).one()
        consents: dict[str, int] = {purpose: int(n) for purpose, n in conn.execute(
            sa.select(c.c.purpose, sa.func.count()).where(c.c.in_force.is_(True))
            .group_by(c.c.purpose).order_by(c.c.purpose))}
        disclosures = [{
            "recipient": row.recipient, "role": row.role, "country": row.country,
            "safeguard": row.safeguard, "disclosures": row.n, "subjects": row.subjects,
        } for row in conn.execute(
            sa.select(d.c.recipient, d.c.role, d.c.country, d.c.safeguard,
                      sa.func.count().label("n"),
                      sa.func.count(sa.distinct(d.c.subject_id)).label("subjects"))
            .group_by(d.c.recipient, d.c.role, d.c.country, d.c.safeguard)
            .order_by(d.c.recipient, d.c.country))]
        due_filter = sa.and_(sched.c.done.is_(False), sched.c.dispose_at <= as_of)
        due_by_rule: dict[str, int] = {rule: int(n) for rule, n in conn.execute(
            sa.select(sched.c.rule, sa.func.count()).where(due_filter)
            .group_by(sched.c.rule).order_by(sched.c.rule))}
        subject: dict[str, Any] | None = None
        if reference is not None:
            row = conn.execute(sa.select(s.c.subject_id, s.c.document)
                               .where(s.c.reference == reference)).first()
            if row is None:
                raise SubjectNotFound(f"no facts recorded for that subject by {as_of.isoformat()}")
            retention = {r.record: {
                **retention_entry(r), "due_by_as_of": (not r.done) and r.dispose_at <= as_of,
            } for r in conn.execute(sa.select(sched).where(sched.c.subject_id == row.subject_id))}
            subject = sealed_document(dict(row.document), retention)
    return {
        "subjects": int(subjects), "records": int(records), "erased": int(erased),
        "suppressed": int(suppressed), "consents": consents, "disclosures": disclosures,
        "due_by_rule": due_by_rule, "subject": subject,
    }


def _policy_summary(adoption: Adoption | None) -> dict[str, Any] | None:
    if adoption is None:
        return None
    return {"label": adoption.label, "policy": adoption.policy_id,
            "version": adoption.version, "adoption": adoption.number,
            "adopted_at": adoption.adopted_at.isoformat(),
            "content_hash": adoption.content_hash}


@dataclass
class Replayed:
    """A finished replay: its report, the adoption in force then, and the read models."""

    report: ReplayReport
    adoption: Adoption | None
    engine: sa.Engine


@contextmanager
def replayed(store: SubjectStore, until: datetime, into: Path | None = None,
             subject: str | None = None,
             on_progress: Callable[[int], None] | None = None) -> Iterator[Replayed]:
    """Replays the log as of `until` into fresh read models (under `into`, which keeps them,
    or a temporary directory removed on exit) and yields the report with the open engine,
    for callers that read more from the replayed read models (the Art 30 record)."""
    if until.tzinfo is None:
        raise ValueError("the replay time needs a UTC offset")
    with TemporaryDirectory(prefix="lifecycle-replay-") as scratch:
        directory = into if into is not None else Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / VIEWS_FILE
        if target.exists():
            raise ReplayTargetNotFresh(
                f"{target} already exists; replay writes only fresh read models")
        store.check_reads()  # nothing is built from an event that does not match its chain
        contents = read_log(store, on_progress)
        adoption = adoption_in_force(contents.register, until)
        rebuilt = rebuild_subjects(contents, until, store.broken)
        engine = create_views_engine(f"sqlite:///{target}")
        try:
            write_read_models(engine, store, rebuilt.subjects,
                              register_as_of(contents.register, adoption), contents.head)
            figures = read_report(engine, until, subject)
            report = ReplayReport(
                as_of=until, head=contents.head, events_read=contents.events_read,
                events_applied=rebuilt.applied, events_later=rebuilt.later,
                policy_events=contents.policy_events, other_events=contents.other_events,
                subjects=figures["subjects"], records=figures["records"],
                records_held=figures["records"] - figures["erased"],
                records_erased=figures["erased"],
                consents_in_force=sum(figures["consents"].values()),
                consents_by_purpose=figures["consents"],
                disclosures=figures["disclosures"], suppressed=figures["suppressed"],
                retention_due=sum(figures["due_by_rule"].values()),
                retention_due_by_rule=figures["due_by_rule"],
                policy=_policy_summary(adoption),
                read_models=str(target) if into is not None else None,
                subject=figures["subject"])
            yield Replayed(report, adoption, engine)
        finally:
            engine.dispose()


def replay(store: SubjectStore, until: datetime, into: Path | None = None,
           subject: str | None = None,
           on_progress: Callable[[int], None] | None = None) -> ReplayReport:
    """The state as of `until`, rebuilt from the log into fresh read models, reported."""
    with replayed(store, until, into, subject, on_progress) as result:
        return result.report
