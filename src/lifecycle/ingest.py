"""Ingest: validated facts become events on their subjects' aggregates, in batches.

A bad line (format or domain rule) is rejected whole with its line number; good lines
land; a fact id seen before is a no-op. Keys are stored before the events that use them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from lifecycle import facts as f
from lifecycle.aggregates.data_subject import NOTES_SCOPE, DataSubject, key_scope
from lifecycle.crypto.vault import KeyVault
from lifecycle.aggregates.request_case import RequestCase
from lifecycle.errors import InvalidFact, KeyDestroyed, NoSuchRequest, SuppressedAddress
from lifecycle.event_store import SAVE_RETRIES, SubjectStore
from lifecycle.policy.model import Policy
from lifecycle.vocabulary import ALL_SCOPE, DIRECT_MARKETING

BATCH_LINES = 2000
CACHE_SUBJECTS = 50_000


@dataclass
class IngestReport:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[f.Rejection] = field(default_factory=list)
    erased_keys: int = 0

    @property
    def ok(self) -> bool:
        return not self.rejected

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": len(self.rejected),
            "rejections": [{"line": r.line, "fact": r.fact_id, "reason": r.reason}
                           for r in self.rejected],
            "erased_keys": self.erased_keys,
        }


class CaseBook:
    """The request cases a run touches: each loaded once, saved with its subject."""

    def __init__(self, store: SubjectStore) -> None:
        self.store = store
        self._cases: dict[UUID, RequestCase | None] = {}

    def get(self, request: str, subject: str) -> RequestCase | None:
        case_id = RequestCase.create_id(request, subject)
        if case_id not in self._cases:
            self._cases[case_id] = self.store.get_request_case(case_id)
        return self._cases[case_id]

    def open(self, case: RequestCase) -> None:
        self._cases[case.id] = case

    def pending(self) -> list[RequestCase]:
        return [c for c in self._cases.values() if c is not None and c.pending_events]

    def clear(self) -> None:
        self._cases.clear()


@dataclass
class _Shred:
    key_ids: list[str]
    at: datetime
    by: str


class FactApplier:
    """Turns one validated fact into commands on its subject, sealing personal values."""

    def __init__(self, vault: KeyVault, now: datetime, cases: CaseBook,
                 policy: Policy | None = None,
                 is_suppressed: Callable[[str], bool] | None = None) -> None:
        self.vault = vault
        self.cases = cases
        self.now = now
        self.policy = policy
        self.is_suppressed = is_suppressed or (lambda digest: False)
        self.shreds: list[_Shred] = []
        # Hashes suppressed by facts of this run, before any projection has seen them.
        self.suppressed_now: set[str] = set()

    def apply(self, subject: DataSubject, fact: Any) -> None:
        if self.policy is not None:
            check_against_policy(self.policy, fact)
        handler: Callable[[DataSubject, Any], None] = getattr(
            self, "_" + fact.type.replace("-", "_"))
        handler(subject, fact)
        if subject.suppressed_at is not None:
            self.suppressed_now.update(subject.suppression_hashes)

    # One handler per fact type --------------------------------------------------------

    def _collected(self, s: DataSubject, fact: f.Collected) -> None:
        if fact.purpose == DIRECT_MARKETING and not s.consent_in_force(DIRECT_MARKETING):
            email = fact.data.get("email")
            if isinstance(email, str) and self._suppressed(s, email):
                raise SuppressedAddress(
                    "the e-mail is on the suppression list: marketing data needs the "
                    "person's own consent-given before it is collected again")
        key_id = self.vault.key_for(str(s.id), key_scope(fact.record), self.now)
        s.collect(fact.id, fact.at, fact.record, fact.category, fact.purpose, fact.basis,
                  fact.source, key_id, self.vault.seal(key_id, fact.data))

    def _rectified(self, s: DataSubject, fact: f.Rectified) -> None:
        record = s.live_record(fact.record)
        s.rectify(fact.id, fact.at, fact.record, self.vault.seal(record.key_id, fact.data))

    def _activity(self, s: DataSubject, fact: f.Activity) -> None:
        if fact.record is not None:
            s.live_record(fact.record)
        s.record_activity(fact.id, fact.at, fact.record)

    def _consent_given(self, s: DataSubject, fact: f.ConsentGiven) -> None:
        s.give_consent(fact.id, fact.at, fact.purpose, fact.method)

    def _consent_withdrawn(self, s: DataSubject, fact: f.ConsentWithdrawn) -> None:
        s.withdraw_consent(fact.id, fact.at, fact.purpose, fact.method)

    def _unsubscribed(self, s: DataSubject, fact: f.Unsubscribed) -> None:
        s.unsubscribe(fact.id, fact.at, fact.channel, self._email_hashes(s))

    def _shared(self, s: DataSubject, fact: f.Shared) -> None:
        s.share(fact.id, fact.at, fact.recipient, fact.role, fact.purpose, fact.basis,
                list(fact.records or []), list(fact.categories or []), fact.country,
                fact.safeguard)

    def _restricted(self, s: DataSubject, fact: f.Restricted) -> None:
        s.restrict(fact.id, fact.at, fact.scope, fact.reason)

    def _restriction_lifted(self, s: DataSubject, fact: f.RestrictionLifted) -> None:
        s.lift_restriction(fact.id, fact.at, fact.scope)

    def _objected(self, s: DataSubject, fact: f.Objected) -> None:
        s.object_to(fact.id, fact.at, fact.purpose, self._email_hashes(s))

    def _erasure_requested(self, s: DataSubject, fact: f.ErasureRequested) -> None:
        """Carried out at once: erase all no exemption covers, record each refusal. The case
        stays open until `request-fulfilled` (the answer to the person) closes it."""
        request = fact.request or f"erasure:{fact.id}"
        s.request_erasure(fact.id, fact.at, request)
        decision = s.decide_erasure(fact.at)
        s.erase(fact.at, request, decision)
        self.vault.retire(decision.key_ids)
        self.shreds.append(_Shred(decision.key_ids, fact.at, request))
        self.cases.open(RequestCase.receive(request, s.reference, "erasure", fact.at))

    def _access_requested(self, s: DataSubject, fact: f.AccessRequested) -> None:
        s.request_access(fact.id, fact.at, fact.request, fact.kind)
        self.cases.open(RequestCase.receive(fact.request, s.reference, fact.kind, fact.at,
                                            awaiting_identity=fact.identity_check))

    # Each request step: the case's guard first (statutory rules), then the subject's record.

    def _identity_verified(self, s: DataSubject, fact: f.IdentityVerified) -> None:
        self._case(s, fact.request).verify_identity(fact.at)
        s.verify_identity(fact.id, fact.at, fact.request)

    def _request_extended(self, s: DataSubject, fact: f.RequestExtended) -> None:
        self._case(s, fact.request).extend(fact.at, fact.months, fact.reason)
        s.extend_request(fact.id, fact.at, fact.request, fact.months)

    def _request_paused(self, s: DataSubject, fact: f.RequestPaused) -> None:
        self._case(s, fact.request).pause(fact.at, fact.reason)
        s.record_request_step(fact.id, fact.at, fact.request, "paused")

    def _request_resumed(self, s: DataSubject, fact: f.RequestResumed) -> None:
        self._case(s, fact.request).resume(fact.at)
        s.record_request_step(fact.id, fact.at, fact.request, "resumed")

    def _request_refused(self, s: DataSubject, fact: f.RequestRefused) -> None:
        self._case(s, fact.request).refuse(fact.at, fact.reason)
        s.record_request_step(fact.id, fact.at, fact.request, "refused")

    def _request_fulfilled(self, s: DataSubject, fact: f.RequestFulfilled) -> None:
        self._case(s, fact.request).fulfil(fact.at)
        s.fulfil_request(fact.id, fact.at, fact.request)

    def _erasure_acknowledged(self, s: DataSubject, fact: f.ErasureAcknowledged) -> None:
        s.acknowledge_erasure(fact.id, fact.at, fact.erasure, fact.recipient)

    def _case(self, s: DataSubject, request: str) -> RequestCase:
        case = self.cases.get(request, s.reference)
        if case is None:
            raise NoSuchRequest(f"request {request!r} was never received for this subject")
        return case

    def _legal_hold_placed(self, s: DataSubject, fact: f.LegalHoldPlaced) -> None:
        notes_key, reason = self._seal_note(s, fact.reason)
        s.place_hold(fact.id, fact.at, fact.hold, fact.scope, reason, fact.until, notes_key)

    def _legal_hold_released(self, s: DataSubject, fact: f.LegalHoldReleased) -> None:
        s.release_hold(fact.id, fact.at, fact.hold)

    def _excluded(self, s: DataSubject, fact: f.Excluded) -> None:
        notes_key, reason = self._seal_note(s, fact.reason)
        s.exclude(fact.id, fact.at, reason, notes_key, self._email_hashes(s))

    def _relationship_ended(self, s: DataSubject, fact: f.RelationshipEnded) -> None:
        notes_key, reason = self._seal_note(s, fact.reason)
        s.end_relationship(fact.id, fact.at, reason, notes_key)

    # Helpers ----------------------------------------------------------------------------

    def _suppressed(self, s: DataSubject, email: str) -> bool:
        digest = self.vault.email_hash(email)
        return (digest in s.suppression_hashes or digest in self.suppressed_now
                or self.is_suppressed(digest))

    def _seal_note(self, s: DataSubject, text: str | None) -> tuple[str | None, str | None]:
        """Free text is personal: it is sealed under the subject's notes key."""
        if text is None:
            return None, None
        key_id = self.vault.key_for(str(s.id), NOTES_SCOPE, self.now)
        return key_id, self.vault.seal(key_id, text)

    def _email_hashes(self, s: DataSubject) -> list[str]:
        """Keyed hashes of every e-mail the subject's live records hold."""
        hashes: list[str] = []
        for record in s.records.values():
            if record.erased_at is not None:
                continue
            for sealed in record.values:
                try:
                    values = self.vault.open(sealed)
                except KeyDestroyed:
                    continue
                email = values.get("email") if isinstance(values, dict) else None
                if isinstance(email, str) and email.strip():
                    digest = self.vault.email_hash(email)
                    if digest not in hashes:
                        hashes.append(digest)
        return hashes


def check_against_policy(policy: Policy, fact: Any) -> None:
    """Once a policy is adopted, purposes, bases and recipients must be ones it declares."""
    purpose = getattr(fact, "purpose", None)
    scope = getattr(fact, "scope", None)
    for field_name, value in (("purpose", purpose), ("scope", scope)):
        if value is not None and value != ALL_SCOPE and value not in policy.purposes:
            raise InvalidFact(f"{field_name}: purpose {value!r} is not declared by policy "
                              f"{policy.id} {policy.version}")
    basis = getattr(fact, "basis", None)
    if purpose is not None and basis is not None and basis not in policy.purposes[purpose].bases:
        raise InvalidFact(f"basis: {basis!r} is not an allowed basis for purpose {purpose!r}")
    if fact.type == "shared":
        recipient = policy.recipients.get(fact.recipient)
        if recipient is None:
            raise InvalidFact(f"recipient: {fact.recipient!r} is not declared by policy "
                              f"{policy.id} {policy.version}")
        if recipient.role != fact.role or recipient.country != fact.country:
            raise InvalidFact(f"recipient: {fact.recipient!r} is declared as {recipient.role} "
                              f"in {recipient.country}, not {fact.role} in {fact.country}")


class Ingestor:
    """Runs lines through validation and the applier, saving one batch at a time."""

    def __init__(self, store: SubjectStore, vault: KeyVault, now: datetime,
                 on_progress: Callable[[int], None] | None = None,
                 on_rejected: Callable[[f.Rejection], None] | None = None,
                 policy: Policy | None = None,
                 is_suppressed: Callable[[str], bool] | None = None) -> None:
        self.store = store
        self.vault = vault
        self.now = now
        self.policy = policy
        self.is_suppressed = is_suppressed
        self.on_progress = on_progress or (lambda n: None)
        self.on_rejected = on_rejected or (lambda r: None)
        self._cache: dict[UUID, DataSubject] = {}
        self._cases = CaseBook(store)
        self._suppressed_now: set[str] = set()

    def run(self, lines: Iterable[str]) -> IngestReport:
        report = IngestReport()
        batch: list[f.ParsedLine] = []
        for item in f.parse_lines(lines, self.now):
            if isinstance(item, f.Rejection):
                self._reject(report, item)
            else:
                batch.append(item)
            if len(batch) >= BATCH_LINES:
                self._ingest_batch(batch, report)
                batch = []
        if batch:
            self._ingest_batch(batch, report)
        report.rejected.sort(key=lambda r: r.line)
        return report

    def _reject(self, report: IngestReport, rejection: f.Rejection) -> None:
        report.rejected.append(rejection)
        self.on_rejected(rejection)

    def _ingest_batch(self, batch: list[f.ParsedLine], report: IngestReport) -> None:
        for attempt in range(SAVE_RETRIES):
            outcome = IngestReport()
            applier = FactApplier(self.vault, self.now, self._cases, self.policy,
                                  self.is_suppressed)
            applier.suppressed_now = self._suppressed_now
            try:
                touched = self._apply_batch(batch, applier, outcome)
                self.vault.flush()
                # Keys an erasure decided on go before its events are saved: if the process
                # dies in between, re-ingesting the fact records the erasure, and no key
                # outlives an erasure the log already shows.
                outcome.erased_keys += self.vault.destroy_all(
                    (shred.key_ids, shred.at, shred.by) for shred in applier.shreds)
                self.store.save(*touched, *self._cases.pending())
            except IntegrityError:
                # Another writer saved the same subjects first: reload them and redo.
                self._cache.clear()
                self._cases.clear()
                self.vault.forget_loaded()
                if attempt == SAVE_RETRIES - 1:
                    raise
                continue
            break
        report.accepted += outcome.accepted
        report.duplicates += outcome.duplicates
        report.erased_keys += outcome.erased_keys
        for rejection in outcome.rejected:
            self._reject(report, rejection)
        if len(self._cache) > CACHE_SUBJECTS:
            self._cache.clear()
            self._cases.clear()
            self.vault.forget_loaded()
        self.on_progress(len(batch))

    def _apply_batch(self, batch: list[f.ParsedLine], applier: FactApplier,
                     outcome: IngestReport) -> list[DataSubject]:
        ids = {ref: DataSubject.create_id(ref) for ref in {item.fact.subject for item in batch}}
        uncached = [i for i in ids.values() if i not in self._cache]
        self.vault.preload(str(i) for i in uncached)
        stored = self.store.existing(uncached)
        for reference, subject_id in ids.items():
            if subject_id not in self._cache:
                loaded = self.store.get_subject_by_id(subject_id) if subject_id in stored else None
                self._cache[subject_id] = loaded or DataSubject(reference)
        touched: dict[UUID, DataSubject] = {}
        for item in batch:
            fact = item.fact
            subject_id = ids[fact.subject]
            subject = touched.get(subject_id) or self._cache[subject_id]
            if subject.has_seen(fact.id):
                outcome.duplicates += 1
                continue
            before = len(subject.pending_events)
            try:
                applier.apply(subject, fact)
            except InvalidFact as error:
                assert len(subject.pending_events) == before, "a guard let an event through"
                outcome.rejected.append(f.Rejection(item.line, str(error), fact.id))
                continue
            touched[subject_id] = subject
            outcome.accepted += 1
        return [s for s in touched.values() if s.pending_events]
