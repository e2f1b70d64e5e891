"""intake's Kafka shell: follows `cases.lifecycle` to keep the status of its Open311 requests.

Only cases intake accepted through Open311 get a row (see services/intake/open311.py); any other
case costs two index lookups and no write. Idempotent on the event id (the processed-event
ledger) and on the case's version: an event not newer than the stored status changes nothing.
"""

from __future__ import annotations

from libs.common.db import claim_event
from libs.common.events import CaseLifecycleEvent
from libs.common.kafka import Delivery
from libs.common.runtime import Runtime
from services.intake.open311 import (
    client_of,
    current_status,
    record_from_case,
    restore_request,
    status_after,
    submitted_cases,
    update_status,
)


class RequestStatuses:
    """Handler of `cases.lifecycle` for the Open311 read model."""

    def __init__(self, *, runtime: Runtime, consumer: str = "intake.open311_status") -> None:
        self._runtime = runtime
        self._consumer = consumer

    async def __call__(self, delivery: Delivery) -> None:
        event = delivery.payload
        assert isinstance(event, CaseLifecycleEvent)  # noqa: S101  # the topic carries only this
        runtime = self._runtime
        async with runtime.sessions() as session, session.begin():
            stored = await current_status(session, case_id=event.case_id)
            if stored is not None and event.version <= stored.version:
                return  # a redelivery, or older than what we show
            record = None
            if stored is None:  # not ours, or the POST did not get to record it
                cases = await submitted_cases(session, case_ids=[event.case_id])
                client_id = client_of(cases[0]) if cases else None
                if client_id is None:
                    return
                record = record_from_case(cases[0], client_id=client_id)
            first = await claim_event(
                session,
                consumer=self._consumer,
                event_id=delivery.envelope.id,
                now=runtime.clock.now(),
            )
            if not first:
                return
            status = status_after(
                event,
                department=stored.department if stored else None,
                refdata=runtime.refdata,
            )
            if record is None:
                await update_status(session, case_id=event.case_id, status=status)
            else:
                await restore_request(session, record=record.with_status(status))
