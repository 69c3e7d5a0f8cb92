"""The Ledger: the application service that owns the event store and the key vault.

Thin methods: references and values in, get -> command -> save, results out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import psycopg
import sqlalchemy as sa
from eventsourcing.persistence import IntegrityError, PersistenceError

from lifecycle.store.actor import ActorMapper, actor_of, checked_actor, os_user, timeline
from lifecycle.services.adoption_impact import Impact, adoption_impact
from lifecycle.aggregates.data_subject import DataSubject
from lifecycle.aggregates.policy_register import REGISTER_ID, Adoption, PolicyRegister
from lifecycle.aggregates.request_case import DUE_SOON_DAYS, RequestCase
from lifecycle.services.audit import check_originators
from lifecycle.services.certificate import deletion_certificate
from lifecycle.store.vault import key_of, open_vault
from lifecycle.services.dsar import access_document, erased_key_ids, subject_as_of
from lifecycle.domain.errors import KeyDestroyed, SubjectNotFound
from lifecycle.store.event_store import SAVE_RETRIES, SubjectStore, open_subject_store
from lifecycle.store.engines import reads_of
from lifecycle.domain.facts import Rejection, refuse_adoption_time
from lifecycle.domain.limits import Listing
from lifecycle.services.ingest import Ingestor, IngestReport, StoredListings
from lifecycle.store.lease import schema_lock
from lifecycle.policy.loader import load_policy, policy_from_document
from lifecycle.projections import parallel, tables
from lifecycle.projections.documents import ERASED, open_document, retention_entry
from lifecycle.projections.runner import ProjectionRunner, create_views_engine
from lifecycle.services.rotation import final_in_backups_of
from lifecycle.store.settings import Settings
from lifecycle.services.shredding import finish_interrupted
from lifecycle.domain.statutory_clock import days_left, is_overdue, london_date
from lifecycle.services.sweep import Sweeper, SweepReport, refuse_future_sweep
from lifecycle.services.suppression_flags import (
    gives_marketing_consent, live_values, with_suppression_breaches,
)
from lifecycle.domain.vocabulary import DIRECT_MARKETING


class Ledger:
    def __init__(self, settings: Settings, actor: str | None = None) -> None:
        """`actor`: who the events this ledger stores name (default: the OS user); a
        context of its own (`lifecycle.store.actor.acting_as`) overrides it, e.g. per request."""
        self.settings = settings
        if settings.database_url is None:
            settings.check_home()  # one line naming the home, before anything is written
        try:
            with schema_lock(settings):  # processes starting together create the schema in turn
                # The master key is checked against the vault before anything is written.
                self.vault = open_vault(settings)
                self.store: SubjectStore = open_subject_store(settings)
                self.views = create_views_engine(settings.views_url)
                self.view_reads = reads_of(self.views)
        except (OSError, sa.exc.OperationalError, psycopg.Error, PersistenceError) as error:
            raise settings.open_error(error) from None
        self.projections = ProjectionRunner(self.store, self.views)
        self.actor = actor or os_user()

    @property
    def actor(self) -> str:
        """Who the events stored through this ledger name, unless a context says otherwise."""
        return self._mapper().default_actor or os_user()

    @actor.setter
    def actor(self, name: str) -> None:
        self._mapper().default_actor = checked_actor(name, "actor")

    def _mapper(self) -> ActorMapper:
        mapper = self.store.mapper
        assert isinstance(mapper, ActorMapper)
        return mapper

    def close(self) -> None:
        self.store.close()
        self.vault.engine.dispose()
        self.views.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- write side -------------------------------------------------------------------

    def ingest(self, lines: Iterable[str], now: datetime,
               on_progress: Callable[[int], None] | None = None,
               on_rejected: Callable[[Rejection], None] | None = None) -> IngestReport:
        adoption = self.store.latest_adoption()
        policy = policy_from_document(adoption.document) if adoption else None

        def stored_listings() -> dict[str, dict[str, list[Listing]]]:
            """The suppression list as the store stands before this run (read once per
            run, after every stored event is projected)."""
            self.projections.catch_up()
            return self.suppression_listings()

        finish_interrupted(self.store, self.vault, now)
        return Ingestor(self.store, self.vault, now, on_progress, on_rejected, policy,
                        StoredListings(stored_listings)).run(lines)

    def adopt_policy(self, path: Path, at: datetime, now: datetime | None = None
                     ) -> tuple[Adoption, bool]:
        """Adopts the policy file from `at`; returns the adoption and whether it is new.
        Raises ArgumentRefused, before anything is written, for an `at` outside the time
        bounds or (given `now`) ahead of it by more than the clock skew: an adoption is
        recorded when it takes effect, and once recorded it can never be undone."""
        refuse_adoption_time(at, now)
        policy = load_policy(path)
        register = self.store.get_register() or PolicyRegister()
        changed = register.adopt(policy.id, policy.version, policy.content_hash, at,
                                 policy.to_document())
        if changed:
            self.store.save(register)
        latest = register.latest()
        assert latest is not None
        return latest, changed

    def adoption_impact(self, path: Path, at: datetime, now: datetime) -> Impact | None:
        """What adopting the policy file from `at` would make due at once (a sweep at `now`);
        None if it is the policy already in force. Writes nothing."""
        policy = load_policy(path)
        register = self.store.get_register() or PolicyRegister()
        current = register.latest()
        if current is not None and current.content_hash == policy.content_hash:
            return None
        adoption = Adoption(len(register.adoptions) + 1, policy.id, policy.version,
                            policy.content_hash, at, policy.to_document())
        self.projections.catch_up()
        return adoption_impact(self.store, self.views, policy, adoption, now)

    def sweep(self, at: datetime, now: datetime, dry_run: bool = False,
              on_item: Callable[[str, dict[str, Any]], None] | None = None) -> SweepReport:
        """Brings the schedule up to date, sweeps everything due at `at`, catches up again.
        Raises ArgumentRefused, before anything is written, for an `at` ahead of `now`
        (more than the clock skew) unless it is a dry run."""
        if not dry_run:
            refuse_future_sweep(at, now)
            finish_interrupted(self.store, self.vault, now)
        self.projections.catch_up()
        report = Sweeper(self.store, self.vault, self.views,
                         cache=self.projections).sweep(at, now, dry_run, on_item)
        if not dry_run:
            self.projections.catch_up()
        return report

    def rebuild_projections(self, names: Sequence[str] | None = None,
                            workers: int | None = None) -> int:
        """Rebuilds the named projections (all by default) from the first event; a full
        rebuild of a long log is shared among processes (`projections.parallel`). Every
        page it reads is checked against the audit chain: BrokenEvent names the first
        stored event that does not match."""
        self.store.check_reads()
        return parallel.rebuild(self.projections, names, workers)

    # -- read side --------------------------------------------------------------------

    def status(self, next_count: int = 10) -> dict[str, Any]:
        """The last sweep, the next items due, projection lag and the policy in force."""
        self.projections.catch_up()
        sched, runs = tables.schedule, tables.sweep_runs
        with self.view_reads.connect() as conn:
            last = conn.execute(sa.select(runs).order_by(runs.c.id.desc()).limit(1)).first()
            pending = conn.execute(sa.select(sa.func.count()).select_from(sched)
                                   .where(sched.c.done.is_(False))).scalar_one()
            upcoming = conn.execute(sa.select(sched).where(sched.c.done.is_(False))
                                    .order_by(sched.c.dispose_at).limit(next_count)).all()
        adoption = self.store.latest_adoption()
        return {
            "last_sweep": None if last is None else {
                "swept_at": last.swept_at.isoformat(), "started_at": last.started_at.isoformat(),
                "erased": last.erased, "reviews": last.reviews, "paused": last.paused},
            "policy": adoption.label if adoption else None,
            "pending": pending,
            "next_due": [{"subject": r.reference, "record": r.record, "rule": r.rule,
                          "action": r.action, "dispose_at": r.dispose_at.isoformat()}
                         for r in upcoming],
            "projections": [{"name": st.name, "position": st.position, "lag": st.lag}
                            for st in self.projections.status()],
        }

    def flag_requests(self, now: datetime, within_days: int = DUE_SOON_DAYS) -> dict[str, int]:
        """Records "due soon" and "overdue" on open requests, once per deadline each."""
        counts = {"due_soon": 0, "overdue": 0}
        for row in self.requests(now, due_within=within_days):
            for attempt in range(SAVE_RETRIES):
                case = self.store.get_request_case(UUID(row["case_id"]))
                assert case is not None
                overdue = case.flag_overdue(now)
                due_soon = not overdue and case.flag_due_soon(now, within_days)
                if not (overdue or due_soon):
                    break  # flagged before: nothing to save
                try:
                    self.store.save(case)
                except IntegrityError:
                    if attempt == SAVE_RETRIES - 1:
                        raise
                    continue  # another daemon flagged it first: look again
                counts["overdue"] += overdue
                counts["due_soon"] += due_soon
                break
        return counts

    def notifications(self, open_only: bool = True) -> list[dict[str, Any]]:
        """Art 19 items: recipients to tell of erasures, oldest first."""
        self.projections.catch_up()
        n = tables.notifications
        query = sa.select(n).order_by(n.c.erased_at, n.c.reference, n.c.recipient)
        if open_only:
            query = query.where(n.c.acknowledged_at.is_(None))
        with self.view_reads.connect() as conn:
            rows = conn.execute(query).all()
        return [{"subject": r.reference, "erasure": r.erasure, "recipient": r.recipient,
                 "records": r.records, "erased_at": r.erased_at.isoformat(),
                 "acknowledged_at": r.acknowledged_at.isoformat() if r.acknowledged_at
                 else None} for r in rows]

    def certificate(self, request: str, reference: str | None, now: datetime) -> dict[str, Any]:
        """The deletion certificate of an erasure request (subject found by the request
        id unless given)."""
        if reference is None:
            self.projections.catch_up()
            with self.view_reads.connect() as conn:
                found = conn.execute(sa.select(tables.requests.c.reference)
                                     .where(tables.requests.c.request == request)).scalars().all()
            if len(found) != 1:
                raise SubjectNotFound(f"request {request!r} " + (
                    "is not known" if not found else "is used by several subjects: name one"))
            reference = found[0]
        subject = self.subject(reference)
        case = self.store.get_request_case(RequestCase.create_id(request, reference))
        keys = self.vault.destroyed(k for e in subject.erasures if e.ref == request
                                    for k in e.key_ids)
        stored = self.store.recorder.select_events(subject.id)
        steps = timeline(self.store.events.get(case.id)) if case else []
        steps += timeline(e for e in self.store.events.get(subject.id)
                          if request in (getattr(e, "request", None), getattr(e, "by", None),
                                         getattr(e, "erasure", None)))
        steps.sort(key=lambda s: (s["recorded_at"] or "", s["at"] or ""))
        document = deletion_certificate(subject, request, case, keys, stored, now, steps)
        document["final_in_backups_from"] = final_in_backups_of(self.vault, keys)
        return document

    def requests(self, now: datetime, overdue_only: bool = False,
                 due_within: int | None = None) -> list[dict[str, Any]]:
        """Open rights requests by deadline, with the days left (negative: overdue)."""
        self.projections.catch_up()
        req = tables.requests
        query = sa.select(req).where(req.c.status == "open").order_by(req.c.deadline)
        today = london_date(now)
        if overdue_only:
            query = query.where(req.c.deadline < today)
        elif due_within is not None:
            query = query.where(req.c.deadline <= today + timedelta(days=due_within))
        with self.view_reads.connect() as conn:
            rows = conn.execute(query).all()
        return [{
            "case_id": r.case_id, "request": r.request, "subject": r.reference, "kind": r.kind,
            "received_at": r.received_at.isoformat(),
            "deadline": r.deadline.isoformat() if r.deadline else None,
            "days_left": days_left(r.deadline, now) if r.deadline else None,
            "overdue": r.deadline is not None and is_overdue(r.deadline, now),
            "paused": r.paused, "extended_months": r.extended_months,
        } for r in rows]

    def policy_zone(self) -> ZoneInfo | None:
        """The time zone of the policy in force (review windows and months are local)."""
        adoption = self.store.latest_adoption()
        return policy_from_document(adoption.document).zone if adoption else None

    def suppressed_hashes(self) -> set[str]:
        """The suppression list: keyed hashes of e-mails, never the e-mails."""
        return set(self.suppression_since())

    def suppression_since(self) -> dict[str, datetime]:
        """Each keyed hash on the suppression list now, with the earliest time a listing
        in force now began."""
        s = tables.suppression
        with self.view_reads.connect() as conn:
            first = sa.func.min(s.c.since, type_=s.c.since.type)
            rows = conn.execute(sa.select(s.c.email_hash, first).where(s.c.until.is_(None))
                                .group_by(s.c.email_hash))
            return {digest: since for digest, since in rows}

    def suppression_listings(self) -> dict[str, dict[str, list[Listing]]]:
        """Each keyed hash ever on the suppression list, with each subject that listed it
        and every time it did (lifted listings too)."""
        s = tables.suppression
        found: dict[str, dict[str, list[Listing]]] = {}
        with self.view_reads.connect() as conn:
            for digest, subject_id, since, until in conn.execute(
                    sa.select(s.c.email_hash, s.c.subject_id, s.c.since, s.c.until)):
                found.setdefault(digest, {}).setdefault(subject_id, []).append((since, until))
        return found

    def subject(self, reference: str) -> DataSubject:
        subject = self.store.get_subject(reference)
        if subject is None:
            raise SubjectNotFound(f"no facts recorded for subject {reference!r}")
        return subject

    def open_sealed(self, sealed: list[str],
                    opener: Callable[[str], Any] | None = None) -> dict[str, Any] | str:
        """The record's current values (rectifications applied), or "erased"."""
        if not sealed:
            return ERASED
        merged: dict[str, Any] = {}
        open_one = opener or self.vault.open
        try:
            for value in sealed:
                merged.update(open_one(value))
        except KeyDestroyed:
            return ERASED
        return merged

    def open_note(self, sealed: str | None) -> str | None:
        if sealed is None:
            return None
        try:
            text = self.vault.open(sealed)
        except KeyDestroyed:
            return ERASED
        return str(text)

    def subject_document(self, reference: str) -> dict[str, Any]:
        """The subject's projected document (values sealed), after catching up."""
        self.projections.catch_up()
        with self.view_reads.connect() as conn:
            row = conn.execute(sa.select(tables.subjects.c.document)
                               .where(tables.subjects.c.reference == reference)).first()
        if row is None:
            raise SubjectNotFound(f"no facts recorded for subject {reference!r}")
        document: dict[str, Any] = row[0]
        return document

    def subject_view(self, reference: str) -> dict[str, Any]:
        """Everything held about one subject now, values opened where keys survive."""
        document = self.subject_document(reference)
        schedule = self.retention_of(reference)
        register = self.store.get_register()
        policies = {a.label: policy_from_document(a.document)
                    for a in (register.adoptions if register else [])}
        latest = register.latest() if register is not None else None
        # Marketing kept before its address was suppressed (by another subject too): read
        # against the suppression list as it stands, never stored in a view.
        open_one = _opened_once(self.vault.open)
        # Every value of the live records (a subject given a direct-marketing consent is
        # judged on all of them); the subject is read only if one of them is listed.
        document["limit_breaches"] = with_suppression_breaches(
            document["limit_breaches"],
            [(r["record"], r["purpose"], sealed)
             for r in document["records"] if not r["erased_at"] for sealed in r["sealed"]],
            any(c["purpose"] == DIRECT_MARKETING for c in document["consents"]),
            lambda: self.store.get_subject(reference),
            policies[latest.label] if latest is not None else None, self.vault,
            self.view_reads, open_one)
        open_document(document, lambda sealed: self.open_sealed(sealed, open_one),
                      self.open_note)
        for record in document["records"]:
            record["retention"] = schedule.get(record["record"])
            if record["retention"] is not None and record["retention"]["policy"] in policies:
                record["retention"].update(policies[record["retention"]["policy"]].rule_words(
                    record["retention"]["rule"]))
        return document

    def retention_of(self, reference: str) -> dict[str, dict[str, Any]]:
        """Per record: rule, trigger, policy and due date ("why and when deleted?")."""
        sched = tables.schedule
        with self.view_reads.connect() as conn:
            # By the primary key's subject id (reference has no index: a scan per subject).
            subject_id = str(DataSubject.create_id(reference))
            rows = conn.execute(sa.select(sched).where(sched.c.subject_id == subject_id)).all()
        return {row.record: retention_entry(row) for row in rows}

    def dsar_export(self, reference: str, as_of: datetime) -> dict[str, Any]:
        """The Art 15 answer for one subject as it stood at `as_of` (replayed from events,
        so no snapshot, cache or projection can make it wrong); values that are shredded
        now read as erased even for earlier dates. Only `limit_breaches` reads a view: the
        suppression list, caught up first, for marketing kept before its address was
        listed (by this subject or another)."""
        check_originators(self.store, [DataSubject.create_id(reference), REGISTER_ID],
                          reference)
        events = list(self.store.events.get(DataSubject.create_id(reference)))
        subject = subject_as_of(events, as_of, self.store.broken)
        if subject is None:
            raise SubjectNotFound(f"no facts recorded for subject {reference!r}")
        # Keys whose erasure the log records (whatever the erasure's time): their values
        # read as erased even before the keys are destroyed (a run killed in between
        # leaves that to the next ingest, sweep or daemon tick).
        erased = erased_key_ids(events, self.store.broken)

        open_one = _opened_once(self.vault.open)

        def open_values(sealed: list[str]) -> dict[str, Any] | str:
            if any(key_of(value) in erased for value in sealed):
                return ERASED
            return self.open_sealed(sealed, open_one)

        def open_note(sealed: str | None) -> str | None:
            return ERASED if sealed is not None and key_of(sealed) in erased \
                else self.open_note(sealed)

        register = self.store.get_register()
        adoption = register.in_force_or_none(as_of) if register is not None else None
        policy = policy_from_document(adoption.document) if adoption else None
        deadlines, timelines = self._requests_as_of(subject, as_of)
        document = access_document(subject, as_of, policy, adoption, open_values, open_note,
                                   deadlines, timelines)

        def open_value(sealed: str) -> Any:
            if key_of(sealed) in erased:
                raise KeyDestroyed("erased")
            return open_one(sealed)

        values, consent = live_values(subject), gives_marketing_consent(subject)
        if consent or any(purpose == DIRECT_MARKETING for _, purpose, _, _ in values):
            self.projections.catch_up()  # the suppression list, as of every stored event
            document["limit_breaches"] = with_suppression_breaches(
                document["limit_breaches"], [(record, purpose, sealed)
                                             for record, purpose, sealed, _ in values],
                consent, lambda: subject, policy,
                self.vault, self.view_reads, open_value, until=as_of)
        return document

    def _requests_as_of(self, subject: DataSubject, as_of: datetime
                        ) -> tuple[dict[str, str | None], dict[str, list[dict[str, Any]]]]:
        """Each request's statutory deadline as known at `as_of`, and its steps by then
        (when, recorded when, by whom)."""
        deadlines: dict[str, str | None] = {}
        timelines: dict[str, list[dict[str, Any]]] = {}
        for request in subject.requests:
            case_id = RequestCase.create_id(request, subject.reference)
            case = self.store.get_request_case(case_id)
            due = case.deadline_as_known_at(as_of) if case else None
            deadlines[request] = due.isoformat() if due else None
            timelines[request] = timeline(self.store.events.get(case_id), as_of) if case else []
        return deadlines, timelines

    def history(self, reference: str) -> list[dict[str, Any]]:
        """The subject's event timeline: what happened, when, in stored order."""
        check_originators(self.store, [DataSubject.create_id(reference)], reference)
        s = self.subject(reference)
        timeline = []
        for domain_event in self.store.events.get(s.id):
            attrs = dict(vars(domain_event))
            entry: dict[str, Any] = {
                "version": attrs.pop("originator_version"),
                "event": type(domain_event).__name__,
                "recorded_at": attrs.pop("timestamp").isoformat(),
                "actor": actor_of(domain_event),
            }
            attrs.pop("actor", None)
            attrs.pop("originator_id", None)
            for name, value in attrs.items():
                if name in ("values", "reason") and isinstance(value, str) and "." in value:
                    value = "<sealed>"
                elif name == "email_hashes":
                    value = len(value)
                elif isinstance(value, datetime):
                    value = value.isoformat()
                entry[name] = value
            timeline.append(entry)
        return timeline


def _opened_once(open_value: Callable[[str], Any]) -> Callable[[str], Any]:
    """`open_value` remembering what it opened, for one read (a value checked against the
    suppression list and then shown is decrypted once). Read only: callers copy."""
    opened: dict[str, Any] = {}

    def open_one(sealed: str) -> Any:
        if sealed not in opened:
            opened[sealed] = open_value(sealed)
        return opened[sealed]

    return open_one
