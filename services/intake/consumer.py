"""intake's Kafka shell: follows `cases.lifecycle` to keep the status of its Open311 requests.

Only cases intake accepted through Open311 get a row (see services/intake/open311.py). Which
of a fetched batch's cases those are is asked first, in one statement on the asyncpg driver,
outside a transaction; a batch with none of them (nearly every batch) ends there, with no write.
Idempotent on the event id (the processed-event ledger) and on the case's version: an event not
newer than the stored status changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import claim_event, raw_driver
from libs.common.events import CaseLifecycleEvent
from libs.common.kafka import Delivery, deliveries_of
from libs.common.runtime import Runtime
from services.intake.open311 import (
    client_of,
    current_status,
    record_from_case,
    restore_request,
    shown_cases,
    status_after,
    submitted_cases,
    update_status,
)

# The batch's cases that may be Open311 requests: a row in the read model, or staged in the outbox
# as an Open311 submission (the predicate of the outbox's partial index, rev_0003). Both are
# committed before the case is published, so before any of its lifecycle events exists.
_CANDIDATES = """
    SELECT case_id FROM open311_requests WHERE case_id = ANY($1::text[])
    UNION
    SELECT key FROM outbox
    WHERE key = ANY($1::text[])
      AND event_type = 'gridflow.case.submitted' AND (data ->> 'source') = 'open311'
"""


class RequestStatuses:
    """Handler of `cases.lifecycle` for the Open311 read model (a batch handler: the consumer
    loop gives it each fetched batch)."""

    def __init__(self, *, runtime: Runtime, consumer: str = "intake.open311_status") -> None:
        self._runtime = runtime
        self._consumer = consumer

    async def __call__(self, delivery: Delivery) -> None:
        await self.handle_batch([delivery])

    async def handle_batch(self, deliveries: Sequence[Delivery]) -> None:
        """A fetched batch in one transaction, with the effects of handling its records one by
        one. Which of its cases may be Open311 requests is read once for the batch, in one
        statement without a transaction or SQLAlchemy's session; the rest, nearly every
        lifecycle event, cost nothing more. With one transaction and one offset commit per
        event, the whole stack delivered 604–610 cases/s at saturation; with one per batch,
        899–925 (docs/performance.md)."""
        events = deliveries_of(deliveries, CaseLifecycleEvent)
        if not events:
            return
        candidates = await self._candidates(list({event.case_id for _, event in events}))
        events = [(delivery, event) for delivery, event in events if event.case_id in candidates]
        if not events:
            return
        async with self._runtime.sessions() as session, session.begin():
            case_ids = list(dict.fromkeys(event.case_id for _, event in events))
            shown = await shown_cases(session, case_ids=case_ids)
            unseen = [case_id for case_id in case_ids if case_id not in shown]
            ours = {
                case.case_id
                for case in (await submitted_cases(session, case_ids=unseen) if unseen else [])
                if client_of(case) is not None
            }
            for delivery, event in events:
                if event.case_id in shown or event.case_id in ours:
                    await self._apply(session, delivery, event)

    async def _candidates(self, case_ids: list[str]) -> set[str]:
        async with self._runtime.engine.connect() as connection:
            driver = await raw_driver(connection)
            return {row[0] for row in await driver.fetch(_CANDIDATES, case_ids)}

    async def _apply(
        self, session: AsyncSession, delivery: Delivery, event: CaseLifecycleEvent
    ) -> None:
        runtime = self._runtime
        stored = await current_status(session, case_id=event.case_id)
        if stored is not None and event.version <= stored.version:
            return  # a redelivery, or older than what we show
        record = None
        if stored is None:  # the POST did not get to record it
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
