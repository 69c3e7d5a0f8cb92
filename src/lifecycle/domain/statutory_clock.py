"""Statutory clocks: when a data subject's request must be answered (UK ICO rules).

Pure functions, dates in and dates out: no database, scheduler, logger or wall clock.
The bank-holiday calendar is the ``holidays`` library's, read through
:mod:`lifecycle.domain.bank_holidays` (which keeps it in a disk cache).

The rules (ICO guidance on the right of access, which UK GDPR Art 12(3)
applies to every right: access, erasure, rectification, restriction, objection,
portability):

1. The clock starts on the day the request is received, or, when identity verification
   was asked for, on the day the identity information was **received** (not the day it was
   checked: the ICO's rule). That day is **day 1**, so the
   time limit is one calendar month from it: received 3 September, due 3 October.
2. When the following month has no corresponding date, the deadline is the last day of
   that month: received 31 January, due 28 February (29 February in a leap year).
3. When that day is a weekend or a bank holiday (England and Wales calendar of the
   maintained ``holidays`` library), the deadline moves to the next working day.
4. The time limit may be extended by up to two further months (complex or numerous
   requests). The extended deadline is computed from the start day plus three (or two)
   months with the same rules, and the extension must be decided within the first month,
   i.e. on or before the unextended deadline.
5. The clock pauses while the controller waits for clarification: a pause from day P to
   its resumption on day R adds R - P days back; the working-day rule applies afterwards.
   Days paused before the clock started (identity not yet received) add nothing.

A deadline is a calendar **date**: the request must be answered by the end of that day,
Europe/London time. It is overdue from 00:00 Europe/London on the following day
(:func:`deadline_passes_at`). Datetimes given to this module must be timezone-aware; they
are converted to their Europe/London calendar date (:func:`london_date`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Final
from zoneinfo import ZoneInfo

from dateutil.relativedelta import relativedelta

from lifecycle.domain import bank_holidays as calendar_source
from lifecycle.domain.errors import InvalidFact, LifecycleError

LONDON: Final = ZoneInfo("Europe/London")
STATUTORY_MONTHS: Final = 1
MAX_EXTENSION_MONTHS: Final = 2

# A pause: the day the clock stopped and the day it resumed (None: still paused).
Pause = tuple[date, date | None]


class StatutoryClockError(InvalidFact):
    """A request step breaks a statutory-clock rule."""


class ExtensionRefused(StatutoryClockError):
    """An extension decided too late, too long, or without its reason."""


class InvalidPause(StatutoryClockError):
    """A pause that resumes before it starts, overlaps another or starts after the deadline."""


class NaiveDatetime(InvalidFact):
    """A datetime without a time zone: its calendar day in London is unknowable."""


class ClockPaused(LifecycleError):
    """The deadline of a paused request is asked for without saying as of which day."""


# -- calendar ------------------------------------------------------------------------------

@lru_cache(maxsize=64)
def bank_holidays(year: int) -> dict[date, str]:
    """England and Wales bank holidays of one year (including one-off ones the library
    knows, e.g. a coronation), as the installed ``holidays`` release defines them."""
    return calendar_source.england_and_wales(year)


def is_bank_holiday(day: date) -> bool:
    return day in bank_holidays(day.year)


def is_working_day(day: date) -> bool:
    """Monday to Friday, not an England and Wales bank holiday."""
    return day.weekday() < 5 and not is_bank_holiday(day)


def next_working_day(day: date) -> date:
    """``day`` itself when it is a working day, else the first working day after it."""
    while not is_working_day(day):
        day += timedelta(days=1)
    return day


def add_calendar_months(start: date, months: int) -> date:
    """The corresponding date ``months`` later; the last day of that month when there is
    none (31 January + 1 month = 28 or 29 February)."""
    result: date = start + relativedelta(months=months)
    return result


def london_date(at: datetime) -> date:
    """The calendar day in Europe/London of an aware datetime."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise NaiveDatetime("a naive datetime has no calendar day: give a UTC offset")
    return at.astimezone(LONDON).date()


def deadline_passes_at(due: date) -> datetime:
    """The first instant after a deadline: 00:00 Europe/London the day after ``due``."""
    return datetime.combine(due + timedelta(days=1), time(0), tzinfo=LONDON)


def is_overdue(due: date, now: datetime) -> bool:
    """True once the whole deadline day has passed in London."""
    return london_date(now) > due


def days_left(due: date, now: datetime) -> int:
    """Whole days from ``now``'s London day to the deadline day (0 on the day itself,
    negative once overdue)."""
    return (due - london_date(now)).days


# -- the clock -----------------------------------------------------------------------------

def clock_start(received: date, verified: date | None = None) -> date:
    """Day 1 of the clock: receipt of the request, or of the identity information asked
    for when it came later."""
    if verified is not None and verified > received:
        return verified
    return received


def _check_extension_months(extended_months: int) -> None:
    if not 0 <= extended_months <= MAX_EXTENSION_MONTHS:
        raise ExtensionRefused(f"a request can be extended by at most "
                               f"{MAX_EXTENSION_MONTHS} further months, not {extended_months}")


def _ordered(pauses: Iterable[Pause]) -> list[Pause]:
    ordered = sorted(pauses, key=lambda p: p[0])
    for index, (paused, resumed) in enumerate(ordered):
        if resumed is not None and resumed < paused:
            raise InvalidPause(f"a pause cannot resume ({resumed}) before it starts ({paused})")
        if resumed is None and index != len(ordered) - 1:
            raise InvalidPause("only the last pause can still be open")
        if index and (ordered[index - 1][1] or paused) > paused:
            raise InvalidPause(f"the pause from {paused} overlaps the one before it")
    return ordered


def paused_days(start: date, pauses: Iterable[Pause], as_of: date | None = None) -> int:
    """Days the clock stood still after ``start``: each pause adds resumed - paused.

    An open pause counts up to ``as_of`` (the deadline "if the clock resumed that day");
    without ``as_of`` it raises :class:`ClockPaused`.
    """
    total = 0
    for paused, resumed in _ordered(pauses):
        if resumed is None:
            if as_of is None:
                raise ClockPaused("the clock is paused: its deadline depends on when it resumes")
            resumed = max(as_of, paused)
        total += max(0, (resumed - max(paused, start)).days)
    return total


def deadline(received: date, verified: date | None = None,
             pauses: Sequence[Pause] = (), extended_months: int = 0, *,
             as_of: date | None = None) -> date:
    """The last day to answer a request (by the end of that day, Europe/London).

    ``received``: the day the request arrived (day 1); ``verified``: the day the identity
    information asked for was received (the clock then starts that day); ``pauses``: waits for
    clarification, (paused, resumed) with resumed None while still paused (counted up to
    ``as_of``, see :func:`paused_days`); ``extended_months``: 0, 1 or 2 further months.

    A pause must start on or before the deadline in force when it starts (a clock that
    has run out cannot be stopped); else :class:`InvalidPause`.
    """
    _check_extension_months(extended_months)
    start = clock_start(received, verified)
    months = STATUTORY_MONTHS + extended_months
    added = 0
    for paused, resumed in _ordered(pauses):
        running = _working_day_after(start, months, added)
        if paused > running:
            raise InvalidPause(f"a pause on {paused} starts after the deadline {running}")
        added += paused_days(start, [(paused, resumed)], as_of)
    return _working_day_after(start, months, added)


@lru_cache(maxsize=8192)
def _working_day_after(start: date, months: int, added_days: int) -> date:
    """The first working day on or after `start` + `months` + `added_days` (cached: a
    projection catch-up computes the same few thousand deadlines over and over)."""
    return next_working_day(add_calendar_months(start, months) + timedelta(days=added_days))


def extension_deadline(received: date, verified: date | None = None,
                       pauses: Sequence[Pause] = (), *, as_of: date | None = None) -> date:
    """The last day an extension can be decided: the unextended deadline ("within the
    first month")."""
    return deadline(received, verified, pauses, 0, as_of=as_of)


def check_extension(decided_on: date, months: int, received: date,
                    verified: date | None = None, pauses: Sequence[Pause] = (),
                    already_extended: int = 0) -> None:
    """Raises :class:`ExtensionRefused` unless an extension by ``months`` decided on
    ``decided_on`` is allowed: within the first month, two further months in total."""
    if months < 1:
        raise ExtensionRefused(f"an extension is by 1 or 2 months, not {months}")
    if already_extended + months > MAX_EXTENSION_MONTHS:
        raise ExtensionRefused(
            f"a request can be extended by at most {MAX_EXTENSION_MONTHS} further months in "
            f"total ({already_extended} already granted, {months} asked)")
    if decided_on < received:
        raise ExtensionRefused("an extension cannot be decided before the request arrives")
    last_day = extension_deadline(received, verified, pauses, as_of=decided_on)
    if decided_on > last_day:
        raise ExtensionRefused(
            f"an extension must be decided within the first month (by {last_day}); "
            f"{decided_on} is too late")
