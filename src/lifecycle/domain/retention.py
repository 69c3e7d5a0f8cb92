"""The rules engine: when, and under which rule, each record is disposed of.

Pure domain: a subject's state and the policy in force in, a Disposal out: the one rule
that decides (`plan`, README "Retention semantics"). A legal hold or a restriction (any of
the four Art 18(1) grounds) pauses disposal; a rule applies from its adoption.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lifecycle.aggregates.data_subject import DataSubject, Record
from lifecycle.aggregates.policy_register import Adoption
from lifecycle.policy.model import Policy, Rule
from lifecycle.domain.vocabulary import ALL_SCOPE, DIRECT_MARKETING



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


# Triggers that end the ground for storing consent- or legitimate-interest-based data.
ENDING_TRIGGERS = ("consent-withdrawn", "unsubscribed", "objected", "erasure-requested")
ENDED_BY = {
    "consent": ("consent-withdrawn", "unsubscribed", "objected", "erasure-requested"),
    "legitimate-interests": ("objected", "erasure-requested"),
}
IMPLICIT = "implicit-"  # the rule id of a disposal no rule names: implicit-<trigger>


def ground_ended(record: Record, times: dict[str, datetime]) -> tuple[datetime, str] | None:
    """When (and by which trigger) the ground for keeping the record ended: a consent
    withdrawn (an unsubscribe or marketing objection withdraws it too) or an erasure
    request for consent-based data; an objection upheld or an erasure request for data
    kept on legitimate interests. Other bases are not ended by the person."""
    ends = [(times[t], t) for t in ENDED_BY.get(record.basis, ()) if t in times]
    return min(ends) if ends else None


def _candidate(record: Record, rule: Rule, trigger_at: datetime, policy: Policy,
               adoption: Adoption) -> Disposal | None:
    try:
        due_at = rule.due_at(trigger_at)
        dispose_at = max(policy.disposal_at(rule, due_at), adoption.adopted_at)
    except (OverflowError, ValueError):
        return None  # beyond the calendar (a time from before input was bounded): never due
    return Disposal(record.record, rule.id, adoption.label, rule.trigger, trigger_at,
                    due_at, dispose_at, rule.action)


def _latest(items: list[Disposal]) -> Disposal:
    return max(items, key=lambda d: (d.dispose_at, d.action == "review", d.rule))


# At one instant, the person's own act names the rule: an unsubscribe withdraws the
# marketing consent too, but the unsubscribe's rule is the one that decides.
_FIRST_NAMED = {"unsubscribed": 0, "objected": 1, "consent-withdrawn": 2}


def _earliest(items: list[Disposal]) -> Disposal:
    return min(items, key=lambda d: (d.dispose_at, d.action != "review",
                                     _FIRST_NAMED.get(d.trigger, 3), d.rule))


def plan(subject: DataSubject, record: Record, policy: Policy,
         adoption: Adoption) -> Disposal | None:
    """The one rule that decides the record's disposal, or None while none has fired.

    Rules that *retain* (a minimum the law or a contract needs) and rules that *dispose*
    (a storage limit) are weighed as Microsoft Purview weighs retention and deletion,
    adapted to UK GDPR (README, "Retention semantics"):

    1. retention wins over deletion: data is never disposed of before the longest
       retention that applies to it ends;
    2. among retentions, the longest wins;
    3. explicit wins over implicit: once the person ends the ground for consent- or
       legitimate-interest-based data (withdrawal, upheld objection, erasure request),
       the rule for that event decides, even where a longer storage limit would
       otherwise apply; with no such rule, storage ends at once (`implicit-<trigger>`);
    4. among storage limits, the shortest wins.
    A legal hold or a restriction pauses whatever is due (`pause_reason`).
    """
    if record.erased_at is not None:
        return None
    times = trigger_times(subject, record)
    if "erasure-requested" in times and (
            times["erasure-requested"] < record.collected_at
            or any(x.record == record.record for x in subject.refusals)):
        # A request covers only what was held when made; what it kept, it kept on a
        # ground of its own (Art 17(3), overriding grounds): its rules still apply.
        del times["erasure-requested"]
    retains: list[Disposal] = []
    limits: list[Disposal] = []
    endings: list[Disposal] = []
    for rule in policy.rules_for(record.purpose, record.category, record.basis):
        trigger_at = times.get(rule.trigger)
        if trigger_at is None:
            continue
        candidate = _candidate(record, rule, trigger_at, policy, adoption)
        if candidate is None:
            continue
        if rule.kind_for(record.basis) == "retain":
            retains.append(candidate)
        elif rule.trigger in ENDING_TRIGGERS:
            endings.append(candidate)
        else:
            limits.append(candidate)
    ended = ground_ended(record, times)
    limit: Disposal | None = None
    if ended is not None:
        ending_rules = [d for d in endings if d.trigger in ENDED_BY[record.basis]]
        if ending_rules:
            limit = _earliest(ending_rules)
        else:
            at, trigger = ended
            limit = Disposal(record.record, f"{IMPLICIT}{trigger}", adoption.label, trigger,
                             at, at, max(at, adoption.adopted_at), "erase")
    elif limits:
        limit = _earliest(limits)
    keep = _latest(retains) if retains else None
    if limit is None:
        return keep
    if keep is None or keep.dispose_at <= limit.dispose_at:
        return limit
    return keep


def pause_reason(subject: DataSubject, record: Record, at: datetime,
                 now: datetime | None = None) -> str | None:
    """Why a disposal due at `at` must wait: a legal hold, or a restriction on any ground
    (while processing is restricted the data may only be stored, Art 18(2)), in force at
    `at` (fact time), at `now`, or from its placing after `now`: the key would be
    destroyed from `now` on (a sweep at a past time never destroys what a hold or
    restriction in force as it runs protects)."""
    moments = [at] if now is None or now == at else [at, now]
    if now is not None:
        # Placed after `now` (within the clock skew, or while this sweep ran): in force
        # before the key would be destroyed.
        moments += [h.placed_at for h in subject.holds if h.placed_at > now]
        moments += [r.placed_at for r in subject.restrictions if r.placed_at > now]
    for moment in moments:
        for hold in subject.holds:
            if hold.covers(record.purpose, moment):
                return f"legal hold {hold.hold}"
        for restriction in subject.active_restrictions(moment):
            if restriction.scope in (record.purpose, ALL_SCOPE):
                return f"restriction ({restriction.reason})"
    return None


def explain(disposal: Disposal, record: Record, policy: Policy) -> str:
    """Why this rule is the one that decides (for `subject show` and the DSAR export)."""
    rule = policy.rule(disposal.rule)
    if rule is None:
        return (f"{disposal.trigger} ended the ground for keeping this {record.basis}-based "
                "data and no rule names a later date: it is erased at once")
    if rule.kind_for(record.basis) == "retain":
        return ("a minimum the law or a contract needs: retention wins over any shorter "
                "storage limit")
    if rule.trigger in ENDING_TRIGGERS:
        return (f"{disposal.trigger} ended the ground for keeping this {record.basis}-based "
                "data: the rule for it wins over any longer storage limit")
    return "the storage limit for this data (the shortest that applies)"
