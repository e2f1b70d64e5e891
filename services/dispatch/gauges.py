"""Gauges read from dispatch's own tables every few seconds: open cases by state and department,
the triage queue by owning grid node, and per department its dead letters, whether its circuit
breaker is open and whether its receiver is disabled."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import sqlalchemy as sa
from prometheus_client import Gauge

from libs.common.events import CaseState
from libs.common.runtime import Runtime
from services.dispatch.delivery import DeliveryStatus
from services.dispatch.models import CaseRow, DeliveryRow, ReceiverRow

log = logging.getLogger(__name__)
_C = CaseRow.__table__.c  # type: ignore[attr-defined]  # SQLModel leaves __table__ untyped
_D = DeliveryRow.__table__.c  # type: ignore[attr-defined]
_OPEN = [s.value for s in CaseState if s not in (CaseState.CLOSED, CaseState.CANCELLED)]


class CaseGauges:
    def __init__(self, *, runtime: Runtime, interval: float) -> None:
        self._runtime = runtime
        self._interval = interval
        self._stopping = asyncio.Event()
        self.open_cases = Gauge(
            "gridflow_dispatch_open_cases",
            "Open cases by state and department (department empty: none yet)",
            ["state", "department"],
            registry=runtime.registry,
        )
        self.triage = Gauge(
            "gridflow_dispatch_triage_queue",
            "Cases waiting in triage, by the grid node that owns them",
            ["owner_node"],
            registry=runtime.registry,
        )

        self.dead_letters = Gauge(
            "gridflow_delivery_dead_letters",
            "Deliveries that are dead letters now (waiting for a replay), by department",
            ["department"],
            registry=runtime.registry,
        )
        self.circuit_open = Gauge(
            "gridflow_delivery_circuit_open",
            "1 while the department's circuit breaker is open or probing, else 0",
            ["department"],
            registry=runtime.registry,
        )
        self.receiver_disabled = Gauge(
            "gridflow_delivery_receiver_disabled",
            "1 while the department's receiver is disabled (410 Gone or an operator), else 0",
            ["department"],
            registry=runtime.registry,
        )

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.measure()
            except Exception as exc:  # the database is away: keep the last values
                log.warning("case gauges not updated: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._interval)

    async def measure(self) -> None:
        async with self._runtime.sessions() as session:
            by_state = (
                await session.execute(
                    sa.select(_C.state, _C.department, sa.func.count())
                    .where(_C.state.in_(_OPEN), _C.merged_into.is_(None))  # a duplicate is not work
                    .group_by(_C.state, _C.department)
                )
            ).all()
            triage = (
                await session.execute(
                    sa.select(_C.owner_node, sa.func.count())
                    .where(_C.state == CaseState.TRIAGE.value, _C.merged_into.is_(None))
                    .group_by(_C.owner_node)
                )
            ).all()
        await self.measure_deliveries()
        self.open_cases.clear()
        for state, department, count in by_state:
            self.open_cases.labels(state, department or "").set(count)
        self.triage.clear()
        for node, count in triage:
            self.triage.labels(node or "").set(count)

    async def measure_deliveries(self) -> None:
        runtime = self._runtime
        now = runtime.clock.now()
        async with runtime.sessions() as session:
            counted = await session.execute(
                sa.select(_D.department, sa.func.count())
                .where(_D.status == DeliveryStatus.DEAD.value)
                .group_by(_D.department)
            )
            dead: dict[str, int] = {row[0]: row[1] for row in counted}
            receivers = {
                row.department: row for row in await session.scalars(sa.select(ReceiverRow))
            }
        for code in runtime.refdata.departments:
            receiver = receivers.get(code)
            is_open = (
                receiver is not None
                and receiver.open_until is not None
                and (receiver.probing or now < receiver.open_until)
            )
            self.dead_letters.labels(code).set(dead.get(code, 0))
            self.circuit_open.labels(code).set(1 if is_open else 0)
            self.receiver_disabled.labels(code).set(1 if receiver and receiver.disabled else 0)
