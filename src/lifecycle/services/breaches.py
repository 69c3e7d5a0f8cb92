"""The breach register's services: ingest of breach facts, the list, the daemon's flags,
and the impact of a breach (Art 34): who had affected records held and readable while it
lasted, reconstructed from the event log.

Breach facts (docs/facts.md) name no subject: ingest hands them here, apart from the
subjects' facts. Their ids are bound like every fact id (one id, one fact), under the
register's id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from lifecycle.domain import facts as f
from lifecycle.aggregates.breach_register import (
    BREACH_REGISTER_ID, Breach, BreachRegister, breach_summary,
)
from lifecycle.aggregates.data_subject import DataSubject
from lifecycle.store.vault import KeyVault
from lifecycle.domain.errors import InvalidFact, KeyDestroyed, LifecycleError
from lifecycle.store.event_store import SAVE_RETRIES, SubjectStore
from lifecycle.policy.model import Policy

class NoSuchBreach(LifecycleError):
    """A breach id the register does not hold."""


@dataclass
class BreachIngest:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[f.Rejection] = field(default_factory=list)


def get_register(store: SubjectStore) -> BreachRegister | None:
    try:
        found: object = store.repository.get(BREACH_REGISTER_ID)
    except AggregateNotFoundError:
        return None
    assert isinstance(found, BreachRegister)
    return found


def _check_purposes(policy: Policy | None, fact: f.BreachDetected) -> None:
    if policy is None:
        return
    for purpose in fact.purposes or []:
        if purpose not in policy.purposes:
            raise InvalidFact(f"purposes: purpose {purpose!r} is not declared by policy "
                              f"{policy.id} {policy.version}")


def _apply(register: BreachRegister, vault: KeyVault, policy: Policy | None, fact: Any,
           digest: str, now: datetime) -> None:
    if isinstance(fact, f.BreachDetected):
        _check_purposes(policy, fact)
        key_id = vault.key_for(str(BREACH_REGISTER_ID), f"breach/{fact.breach}", now)
        register.detect(fact.id, digest, fact.at, fact.breach, list(fact.categories or []),
                        list(fact.purposes or []), list(fact.records or []),
                        fact.exposed_from, fact.exposed_until,
                        vault.seal(key_id, fact.description))
    elif isinstance(fact, f.BreachAssessed):
        register.assess(fact.id, digest, fact.at, fact.breach, fact.risk)
    elif isinstance(fact, f.BreachReported):
        register.report(fact.id, digest, fact.at, fact.breach, fact.reference)
    else:
        assert isinstance(fact, f.BreachSubjectsNotified)
        register.notify_subjects(fact.id, digest, fact.at, fact.breach, fact.method)


def ingest_breach_facts(store: SubjectStore, vault: KeyVault, policy: Policy | None,
                        items: Sequence[f.ParsedLine], now: datetime) -> BreachIngest:
    """Applies breach facts in fact-time order (a report after its detection whatever the
    line order); a fact id seen before with the same content is a duplicate, with other
    content (here or on a subject) a rejection."""
    from lifecycle.services.ingest import canonical

    ordered = sorted(items, key=lambda item: (item.fact.at, item.line))
    digests = {item.line: vault.fact_digest(canonical(item.fact)) for item in ordered}
    # detected in this file, later in fact time than a step refused as "never detected"
    aware_later = {item.fact.breach: item.fact.at for item in ordered
                   if isinstance(item.fact, f.BreachDetected)}
    for attempt in range(SAVE_RETRIES):
        outcome = BreachIngest()
        register = get_register(store) or BreachRegister()
        bound = {fid: b.digest for fid, b in vault.claimed(
            item.fact.id for item in ordered).items()}
        claims: dict[str, tuple[str, str]] = {}
        for item in ordered:
            fact, digest = item.fact, digests[item.line]
            known = register.fact_ids.get(fact.id) or bound.get(fact.id)
            if known is None and fact.id in claims:
                known = claims[fact.id][1]
            if known is not None and known != digest:
                outcome.rejected.append(f.Rejection(
                    item.line, f"id: fact id {fact.id!r} already names a different fact "
                    "(a fact id names one fact, on every subject)", fact.id))
                continue
            if register.has_seen(fact.id) or fact.id in claims:
                outcome.duplicates += 1
                continue
            try:
                _apply(register, vault, policy, fact, digest, now)
            except InvalidFact as error:
                reason = str(error)
                if (fact.breach not in register.breaches
                        and fact.at < aware_later.get(fact.breach, fact.at)):
                    reason = (f"breach {fact.breach!r}: this step is dated before the "
                              "controller became aware of the breach")
                outcome.rejected.append(f.Rejection(item.line, reason, fact.id))
                continue
            claims[fact.id] = (str(BREACH_REGISTER_ID), digest)
            outcome.accepted += 1
        taken = {fid for fid, b in vault.claim(claims, now).items()
                 if b.digest != claims[fid][1]}
        if taken:  # another writer bound some of these ids to other facts: redo
            vault.forget_loaded()
            continue
        vault.flush()  # the description's key before the event that uses it
        try:
            if register.pending_events:
                store.save(register)
        except IntegrityError:
            vault.forget_loaded()
            if attempt == SAVE_RETRIES - 1:
                raise
            continue
        return outcome
    raise LifecycleError("the breach register kept changing under this ingest; run it again")


def list_breaches(store: SubjectStore, now: datetime) -> list[dict[str, Any]]:
    """Every breach, oldest awareness first, with its 72-hour deadline and flags at `now`."""
    register = get_register(store)
    return [breach_summary(b, now) for b in (register.as_of(now) if register else [])]


def flag_overdue_breaches(store: SubjectStore, now: datetime) -> int:
    """The daemon's step: records "overdue" once on each breach unreported after 72 hours."""
    for attempt in range(SAVE_RETRIES):
        register = get_register(store)
        if register is None:
            return 0
        flagged = register.flag_overdue(now)
        if not flagged:
            return 0
        try:
            store.save(register)
        except IntegrityError:
            if attempt == SAVE_RETRIES - 1:
                raise
            continue
        return len(flagged)
    return 0


def open_description(vault: KeyVault, sealed: str) -> str:
    try:
        return str(vault.open(sealed))
    except KeyDestroyed:
        return "erased"


def breach_impact(store: SubjectStore, breach: str) -> dict[str, Any]:
    """Art 34: the subjects whose affected records were held and readable at some moment
    of the exposure window, from the whole event log in fact time: a record collected
    after the window ended, or erased (its key destroyed) at or before it began, was not
    readable then and does not count."""
    from lifecycle.services.replay import read_log

    register = get_register(store)
    found: Breach | None = register.breaches.get(breach) if register else None
    if found is None:
        raise NoSuchBreach(f"breach {breach!r} is not in the register")
    affects = found.affected()
    subjects: list[dict[str, Any]] = []
    records_affected = 0
    for events in read_log(store).subjects.values():
        subject: Any = None
        for domain_event in events:
            subject = domain_event.mutate(subject)
        assert isinstance(subject, DataSubject)
        readable = [
            {"record": r.record, "category": r.category, "purpose": r.purpose,
             "collected_at": r.collected_at.isoformat(),
             "erased_at": None if r.erased_at is None else r.erased_at.isoformat()}
            for r in subject.records.values()
            if affects(r.record, r.category, r.purpose)
            and r.collected_at <= found.exposed_until
            and (r.erased_at is None or r.erased_at > found.exposed_from)]
        if readable:
            records_affected += len(readable)
            subjects.append({"subject": subject.reference,
                             "records": sorted(readable, key=lambda r: r["record"])})
    subjects.sort(key=lambda s: s["subject"])
    return {"breach": breach, "exposed_from": found.exposed_from.isoformat(),
            "exposed_until": found.exposed_until.isoformat(),
            "categories": found.categories, "purposes": found.purposes,
            "records": found.records, "risk": found.risk,
            "subjects_to_notify": found.subjects_to_notify,
            "subject_count": len(subjects), "records_affected": records_affected,
            "subjects": subjects}
