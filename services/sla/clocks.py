"""The three clocks a limit is counted on, over one working calendar and one set of office hours."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from libs.common.worktime import (
    ChinaCalendar,
    Deadline,
    OfficeHours,
    add_wall_clock,
    add_working_hours,
    working_time_between,
)
from services.sla.policies import ClockKind

_WHOLE_DAY = ((0, 24 * 60),)


@dataclass(frozen=True)
class Clockwork:
    """`add` and `between` on each clock: wall time, office hours of working days, working days
    (a working day counts 24 hours of this clock, so days can be added, paused and resumed)."""

    calendar: ChinaCalendar
    office: OfficeHours

    @property
    def _days(self) -> OfficeHours:
        return OfficeHours(windows=_WHOLE_DAY, timezone=self.office.timezone)

    def add(self, clock: ClockKind, start: datetime, amount: timedelta) -> Deadline:
        if clock is ClockKind.WALL:
            return add_wall_clock(start, amount)
        office = self.office if clock is ClockKind.WORKING_HOURS else self._days
        return add_working_hours(start, amount, calendar=self.calendar, office=office)

    def between(self, clock: ClockKind, a: datetime, b: datetime) -> timedelta:
        if clock is ClockKind.WALL:
            return max(b - a, timedelta(0))
        office = self.office if clock is ClockKind.WORKING_HOURS else self._days
        return working_time_between(a, b, calendar=self.calendar, office=office)
