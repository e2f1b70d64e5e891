"""sla's Kafka shell: each `cases.lifecycle` event moves the case's timers, in one transaction —
or a fetched batch of them in one transaction, with the same effects as one by one (a
transaction and an offset commit per event kept sla far behind dispatch's lifecycle events under
load: `make faults`, docs/reliability.md).

Events of one case arrive in order (the key is the case id); an event that is not newer than the
last one applied to the case (a redelivery, a replay) changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import claim_event, claim_events
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
            await self._move(session, event, self._policies(), self._clocks())
        self._on_commit()

    async def handle_batch(self, deliveries: Sequence[Delivery]) -> None:
        """The events in one transaction, in fetch order (each case's in order), with the effects
        of handling them one by one."""
        runtime = self._runtime
        policies, clocks = self._policies(), self._clocks()
        async with runtime.sessions() as session, session.begin():
            claimed = await claim_events(
                session,
                consumer=self._consumer,
                event_ids=[d.envelope.id for d in deliveries],
                now=runtime.clock.now(),
            )
            for delivery in deliveries:
                if delivery.envelope.id not in claimed:
                    continue
                claimed.discard(delivery.envelope.id)  # a second copy in the batch is not new
                event = delivery.payload
                assert isinstance(event, CaseLifecycleEvent)  # noqa: S101  # the topic's only type
                await self._move(session, event, policies, clocks)
        self._on_commit()

    @staticmethod
    async def _move(
        session: AsyncSession, event: CaseLifecycleEvent, policies: PolicySet, clocks: Clockwork
    ) -> None:
        """The case's clock row and timers after `event` (nothing if it is not newer)."""
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
        after = apply(before, event, policies=policies, clocks=clocks)
        by_id = {row.id: row for row in rows}
        for timer in after:
            if timer.id is None:
                session.add(write(timer))
            elif timer not in before:
                write(timer, by_id[timer.id])
