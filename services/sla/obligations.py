"""Visit obligations, the shell: the register synchronised into the database at start,
`visits.recorded` fulfilling obligations, and a loop that closes ended periods — an unfulfilled
one staged as `visits.overdue` in the same transaction, so it is reported exactly once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from prometheus_client import Counter

from libs.common.db import claim_event
from libs.common.events import VisitFrequency, VisitRecorded
from libs.common.kafka import Delivery
from libs.common.outbox import stage
from libs.common.runtime import Runtime
from libs.common.topics import VISITS_OVERDUE
from services.sla.loop import DueLoop
from services.sla.models import VisitObligationRow, VisitPeriodRow
from services.sla.visits import Obligation, Register, Resident, roll, start, visited

log = logging.getLogger(__name__)


def _obligation(row: VisitObligationRow) -> Obligation:
    resident = Resident(
        row.resident_id, row.category, VisitFrequency(row.frequency), row.unit_grid, row.worker_id
    )
    return Obligation(resident, row.period_start, row.period_end, row.last_visit_at)


_REGISTER_LOCK_SPACE = 0x76697369  # "visi"
_REGISTER_LOCK = (
    f"SELECT pg_advisory_xact_lock({_REGISTER_LOCK_SPACE},"
    " 'sla_visit_obligations'::regclass::oid::int)"
)


async def sync_register(runtime: Runtime, register: Register) -> int:
    """Residents of the register get an obligation (from the current period on); residents
    taken out of it stop being watched; changed categories or workers apply at once."""
    now = runtime.clock.now()
    async with runtime.sessions() as session, session.begin():
        # instances starting together take turns: each then reads what the other wrote (the lock
        # is keyed by this schema's table, so services sharing a database never wait)
        await session.execute(sa.text(_REGISTER_LOCK))
        rows = {
            row.resident_id: row
            for row in (await session.scalars(sa.select(VisitObligationRow))).all()
        }
        for resident in register.residents.values():
            row = rows.get(resident.id)
            if row is None or row.frequency != resident.frequency.value:
                fresh = start(resident, now, register.timezone)
                if row is None:
                    row = VisitObligationRow(
                        resident_id=resident.id,
                        category=resident.category,
                        frequency=resident.frequency.value,
                        unit_grid=resident.unit_grid,
                        worker_id=resident.worker,
                        period_start=fresh.period_start,
                        period_end=fresh.period_end,
                    )
                    session.add(row)
                row.period_start, row.period_end = fresh.period_start, fresh.period_end
            row.category = resident.category
            row.frequency = resident.frequency.value
            row.unit_grid = resident.unit_grid
            row.worker_id = resident.worker
            row.active = True
        for resident_id, row in rows.items():
            if resident_id not in register.residents:
                row.active = False
    return len(register.residents)


class RecordedVisits:
    """Handler of `visits.recorded`; idempotent on the event id."""

    def __init__(self, *, runtime: Runtime, consumer: str, on_commit: Callable[[], None]) -> None:
        self._runtime = runtime
        self._consumer = consumer
        self._on_commit = on_commit
        self.unknown = Counter(
            "gridflow_sla_visits_unregistered_total",
            "Visits recorded for residents not in the visit register (ignored)",
            registry=runtime.registry,
        )

    async def __call__(self, delivery: Delivery) -> None:
        visit = delivery.payload
        assert isinstance(visit, VisitRecorded)  # noqa: S101  # the topic carries only this type
        runtime = self._runtime
        async with runtime.sessions() as session, session.begin():
            if not await claim_event(
                session,
                consumer=self._consumer,
                event_id=delivery.envelope.id,
                now=runtime.clock.now(),
            ):
                return
            row = await session.get(VisitObligationRow, visit.resident_id, with_for_update=True)
            if row is None or not row.active:
                self.unknown.inc()
                log.info("visit %s: resident not in the register", visit.visit_id)
                return
            row.last_visit_at = visited(_obligation(row), visit.visited_at).last_visit_at
        self._on_commit()


class VisitWatch(DueLoop):
    def __init__(
        self, *, runtime: Runtime, timezone: Callable[[], str], batch: int, poll_seconds: float
    ) -> None:
        super().__init__(runtime=runtime, batch=batch, poll_seconds=poll_seconds)
        self._timezone = timezone
        self.overdue = Counter(
            "gridflow_sla_visits_overdue_total",
            "Visit periods that ended without a visit, by resident category",
            ["category"],
            registry=runtime.registry,
        )

    async def soonest(self) -> datetime | None:
        async with self._runtime.sessions() as session:
            soonest: datetime | None = await session.scalar(
                sa.select(sa.func.min(VisitObligationRow.period_end)).where(
                    VisitObligationRow.active  # type: ignore[arg-type]
                )
            )
        return soonest

    async def fire_due(self) -> int:
        runtime = self._runtime
        now = runtime.clock.now()
        sent = 0
        async with runtime.sessions() as session, session.begin():
            rows = (
                await session.scalars(
                    sa.select(VisitObligationRow)
                    .where(
                        VisitObligationRow.active,  # type: ignore[arg-type]
                        VisitObligationRow.period_end <= now,  # type: ignore[arg-type]
                    )
                    .order_by(VisitObligationRow.period_end)  # type: ignore[arg-type]
                    .limit(self._batch)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for row in rows:
                obligation, closed = roll(_obligation(row), now, self._timezone())
                for period in closed:
                    session.add(
                        VisitPeriodRow(
                            resident_id=row.resident_id,
                            period_start=period.period_start,
                            period_end=period.period_end,
                            category=row.category,
                            unit_grid=row.unit_grid,
                            worker_id=row.worker_id,
                            fulfilled=period.overdue is None,
                        )
                    )
                    if period.overdue is None:
                        continue
                    await stage(
                        session,
                        topic=VISITS_OVERDUE,
                        payload=period.overdue,
                        key=row.resident_id,
                        source=runtime.source,
                        now=now,
                    )
                    self.overdue.labels(row.category).inc()
                    sent += 1
                row.period_start, row.period_end = obligation.period_start, obligation.period_end
        if sent:
            runtime.relay.wake()
        return len(rows)
