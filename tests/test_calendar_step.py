"""A rule's due time is its trigger time plus the rule's duration, added as relativedelta
adds it, whatever the duration and the trigger (`policy.model.calendar_step`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.policy.model import calendar_step, parse_duration

ZONES = [UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12)),
         timezone(timedelta(hours=5, minutes=30)), ZoneInfo("Europe/London"),
         ZoneInfo("America/New_York"), ZoneInfo("Australia/Lord_Howe")]


@st.composite
def durations(draw: st.DrawFn) -> str:
    parts = {unit: draw(st.one_of(st.none(), st.integers(0, 40), st.integers(0, 20_000)))
             for unit in "YMWD"}
    clock = {unit: draw(st.one_of(st.none(), st.integers(0, 100))) for unit in "HMS"}
    text = "P" + "".join(f"{n}{u}" for u, n in parts.items() if n is not None)
    timed = "".join(f"{n}{u}" for u, n in clock.items() if n is not None)
    if timed:
        text += "T" + timed
    return text if text != "P" else "P0D"


def _outcome(add: object) -> object:
    try:
        return add()  # type: ignore[operator]
    except (ValueError, OverflowError) as error:
        return type(error)


@settings(max_examples=400, deadline=None)
@given(durations(), st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
       st.sampled_from(ZONES))
def test_a_calendar_step_adds_as_relativedelta_does(text: str, naive: datetime,
                                                    zone: object) -> None:
    """Any duration the policy format accepts, after any trigger time at any offset or zone
    (month ends, leap days, the calendar's ends), gives relativedelta's instant, offset and
    wall clock, or fails with the same kind of error."""
    start = naive.replace(tzinfo=zone)  # type: ignore[arg-type]
    expected = _outcome(lambda: start + parse_duration(text))
    found = _outcome(lambda: calendar_step(text).after(start))
    assert found == expected
    if isinstance(found, datetime):
        assert isinstance(expected, datetime)
        assert (found.tzinfo, found.fold, found.isoformat()) == \
            (expected.tzinfo, expected.fold, expected.isoformat())


def test_month_ends_and_leap_days_clamp_as_the_calendar_does() -> None:
    """31 January plus a month is the last day of February (29th in a leap year); 29
    February plus a year is 28 February; 13 months is a year and a month."""
    assert calendar_step("P1M").after(datetime(2024, 1, 31, 9, tzinfo=UTC)) == \
        datetime(2024, 2, 29, 9, tzinfo=UTC)
    assert calendar_step("P1Y").after(datetime(2024, 2, 29, tzinfo=UTC)) == \
        datetime(2025, 2, 28, tzinfo=UTC)
    assert calendar_step("P13M").after(datetime(2023, 11, 30, tzinfo=UTC)) == \
        datetime(2024, 12, 30, tzinfo=UTC)
    assert calendar_step("P1MT25H").after(datetime(2023, 1, 31, tzinfo=UTC)) == \
        datetime(2023, 3, 1, 1, tzinfo=UTC)
