"""sla's Kafka shell: each `cases.lifecycle` event moves the case's timers, in one transaction.

Events of one case arrive in order (the key is the case id); an event that is not newer than the
last one applied to the case (a redelivery, a replay) changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from libs.common.db import claim_event
from libs.common.events import CaseLifecycleEvent
from libs.common.kafka import Delivery
from libs.common.runtime import Runtime
from services.sla.clocks import Clockwork
from services.sla.models import CaseClockRow, TimerRow
from services.sla.policies import PolicySet
from services.sla.store import to_timer, write
from services.sla.timers import apply


class LifecycleClocks:
    def __init__(
        self,
        *,
        runtime: Runtime,
        consumer: str,
        policies: Callable[[], PolicySet],
        clocks: Callable[[], Clockwork],
        on_commit: Callable[[], None],
    ) -> None:
        self._runtime = runtime
        self._consumer = consumer
        self._policies = policies
        self._clocks = clocks
        self._on_commit = on_commit

    async def __call__(self, delivery: Delivery) -> None:
        event = delivery.payload
        assert isinstance(event, CaseLifecycleEvent)  # noqa: S101  # the topic carries only this
        runtime = self._runtime
        async with runtime.sessions() as session, session.begin():
            if not await claim_event(
                session,
                consumer=self._consumer,
                event_id=delivery.envelope.id,
                now=runtime.clock.now(),
            ):
                return
            case = await session.get(CaseClockRow, event.case_id, with_for_update=True)
            if case is not None and event.version <= case.version:
                return
            if case is None:
                case = CaseClockRow(
                    case_id=event.case_id,
                    version=event.version,
                    state=event.to_state.value,
                    category=event.category,
                    urgency=event.urgency.value,
                    updated_at=event.at,
                )
                session.add(case)
            case.version = event.version
            case.state = event.to_state.value
            case.category = event.category
            case.urgency = event.urgency.value
            case.unit_grid = event.unit_grid
            case.department = event.department
            case.updated_at = event.at
            rows = list(
                (
                    await session.scalars(
                        sa.select(TimerRow)
                        .where(TimerRow.case_id == event.case_id)  # type: ignore[arg-type]
                        .order_by(TimerRow.id)  # type: ignore[arg-type]
                    )
                ).all()
            )
            before = [to_timer(row) for row in rows]
            after = apply(before, event, policies=self._policies(), clocks=self._clocks())
            by_id = {row.id: row for row in rows}
            for timer in after:
                if timer.id is None:
                    session.add(write(timer))
                elif timer not in before:
                    write(timer, by_id[timer.id])
        self._on_commit()
