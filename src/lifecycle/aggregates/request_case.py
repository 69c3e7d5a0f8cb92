"""The RequestCase aggregate: one data subject's request and its statutory clock.

Every step (receipt, identity verification, pause and resumption, extension, answer,
due-soon and overdue flags) is an event, so "what was the deadline on date X" has an
answer: :meth:`RequestCase.deadline_as_known_at` replays the deadline changes in force at
X, by the time each step took effect (its ``at``), not the time it was recorded (every
event also carries its recording ``timestamp``).

Deadlines are calendar dates, answered by the end of that day Europe/London; the rules
live in :mod:`lifecycle.domain.statutory_clock`. Reasons are short codes or sealed strings:
never plaintext personal values.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Final
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from lifecycle.aggregates.fast_events import FastCreate, fast_commands
from lifecycle.domain import statutory_clock as clock
from lifecycle.domain.errors import InvalidFact

REQUEST_NAMESPACE: Final = uuid5(NAMESPACE_URL, "https://lifecycle.invalid/request")

KINDS: Final = ("access", "erasure", "rectification", "restriction", "objection",
                "portability")
OPEN: Final = "open"
FULFILLED: Final = "fulfilled"
REFUSED: Final = "refused"
DUE_SOON_DAYS: Final = 7
DUE_SOON: Final = "due-soon"
# Requests that hand data over or change it: not answered before identity is verified.
NEED_IDENTITY: Final = ("access", "portability", "rectification")
OVERDUE: Final = "overdue"


class RequestStepRefused(InvalidFact):
    """A step that the request's current state does not allow."""


class UnknownRequestKind(InvalidFact):
    """A request of a kind the law does not give (or lifecycle does not handle)."""


@dataclass
class PauseSpan:
    paused_at: datetime
    reason: str
    resumed_at: datetime | None = None


@dataclass(frozen=True)
class Extension:
    at: datetime
    months: int
    reason: str


def _require_reason(reason: str, step: str) -> None:
    if not reason or not reason.strip():
        raise RequestStepRefused(f"{step} needs a reason")


class RequestCase(Aggregate):
    """One request (access, erasure, ...) of one data subject, and its deadline."""

    @staticmethod
    def create_id(request: str, subject: str) -> UUID:
        """Deterministic: the same request reference of the same subject is one case."""
        return uuid5(REQUEST_NAMESPACE, json.dumps([subject, request]))

    @classmethod
    def receive(cls, request: str, subject: str, kind: str, received_at: datetime,
                awaiting_identity: bool = False) -> RequestCase:
        """Opens the case (command form of the constructor)."""
        case = _receive(request=request, subject=subject, kind=kind,
                        received_at=received_at, awaiting_identity=awaiting_identity)
        assert isinstance(case, cls)
        return case

    @event("Received")
    def __init__(self, request: str, subject: str, kind: str, received_at: datetime,
                 awaiting_identity: bool = False) -> None:
        """``awaiting_identity``: identity verification was asked for, so the clock only
        starts at :meth:`verify_identity` (no deadline until then)."""
        if kind not in KINDS:
            raise UnknownRequestKind(f"unknown request kind {kind!r}; one of {', '.join(KINDS)}")
        clock.london_date(received_at)  # rejects naive datetimes
        self.request = request
        self.subject = subject
        self.kind = kind
        self.received_at = received_at
        self.awaiting_identity = awaiting_identity
        self.verified_at: datetime | None = None
        # When the identity information arrived: the clock starts then (ICO), not when
        # it was checked.
        self.identity_received_at: datetime | None = None
        self.pauses: list[PauseSpan] = []
        self.extensions: list[Extension] = []
        self.status = OPEN
        self.closed_at: datetime | None = None
        self.refusal_reason: str | None = None
        self.last_step_at = received_at
        # (effective at, deadline in force from then; None: no running clock)
        self.deadline_changes: list[tuple[datetime, date | None]] = []
        self.flags: dict[str, datetime] = {}
        self._note_deadline(received_at)

    # -- queries -------------------------------------------------------------------------

    @property
    def deadline(self) -> date | None:
        """The deadline in force after every step recorded (None while no clock runs)."""
        return self.deadline_changes[-1][1] if self.deadline_changes else None

    @property
    def extended_months(self) -> int:
        return sum(e.months for e in self.extensions)

    @property
    def is_paused(self) -> bool:
        return bool(self.pauses) and self.pauses[-1].resumed_at is None

    @property
    def clock_started(self) -> bool:
        return not self.awaiting_identity or self.verified_at is not None

    @property
    def answered_late(self) -> bool | None:
        """Whether the answer (fulfilment or refusal) came after the deadline in force."""
        if self.closed_at is None:
            return None
        due = self.deadline_as_known_at(self.closed_at)
        return due is not None and clock.is_overdue(due, self.closed_at)

    def deadline_as_known_at(self, at: datetime) -> date | None:
        """The deadline in force at ``at``, from the steps that had taken effect by then;
        None before receipt, while awaiting identity or while paused."""
        clock.london_date(at)
        known: date | None = None
        for effective_at, due in self.deadline_changes:
            if effective_at > at:
                break
            known = due
        return known

    def status_at(self, at: datetime) -> str:
        if self.closed_at is not None and self.closed_at <= at:
            return self.status
        return OPEN

    def is_overdue(self, now: datetime) -> bool:
        """Open at ``now`` and the whole deadline day has passed (Europe/London)."""
        due = self.deadline_as_known_at(now)
        return (due is not None and self.status_at(now) == OPEN
                and clock.is_overdue(due, now))

    def is_due_within(self, now: datetime, days: int) -> bool:
        """Open, not yet overdue, and due within ``days`` days of ``now``'s London day
        (0: due today)."""
        due = self.deadline_as_known_at(now)
        return (due is not None and self.status_at(now) == OPEN
                and 0 <= clock.days_left(due, now) <= days)

    def flagged(self, kind: str, due: date) -> bool:
        return self._flag_key(kind, due) in self.flags

    def statutory_inputs(self) -> tuple[date, date | None, list[clock.Pause]]:
        """Received day, verified day and pauses as London dates, for the pure clock."""
        pauses: list[clock.Pause] = [
            (clock.london_date(p.paused_at),
             clock.london_date(p.resumed_at) if p.resumed_at is not None else None)
            for p in self.pauses]
        started = self.identity_received_at or self.verified_at
        verified = clock.london_date(started) if started is not None else None
        return clock.london_date(self.received_at), verified, pauses

    # -- commands (guards) and their events ----------------------------------------------

    def verify_identity(self, at: datetime, received_at: datetime | None = None) -> None:
        """Identity checked at `at` from information received at `received_at` (default
        `at`): the clock starts on the day it was received."""
        self._guard_step(at, "identity verification")
        if self.verified_at is not None:
            raise RequestStepRefused("identity was already verified for this request")
        if not self.awaiting_identity:
            raise RequestStepRefused(
                "identity verification on a request not awaiting identity (received "
                "without identity_check): its clock already runs")
        if self.is_paused:
            raise RequestStepRefused("resume the paused clock before verifying identity")
        received_at = received_at or at
        if received_at < self.received_at:
            raise RequestStepRefused("received_at: the identity information cannot arrive "
                                     "before the request")
        self._identity_verified(at=at, received_at=received_at)

    @event("IdentityVerified")
    def _identity_verified(self, at: datetime, received_at: datetime | None = None) -> None:
        self.verified_at = at
        self.identity_received_at = received_at or at
        self.last_step_at = at
        self._note_deadline(at)

    def pause(self, at: datetime, reason: str) -> None:
        """Stops the clock while waiting for clarification."""
        self._guard_step(at, "a pause")
        _require_reason(reason, "a pause")
        if self.is_paused:
            raise RequestStepRefused("the clock is already paused")
        if not self.clock_started:
            raise RequestStepRefused("the clock has not started (identity not verified)")
        due = self.deadline
        if due is not None and clock.london_date(at) > due:
            raise RequestStepRefused(f"the deadline {due} has passed: the clock cannot pause")
        self._paused(at=at, reason=reason)

    @event("Paused")
    def _paused(self, at: datetime, reason: str) -> None:
        self.pauses.append(PauseSpan(at, reason))
        self.last_step_at = at
        self._note_deadline(at)

    def resume(self, at: datetime) -> None:
        self._guard_step(at, "a resumption")
        if not self.is_paused:
            raise RequestStepRefused("the clock is not paused")
        self._resumed(at=at)

    @event("Resumed")
    def _resumed(self, at: datetime) -> None:
        self.pauses[-1].resumed_at = at
        self.last_step_at = at
        self._note_deadline(at)

    def extend(self, at: datetime, months: int, reason: str) -> None:
        """Extends by 1 or 2 further months (2 in total), decided within the first month."""
        self._guard_step(at, "an extension")
        _require_reason(reason, "an extension")
        if not self.clock_started:
            raise clock.ExtensionRefused("the clock has not started (identity not verified)")
        received, verified, pauses = self.statutory_inputs()
        clock.check_extension(clock.london_date(at), months, received, verified, pauses,
                              self.extended_months)
        self._extended(at=at, months=months, reason=reason)

    @event("Extended")
    def _extended(self, at: datetime, months: int, reason: str) -> None:
        self.extensions.append(Extension(at, months, reason))
        self.last_step_at = at
        self._note_deadline(at)

    def fulfil(self, at: datetime) -> None:
        self._guard_step(at, "fulfilment")
        if self.kind in NEED_IDENTITY and not self.clock_started:
            raise RequestStepRefused(
                f"fulfilment of a {self.kind} request awaiting identity: record "
                "identity-verified first (the data may not go to an unverified requester)")
        self._fulfilled(at=at)

    @event("Fulfilled")
    def _fulfilled(self, at: datetime) -> None:
        self.status = FULFILLED
        self.closed_at = at
        self.last_step_at = at

    def refuse(self, at: datetime, reason: str) -> None:
        self._guard_step(at, "a refusal")
        _require_reason(reason, "a refusal")
        self._refused(at=at, reason=reason)

    @event("Refused")
    def _refused(self, at: datetime, reason: str) -> None:
        self.status = REFUSED
        self.closed_at = at
        self.refusal_reason = reason
        self.last_step_at = at

    def flag_due_soon(self, at: datetime, within_days: int = DUE_SOON_DAYS) -> bool:
        """Records that the request is due within ``within_days`` days, once per deadline
        value; False (nothing recorded) when not due soon or already flagged."""
        due = self._to_flag(DUE_SOON, at, lambda: self.is_due_within(at, within_days))
        if due is not None:
            self._due_soon_flagged(at=at, deadline=due.isoformat())
        return due is not None

    @event("DueSoonFlagged")
    def _due_soon_flagged(self, at: datetime, deadline: str) -> None:
        self.flags[self._flag_key(DUE_SOON, date.fromisoformat(deadline))] = at

    def flag_overdue(self, at: datetime) -> bool:
        """Records that the deadline has passed unanswered, once per deadline value;
        False (nothing recorded) when not overdue or already flagged."""
        due = self._to_flag(OVERDUE, at, lambda: self.is_overdue(at))
        if due is not None:
            self._overdue_flagged(at=at, deadline=due.isoformat())
        return due is not None

    @event("OverdueFlagged")
    def _overdue_flagged(self, at: datetime, deadline: str) -> None:
        self.flags[self._flag_key(OVERDUE, date.fromisoformat(deadline))] = at

    # -- helpers ---------------------------------------------------------------------------

    def _to_flag(self, kind: str, at: datetime, applies: Callable[[], bool]) -> date | None:
        """The deadline in force at `at`, if `applies` and it is not yet flagged `kind`."""
        due = self.deadline_as_known_at(at)
        if due is None or self.flagged(kind, due) or not applies():
            return None
        return due

    @staticmethod
    def _flag_key(kind: str, due: date) -> str:
        return f"{kind}|{due.isoformat()}"

    def _guard_step(self, at: datetime, step: str) -> None:
        """Steps are facts about the request: open, and in the order they happened.
        (Flags are the daemon's observations and are not ordered against them.)"""
        clock.london_date(at)
        if self.status != OPEN:
            raise RequestStepRefused(f"{step} on a request already {self.status}")
        if at < self.last_step_at:
            raise RequestStepRefused(
                f"{step} at {at.isoformat()} precedes the request's last step "
                f"({self.last_step_at.isoformat()})")

    def _computed_deadline(self, at: datetime) -> date | None:
        if not self.clock_started or self.is_paused:
            return None
        received, verified, pauses = self.statutory_inputs()
        return clock.deadline(received, verified, pauses, self.extended_months,
                              as_of=clock.london_date(at))

    def _note_deadline(self, at: datetime) -> None:
        due = self._computed_deadline(at)
        if not self.deadline_changes or self.deadline_changes[-1][1] != due:
            self.deadline_changes.append((at, due))


# Commands trigger their events directly (lifecycle.aggregates.fast_events): the same
# event classes and stored bytes, without the library's per-command machinery.
fast_commands(RequestCase)
_receive = FastCreate(RequestCase)
