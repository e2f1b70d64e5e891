"""The working calendar and working-time arithmetic (libs/common/worktime.py, DOMAIN.md §4)."""

import random
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from libs.common.refdata import check
from libs.common.refdata.timewindows import TimeWindow, WorkingCalendar
from libs.common.worktime import (
    CalendarConfigError,
    ChinaCalendar,
    DayKind,
    Deadline,
    OfficeHours,
    YearDates,
    add_wall_clock,
    add_working_days,
    add_working_hours,
    load_calendar,
    working_time_between,
)
from tests.libs.common.refdata.factories import write_config

SHANGHAI = ZoneInfo("Asia/Shanghai")
CALENDAR = ChinaCalendar()
OFFICE = OfficeHours.parse(["08:30-12:00", "14:00-17:30"])
CONFIG = Path(__file__).resolve().parents[3] / "config"
# Test dates for 2027, NOT the official notice (unpublished when this was written).
TEST_2027 = YearDates(
    2027,
    holidays=frozenset({date(2027, 1, 1), date(2027, 1, 2), date(2027, 1, 3)}),
    makeup_days=frozenset({date(2027, 1, 9)}),
    source="test dates",
)


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI)


def hours(amount: float) -> timedelta:
    return timedelta(hours=amount)


def plus_hours(start: datetime, amount: float, calendar: ChinaCalendar = CALENDAR) -> Deadline:
    return add_working_hours(start, hours(amount), calendar=calendar, office=OFFICE)


# --- the calendar -----------------------------------------------------------------------------


def test_worked_example_three_working_days_after_30_september_2026() -> None:
    deadline = add_working_days(at(2026, 9, 30, 10), 3, calendar=CALENDAR)

    assert deadline == Deadline(at(2026, 10, 10, 10), provisional=False)
    assert deadline.at.weekday() == 5  # a Saturday, made a working day


@pytest.mark.parametrize(
    "day",
    [
        date(2026, 1, 4),
        date(2026, 2, 14),
        date(2026, 2, 28),
        date(2026, 5, 9),
        date(2026, 9, 20),
        date(2026, 10, 10),
    ],
)
def test_2026_make_up_days_are_working_weekend_days(day: date) -> None:
    assert day.weekday() >= 5
    assert CALENDAR.is_working_day(day)
    assert CALENDAR.day_kind(day) is DayKind.MAKEUP


DAYS_OFF_2026 = [
    (date(2026, 1, 1), date(2026, 1, 3)),
    (date(2026, 2, 15), date(2026, 2, 23)),
    (date(2026, 4, 4), date(2026, 4, 6)),
    (date(2026, 5, 1), date(2026, 5, 5)),
    (date(2026, 6, 19), date(2026, 6, 21)),
    (date(2026, 9, 25), date(2026, 9, 27)),
    (date(2026, 10, 1), date(2026, 10, 7)),
]


@pytest.mark.parametrize(("first", "last"), DAYS_OFF_2026)
def test_2026_statutory_days_off_are_holidays(first: date, last: date) -> None:
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]

    assert [CALENDAR.day_kind(day) for day in days] == [DayKind.HOLIDAY] * len(days)
    assert not any(CALENDAR.is_working_day(day) for day in days)


def test_ordinary_days_are_workdays_and_weekends_rest() -> None:
    assert CALENDAR.day_kind(date(2026, 6, 3)) is DayKind.WORKDAY
    assert CALENDAR.day_kind(date(2026, 6, 6)) is DayKind.REST
    assert CALENDAR.is_working_day(date(2026, 6, 3))
    assert not CALENDAR.is_working_day(date(2026, 6, 7))


def test_official_years_are_those_of_the_package_and_configuration() -> None:
    assert CALENDAR.official_years() == frozenset(range(2004, 2027))
    assert CALENDAR.is_official(2026)
    assert not CALENDAR.is_official(2027)
    assert not ChinaCalendar(use_package=False).is_official(2026)
    assert CALENDAR.with_year(TEST_2027).official_years() == frozenset(range(2004, 2028))


def test_it_is_the_working_calendar_of_time_windows() -> None:
    calendar: WorkingCalendar = CALENDAR
    rest_days = TimeWindow.build("rest", timezone="Asia/Shanghai", holidays=True)

    assert rest_days.contains(at(2026, 10, 1, 10), calendar)
    assert not rest_days.contains(at(2026, 10, 10, 10), calendar)  # make-up Saturday


def test_a_year_nobody_knows_counts_monday_to_friday() -> None:
    assert CALENDAR.day_kind(date(2027, 1, 1)) is DayKind.WORKDAY  # a Friday
    assert CALENDAR.day_kind(date(2027, 1, 2)) is DayKind.REST
    assert CALENDAR.day_kind(date(1999, 10, 1)) is DayKind.WORKDAY  # before the package too


def test_package_years_cannot_be_replaced_by_different_dates() -> None:
    wrong = YearDates(2026, frozenset({date(2026, 1, 1)}), frozenset())
    same = ChinaCalendar().with_year(
        YearDates(
            2026,
            frozenset(d for d in _days(2026) if CALENDAR.day_kind(d) is DayKind.HOLIDAY),
            frozenset(d for d in _days(2026) if CALENDAR.day_kind(d) is DayKind.MAKEUP),
        )
    )

    with pytest.raises(ValueError, match="already has the official dates of 2026"):
        ChinaCalendar(official={2026: wrong})
    assert same.day_kind(date(2026, 10, 10)) is DayKind.MAKEUP
    assert ChinaCalendar(official={2026: wrong}, use_package=False).is_working_day(
        date(2026, 2, 16)
    )


@pytest.mark.parametrize(
    ("holidays", "makeup", "reason"),
    [
        ({date(2028, 1, 1)}, set(), "2028-01-01 is not in 2027"),
        ({date(2027, 1, 1)}, {date(2027, 1, 5)}, "make-up day 2027-01-05 is a Tuesday"),
        ({date(2027, 1, 9)}, {date(2027, 1, 9)}, "2027-01-09 is both a holiday and a make-up"),
    ],
)
def test_year_dates_refuse_impossible_dates(
    holidays: set[date], makeup: set[date], reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        YearDates(2027, frozenset(holidays), frozenset(makeup))


def _days(year: int) -> list[date]:
    first = date(year, 1, 1)
    return [first + timedelta(days=n) for n in range((date(year + 1, 1, 1) - first).days)]


# --- working hours ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "amount", "expected"),
    [
        (at(2026, 6, 3, 11), 2, at(2026, 6, 3, 15)),  # across lunch
        (at(2026, 6, 3, 11), 1, at(2026, 6, 3, 12)),  # exactly a window's end: stays there
        (at(2026, 6, 3, 8, 30), 7, at(2026, 6, 3, 17, 30)),  # a whole day ends at its end
        (at(2026, 6, 3, 8, 30), 7 + 1 / 60, at(2026, 6, 4, 8, 31)),
        (at(2026, 6, 3, 7), 1, at(2026, 6, 3, 9, 30)),  # before office hours: waits
        (at(2026, 6, 3, 12, 30), 1, at(2026, 6, 3, 15)),  # at lunch: waits
        (at(2026, 6, 3, 12), 1, at(2026, 6, 3, 15)),  # at a window's end: the next one
        (at(2026, 6, 3, 17), 1, at(2026, 6, 4, 9)),  # across the night
        (at(2026, 6, 3, 20), 1, at(2026, 6, 4, 9, 30)),
        (at(2026, 6, 5, 17), 1, at(2026, 6, 8, 9)),  # Friday to Monday
        (at(2026, 6, 6, 10), 4, at(2026, 6, 8, 14, 30)),  # from a Saturday
        (at(2026, 9, 30, 16), 4, at(2026, 10, 8, 11)),  # across the National Day holiday
        (at(2026, 10, 9, 17), 1, at(2026, 10, 10, 9)),  # Friday to the make-up Saturday
        (at(2026, 6, 1, 8, 30), 35, at(2026, 6, 5, 17, 30)),  # a week of 7 h days
        (at(2026, 6, 1, 8, 30), 35.5, at(2026, 6, 8, 9)),
    ],
)
def test_working_hours(start: datetime, amount: float, expected: datetime) -> None:
    assert plus_hours(start, amount) == Deadline(expected, provisional=False)


def test_zero_working_hours_return_the_start_unchanged() -> None:
    start = datetime(2027, 1, 2, 3, 4, tzinfo=UTC)  # a Saturday of an unknown year

    deadline = add_working_hours(start, timedelta(0), calendar=CALENDAR, office=OFFICE)

    assert deadline == Deadline(start, provisional=False)
    assert deadline.at.tzinfo is UTC
    assert add_working_days(start, 0, calendar=CALENDAR) == Deadline(start, provisional=False)


def test_a_utc_start_is_counted_in_the_office_timezone() -> None:
    start = datetime(2026, 6, 3, 3, 0, tzinfo=UTC)  # 11:00 in Shanghai

    deadline = plus_hours(start, 2)

    assert deadline.at == datetime(2026, 6, 3, 7, 0, tzinfo=UTC)
    assert deadline.at.tzinfo == SHANGHAI
    assert deadline.at.hour == 15
    # 17:00 UTC on 2 June is 01:00 on 3 June in Shanghai: wait for 08:30
    assert plus_hours(datetime(2026, 6, 2, 17, 0, tzinfo=UTC), 1).at == at(2026, 6, 3, 9, 30)


def test_office_hours_in_another_timezone() -> None:
    office = OfficeHours.parse(["09:00-17:00"], timezone="Europe/Berlin")
    start = datetime(2026, 6, 3, 16, 0, tzinfo=ZoneInfo("Europe/Berlin"))

    deadline = add_working_hours(start, hours(2), calendar=CALENDAR, office=office)

    assert deadline.at == datetime(2026, 6, 4, 10, 0, tzinfo=ZoneInfo("Europe/Berlin"))


# --- working days -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "days", "expected"),
    [
        (at(2026, 6, 3, 10), 1, at(2026, 6, 4, 10)),
        (at(2026, 6, 3, 23, 59), 3, at(2026, 6, 8, 23, 59)),  # same local time, over a weekend
        (at(2026, 6, 6, 10), 1, at(2026, 6, 9)),  # a Saturday start: end of Monday
        (at(2026, 10, 1, 10), 3, at(2026, 10, 11)),  # a holiday start: end of Sat 10 Oct
        (at(2026, 2, 13, 9), 1, at(2026, 2, 14, 9)),  # Friday to the make-up Saturday
        (at(2026, 2, 14, 9), 1, at(2026, 2, 24, 9)),  # over the Spring Festival
        (at(2026, 6, 3, 10), 20, at(2026, 7, 2, 10)),  # Fri 19 Jun is a holiday
    ],
)
def test_working_days(start: datetime, days: int, expected: datetime) -> None:
    assert add_working_days(start, days, calendar=CALENDAR) == Deadline(expected, False)


def test_working_days_from_a_utc_start_use_the_local_date() -> None:
    start = datetime(2026, 9, 30, 16, 30, tzinfo=UTC)  # 00:30 on 1 October in Shanghai, a holiday

    deadline = add_working_days(start, 3, calendar=CALENDAR)

    assert deadline.at == at(2026, 10, 11)


def test_working_days_over_many_years_match_counting_day_by_day() -> None:
    start = at(2025, 3, 14, 9)
    for days in (1, 10, 100, 250, 600, 1000):
        expected = start.date()
        for _ in range(days):
            expected += timedelta(days=1)
            while not CALENDAR.is_working_day(expected):
                expected += timedelta(days=1)

        deadline = add_working_days(start, days, calendar=CALENDAR)

        assert deadline.at == datetime.combine(expected, time(9), tzinfo=SHANGHAI)
        assert deadline.provisional is (expected.year > 2026)


# --- provisional deadlines and new years --------------------------------------------------------


def test_a_deadline_counted_in_an_unknown_year_is_provisional() -> None:
    # Fri 1 Jan 2027 counts as a working day until the official dates are known
    assert add_working_days(at(2026, 12, 31, 10), 1, calendar=CALENDAR) == Deadline(
        at(2027, 1, 1, 10), provisional=True
    )
    assert plus_hours(at(2026, 12, 31, 17), 1) == Deadline(at(2027, 1, 1, 9), provisional=True)
    assert plus_hours(at(2027, 3, 3, 9), 1).provisional
    assert not add_working_days(at(2026, 12, 28, 10), 3, calendar=CALENDAR).provisional
    assert not plus_hours(at(2026, 12, 31, 9), 6).provisional  # Thu 31 Dec is enough


def test_loading_the_year_makes_it_official_and_moves_the_deadline() -> None:
    calendar = CALENDAR.with_year(TEST_2027)

    assert add_working_days(at(2026, 12, 31, 10), 1, calendar=calendar) == Deadline(
        at(2027, 1, 4, 10), provisional=False
    )
    assert plus_hours(at(2027, 1, 8, 17), 1, calendar) == Deadline(at(2027, 1, 9, 9), False)
    assert calendar.day_kind(date(2027, 1, 9)) is DayKind.MAKEUP
    assert CALENDAR.day_kind(date(2027, 1, 1)) is DayKind.WORKDAY  # the original is unchanged


def test_before_the_package_years_nothing_is_official() -> None:
    deadline = add_working_days(at(1999, 9, 30, 10), 1, calendar=CALENDAR)

    assert deadline == Deadline(at(1999, 10, 1, 10), provisional=True)


# --- closures ---------------------------------------------------------------------------------


def test_a_closure_is_not_a_working_day() -> None:
    calendar = ChinaCalendar(closures={date(2026, 6, 4): "台风停工"})

    assert calendar.day_kind(date(2026, 6, 4)) is DayKind.CLOSURE
    assert not calendar.is_working_day(date(2026, 6, 4))
    assert add_working_days(at(2026, 6, 3, 10), 1, calendar=calendar).at == at(2026, 6, 5, 10)
    assert plus_hours(at(2026, 6, 3, 17), 1, calendar).at == at(2026, 6, 5, 9)
    assert working_time_between(
        at(2026, 6, 3, 17), at(2026, 6, 5, 9), calendar=calendar, office=OFFICE
    ) == hours(1)


# --- working time between two moments -------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (at(2026, 6, 3, 11), at(2026, 6, 3, 15), 2),
        (at(2026, 6, 3, 12, 30), at(2026, 6, 3, 13, 30), 0),
        (at(2026, 6, 5, 17), at(2026, 6, 8, 9), 1),
        (at(2026, 9, 30, 16), at(2026, 10, 8, 11), 4),
        (at(2026, 6, 6), at(2026, 6, 7, 23), 0),
        (at(2026, 6, 1), at(2026, 6, 8), 35),
        (at(2026, 6, 3, 15), at(2026, 6, 3, 11), 0),
        (at(2026, 6, 3, 15), at(2026, 6, 3, 15), 0),
    ],
)
def test_working_time_between(a: datetime, b: datetime, expected: float) -> None:
    assert working_time_between(a, b, calendar=CALENDAR, office=OFFICE) == hours(expected)


def test_working_time_between_inverts_adding_working_hours() -> None:
    rng = random.Random(20261127)
    calendars = [CALENDAR, ChinaCalendar(closures={date(2026, 6, 4): "台风停工"})]
    zones = [SHANGHAI, UTC]
    first = datetime(2025, 12, 1, tzinfo=UTC)
    for _ in range(2000):
        start = (first + timedelta(seconds=rng.randrange(400 * 86400))).astimezone(
            rng.choice(zones)
        )
        amount = timedelta(seconds=rng.randrange(1, 60 * 3600))
        calendar = rng.choice(calendars)

        deadline = add_working_hours(start, amount, calendar=calendar, office=OFFICE)

        assert deadline.at >= start
        between = working_time_between(start, deadline.at, calendar=calendar, office=OFFICE)
        assert between == amount, (start, amount)


def test_working_hours_match_walking_the_windows_one_by_one() -> None:
    """A slow, obviously correct reference: walk every window of every working day."""
    rng = random.Random(5)
    for _ in range(500):
        start = at(2026, 1, 1) + timedelta(minutes=rng.randrange(365 * 1440))
        amount = timedelta(minutes=rng.randrange(1, 30 * 60))

        assert plus_hours(start, amount / hours(1)).at == _walk(start, amount)


def _walk(start: datetime, amount: timedelta) -> datetime:
    day, left = start.date(), amount
    while True:
        if CALENDAR.is_working_day(day):
            for begin, end in OFFICE.windows:
                window_start = datetime.combine(day, time(), SHANGHAI) + timedelta(minutes=begin)
                window_end = datetime.combine(day, time(), SHANGHAI) + timedelta(minutes=end)
                available = window_end - max(window_start, start)
                if available <= timedelta(0):
                    continue
                if left <= available:
                    return max(window_start, start) + left
                left -= available
        day += timedelta(days=1)


# --- wall clock and refusals ------------------------------------------------------------------


def test_wall_clock_counts_every_hour() -> None:
    assert add_wall_clock(at(2026, 9, 30, 10), hours(72)) == Deadline(at(2026, 10, 3, 10), False)
    assert add_wall_clock(at(2027, 6, 1), hours(1)).provisional is False


def test_wall_clock_is_elapsed_time_across_daylight_saving() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2026, 3, 28, 12, tzinfo=berlin)  # clocks go forward on the 29th

    assert add_wall_clock(start, hours(24)).at == datetime(2026, 3, 29, 13, tzinfo=berlin)


def test_naive_datetimes_and_negative_amounts_are_refused() -> None:
    naive = datetime(2026, 6, 3, 10)  # noqa: DTZ001  # the point of the test
    with pytest.raises(ValueError, match="timezone-aware"):
        plus_hours(naive, 1)
    with pytest.raises(ValueError, match="timezone-aware"):
        add_working_days(naive, 1, calendar=CALENDAR)
    with pytest.raises(ValueError, match="timezone-aware"):
        working_time_between(at(2026, 6, 3), naive, calendar=CALENDAR, office=OFFICE)
    with pytest.raises(ValueError, match="timezone-aware"):
        add_wall_clock(naive, hours(1))
    with pytest.raises(ValueError, match="negative"):
        plus_hours(at(2026, 6, 3), -1)
    with pytest.raises(ValueError, match="negative"):
        add_working_days(at(2026, 6, 3), -1, calendar=CALENDAR)
    with pytest.raises(ValueError, match="negative"):
        add_wall_clock(at(2026, 6, 3), hours(-1))


def test_office_hours_parse() -> None:
    assert OfficeHours.parse(["14:00-17:30", "08:30-12:00"]) == OfficeHours(
        ((510, 720), (840, 1050))
    )
    assert OfficeHours.parse(["20:00-24:00"]).windows == ((1200, 1440),)


@pytest.mark.parametrize(
    ("spans", "timezone", "message"),
    [
        (["08:30-12:00", "11:00-13:00"], "Asia/Shanghai", "'11:00-13:00' overlap '08:30-12:00'"),
        (["20:00-08:00"], "Asia/Shanghai", "'20:00-08:00' run past midnight"),
        (["8:30-12:00"], "Asia/Shanghai", "'8:30-12:00'"),
        (["08:30-12:00"], "Mars/Olympus", "unknown timezone 'Mars/Olympus'"),
    ],
)
def test_office_hours_refused(spans: list[str], timezone: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OfficeHours.parse(spans, timezone)


def test_office_windows_must_be_ordered_and_inside_a_day() -> None:
    with pytest.raises(ValueError, match="overlaps"):
        OfficeHours(((840, 1050), (510, 720)))
    with pytest.raises(ValueError, match="inside one day"):
        OfficeHours(((1200, 1500),))
    with pytest.raises(ValueError, match="at least one window"):
        OfficeHours(())


# --- config/calendar.yaml ---------------------------------------------------------------------


def test_the_shipped_calendar_file_loads() -> None:
    calendar = load_calendar(CONFIG / "calendar.yaml")

    assert calendar.official_years() == frozenset(range(2004, 2027))
    assert calendar.closures == {}


def test_configured_years_and_closures_are_loaded(tmp_path: Path) -> None:
    path = tmp_path / "calendar.yaml"
    path.write_text(
        "years:\n"
        "  2027:\n"
        "    source: test dates\n"
        "    holidays: [2027-01-01, 2027-01-02, 2027-01-03]\n"
        "    makeup_days: [2027-01-09]\n"
        "closures:\n"
        "  - {date: 2026-12-15, reason: 台风停工}\n",
        encoding="utf-8",
    )

    calendar = load_calendar(path)

    assert calendar.is_official(2027)
    assert calendar.day_kind(date(2027, 1, 1)) is DayKind.HOLIDAY
    assert calendar.day_kind(date(2027, 1, 9)) is DayKind.MAKEUP
    assert calendar.closures == {date(2026, 12, 15): "台风停工"}
    assert not calendar.is_working_day(date(2026, 12, 15))


def test_calendar_file_problems_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "calendar.yaml"
    path.write_text(
        "years:\n"
        "  2026:\n"
        "    source: a wrong copy\n"
        "    holidays: [2026-01-01]\n"
        "    makeup_days: []\n"
        "  2027:\n"
        "    source: test dates\n"
        "    holidays: [2027-01-02, 2028-01-03]\n"
        "    makeup_days:\n"
        "      - 2027-01-02\n"
        "      - 2027-01-05\n"
        "  2028:\n"
        "    holidays: [2028-01-01]\n"
        "closures:\n"
        "  - {date: 2026-12-14}\n"
        "  - {date: 2026-10-01, reason: 台风}\n"
        "  - {date: 2026-12-15, reason: 台风, until: 2026-12-16}\n"
        "colour: blue\n",
        encoding="utf-8",
    )

    with pytest.raises(CalendarConfigError) as caught:
        load_calendar(path)

    assert isinstance(caught.value, ValueError)
    assert str(caught.value).splitlines() == [
        f"{path}:2: 2026: the chinese-calendar package already has the official dates of 2026"
        " and these differ (holidays missing: 2026-01-02, 2026-01-03, 2026-02-15, 2026-02-16"
        " and 28 more; make-up days missing: 2026-01-04, 2026-02-14, 2026-02-28, 2026-05-09"
        " and 2 more); remove the entry (an identical one is accepted)",
        f"{path}:8: 2028-01-03 is not in 2027",
        f"{path}:10: 2027-01-02 is both a holiday and a make-up day",
        f"{path}:11: make-up day 2027-01-05 is a Tuesday; make-up working days are weekend days",
        f"{path}:12: 2028: `source` must name the notice (a title)",
        f"{path}:12: 2028: `makeup_days` is missing (write [] if the notice has none)",
        f"{path}:15: closure 2026-12-14 needs a reason",
        f"{path}:16: closure 2026-10-01 is not a working day (holiday); offices are shut already",
        f"{path}:17: unknown field 'until'; expected date, reason",
        f"{path}:18: unknown field 'colour'; expected years, closures",
    ]


def test_calendar_file_syntax_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "calendar.yaml"
    path.write_text("years: {}\nclosures: [\n", encoding="utf-8")

    with pytest.raises(CalendarConfigError) as caught:
        load_calendar(path)

    assert [issue.line for issue in caught.value.issues] == [3]
    assert str(caught.value).startswith(f"{path}:3: YAML syntax error")


def test_a_missing_calendar_file(tmp_path: Path) -> None:
    with pytest.raises(CalendarConfigError, match="file not found"):
        load_calendar(tmp_path / "calendar.yaml")


def test_check_reports_calendar_problems_and_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    (config / "calendar.yaml").write_text(
        "years:\n"
        "  2027: {source: test dates, holidays: [2027-01-01], makeup_days: []}\n"
        "closures:\n"
        "  - {date: 2026-12-15, reason: 台风停工}\n",
        encoding="utf-8",
    )

    assert check.main(["--config", str(config)]) == 0
    out, _ = capsys.readouterr()
    assert out.endswith("; calendar: 24 official years (2004–2027), 1 closures\n")

    (config / "calendar.yaml").write_text("closures:\n  - {date: 2026-12-15}\n", encoding="utf-8")

    assert check.main(["--config", str(config)]) == 1
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"{config / 'calendar.yaml'}:2: closure 2026-12-15 needs a reason\n")


def test_the_example_of_docs_calendar_md_runs() -> None:
    text = (CONFIG.parent / "docs" / "calendar.md").read_text(encoding="utf-8")
    example = text.split("```python\n", 1)[1].split("```", 1)[0]

    exec(compile(example, "docs/calendar.md", "exec"), {})  # noqa: S102  # our own doc


def test_is_working_day_agrees_with_day_kind_inside_and_outside_the_table() -> None:
    calendar = ChinaCalendar(closures={date(2026, 6, 4): "台风停工"})
    days = [*_days(2026), date(1990, 10, 1), date(9999, 12, 31), date(2027, 1, 1)]
    expected = [calendar.day_kind(d) in {DayKind.WORKDAY, DayKind.MAKEUP} for d in days]

    assert [calendar.is_working_day(d) for d in days] == expected  # before any table
    add_working_days(at(2026, 1, 1), 300, calendar=calendar)  # builds one
    assert [calendar.is_working_day(d) for d in days] == expected
