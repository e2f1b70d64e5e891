"""Named time windows of the routing rules (office hours, nights, rest days) and the working
calendar they ask whether a date is a working day.

`WeekdayCalendar` (Monday to Friday) is the only calendar for now. The sla issue brings the
statutory Chinese calendar (holidays and make-up working days, DOMAIN.md §4); routing will take
that one through the same `WorkingCalendar` protocol, so no window definition has to change.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = date.weekday()
MINUTES_PER_DAY = 24 * 60


class WorkingCalendar(Protocol):
    def is_working_day(self, day: date) -> bool: ...


class WeekdayCalendar:
    """Monday to Friday are working days; it knows no holidays and no make-up days."""

    def is_working_day(self, day: date) -> bool:
        return day.weekday() < 5


def zone(name: str) -> ZoneInfo:
    """The IANA timezone `name`; ValueError naming it when this machine does not know it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"unknown timezone {name!r}") from error


def minute_ranges(span: str) -> tuple[tuple[int, int], ...]:
    """Minutes after midnight of a span: "08:30-12:00" -> ((510, 720),).

    The start is inside, the end is not; "24:00" ends a day. A span past midnight is cut in
    two: "20:00-08:00" -> ((1200, 1440), (0, 480)).
    """
    start_text, separator, end_text = span.partition("-")
    if not separator:
        raise ValueError(f"hours must look like '08:30-12:00', got {span!r}")
    start, end = _minute(start_text, span), _minute(end_text, span)
    if start == MINUTES_PER_DAY:
        raise ValueError(f"hours {span!r} start at 24:00; write 00:00")
    if start == end:
        raise ValueError(f"hours {span!r} start and end at the same time")
    if start < end:
        return ((start, end),)
    return ((start, MINUTES_PER_DAY), (0, end)) if end else ((start, MINUTES_PER_DAY),)


def _minute(text: str, span: str) -> int:
    hours, separator, minutes = text.partition(":")
    digits = hours + minutes
    if not (separator and len(hours) == 2 and len(minutes) == 2 and digits.isascii()):
        raise ValueError(f"hours must look like '08:30-12:00', got {span!r}")
    if not digits.isdigit():
        raise ValueError(f"hours must look like '08:30-12:00', got {span!r}")
    value = int(hours) * 60 + int(minutes)
    if int(minutes) >= 60 or value > MINUTES_PER_DAY:
        raise ValueError(f"hours {span!r}: {text!r} is not a time of day")
    return value


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """A recurring window of local time. Every condition given must hold; the day conditions
    look at the local date of the moment tested (a night from 20:00 to 08:00 that starts on a
    Friday is a Saturday after midnight)."""

    name: str
    timezone: tzinfo
    weekdays: frozenset[int] | None  # date.weekday() values; None: any day
    minutes: tuple[tuple[int, int], ...]  # [start, end) minutes after local midnight; (): all day
    holidays: bool | None  # True: rest days only, False: working days only, None: either

    @classmethod
    def build(
        cls,
        name: str,
        *,
        timezone: str,
        weekdays: Iterable[str] | None = None,
        hours: Iterable[str] = (),
        holidays: bool | None = None,
    ) -> "TimeWindow":
        return cls(
            name=name,
            timezone=zone(timezone),
            weekdays=None if weekdays is None else frozenset(map(WEEKDAYS.index, weekdays)),
            minutes=tuple(part for span in hours for part in minute_ranges(span)),
            holidays=holidays,
        )

    def contains(self, moment: datetime, calendar: WorkingCalendar) -> bool:
        """True if the aware `moment` falls in this window."""
        local = moment.astimezone(self.timezone)
        if self.weekdays is not None and local.weekday() not in self.weekdays:
            return False
        if self.minutes:
            minute = local.hour * 60 + local.minute
            if not any(start <= minute < end for start, end in self.minutes):
                return False
        return self.holidays is None or calendar.is_working_day(local.date()) != self.holidays
