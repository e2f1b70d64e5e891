"""sla's own tables: each case's clocks (timers, kept after they stop: the clock history) and the
standing of each case as the last applied lifecycle event left it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel


def _when(*, nullable: bool = False) -> Any:
    return Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=nullable))


class TimerRow(SQLModel, table=True):
    __tablename__ = "sla_timers"

    id: int | None = Field(default=None, primary_key=True)
    case_id: str
    stage: str
    name: str | None = None
    department: str | None = None
    policy: str
    clock: str
    limit_seconds: float
    warnings: list[float] = Field(sa_column=sa.Column(JSONB, nullable=False))
    escalation: list[Any] = Field(sa_column=sa.Column(JSONB, nullable=False))
    started_at: datetime = _when()
    anchor: datetime = _when()
    used_seconds: float
    due_at: datetime = _when()
    provisional: bool
    status: str
    fired: int
    next_fire_at: datetime | None = _when(nullable=True)
    stopped_at: datetime | None = _when(nullable=True)
    outcome: str | None = None
    unit_grid: str | None = None
    case_version: int
    extended: bool = False


class CaseClockRow(SQLModel, table=True):
    """The last lifecycle event applied to a case (events older than it are ignored)."""

    __tablename__ = "sla_cases"

    case_id: str = Field(primary_key=True)
    version: int
    state: str
    category: str
    urgency: str
    unit_grid: str | None = None
    department: str | None = None
    updated_at: datetime = _when()


class VisitObligationRow(SQLModel, table=True):
    """A key resident's visit obligation in its current period (四必访)."""

    __tablename__ = "sla_visit_obligations"

    resident_id: str = Field(primary_key=True)
    category: str
    frequency: str
    unit_grid: str
    worker_id: str
    period_start: datetime = _when()
    period_end: datetime = _when()
    last_visit_at: datetime | None = _when(nullable=True)
    active: bool = True


class VisitPeriodRow(SQLModel, table=True):
    """A visit period that ended: fulfilled or overdue (what assessments count)."""

    __tablename__ = "sla_visit_periods"

    resident_id: str = Field(primary_key=True)
    period_start: datetime = Field(
        sa_column=sa.Column(sa.DateTime(timezone=True), primary_key=True)
    )
    period_end: datetime = _when()
    category: str
    unit_grid: str
    worker_id: str
    fulfilled: bool


class AssessmentRunRow(SQLModel, table=True):
    """A period whose assessments were published (once)."""

    __tablename__ = "sla_assessment_runs"

    period: str = Field(primary_key=True)
    published_at: datetime = _when()
    events: int
