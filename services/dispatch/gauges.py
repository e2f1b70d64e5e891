"""Gauges of the case population, read from dispatch's own tables every few seconds: open cases
by state and department, and the triage queue by owning grid node."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import sqlalchemy as sa
from prometheus_client import Gauge

from libs.common.events import CaseState
from libs.common.runtime import Runtime
from services.dispatch.models import CaseRow

log = logging.getLogger(__name__)
_C = CaseRow.__table__.c  # type: ignore[attr-defined]  # SQLModel leaves __table__ untyped
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
        self.open_cases.clear()
        for state, department, count in by_state:
            self.open_cases.labels(state, department or "").set(count)
        self.triage.clear()
        for node, count in triage:
            self.triage.labels(node or "").set(count)
