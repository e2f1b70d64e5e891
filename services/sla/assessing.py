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
from services.sla.assessments import Holding, Period, VisitPeriod, assess_all
from services.sla.clocks import Clockwork
from services.sla.models import AssessmentRunRow, TimerRow, VisitPeriodRow
from services.sla.policies import ClockKind

log = logging.getLogger(__name__)
PUBLISHED_LEVELS: tuple[AssessmentLevel, ...] = ("city", "town", "village", "department", "worker")
GAUGE_LEVELS: tuple[AssessmentLevel, ...] = ("city", "town", "department")
GAUGE_KPIS = ("closure_rate", "on_time_closure_rate", "on_time_sign_rate", "visit_rate")


def _holding(row: TimerRow, clocks: Clockwork) -> Holding:
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


async def gather(
    runtime: Runtime, period: Period, clocks: Clockwork
) -> tuple[list[Holding], list[VisitPeriod]]:
    """Every timer that started, stopped or fell due in the period, and the visit periods that
    ended in it."""

    def within(column: Any) -> Any:
        return sa.and_(column >= period.start, column < period.end)

    async with runtime.sessions() as session:
        timers = (
            await session.scalars(
                sa.select(TimerRow).where(
                    sa.or_(
                        within(TimerRow.started_at),
                        within(TimerRow.stopped_at),
                        within(TimerRow.due_at),
                    )
                )
            )
        ).all()
        periods = (
            await session.scalars(
                sa.select(VisitPeriodRow).where(within(VisitPeriodRow.period_end))
            )
        ).all()
    holdings = [_holding(row, clocks) for row in timers]
    visits = [VisitPeriod(p.worker_id, p.unit_grid, p.period_end, p.fulfilled) for p in periods]
    return holdings, visits


async def assessments(
    runtime: Runtime, period: Period, level: AssessmentLevel, clocks: Clockwork
) -> list[AssessmentPublished]:
    holdings, visits = await gather(runtime, period, clocks)
    city = runtime.refdata.grid.city.code
    return assess_all(period, level, holdings, visits, city=city)


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
        holdings, visits = await gather(self._runtime, period, self._clocks())
        city = self._runtime.refdata.grid.city.code
        self.gauge.clear()
        for level in GAUGE_LEVELS:
            for row in assess_all(period, level, holdings, visits, city=city):
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
        holdings, visits = await gather(runtime, period, self._clocks())
        city = runtime.refdata.grid.city.code
        rows = [
            row
            for level in PUBLISHED_LEVELS
            for row in assess_all(period, level, holdings, visits, city=city)
        ]
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
