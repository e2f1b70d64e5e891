"""Timers between their pure form and their rows."""

from __future__ import annotations

from datetime import timedelta

from libs.common.events import SlaStage
from services.sla.models import TimerRow
from services.sla.policies import ClockKind, Rung
from services.sla.timers import Timer, TimerStatus


def to_timer(row: TimerRow) -> Timer:
    return Timer(
        id=row.id,
        case_id=row.case_id,
        stage=SlaStage(row.stage),
        name=row.name,
        department=row.department,
        policy=row.policy,
        clock=ClockKind(row.clock),
        limit=timedelta(seconds=row.limit_seconds),
        warnings=tuple(row.warnings),
        escalation=tuple(Rung(timedelta(seconds=after), to) for after, to in row.escalation),
        started_at=row.started_at,
        anchor=row.anchor,
        used=timedelta(seconds=row.used_seconds),
        due_at=row.due_at,
        provisional=row.provisional,
        status=TimerStatus(row.status),
        fired=row.fired,
        next_fire_at=row.next_fire_at,
        stopped_at=row.stopped_at,
        outcome=row.outcome,
        unit_grid=row.unit_grid,
        case_version=row.case_version,
        extended=row.extended,
    )


def write(timer: Timer, row: TimerRow | None = None) -> TimerRow:
    """The timer's row: `row` updated in place, or a new one."""
    row = row or TimerRow(
        case_id=timer.case_id,
        stage=timer.stage.value,
        name=timer.name,
        department=timer.department,
        policy=timer.policy,
        clock=timer.clock.value,
        warnings=list(timer.warnings),
        escalation=[[rung.after.total_seconds(), rung.to] for rung in timer.escalation],
        started_at=timer.started_at,
        limit_seconds=0,
        anchor=timer.anchor,
        used_seconds=0,
        due_at=timer.due_at,
        provisional=False,
        status=timer.status.value,
        fired=0,
        case_version=timer.case_version,
    )
    row.limit_seconds = timer.limit.total_seconds()
    row.anchor = timer.anchor
    row.used_seconds = timer.used.total_seconds()
    row.due_at = timer.due_at
    row.provisional = timer.provisional
    row.status = timer.status.value
    row.fired = timer.fired
    row.next_fire_at = timer.next_fire_at
    row.stopped_at = timer.stopped_at
    row.outcome = timer.outcome
    row.unit_grid = timer.unit_grid
    row.case_version = timer.case_version
    row.extended = timer.extended
    return row
