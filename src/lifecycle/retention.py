"""The rules engine: when, and under which rule, each record is disposed of.

Pure domain: a subject's state and the policy in force in, a Disposal out. Conflicts
(docs/policy.md): a legal hold beats every rule (it pauses disposal); a restriction the
person asked for because they need the data kept pauses it too; among the rules whose
trigger has happened, the longest retention wins; a rule applies from its adoption.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lifecycle.aggregates.data_subject import DataSubject, Record
from lifecycle.aggregates.policy_register import Adoption
from lifecycle.policy.model import Policy
from lifecycle.vocabulary import ALL_SCOPE, DIRECT_MARKETING

KEEPING_RESTRICTIONS = ("legal-claims", "contested-accuracy")


@dataclass(frozen=True)
class Disposal:
    """The answer to "why and when will this be deleted?" for one record."""

    record: str
    rule: str
    policy: str
    trigger: str
    trigger_at: datetime
    due_at: datetime
    dispose_at: datetime
    action: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "record": self.record, "rule": self.rule, "policy": self.policy,
            "trigger": self.trigger, "trigger_at": self.trigger_at.isoformat(),
            "due_at": self.due_at.isoformat(), "dispose_at": self.dispose_at.isoformat(),
            "action": self.action,
        }


def trigger_times(subject: DataSubject, record: Record) -> dict[str, datetime]:
    """When each trigger last happened for this record (absent: not happened, or undone)."""
    times: dict[str, datetime] = {"collected": record.collected_at}
    if subject.last_activity_at is not None:
        times["activity"] = subject.last_activity_at
    consent = subject.consents.get(record.purpose)
    if consent is not None and consent.withdrawn_at is not None:
        times["consent-withdrawn"] = consent.withdrawn_at
    if subject.unsubscribed_at is not None and record.purpose == DIRECT_MARKETING:
        times["unsubscribed"] = subject.unsubscribed_at
    if record.purpose in subject.objected_at:
        times["objected"] = subject.objected_at[record.purpose]
    if subject.relationship_ended_at is not None:
        times["relationship-ended"] = subject.relationship_ended_at
    if subject.excluded_at is not None:
        times["excluded"] = subject.excluded_at
    closed = [q.fulfilled_at for q in subject.requests.values() if q.fulfilled_at is not None]
    if closed:
        times["request-closed"] = max(closed)
    erasures = [q.received_at for q in subject.requests.values() if q.kind == "erasure"]
    if erasures:
        times["erasure-requested"] = max(erasures)
    return times


def plan(subject: DataSubject, record: Record, policy: Policy,
         adoption: Adoption) -> Disposal | None:
    """The record's disposal under the policy, or None while no matching rule has fired."""
    if record.erased_at is not None:
        return None
    times = trigger_times(subject, record)
    best: Disposal | None = None
    for rule in policy.rules_for(record.purpose, record.category, record.basis):
        trigger_at = times.get(rule.trigger)
        if trigger_at is None:
            continue
        try:
            due_at = rule.due_at(trigger_at)
            dispose_at = max(policy.disposal_at(rule, due_at), adoption.adopted_at)
        except (OverflowError, ValueError):
            continue  # beyond the calendar (a time from before input was bounded): never due
        candidate = Disposal(record.record, rule.id, adoption.label, rule.trigger, trigger_at,
                             due_at, dispose_at, rule.action)
        if best is None or (candidate.dispose_at, candidate.action == "review") > (
                best.dispose_at, best.action == "review"):
            best = candidate
    return best


def pause_reason(subject: DataSubject, record: Record, at: datetime) -> str | None:
    """Why a due disposal must wait: a legal hold, or a restriction to keep the data."""
    for hold in subject.holds.values():
        if hold.covers(record.purpose, at):
            return f"legal hold {hold.hold}"
    for restriction in subject.active_restrictions():
        if (restriction.reason in KEEPING_RESTRICTIONS
                and restriction.scope in (record.purpose, ALL_SCOPE)):
            return f"restriction ({restriction.reason})"
    return None
