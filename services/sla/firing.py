"""Timers that came due send their signals on `sla.signals`, each exactly once.

Any number of sla instances run this loop side by side: due timers are claimed with row locks that
skip locked rows, and a signal is staged in the outbox in the same transaction that counts it as
sent, so a crash either sends and counts it or does neither. After downtime, every point that came
due meanwhile is sent on start — once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

import sqlalchemy as sa
from prometheus_client import Counter, Histogram

from libs.common.events import SlaSignal
from libs.common.outbox import stage
from libs.common.runtime import Runtime
from libs.common.topics import SLA_SIGNALS
from services.sla.clocks import Clockwork
from services.sla.loop import DueLoop
from services.sla.models import TimerRow
from services.sla.store import to_timer, write
from services.sla.timers import Signal, fire

log = logging.getLogger(__name__)
_LEVEL_DIGITS = {"city": 6, "town": 9, "village": 12}


class FiringMetrics:
    def __init__(self, runtime: Runtime) -> None:
        self.signals = Counter(
            "gridflow_sla_signals_total",
            "Deadline signals sent, by kind and stage",
            ["kind", "stage"],
            registry=runtime.registry,
        )
        self.lag = Histogram(
            "gridflow_sla_firing_lag_seconds",
            "From the moment a signal point came due to the moment it was staged",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600),
            registry=runtime.registry,
        )


def escalate_to(signal: Signal, city: str) -> str | None:
    """The grid node an escalation rung hands the case to: the level's node above the case's
    unit grid, or the city when the case has no unit grid."""
    level = signal.escalate_to_level
    if level is None:
        return None
    grid = signal.timer.unit_grid
    return grid[: _LEVEL_DIGITS[level]] if grid else city


def contract(signal: Signal, *, city: str) -> SlaSignal:
    timer = signal.timer
    return SlaSignal(
        case_id=timer.case_id,
        kind=signal.kind,
        stage=timer.stage,
        due_at=timer.due_at,
        at=signal.at,
        case_version=timer.case_version,
        department=timer.department,
        escalate_to=escalate_to(signal, city),
        policy=timer.label[:100],
        provisional=timer.provisional,
    )


class Firer(DueLoop):
    def __init__(
        self,
        *,
        runtime: Runtime,
        clocks: Callable[[], Clockwork],
        batch: int,
        poll_seconds: float,
    ) -> None:
        super().__init__(runtime=runtime, batch=batch, poll_seconds=poll_seconds)
        self._clocks = clocks
        self.metrics = FiringMetrics(runtime)

    async def soonest(self) -> datetime | None:
        async with self._runtime.sessions() as session:
            soonest: datetime | None = await session.scalar(
                sa.select(sa.func.min(TimerRow.next_fire_at))
            )
        return soonest

    async def fire_due(self) -> int:
        """Send the signals of one batch of due timers; how many signals were sent."""
        runtime = self._runtime
        now = runtime.clock.now()
        clocks = self._clocks()
        city = runtime.refdata.grid.city.code
        sent = 0
        async with runtime.sessions() as session, session.begin():
            rows = (
                await session.scalars(
                    sa.select(TimerRow)
                    .where(TimerRow.next_fire_at <= now)  # type: ignore[arg-type,operator]
                    .order_by(TimerRow.next_fire_at)  # type: ignore[arg-type]
                    .limit(self._batch)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for row in rows:
                timer = to_timer(row)
                while timer.next_fire_at is not None and timer.next_fire_at <= now:
                    signal, timer = fire(timer, clocks)
                    await stage(
                        session,
                        topic=SLA_SIGNALS,
                        payload=contract(signal, city=city),
                        key=timer.case_id,
                        source=runtime.source,
                        now=now,
                    )
                    self.metrics.signals.labels(signal.kind.value, timer.stage.value).inc()
                    self.metrics.lag.observe(max((now - signal.at) / timedelta(seconds=1), 0.0))
                    sent += 1
                write(timer, row)
        if sent:
            runtime.relay.wake()
        return max(sent, len(rows))
