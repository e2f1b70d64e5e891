"""Timers that came due send their signals on `sla.signals`, each exactly once.

Any number of sla instances run this loop side by side: due timers are claimed with row locks that
skip locked rows, and a signal is staged in the outbox in the same transaction that counts it as
sent, so a crash either sends and counts it or does neither. After downtime, every point that came
due meanwhile is sent on start — once.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from prometheus_client import Counter as MetricCounter
from prometheus_client import Histogram

from libs.common.db import outbox
from libs.common.envelope import Envelope
from libs.common.events import SlaSignal
from libs.common.runtime import Runtime
from libs.common.topics import SLA_SIGNALS, build_envelope
from services.sla.clocks import Clockwork
from services.sla.loop import DueLoop
from services.sla.models import TimerRow
from services.sla.store import to_timer
from services.sla.timers import Signal, fire

log = logging.getLogger(__name__)
_LEVEL_DIGITS = {"city": 6, "town": 9, "village": 12}
# firing transactions in flight per instance: while one waits for the database, the other
# computes its batch (measured with bench/sla.py on 2 cores)
FIRING_WORKERS = 2
_TIMERS: sa.Table = TimerRow.__table__  # type: ignore[attr-defined]


class FiringMetrics:
    def __init__(self, runtime: Runtime) -> None:
        self.signals = MetricCounter(
            "gridflow_sla_signals_total",
            "Deadline signals sent, by kind, stage and the department holding the clock "
            "(`none`: nobody holds it, e.g. a case in triage)",
            ["kind", "stage", "department"],
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
        super().__init__(
            runtime=runtime, batch=batch, poll_seconds=poll_seconds, workers=FIRING_WORKERS
        )
        self._clocks = clocks
        self.metrics = FiringMetrics(runtime)

    async def soonest(self) -> datetime | None:
        async with self._runtime.sessions() as session:
            soonest: datetime | None = await session.scalar(
                sa.select(sa.func.min(TimerRow.next_fire_at))
            )
        return soonest

    async def fire_due(self) -> int:
        """Send the signals of one batch of due timers; how many signals were sent.

        Set-based: one claim, one multi-row INSERT of the staged signals, one UPDATE (executemany)
        of the timers, all in one transaction — a row per signal and per timer would cost a round
        trip each (and an autoflush before every INSERT)."""
        runtime = self._runtime
        now = runtime.clock.now()
        clocks = self._clocks()
        city = runtime.refdata.grid.city.code
        staged: list[dict[str, Any]] = []
        moved: list[dict[str, Any]] = []
        counts: Counter[tuple[str, str, str]] = Counter()
        lags: list[float] = []
        async with runtime.sessions() as session, session.begin():
            rows = (
                await session.execute(
                    # plain rows, not ORM objects: nothing here is written back by the unit of work
                    sa.select(*_TIMERS.c)
                    .where(_TIMERS.c.next_fire_at <= now)
                    .order_by(_TIMERS.c.next_fire_at)
                    .limit(self._batch)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for row in rows:
                timer = to_timer(cast(TimerRow, row))  # a row has the same attribute names
                while timer.next_fire_at is not None and timer.next_fire_at <= now:
                    signal, timer = fire(timer, clocks)
                    envelope = build_envelope(
                        SLA_SIGNALS,
                        contract(signal, city=city),
                        source=runtime.source,
                        key=timer.case_id,
                        now=now,
                    )
                    staged.append(_outbox_row(envelope, now=now))
                    counts[signal.kind.value, timer.stage.value, timer.department or "none"] += 1
                    lags.append(max((now - signal.at) / timedelta(seconds=1), 0.0))
                moved.append(
                    {
                        "row_id": row.id,
                        "fired": timer.fired,
                        "next_fire_at": timer.next_fire_at,
                        "due_at": timer.due_at,
                        "provisional": timer.provisional,
                    }
                )
            if staged:
                await session.execute(sa.insert(outbox), staged)
            if moved:
                await session.execute(_ADVANCE, moved)
        for (kind, stage, department), count in counts.items():
            self.metrics.signals.labels(kind, stage, department).inc(count)
        for lag in lags:
            self.metrics.lag.observe(lag)
        if staged:
            runtime.relay.wake()
        return max(len(staged), len(rows))


# firing moves only these columns of a timer (`fire` counts the point and schedules the next)
_ADVANCE = (
    sa.update(_TIMERS)
    .where(_TIMERS.c.id == sa.bindparam("row_id"))
    .values(
        fired=sa.bindparam("fired"),
        next_fire_at=sa.bindparam("next_fire_at"),
        due_at=sa.bindparam("due_at"),
        provisional=sa.bindparam("provisional"),
    )
)


def _outbox_row(envelope: Envelope, *, now: datetime) -> dict[str, Any]:
    """The outbox row `libs.common.outbox.stage` would write for this envelope."""
    return {
        "topic": SLA_SIGNALS.name,
        "key": envelope.key,
        "event_id": envelope.id,
        "event_type": envelope.type,
        "source": envelope.source,
        "event_time": envelope.time,
        "data": envelope.data,
        "created_at": now,
    }
