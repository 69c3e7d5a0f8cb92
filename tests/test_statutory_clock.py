"""Statutory clocks: the UK ICO calendar rules and the RequestCase aggregate.

Pure unit tests: explicit dates, no store, no frozen clock.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from lifecycle.domain import statutory_clock as clock
from lifecycle.aggregates.request_case import (
    FULFILLED,
    OPEN,
    REFUSED,
    RequestCase,
    RequestStepRefused,
    UnknownRequestKind,
)
from lifecycle.domain.errors import InvalidFact, LifecycleError


def noon(day: str) -> datetime:
    """Midday UTC on an ISO day: the same calendar day in London all year round."""
    return datetime.fromisoformat(f"{day}T12:00:00+00:00")


def d(day: str) -> date:
    return date.fromisoformat(day)


# -- the calendar rules ------------------------------------------------------------------

def test_day_of_receipt_is_day_one() -> None:
    """The day of receipt is day 1: a request received on 3 September is due on 3 October."""
    assert clock.deadline(d("2025-09-03")) == d("2025-10-03")


def test_no_corresponding_date_means_last_day_of_the_month() -> None:
    """A request received (and verified) on 31 January is due on the last day of February."""
    assert clock.deadline(d("2025-01-31"), d("2025-01-31")) == d("2025-02-28")


def test_last_day_of_february_in_a_leap_year() -> None:
    """A request received on 31 January 2024 (a leap year) is due on 29 February."""
    assert clock.deadline(d("2024-01-31")) == d("2024-02-29")


def test_clock_starts_at_identity_verification() -> None:
    """When identity verification was asked for, the month runs from verification; a due
    date on a Sunday moves to Monday: verified Friday 18 April 2025 (Good Friday) -> the
    18 May is a Sunday -> due Monday 19 May."""
    assert clock.deadline(d("2025-04-10"), d("2025-04-18")) == d("2025-05-19")
    assert clock.clock_start(d("2025-04-10"), d("2025-04-18")) == d("2025-04-18")


def test_verification_before_receipt_does_not_move_the_start() -> None:
    """Identity already verified before the request arrived: the clock runs from receipt."""
    assert clock.deadline(d("2025-09-03"), d("2025-09-01")) == d("2025-10-03")


def test_weekend_moves_to_next_working_day() -> None:
    """A deadline on a Saturday moves to the following Monday (1 Feb 2025 -> 3 Feb)."""
    assert clock.deadline(d("2025-01-01")) == d("2025-02-03")


def test_bank_holidays_move_to_next_working_day() -> None:
    """A deadline on a bank holiday moves to the next working day: received 25 November
    2025 -> 25 December (Christmas, Thursday), 26 December (Boxing Day), 27-28 weekend ->
    due Monday 29 December."""
    assert clock.deadline(d("2025-11-25")) == d("2025-12-29")


def test_england_and_wales_bank_holiday_calendar() -> None:
    """The calendar is England and Wales: Good Friday and Easter Monday are bank holidays,
    St Andrew's Day (Scotland only) is not."""
    assert not clock.is_working_day(d("2025-04-18"))
    assert not clock.is_working_day(d("2025-04-21"))
    assert clock.is_working_day(d("2025-12-01"))  # 30 Nov is a Sunday: Scottish substitute
    assert clock.next_working_day(d("2025-04-18")) == d("2025-04-22")
    assert clock.next_working_day(d("2025-04-22")) == d("2025-04-22")


def test_extension_by_two_months() -> None:
    """An extension by two further months runs from the start day + 3 months, same rules:
    received 31 January 2025 -> 30 April (Wednesday)."""
    assert clock.deadline(d("2025-01-31"), extended_months=2) == d("2025-04-30")
    assert clock.deadline(d("2025-01-31"), extended_months=1) == d("2025-03-31")


def test_extended_deadline_applies_month_end_and_working_day_rules() -> None:
    """Received 30 November 2025 + 3 months -> 28 February 2026 (Saturday) -> Monday 2 March."""
    assert clock.deadline(d("2025-11-30"), extended_months=2) == d("2026-03-02")


def test_extension_beyond_two_months_is_refused() -> None:
    """The time limit can be extended by at most two further months."""
    with pytest.raises(clock.ExtensionRefused):
        clock.deadline(d("2025-01-31"), extended_months=3)
    with pytest.raises(clock.ExtensionRefused):
        clock.check_extension(d("2025-02-05"), 2, d("2025-01-31"), already_extended=1)


def test_extension_decided_within_the_first_month() -> None:
    """An extension may be decided up to and including the (unextended) deadline day."""
    clock.check_extension(d("2025-04-03"), 2, d("2025-03-03"))  # the deadline day itself


def test_extension_decided_on_day_40_is_refused() -> None:
    """An extension decided after the first month (day 40) is refused."""
    received = d("2025-03-03")
    day_40 = received + timedelta(days=39)
    assert day_40 == d("2025-04-11")
    with pytest.raises(clock.ExtensionRefused, match="within the first month"):
        clock.check_extension(day_40, 2, received)


def test_first_month_ends_on_the_working_day_deadline() -> None:
    """The first month ends on the deadline after the working-day rule: received 25 November
    2025, due 29 December, so an extension on Saturday 27 December is still in time."""
    clock.check_extension(d("2025-12-27"), 1, d("2025-11-25"))
    with pytest.raises(clock.ExtensionRefused):
        clock.check_extension(d("2025-12-30"), 1, d("2025-11-25"))


def test_pause_adds_the_paused_days_back() -> None:
    """Paused on 10 March, resumed on 17 March: 7 days added to 3 April -> 10 April."""
    pauses: list[clock.Pause] = [(d("2025-03-10"), d("2025-03-17"))]
    assert clock.deadline(d("2025-03-03"), pauses=pauses) == d("2025-04-10")


def test_pause_then_working_day_rule() -> None:
    """The working-day rule applies after the paused days: 3 April + 9 days = Saturday
    12 April -> Monday 14 April."""
    pauses: list[clock.Pause] = [(d("2025-03-10"), d("2025-03-19"))]
    assert clock.deadline(d("2025-03-03"), pauses=pauses) == d("2025-04-14")


def test_several_pauses_add_up() -> None:
    """Each pause adds its own days: 2 + 3 days -> 3 April + 5 = 8 April."""
    pauses: list[clock.Pause] = [(d("2025-03-20"), d("2025-03-23")),
                                 (d("2025-03-05"), d("2025-03-07"))]
    assert clock.deadline(d("2025-03-03"), pauses=pauses) == d("2025-04-08")


def test_open_pause_needs_an_as_of_day() -> None:
    """While paused the deadline depends on the resumption: asked as of a day, the pause
    counts up to that day; without one it is refused."""
    pauses: list[clock.Pause] = [(d("2025-03-10"), None)]
    with pytest.raises(clock.ClockPaused):
        clock.deadline(d("2025-03-03"), pauses=pauses)
    assert clock.deadline(d("2025-03-03"), pauses=pauses, as_of=d("2025-03-17")) == d(
        "2025-04-10")


def test_pause_before_the_clock_starts_adds_nothing() -> None:
    """Days paused before identity was verified do not count: the clock was not running."""
    pauses: list[clock.Pause] = [(d("2025-03-01"), d("2025-03-05"))]
    assert clock.deadline(d("2025-03-01"), d("2025-03-05"), pauses) == d("2025-04-07")
    assert clock.paused_days(d("2025-03-03"), [(d("2025-03-01"), d("2025-03-05"))]) == 2


def test_inconsistent_pauses_are_refused() -> None:
    """A pause cannot resume before it starts, overlap another, or start after the deadline."""
    for pauses in ([(d("2025-03-10"), d("2025-03-09"))],
                   [(d("2025-03-10"), d("2025-03-20")), (d("2025-03-15"), d("2025-03-16"))],
                   [(d("2025-03-10"), None), (d("2025-03-15"), d("2025-03-16"))],
                   [(d("2025-04-04"), d("2025-04-10"))]):
        with pytest.raises(clock.InvalidPause):
            clock.deadline(d("2025-03-03"), pauses=pauses)


def test_calendar_day_is_the_london_day() -> None:
    """Times are read in Europe/London: 23:30 UTC on 31 March 2025 is 1 April in London
    (summer time), so day 1 is 1 April; naive times are refused."""
    assert clock.london_date(datetime(2025, 3, 31, 23, 30, tzinfo=UTC)) == d("2025-04-01")
    assert clock.london_date(datetime(2025, 1, 31, 23, 30, tzinfo=UTC)) == d("2025-01-31")
    with pytest.raises(clock.NaiveDatetime):
        clock.london_date(datetime(2025, 3, 31, 23, 30))


def test_deadline_is_the_end_of_the_day_in_london() -> None:
    """A deadline date is met until the end of that day, Europe/London: due 19 May 2025
    (summer time) is overdue from 23:00 UTC that day."""
    due = d("2025-05-19")
    assert clock.deadline_passes_at(due) == datetime(2025, 5, 19, 23, 0, tzinfo=UTC)
    assert not clock.is_overdue(due, datetime(2025, 5, 19, 22, 59, tzinfo=UTC))
    assert clock.is_overdue(due, datetime(2025, 5, 19, 23, 0, tzinfo=UTC))
    bst_morning = datetime(2025, 5, 12, 9, 0, tzinfo=timezone(timedelta(hours=1)))
    assert clock.days_left(due, bst_morning) == 7


def test_clock_errors_belong_to_the_project_hierarchy() -> None:
    """Clock errors are the project's own: a bad step is an invalid fact, a paused clock
    a LifecycleError."""
    assert issubclass(clock.ExtensionRefused, InvalidFact)
    assert issubclass(clock.InvalidPause, InvalidFact)
    assert issubclass(clock.ClockPaused, LifecycleError)


# -- the RequestCase aggregate -----------------------------------------------------------

def case(received: str = "2025-03-03", kind: str = "access", **kwargs: Any) -> RequestCase:
    return RequestCase.receive("DSAR-1", "member:1042", kind, noon(received), **kwargs)


def replay(original: RequestCase) -> RequestCase:
    """Rebuilds the aggregate from its events alone."""
    rebuilt: Any = None
    for domain_event in original.collect_events():
        rebuilt = domain_event.mutate(rebuilt)
    assert isinstance(rebuilt, RequestCase)
    return rebuilt


def test_case_id_is_deterministic_per_subject_and_request() -> None:
    """A case's id follows from the request id and the subject: the same pair, the same
    case."""
    assert case().id == RequestCase.create_id("DSAR-1", "member:1042")
    assert RequestCase.create_id("DSAR-1", "member:1042") != RequestCase.create_id(
        "DSAR-1", "member:1043")


def test_received_case_has_its_deadline() -> None:
    """A request received on 3 March is open and due one calendar month later, 3 April."""
    c = case()
    assert c.status == OPEN
    assert c.deadline == d("2025-04-03")


def test_unknown_kind_and_naive_time_are_refused() -> None:
    """A request of an unknown kind, or with a time without a UTC offset, is refused."""
    with pytest.raises(UnknownRequestKind):
        case(kind="teleportation")
    with pytest.raises(clock.NaiveDatetime):
        RequestCase.receive("R", "member:1", "access", datetime(2025, 3, 3, 12))


def test_every_kind_of_right_has_a_clock() -> None:
    """Every right (access, erasure, rectification, restriction, objection, portability)
    runs on the same one-month clock."""
    for kind in ("access", "erasure", "rectification", "restriction", "objection",
                 "portability"):
        assert case(kind=kind).deadline == d("2025-04-03")


def test_identity_verification_restarts_the_clock() -> None:
    """Awaiting identity: no deadline until verification; verified on Good Friday 2025 ->
    due Monday 19 May."""
    c = case("2025-04-10", awaiting_identity=True)
    assert c.deadline is None
    c.verify_identity(noon("2025-04-18"))
    assert c.deadline == d("2025-05-19")
    assert c.deadline_as_known_at(noon("2025-04-17")) is None
    assert c.deadline_as_known_at(noon("2025-04-18")) == d("2025-05-19")
    with pytest.raises(RequestStepRefused):
        c.verify_identity(noon("2025-04-19"))


def test_extension_within_first_month_moves_the_deadline() -> None:
    """An extension of 2 months decided within the first month moves 28 February to 30
    April."""
    c = case("2025-01-31")
    assert c.deadline == d("2025-02-28")
    c.extend(noon("2025-02-20"), 2, "complex")
    assert c.deadline == d("2025-04-30")
    assert c.extended_months == 2


def test_extension_on_day_40_is_refused() -> None:
    """An extension decided on day 40 is refused, records nothing and leaves the
    deadline."""
    c = case("2025-03-03")
    before = len(c.pending_events)
    with pytest.raises(clock.ExtensionRefused):
        c.extend(noon("2025-04-11"), 2, "complex")
    assert len(c.pending_events) == before
    assert c.deadline == d("2025-04-03")


def test_extensions_total_at_most_two_months_and_need_a_reason() -> None:
    """Extensions add up to at most two further months, and each needs a reason."""
    c = case("2025-01-31")
    with pytest.raises(RequestStepRefused):
        c.extend(noon("2025-02-03"), 1, "  ")
    c.extend(noon("2025-02-03"), 1, "numerous")
    assert c.deadline == d("2025-03-31")
    c.extend(noon("2025-02-10"), 1, "complex")
    assert c.deadline == d("2025-04-30")
    with pytest.raises(clock.ExtensionRefused):
        c.extend(noon("2025-02-11"), 1, "complex")


def test_second_extension_still_within_the_original_first_month() -> None:
    """Once extended, the first month still ends on the unextended deadline."""
    c = case("2025-01-31")
    c.extend(noon("2025-02-03"), 1, "numerous")
    with pytest.raises(clock.ExtensionRefused):
        c.extend(noon("2025-03-10"), 1, "complex")


def test_deadline_as_known_before_and_after_an_extension() -> None:
    """The deadline as known at any date is the one in force then; a replay keeps the
    history."""
    c = case("2025-01-31")
    c.extend(noon("2025-02-20"), 2, "complex")
    assert c.deadline_as_known_at(noon("2025-01-30")) is None
    assert c.deadline_as_known_at(noon("2025-01-31")) == d("2025-02-28")
    assert c.deadline_as_known_at(noon("2025-02-19")) == d("2025-02-28")
    assert c.deadline_as_known_at(noon("2025-02-20")) == d("2025-04-30")
    assert c.deadline_as_known_at(noon("2025-06-01")) == d("2025-04-30")
    assert replay(c).deadline_changes == c.deadline_changes


def test_pause_and_resume() -> None:
    """Paused on 10 March, resumed on 17 March: due 3 April moves to 10 April; while paused
    there is no running deadline, so nothing can be overdue."""
    c = case("2025-03-03")
    with pytest.raises(RequestStepRefused):
        c.pause(noon("2025-03-10"), "")
    c.pause(noon("2025-03-10"), "clarification")
    assert c.is_paused and c.deadline is None
    assert not c.is_overdue(noon("2025-04-05"))
    with pytest.raises(RequestStepRefused):
        c.pause(noon("2025-03-11"), "clarification")
    c.resume(noon("2025-03-17"))
    assert c.deadline == d("2025-04-10")
    assert c.deadline_as_known_at(noon("2025-03-09")) == d("2025-04-03")
    assert c.deadline_as_known_at(noon("2025-03-12")) is None
    assert c.deadline_as_known_at(noon("2025-03-17")) == d("2025-04-10")
    with pytest.raises(RequestStepRefused):
        c.resume(noon("2025-03-18"))


def test_pause_after_the_deadline_is_refused() -> None:
    """A clock that has run out cannot be paused."""
    c = case("2025-03-03")
    with pytest.raises(RequestStepRefused):
        c.pause(noon("2025-04-04"), "clarification")


def test_steps_must_come_in_order() -> None:
    """A step dated before the case's last step is refused."""
    c = case("2025-03-03")
    c.pause(noon("2025-03-10"), "clarification")
    with pytest.raises(RequestStepRefused, match="precedes"):
        c.resume(noon("2025-03-09"))


def test_due_soon_and_overdue_flags_are_recorded_once_per_deadline() -> None:
    """"Due soon" and "overdue" are each recorded once per deadline; the deadline day
    itself is not overdue."""
    c = case("2025-03-03")  # due 3 April
    assert not c.flag_due_soon(noon("2025-03-20"))  # 14 days left: not soon
    assert c.flag_due_soon(noon("2025-03-28"))
    assert not c.flag_due_soon(noon("2025-03-29"))
    assert not c.flag_overdue(noon("2025-04-03"))  # the deadline day itself
    assert c.flag_overdue(noon("2025-04-04"))
    assert not c.flag_overdue(noon("2025-04-05"))
    kinds = [type(e).__name__ for e in c.collect_events()]
    assert kinds.count("DueSoonFlagged") == 1 and kinds.count("OverdueFlagged") == 1


def test_a_new_deadline_can_be_flagged_again() -> None:
    """After an extension the new deadline can be flagged "due soon" again; a replay
    keeps the flags."""
    c = case("2025-01-31")  # due 28 February
    assert c.flag_due_soon(noon("2025-02-24"))
    c.extend(noon("2025-02-25"), 2, "complex")  # due 30 April
    assert not c.flag_due_soon(noon("2025-02-26"))  # not soon any more
    assert c.flag_due_soon(noon("2025-04-25"))
    assert c.flagged("due-soon", d("2025-02-28")) and c.flagged("due-soon", d("2025-04-30"))
    assert replay(c).flags == c.flags


def test_fulfilment_closes_the_case() -> None:
    """An answered case is closed: never overdue afterwards, and no extension after it."""
    c = case("2025-03-03")
    c.fulfil(noon("2025-03-20"))
    assert c.status == FULFILLED and c.answered_late is False
    assert not c.is_overdue(noon("2025-05-01"))
    assert not c.flag_overdue(noon("2025-05-01"))
    assert c.is_overdue(noon("2025-03-19")) is False
    with pytest.raises(RequestStepRefused):
        c.extend(noon("2025-03-21"), 1, "complex")


def test_late_fulfilment_and_overdue_state_before_it() -> None:
    """An answer after the deadline is late; the case was overdue before the answer, not
    after."""
    c = case("2025-03-03")
    c.fulfil(noon("2025-04-07"))
    assert c.answered_late is True
    assert c.is_overdue(noon("2025-04-04"))  # as it stood before the answer
    assert not c.is_overdue(noon("2025-04-07"))


def test_refusal_needs_a_reason() -> None:
    """A refusal needs a reason and closes the case; its status before the refusal stays
    open."""
    c = case("2025-03-03", kind="erasure")
    with pytest.raises(RequestStepRefused):
        c.refuse(noon("2025-03-10"), "")
    c.refuse(noon("2025-03-10"), "manifestly-unfounded")
    assert c.status == REFUSED and c.status_at(noon("2025-03-09")) == OPEN
    with pytest.raises(RequestStepRefused):
        c.fulfil(noon("2025-03-11"))


def test_is_due_within() -> None:
    """Due within N days counts from the London day to the deadline day; an overdue case
    is not "due soon"."""
    c = case("2025-03-03")  # due Thursday 3 April
    assert c.is_due_within(noon("2025-04-03"), 0)
    assert c.is_due_within(noon("2025-03-27"), 7)
    assert not c.is_due_within(noon("2025-03-26"), 7)
    assert not c.is_due_within(noon("2025-04-04"), 7)  # overdue, not "due soon"


def test_replay_rebuilds_the_same_case() -> None:
    """Replaying a case's events gives the same deadline (pauses, extension, weekend
    moves), status and pauses."""
    c = case("2025-03-03")
    c.pause(noon("2025-03-10"), "clarification")
    c.resume(noon("2025-03-17"))
    c.extend(noon("2025-03-20"), 1, "complex")
    c.fulfil(noon("2025-04-30"))
    again = replay(c)
    assert again.deadline == c.deadline == d("2025-05-12")  # Sat 10 May -> Mon
    assert again.status == FULFILLED and again.pauses == c.pauses
