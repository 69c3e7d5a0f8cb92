"""What adopting a policy would do at once: the records that become overdue under it.

A new policy can make data due the moment it is adopted (a shorter period, a new rule);
the next sweep then erases it, and an erasure cannot be undone. `policy adopt` therefore
reports, before anything is erased, how many records a sweep at `now` would erase or flag
under the new policy, by rule, with the first few, and how many of them were already due
under the policy in force.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa

from lifecycle.aggregates.policy_register import Adoption
from lifecycle.store.event_store import SubjectStore
from lifecycle.policy.model import Policy
from lifecycle.projections import tables
from lifecycle.domain.retention import pause_reason, plan

FIRST = 5  # items listed by name; the rest are counted


@dataclass
class Impact:
    adoption: str
    at: datetime
    overdue: list[dict[str, Any]] = field(default_factory=list)
    paused: int = 0
    already_due: int = 0

    def by_rule(self) -> list[dict[str, Any]]:
        counts: dict[tuple[str, str], int] = {}
        for item in self.overdue:
            key = (item["rule"], item["action"])
            counts[key] = counts.get(key, 0) + 1
        return [{"rule": rule, "action": action, "records": n}
                for (rule, action), n in sorted(counts.items())]

    def as_dict(self, first: int = FIRST) -> dict[str, Any]:
        ordered = sorted(self.overdue, key=lambda i: (i["dispose_at"], i["subject"], i["record"]))
        return {
            "adoption": self.adoption, "at": self.at.isoformat(),
            "overdue": len(self.overdue),
            "erase": sum(1 for i in self.overdue if i["action"] == "erase"),
            "review": sum(1 for i in self.overdue if i["action"] == "review"),
            "already_due": self.already_due, "paused": self.paused,
            "by_rule": self.by_rule(), "first": ordered[:first],
        }


def _already_due(views: sa.Engine, now: datetime) -> set[tuple[str, str]]:
    """(subject id, record) due by `now` under the policy in force (the schedule)."""
    sched = tables.schedule
    query = (sa.select(sched.c.subject_id, sched.c.record)
             .where(sched.c.done.is_(False)).where(sched.c.dispose_at <= now))
    with views.connect() as conn:
        return {(str(s), str(r)) for s, r in conn.execute(query)}


def adoption_impact(store: SubjectStore, views: sa.Engine, policy: Policy, adoption: Adoption,
                    now: datetime) -> Impact:
    """The records a sweep at `now` would dispose of under `policy` adopted as `adoption`
    (the read models must be caught up). Reads only; nothing is written."""
    impact = Impact(adoption.label, now)
    already = _already_due(views, now)
    with views.connect() as conn:
        ids = [UUID(i) for i in conn.execute(sa.select(tables.subjects.c.subject_id)).scalars()]
    for subject in store.get_subjects(ids):
        for record in subject.records.values():
            disposal = plan(subject, record, policy, adoption)
            if disposal is None or disposal.dispose_at > now:
                continue
            if pause_reason(subject, record, now) is not None:
                impact.paused += 1
                continue
            impact.already_due += (str(subject.id), record.record) in already
            impact.overdue.append({
                "subject": subject.reference, "record": record.record, "rule": disposal.rule,
                "action": disposal.action, "due_at": disposal.due_at.isoformat(),
                "dispose_at": disposal.dispose_at.isoformat()})
    return impact
