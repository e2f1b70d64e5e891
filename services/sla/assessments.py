"""Assessments (定时考核), the pure part: the KPIs of DOMAIN.md §5 for one group of clocks and
visit periods over one month or quarter. Every formula is here and in docs/sla.md.

The unit is a **holding**: one timer — one department's sign-for or handling of a case, or the
verification of its result (DESIGN's stages). For a period P = [start, end):

- 应结案数 `due`: handling holdings resolved in P, plus those whose deadline fell in P while
  still held (open, or ended after the deadline without being resolved — a case returned or
  reassigned before its deadline is not the department's to close).
- 结案数 `closed`: of those, resolved in P. 按期结案数 `closed_on_time`: resolved within the limit
  (an approved extension is part of the limit).
- `closure_rate` = closed / due; `on_time_closure_rate` = closed_on_time / due.
- `on_time_sign_rate` = sign-for holdings signed within the limit / sign-for holdings due in P
  (same "due" rule as handling).
- `rework_rate` = verifications failed in P / handling holdings resolved in P.
- `extension_rate` = handling holdings ended in P that had an extension approved / handling
  holdings ended in P.
- `return_rate` = holdings ended by a return in P / sign-for holdings started in P (assignments).
- `average_handling_hours`: mean over handling holdings resolved in P of the working hours
  (office windows of working days) from signing to resolving, pauses included.
- `satisfaction_rate`: unknown until the return-visit results of the 12345 and 数字城管 bridges
  arrive: null.
- `visit_rate` = visit periods fulfilled / visit periods that ended in P.

Rates are percentages rounded half-up to two places; null when the denominator is 0.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from libs.common.events import AssessmentLevel, AssessmentPublished
from libs.common.refdata.timewindows import zone

_PERIOD = re.compile(r"^([0-9]{4})-(?:([0-9]{2})|Q([1-4]))$")
_LEVEL_DIGITS = {"city": 6, "town": 9, "village": 12, "unit_grid": 15}
LEVELS: tuple[AssessmentLevel, ...] = (
    "city",
    "town",
    "village",
    "unit_grid",
    "department",
    "worker",
)


@dataclass(frozen=True)
class Period:
    name: str  # 2026-11, 2026-Q4
    start: datetime
    end: datetime

    @classmethod
    def parse(cls, name: str, timezone: str = "Asia/Shanghai") -> Period:
        found = _PERIOD.fullmatch(name)
        if found is None:
            raise ValueError(f"a period is a month (2026-11) or a quarter (2026-Q4), got {name!r}")
        year = int(found.group(1))
        if found.group(2):
            month, months = int(found.group(2)), 1
            if not 1 <= month <= 12:  # months of a year
                raise ValueError(f"no month {month} in {name!r}")
        else:
            month, months = (int(found.group(3)) - 1) * 3 + 1, 3
        tz = zone(timezone)
        start = datetime(year, month, 1, tzinfo=tz)
        carry, last = divmod(month - 1 + months, 12)
        return cls(name, start, datetime(year + carry, last + 1, 1, tzinfo=tz))

    @classmethod
    def of(
        cls, moment: datetime, *, quarter: bool = False, timezone: str = "Asia/Shanghai"
    ) -> Period:
        local = moment.astimezone(zone(timezone))
        name = (
            f"{local.year}-Q{(local.month - 1) // 3 + 1}"
            if quarter
            else f"{local.year}-{local.month:02d}"
        )
        return cls.parse(name, timezone)

    def previous(self, timezone: str = "Asia/Shanghai") -> Period:
        return Period.of(
            self.start - timedelta(seconds=1), quarter="Q" in self.name, timezone=timezone
        )

    def __contains__(self, moment: object) -> bool:
        return isinstance(moment, datetime) and self.start <= moment < self.end


@dataclass(frozen=True)
class Holding:
    """What an assessment needs of one timer."""

    stage: str  # sign, handle, verify
    department: str | None
    unit_grid: str | None
    started_at: datetime
    due_at: datetime
    stopped_at: datetime | None
    outcome: str | None  # the transition that ended it; None while held
    on_time: bool  # used within the limit
    extended: bool
    working_hours: float | None  # from start to stop, in office hours (handling, resolved)


@dataclass(frozen=True)
class VisitPeriod:
    worker: str
    unit_grid: str
    period_end: datetime
    fulfilled: bool


def rate(part: int, whole: int) -> float | None:
    """part / whole as a percentage rounded half-up to two places; None when whole is 0."""
    if whole == 0:
        return None
    exact = Decimal(part) * 100 / Decimal(whole)
    return float(exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _due(holding: Holding, period: Period, done: str) -> bool:
    if holding.outcome == done:
        return holding.stopped_at in period
    held_at_deadline = holding.stopped_at is None or holding.stopped_at >= holding.due_at
    return holding.due_at in period and held_at_deadline


@dataclass
class Tally:
    """Running counts of one group: holdings and visit periods are added one at a time, so an
    assessment needs memory for its groups, not for its timers."""

    due: int = 0
    closed: int = 0
    closed_on_time: int = 0
    sign_due: int = 0
    signed_on_time: int = 0
    resolved: int = 0
    reworked: int = 0
    handled: int = 0
    extended: int = 0
    assigned: int = 0
    returned: int = 0
    hours: float = 0.0
    timed: int = 0
    visits_due: int = 0
    visits_done: int = 0

    def add(self, h: Holding, period: Period) -> None:  # one line per formula
        ended_here = h.stopped_at in period
        if h.outcome == "returned" and ended_here:
            self.returned += 1
        if h.stage == "handle":
            if _due(h, period, "resolved"):
                self.due += 1
                if h.outcome == "resolved":
                    self.closed += 1
                    self.closed_on_time += h.on_time
            if h.outcome == "resolved" and ended_here:
                self.resolved += 1
                if h.working_hours is not None:
                    self.hours += h.working_hours
                    self.timed += 1
            if ended_here:
                self.handled += 1
                self.extended += h.extended
        elif h.stage == "sign":
            if _due(h, period, "signed"):
                self.sign_due += 1
                self.signed_on_time += h.outcome == "signed" and h.on_time
            if h.started_at in period:
                self.assigned += 1
        elif h.stage == "verify" and h.outcome == "rework" and ended_here:
            self.reworked += 1

    def add_visit(self, v: VisitPeriod, period: Period) -> None:
        if v.period_end in period:
            self.visits_due += 1
            self.visits_done += v.fulfilled

    def published(self, period: Period, level: AssessmentLevel, node: str) -> AssessmentPublished:
        return AssessmentPublished(
            period=period.name,
            period_start=period.start,
            period_end=period.end,
            level=level,
            node=node,
            due=self.due,
            closed=self.closed,
            closed_on_time=self.closed_on_time,
            closure_rate=rate(self.closed, self.due),
            on_time_closure_rate=rate(self.closed_on_time, self.due),
            sign_due=self.sign_due,
            signed_on_time=self.signed_on_time,
            on_time_sign_rate=rate(self.signed_on_time, self.sign_due),
            resolved=self.resolved,
            reworked=self.reworked,
            rework_rate=rate(self.reworked, self.resolved),
            handled=self.handled,
            extended=self.extended,
            extension_rate=rate(self.extended, self.handled),
            assigned=self.assigned,
            returned=self.returned,
            return_rate=rate(self.returned, self.assigned),
            average_handling_hours=round(self.hours / self.timed, 2) if self.timed else None,
            satisfaction_rate=None,
            visits_due=self.visits_due,
            visits_done=self.visits_done,
            visit_rate=rate(self.visits_done, self.visits_due),
        )


def assess(
    period: Period,
    level: AssessmentLevel,
    node: str,
    holdings: Iterable[Holding],
    visits: Iterable[VisitPeriod] = (),
) -> AssessmentPublished:
    """The KPIs of one group (the holdings and visit periods already chosen for it)."""
    tally = Tally()
    for holding in holdings:
        tally.add(holding, period)
    for visit in visits:
        tally.add_visit(visit, period)
    return tally.published(period, level, node)


class Tallies:
    """One tally per node of each level asked for, fed holding by holding."""

    def __init__(self, period: Period, levels: Iterable[AssessmentLevel], *, city: str) -> None:
        self.period = period
        self._groups: dict[AssessmentLevel, dict[str, Tally]] = {level: {} for level in levels}
        self._city = city

    def _node(self, level: AssessmentLevel, grid: str | None) -> str | None:
        if level == "city":
            return self._city
        digits = _LEVEL_DIGITS[level]
        return grid[:digits] if grid and len(grid) >= digits else None

    def _tally(self, level: AssessmentLevel, node: str | None) -> Tally | None:
        if node is None:
            return None
        return self._groups[level].setdefault(node, Tally())

    def add(self, holding: Holding) -> None:
        for level in self._groups:
            if level == "worker":
                continue
            node = (
                holding.department
                if level == "department"
                else self._node(level, holding.unit_grid)
            )
            if (tally := self._tally(level, node)) is not None:
                tally.add(holding, self.period)

    def add_visit(self, visit: VisitPeriod) -> None:
        for level in self._groups:
            if level == "department":
                continue
            node = visit.worker if level == "worker" else self._node(level, visit.unit_grid)
            if (tally := self._tally(level, node)) is not None:
                tally.add_visit(visit, self.period)

    def results(self, level: AssessmentLevel) -> list[AssessmentPublished]:
        groups = self._groups[level]
        return [groups[node].published(self.period, level, node) for node in sorted(groups)]


def assess_all(
    period: Period,
    level: AssessmentLevel,
    holdings: Iterable[Holding],
    visits: Iterable[VisitPeriod],
    *,
    city: str,
) -> list[AssessmentPublished]:
    """One assessment per node of `level` that has anything in the period, by node (the city's
    holds every case, also those not placed in a unit grid)."""
    tallies = Tallies(period, (level,), city=city)
    for holding in holdings:
        tallies.add(holding)
    for visit in visits:
        tallies.add_visit(visit)
    return tallies.results(level)
