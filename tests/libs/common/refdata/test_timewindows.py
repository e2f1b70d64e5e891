"""Time windows of the routing rules: local hours, weekdays and the working calendar."""

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from libs.common.refdata import TimeWindow, WeekdayCalendar
from libs.common.refdata.timewindows import minute_ranges

SHANGHAI = timezone(timedelta(hours=8))
WEEKDAYS = WeekdayCalendar()


def at(day: int, hour: int, minute: int = 0, tz: timezone = SHANGHAI) -> datetime:
    """A moment in November 2026: Mon 2, Fri 6, Sat 7, Sun 8."""
    return datetime(2026, 11, day, hour, minute, tzinfo=tz)


class Statutory:
    """A calendar with one weekday holiday and one make-up Saturday, as the sla issue's will."""

    def is_working_day(self, day: date) -> bool:
        if day == date(2026, 11, 4):
            return False
        return day == date(2026, 11, 7) or day.weekday() < 5


OFFICE = TimeWindow.build(
    "office_hours", timezone="Asia/Shanghai", hours=["08:30-12:00", "14:00-17:30"], holidays=False
)
NIGHTS = TimeWindow.build("nights", timezone="Asia/Shanghai", hours=["20:00-08:00"])
REST = TimeWindow.build("rest_days", timezone="Asia/Shanghai", holidays=True)


@pytest.mark.parametrize(
    ("span", "minutes"),
    [
        ("08:30-12:00", ((510, 720),)),
        ("20:00-08:00", ((1200, 1440), (0, 480))),
        ("22:00-24:00", ((1320, 1440),)),
        ("22:00-00:00", ((1320, 1440),)),
        ("00:00-24:00", ((0, 1440),)),
    ],
)
def test_spans_become_minute_ranges(span: str, minutes: tuple[tuple[int, int], ...]) -> None:
    assert minute_ranges(span) == minutes


@pytest.mark.parametrize(
    "span", ["08:30", "8:30-12:00", "08:30-12:60", "24:00-08:00", "０８:30-12:00"]
)
def test_bad_spans_are_refused(span: str) -> None:
    with pytest.raises(ValueError, match="hours"):
        minute_ranges(span)


@pytest.mark.parametrize(
    ("moment", "office", "night", "rest"),
    [
        (at(6, 8, 29), False, False, False),  # Friday, just before office hours
        (at(6, 8, 30), True, False, False),  # the start is inside
        (at(6, 11, 59), True, False, False),
        (at(6, 12, 0), False, False, False),  # lunch: the end is not
        (at(6, 13, 30), False, False, False),
        (at(6, 17, 29), True, False, False),
        (at(6, 17, 30), False, False, False),
        (at(6, 20, 0), False, True, False),
        (at(7, 3, 0), False, True, True),  # Saturday small hours: still the night
        (at(7, 10, 0), False, False, True),  # Saturday morning: a rest day, no office
        (at(8, 7, 59), False, True, True),
        (at(9, 8, 0), False, False, False),  # Monday 08:00: night over, office not yet open
    ],
)
def test_office_hours_lunch_nights_and_weekends(
    moment: datetime, office: bool, night: bool, rest: bool
) -> None:
    found = [w.contains(moment, WEEKDAYS) for w in (OFFICE, NIGHTS, REST)]

    assert found == [office, night, rest]


def test_windows_read_the_clock_in_their_timezone() -> None:
    # 01:00 UTC on Friday is 09:00 in Shanghai: office hours there, night in UTC terms.
    moment = datetime(2026, 11, 6, 1, 0, tzinfo=UTC)

    assert OFFICE.contains(moment, WEEKDAYS)
    assert not NIGHTS.contains(moment, WEEKDAYS)
    utc_nights = TimeWindow.build("utc_nights", timezone="UTC", hours=["20:00-08:00"])
    assert utc_nights.contains(moment, WEEKDAYS)


def test_weekdays_restrict_the_days() -> None:
    late_friday = TimeWindow.build(
        "late_friday", timezone="Asia/Shanghai", weekdays=["fri"], hours=["20:00-08:00"]
    )

    assert late_friday.contains(at(6, 23), WEEKDAYS)
    assert not late_friday.contains(at(7, 1), WEEKDAYS), "after midnight the date is Saturday"
    assert not late_friday.contains(at(5, 23), WEEKDAYS)


def test_holidays_come_from_the_calendar() -> None:
    holiday_wednesday, makeup_saturday = at(4, 10), at(7, 10)

    assert WeekdayCalendar().is_working_day(date(2026, 11, 4))
    assert not WeekdayCalendar().is_working_day(date(2026, 11, 7))
    assert not OFFICE.contains(holiday_wednesday, Statutory())
    assert REST.contains(holiday_wednesday, Statutory())
    assert OFFICE.contains(makeup_saturday, Statutory())
    assert not REST.contains(makeup_saturday, Statutory())
