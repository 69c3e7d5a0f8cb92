"""The BreachRegister aggregate: every personal-data breach and what was done about it.

UK GDPR Art 33 asks the controller to document every breach (facts, effects, remedial
action) and to report one to the ICO within 72 hours of becoming aware of it, unless it is
unlikely to result in a risk to people; Art 34 asks it to tell the people affected without
undue delay when the risk is high. Each step is an event, in fact time (`at`). The
description of a breach may name people: it arrives sealed under the register's own key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from lifecycle.aggregates.data_subject import SUBJECT_NAMESPACE
from lifecycle.domain.errors import InvalidFact

BREACH_REGISTER_ID = uuid5(SUBJECT_NAMESPACE, "breach-register")
REPORT_WITHIN = timedelta(hours=72)  # Art 33(1), from awareness
NO_RISK = "no-risk"
HIGH_RISK = "high-risk"
RISK_ORDER = (NO_RISK, "risk", HIGH_RISK)  # lowest first


class BreachStepRefused(InvalidFact):
    """A breach step the register cannot take (unknown breach, one detected twice...)."""


@dataclass
class Breach:
    breach: str
    aware_at: datetime
    categories: list[str]
    purposes: list[str]
    records: list[str]
    exposed_from: datetime
    exposed_until: datetime
    description: str  # sealed
    assessments: list[tuple[datetime, str]] = field(default_factory=list)
    reported_at: datetime | None = None
    reference: str | None = None
    subjects_notified_at: datetime | None = None
    notification_method: str | None = None
    overdue_flagged_at: datetime | None = None

    @property
    def deadline(self) -> datetime:
        """Report to the ICO by then (72 hours from awareness)."""
        return self.aware_at + REPORT_WITHIN

    @property
    def risk(self) -> str | None:
        """The latest assessment (None: not assessed yet); of two at the same moment the
        higher risk, so a tie never silences a report or an Art 34 notice."""
        if not self.assessments:
            return None
        return max(self.assessments, key=lambda a: (a[0], RISK_ORDER.index(a[1])))[1]

    @property
    def must_report(self) -> bool:
        """Reportable unless assessed unlikely to result in a risk (Art 33(1))."""
        return self.risk != NO_RISK

    def is_overdue(self, now: datetime) -> bool:
        """Reportable, not reported, and the 72 hours have run out."""
        return self.must_report and self.reported_at is None and now > self.deadline

    @property
    def reported_late(self) -> bool:
        """Reported after 72 hours: Art 33(1) asks for the reasons for the delay."""
        return self.reported_at is not None and self.reported_at > self.deadline

    @property
    def subjects_to_notify(self) -> bool:
        """High risk and the people not told yet (Art 34(1))."""
        return self.risk == HIGH_RISK and self.subjects_notified_at is None

    def affected(self) -> Callable[[str, str, str], bool]:
        """Whether a record (record, category, purpose) is affected: named, or matching
        every list of categories and purposes the breach gives. Built once per impact: a
        breach may name a hundred thousand records, each subject's record is tested."""
        records, categories, purposes = (frozenset(self.records),
                                         frozenset(self.categories), frozenset(self.purposes))

        def affects(record: str, category: str, purpose: str) -> bool:
            if record in records:
                return True
            if not categories and not purposes:
                return False
            return ((not categories or category in categories)
                    and (not purposes or purpose in purposes))
        return affects


class BreachRegister(Aggregate):
    """The controller's one register of breaches (Art 33(5))."""

    @staticmethod
    def create_id() -> UUID:
        return BREACH_REGISTER_ID

    @event("Opened")
    def __init__(self) -> None:
        self.fact_ids: dict[str, str] = {}  # fact id -> digest of its content
        self.breaches: dict[str, Breach] = {}

    def has_seen(self, fact_id: str) -> bool:
        return fact_id in self.fact_ids

    def _known(self, breach: str, at: datetime) -> Breach:
        found = self.breaches.get(breach)
        if found is None:
            raise BreachStepRefused(f"breach {breach!r} was never detected")
        if at < found.aware_at:
            raise BreachStepRefused(f"breach {breach!r}: this step is dated before the "
                                    "controller became aware of the breach")
        return found

    def detect(self, fact_id: str, digest: str, at: datetime, breach: str,
               categories: list[str], purposes: list[str], records: list[str],
               exposed_from: datetime, exposed_until: datetime, description: str) -> None:
        if breach in self.breaches:
            raise BreachStepRefused(f"breach {breach!r} was already detected")
        self._detected(fact_id=fact_id, digest=digest, at=at, breach=breach,
                       categories=categories, purposes=purposes, records=records,
                       exposed_from=exposed_from, exposed_until=exposed_until,
                       description=description)

    @event("BreachDetected")
    def _detected(self, fact_id: str, digest: str, at: datetime, breach: str,
                  categories: list[str], purposes: list[str], records: list[str],
                  exposed_from: datetime, exposed_until: datetime, description: str) -> None:
        self.fact_ids[fact_id] = digest
        self.breaches[breach] = Breach(breach, at, list(categories), list(purposes),
                                       list(records), exposed_from, exposed_until, description)

    def assess(self, fact_id: str, digest: str, at: datetime, breach: str, risk: str) -> None:
        self._known(breach, at)
        self._assessed(fact_id=fact_id, digest=digest, at=at, breach=breach, risk=risk)

    @event("BreachAssessed")
    def _assessed(self, fact_id: str, digest: str, at: datetime, breach: str,
                  risk: str) -> None:
        self.fact_ids[fact_id] = digest
        self.breaches[breach].assessments.append((at, risk))

    def report(self, fact_id: str, digest: str, at: datetime, breach: str,
               reference: str) -> None:
        if self._known(breach, at).reported_at is not None:
            raise BreachStepRefused(f"breach {breach!r} was already reported")
        self._reported(fact_id=fact_id, digest=digest, at=at, breach=breach,
                       reference=reference)

    @event("BreachReported")
    def _reported(self, fact_id: str, digest: str, at: datetime, breach: str,
                  reference: str) -> None:
        self.fact_ids[fact_id] = digest
        found = self.breaches[breach]
        found.reported_at, found.reference = at, reference

    def notify_subjects(self, fact_id: str, digest: str, at: datetime, breach: str,
                        method: str | None) -> None:
        if self._known(breach, at).subjects_notified_at is not None:
            raise BreachStepRefused(f"breach {breach!r}: the people affected were already "
                                    "notified")
        self._subjects_notified(fact_id=fact_id, digest=digest, at=at, breach=breach,
                                method=method)

    @event("BreachSubjectsNotified")
    def _subjects_notified(self, fact_id: str, digest: str, at: datetime, breach: str,
                           method: str | None) -> None:
        self.fact_ids[fact_id] = digest
        found = self.breaches[breach]
        found.subjects_notified_at, found.notification_method = at, method

    def flag_overdue(self, now: datetime) -> list[str]:
        """Records, once per breach, that its 72 hours ran out unreported; returns which."""
        due = [b.breach for b in self.breaches.values()
               if b.is_overdue(now) and b.overdue_flagged_at is None]
        for breach in due:
            self._overdue_flagged(at=now, breach=breach)
        return due

    @event("BreachOverdueFlagged")
    def _overdue_flagged(self, at: datetime, breach: str) -> None:
        self.breaches[breach].overdue_flagged_at = at

    def as_of(self, at: datetime) -> list[Breach]:
        """The breaches the controller was aware of by `at`, as they stood then (steps
        dated later left out)."""
        def then(b: Breach) -> Breach:
            reported = b.reported_at is not None and b.reported_at <= at
            notified = b.subjects_notified_at is not None and b.subjects_notified_at <= at
            flagged = b.overdue_flagged_at is not None and b.overdue_flagged_at <= at
            return replace(
                b, assessments=[a for a in b.assessments if a[0] <= at],
                reported_at=b.reported_at if reported else None,
                reference=b.reference if reported else None,
                subjects_notified_at=b.subjects_notified_at if notified else None,
                notification_method=b.notification_method if notified else None,
                overdue_flagged_at=b.overdue_flagged_at if flagged else None)

        return sorted((then(b) for b in self.breaches.values() if b.aware_at <= at),
                      key=lambda b: (b.aware_at, b.breach))


def breach_summary(b: Breach, now: datetime) -> dict[str, Any]:
    """A breach as reports show it: no description (it is sealed), every date and flag."""
    return {
        "breach": b.breach, "aware_at": b.aware_at.isoformat(),
        "categories": b.categories, "purposes": b.purposes, "records": b.records,
        "exposed_from": b.exposed_from.isoformat(),
        "exposed_until": b.exposed_until.isoformat(),
        "risk": b.risk, "report_deadline": b.deadline.isoformat(),
        "must_report": b.must_report,
        "reported_at": None if b.reported_at is None else b.reported_at.isoformat(),
        "ico_reference": b.reference, "reported_late": b.reported_late,
        "overdue": b.is_overdue(now),
        "overdue_flagged_at": (None if b.overdue_flagged_at is None
                               else b.overdue_flagged_at.isoformat()),
        "subjects_notified_at": (None if b.subjects_notified_at is None
                                 else b.subjects_notified_at.isoformat()),
        "subjects_to_notify": b.subjects_to_notify,
    }
