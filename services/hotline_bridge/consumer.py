"""`cases.lifecycle` → status updates for the 12345 platform, queued per case in event order.

Only cases the bridge created (a link row) concern it. The update is queued under the event's
id in the bridge's database, so a redelivered record queues nothing twice; the queue sends it.
"""

from __future__ import annotations

from collections.abc import Callable

from libs.common.bridge.inbound import external_id_of
from libs.common.bridge.queue import enqueue
from libs.common.events import CaseLifecycleEvent
from libs.common.kafka import Delivery
from services.hotline_bridge.inbound import PARTNER_CHANNEL, HotlineContext
from services.hotline_bridge.mapping import status_update


class LifecycleUpdates:
    def __init__(self, *, context: HotlineContext, on_commit: Callable[[], None]) -> None:
        self._context = context
        self._on_commit = on_commit
        self._names = {
            code: department.short_name
            for code, department in context.runtime.refdata.departments.items()
        }

    async def __call__(self, delivery: Delivery) -> None:
        event = delivery.payload
        if not isinstance(event, CaseLifecycleEvent):
            return
        context = self._context
        async with context.runtime.sessions() as session, session.begin():
            order_id = await external_id_of(session, partner=context.system, case_id=event.case_id)
            if order_id is None:
                return  # not a case from the 12345 platform
            update = status_update(
                event, mapping=context.mapping, order_id=order_id, department_names=self._names
            )
            if update is None:
                return
            queued = await enqueue(
                session,
                channel=PARTNER_CHANNEL,
                case_id=event.case_id,
                message_id=delivery.envelope.id,
                kind=update.status,
                body=update.model_dump(mode="json", exclude_none=True),
                now=context.runtime.clock.now(),
            )
        if queued:
            self._on_commit()
