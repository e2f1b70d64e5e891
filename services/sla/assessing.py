"""Assessments, the shell: holdings and visit periods read for a period, KPIs served by the API,
exported as gauges for the current month, and published on `assessments.published` once per
ended month and quarter (the period is recorded in the same transaction as its events)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from prometheus_client import Gauge
from sqlalchemy.dialects.postgresql import insert

from libs.common.events import AssessmentLevel, AssessmentPublished
from libs.common.outbox import stage
from libs.common.runtime import Runtime
from libs.common.topics import ASSESSMENTS
from services.sla.assessments import Holding, Period, Tallies, VisitPeriod
from services.sla.clocks import Clockwork
from services.sla.models import AssessmentRunRow, TimerRow, VisitPeriodRow
from services.sla.policies import ClockKind

log = logging.getLogger(__name__)
PUBLISHED_LEVELS: tuple[AssessmentLevel, ...] = ("city", "town", "village", "department", "worker")
GAUGE_LEVELS: tuple[AssessmentLevel, ...] = ("city", "town", "department")
GAUGE_KPIS = ("closure_rate", "on_time_closure_rate", "on_time_sign_rate", "visit_rate")


_T = TimerRow.__table__.c  # type: ignore[attr-defined]  # SQLModel leaves __table__ untyped
_V = VisitPeriodRow.__table__.c  # type: ignore[attr-defined]
_TIMER_COLUMNS = (
    _T.stage,
    _T.department,
    _T.unit_grid,
    _T.started_at,
    _T.due_at,
    _T.stopped_at,
    _T.outcome,
    _T.used_seconds,
    _T.limit_seconds,
    _T.extended,
)
_STREAM = {"yield_per": 2000}


def _holding(row: Any, clocks: Clockwork) -> Holding:
    hours = None
    if row.stage == "handle" and row.outcome == "resolved" and row.stopped_at is not None:
        spent = clocks.between(ClockKind.WORKING_HOURS, row.started_at, row.stopped_at)
        hours = spent / timedelta(hours=1)
    return Holding(
        stage=row.stage,
        department=row.department,
        unit_grid=row.unit_grid,
        started_at=row.started_at,
        due_at=row.due_at,
        stopped_at=row.stopped_at,
        outcome=row.outcome,
        on_time=row.used_seconds <= row.limit_seconds,
        extended=row.extended,
        working_hours=hours,
    )


async def tally(
    runtime: Runtime,
    period: Period,
    levels: tuple[AssessmentLevel, ...],
    clocks: Clockwork,
) -> Tallies:
    """Every timer that started, stopped or fell due in the period, and every visit period that
    ended in it, streamed from the database into per-node tallies (memory: the nodes, not the
    timers)."""

    def within(column: Any) -> Any:
        return sa.and_(column >= period.start, column < period.end)

    tallies = Tallies(period, levels, city=runtime.refdata.grid.city.code)
    async with runtime.sessions() as session:
        timers = await session.stream(
            sa.select(*_TIMER_COLUMNS)
            .where(sa.or_(within(_T.started_at), within(_T.stopped_at), within(_T.due_at)))
            .execution_options(**_STREAM)
        )
        async for row in timers:
            tallies.add(_holding(row, clocks))
        periods = await session.stream(
            sa.select(_V.worker_id, _V.unit_grid, _V.period_end, _V.fulfilled)
            .where(within(_V.period_end))
            .execution_options(**_STREAM)
        )
        async for worker, grid, end, fulfilled in periods:
            tallies.add_visit(VisitPeriod(worker, grid, end, fulfilled))
    return tallies


async def assessments(
    runtime: Runtime, period: Period, level: AssessmentLevel, clocks: Clockwork
) -> list[AssessmentPublished]:
    return (await tally(runtime, period, (level,), clocks)).results(level)


class Assessor:
    """Publishes every ended month and quarter once, and keeps the current month's gauges."""

    def __init__(
        self, *, runtime: Runtime, clocks: Callable[[], Clockwork], interval: float
    ) -> None:
        self._runtime = runtime
        self._clocks = clocks
        self._interval = interval
        self._stopping = asyncio.Event()
        self.gauge = Gauge(
            "gridflow_sla_kpi",
            "This month's KPIs so far (percent), by level and node (docs/sla.md has the formulas)",
            ["kpi", "level", "node"],
            registry=runtime.registry,
        )

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.publish_ended()
                await self.measure()
            except Exception as exc:  # database away: next round
                log.warning("assessment round failed: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._interval)

    async def measure(self) -> None:
        period = Period.of(self._runtime.clock.now())
        tallies = await tally(self._runtime, period, GAUGE_LEVELS, self._clocks())
        self.gauge.clear()
        for level in GAUGE_LEVELS:
            for row in tallies.results(level):
                for kpi in GAUGE_KPIS:
                    value = getattr(row, kpi)
                    if value is not None:
                        self.gauge.labels(kpi, level, row.node).set(value)

    async def publish_ended(self) -> list[str]:
        """Publish the last ended month and quarter, unless they were published already."""
        now = self._runtime.clock.now()
        done = []
        for quarter in (False, True):
            period = Period.of(now, quarter=quarter).previous()
            if await self.publish(period):
                done.append(period.name)
        return done

    async def publish(self, period: Period) -> bool:
        runtime = self._runtime
        async with runtime.sessions() as session:
            if await session.get(AssessmentRunRow, period.name) is not None:
                return False  # published before: nothing to gather
        tallies = await tally(runtime, period, PUBLISHED_LEVELS, self._clocks())
        rows = [row for level in PUBLISHED_LEVELS for row in tallies.results(level)]
        now = runtime.clock.now()
        async with runtime.sessions() as session, session.begin():
            claimed: Any = await session.execute(
                insert(AssessmentRunRow)
                .values(period=period.name, published_at=now, events=len(rows))
                .on_conflict_do_nothing()
                .returning(sa.literal_column("period"))
            )
            if claimed.first() is None:
                return False
            for row in rows:
                await stage(
                    session,
                    topic=ASSESSMENTS,
                    payload=row,
                    key=f"{row.level}:{row.node}",
                    source=runtime.source,
                    now=now,
                )
        runtime.relay.wake()
        log.info("assessments of %s published: %d", period.name, len(rows))
        return True
