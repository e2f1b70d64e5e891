"""Visit obligations (四必访), the pure part: the register of key residents, the visit periods,
and what a visit or the end of a period does to an obligation.

Each key resident must be visited at least once in every period of their category's frequency —
a calendar week (from Monday 00:00), month, quarter or half year, in the register's timezone. A
visit recorded inside the current period fulfils it; when a period ends unfulfilled the resident
is reported overdue to the worker's town centre, once, and the next period begins.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from libs.common.events import VisitFrequency, VisitOverdue
from libs.common.refdata import ConfigError, ReferenceData
from libs.common.refdata.loader import Finding, read_source
from libs.common.refdata.timewindows import zone

VISITS_FILE = "visits.yaml"
_TOWN_DIGITS = 9


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CategorySpec(_Model):
    code: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
    name: Annotated[str, Field(min_length=1, max_length=40)]
    every: VisitFrequency


class ResidentSpec(_Model):
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    category: str
    unit_grid: Annotated[str, Field(pattern=r"^[0-9]{15}$")]
    worker: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class RegisterFile(_Model):
    version: Annotated[int, Field(ge=1)]
    timezone: str = "Asia/Shanghai"
    categories: Annotated[tuple[CategorySpec, ...], Field(min_length=1)]
    residents: tuple[ResidentSpec, ...] = ()


@dataclass(frozen=True)
class Resident:
    id: str
    category: str
    frequency: VisitFrequency
    unit_grid: str
    worker: str


@dataclass(frozen=True)
class Register:
    timezone: str
    residents: dict[str, Resident]


def load_register(path: Path, *, against: ReferenceData) -> Register:
    """Read and check visits.yaml; ConfigError lists every problem as file:line: reason."""
    source, issues = read_source(path, RegisterFile)
    if source is not None:
        issues = source.issues(_findings(source.model, against))
    if issues or source is None:
        raise ConfigError(sorted(issues, key=lambda issue: issue.line or 0))
    spec = source.model
    every = {category.code: category.every for category in spec.categories}
    residents = {
        r.id: Resident(r.id, r.category, every[r.category], r.unit_grid, r.worker)
        for r in spec.residents
    }
    return Register(spec.timezone, residents)


def _findings(spec: RegisterFile, refdata: ReferenceData) -> list[Finding]:
    found: list[Finding] = []
    try:
        zone(spec.timezone)
    except ValueError as error:
        found.append(Finding(("timezone",), str(error)))
    codes: dict[str, int] = {}
    for index, category in enumerate(spec.categories):
        if category.code in codes:
            first = ("categories", codes[category.code], "code")
            found.append(Finding(("categories", index, "code"), "duplicate category", first))
        codes.setdefault(category.code, index)
    ids: dict[str, int] = {}
    for index, resident in enumerate(spec.residents):
        loc = ("residents", index)
        if resident.id in ids:
            first = ("residents", ids[resident.id], "id")
            found.append(Finding((*loc, "id"), f"duplicate resident {resident.id!r}", first))
        ids.setdefault(resident.id, index)
        if resident.category not in codes:
            found.append(Finding((*loc, "category"), f"unknown category {resident.category!r}"))
        if resident.unit_grid not in refdata.grid:
            found.append(Finding((*loc, "unit_grid"), f"unknown unit grid {resident.unit_grid}"))
    return found


# --- periods --------------------------------------------------------------------------------------

_MONTHS = {VisitFrequency.MONTHLY: 1, VisitFrequency.QUARTERLY: 3, VisitFrequency.HALF_YEARLY: 6}


def period_of(
    moment: datetime, frequency: VisitFrequency, timezone: str
) -> tuple[datetime, datetime]:
    """The visit period holding `moment`: [start, end), local midnights."""
    local = moment.astimezone(zone(timezone))
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if frequency is VisitFrequency.WEEKLY:
        start = midnight - timedelta(days=local.weekday())
        return start, _local(start.replace(tzinfo=None) + timedelta(days=7), timezone)
    months = _MONTHS[frequency]
    first_month = (local.month - 1) // months * months + 1
    start = midnight.replace(month=first_month, day=1)
    year, month = divmod(first_month - 1 + months, 12)
    end = start.replace(year=start.year + year, month=month + 1)
    return _local(start.replace(tzinfo=None), timezone), _local(end.replace(tzinfo=None), timezone)


def _local(naive: datetime, timezone: str) -> datetime:
    return naive.replace(tzinfo=zone(timezone))


# --- obligations ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Obligation:
    resident: Resident
    period_start: datetime
    period_end: datetime
    last_visit_at: datetime | None = None

    @property
    def fulfilled(self) -> bool:
        """A visit lies inside the current period."""
        last = self.last_visit_at
        return last is not None and self.period_start <= last < self.period_end


def start(resident: Resident, now: datetime, timezone: str) -> Obligation:
    begin, end = period_of(now, resident.frequency, timezone)
    return Obligation(resident, begin, end)


def visited(obligation: Obligation, at: datetime) -> Obligation:
    """A recorded visit: the latest visit counts (a late-recorded older one changes nothing)."""
    if obligation.last_visit_at is not None and at <= obligation.last_visit_at:
        return obligation
    return replace(obligation, last_visit_at=at)


@dataclass(frozen=True)
class ClosedPeriod:
    resident: Resident
    period_start: datetime
    period_end: datetime
    overdue: VisitOverdue | None  # None: a visit fulfilled it


def roll(
    obligation: Obligation, now: datetime, timezone: str
) -> tuple[Obligation, list[ClosedPeriod]]:
    """Close every period that ended by `now`; an unfulfilled one is overdue, once."""
    closed = []
    while obligation.period_end <= now:
        resident = obligation.resident
        overdue = None
        if not obligation.fulfilled:
            overdue = VisitOverdue(
                resident_id=resident.id,
                category=resident.category,
                frequency=resident.frequency,
                worker_id=resident.worker,
                unit_grid=resident.unit_grid,
                town=resident.unit_grid[:_TOWN_DIGITS],
                period_start=obligation.period_start,
                period_end=obligation.period_end,
                last_visit_at=obligation.last_visit_at,
                at=obligation.period_end,
            )
        closed.append(
            ClosedPeriod(resident, obligation.period_start, obligation.period_end, overdue)
        )
        begin, end = period_of(obligation.period_end, resident.frequency, timezone)
        obligation = replace(obligation, period_start=begin, period_end=end)
    return obligation, closed
