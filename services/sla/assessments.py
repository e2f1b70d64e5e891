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
from collections.abc import Callable, Iterable
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


def assess(
    period: Period,
    level: AssessmentLevel,
    node: str,
    holdings: Iterable[Holding],
    visits: Iterable[VisitPeriod] = (),
) -> AssessmentPublished:
    """The KPIs of one group (the holdings and visit periods already chosen for it)."""
    holdings = list(holdings)
    handle = [h for h in holdings if h.stage == "handle"]
    sign = [h for h in holdings if h.stage == "sign"]
    verify = [h for h in holdings if h.stage == "verify"]
    due = [h for h in handle if _due(h, period, "resolved")]
    closed = [h for h in due if h.outcome == "resolved"]
    on_time = [h for h in closed if h.on_time]
    sign_due = [h for h in sign if _due(h, period, "signed")]
    signed_on_time = [h for h in sign_due if h.outcome == "signed" and h.on_time]
    resolved = [h for h in handle if h.outcome == "resolved" and h.stopped_at in period]
    reworked = [h for h in verify if h.outcome == "rework" and h.stopped_at in period]
    handled = [h for h in handle if h.stopped_at in period]
    extended = [h for h in handled if h.extended]
    assigned = [h for h in sign if h.started_at in period]
    returned = [h for h in holdings if h.outcome == "returned" and h.stopped_at in period]
    hours = [h.working_hours for h in resolved if h.working_hours is not None]
    ended = [v for v in visits if v.period_end in period]
    fulfilled = [v for v in ended if v.fulfilled]
    return AssessmentPublished(
        period=period.name,
        period_start=period.start,
        period_end=period.end,
        level=level,
        node=node,
        due=len(due),
        closed=len(closed),
        closed_on_time=len(on_time),
        closure_rate=rate(len(closed), len(due)),
        on_time_closure_rate=rate(len(on_time), len(due)),
        sign_due=len(sign_due),
        signed_on_time=len(signed_on_time),
        on_time_sign_rate=rate(len(signed_on_time), len(sign_due)),
        resolved=len(resolved),
        reworked=len(reworked),
        rework_rate=rate(len(reworked), len(resolved)),
        handled=len(handled),
        extended=len(extended),
        extension_rate=rate(len(extended), len(handled)),
        assigned=len(assigned),
        returned=len(returned),
        return_rate=rate(len(returned), len(assigned)),
        average_handling_hours=round(sum(hours) / len(hours), 2) if hours else None,
        satisfaction_rate=None,
        visits_due=len(ended),
        visits_done=len(fulfilled),
        visit_rate=rate(len(fulfilled), len(ended)),
    )


def _grid_key(digits: int) -> Callable[[str | None], str | None]:
    return lambda grid: grid[:digits] if grid and len(grid) >= digits else None


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
    groups: dict[str, tuple[list[Holding], list[VisitPeriod]]] = {}

    def group(node: str | None) -> tuple[list[Holding], list[VisitPeriod]] | None:
        return None if node is None else groups.setdefault(node, ([], []))

    if level == "department":
        for holding in holdings:
            if (found := group(holding.department)) is not None:
                found[0].append(holding)
    elif level == "worker":
        for visit in visits:
            if (found := group(visit.worker)) is not None:
                found[1].append(visit)
    else:
        key = (lambda _: city) if level == "city" else _grid_key(_LEVEL_DIGITS[level])
        for holding in holdings:
            if (found := group(key(holding.unit_grid))) is not None:
                found[0].append(holding)
        for visit in visits:
            if (found := group(key(visit.unit_grid))) is not None:
                found[1].append(visit)
    return [
        assess(period, level, node, found_holdings, found_visits)
        for node, (found_holdings, found_visits) in sorted(groups.items())
    ]
