"""What the 12345 platform sends, pushed (`POST /v1/hotline/events`, signed) or polled: a new
order becomes a case (once per order id), a decision is queued for dispatch (once per event id).

Nothing of a refused push is written: a bad signature is 401, a body that does not fit the
interface is 400 with the field and reason, a decision on an order the bridge never accepted is
404. Logs name orders and cases by id only: the caller's name and phone stay in the case.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.bridge.inbound import (
    accept_cases,
    cases_of,
    queue_partner_event,
    read_push,
)
from libs.common.bridge.metrics import BridgeMetrics
from libs.common.ids import new_case_id
from libs.common.runtime import Runtime
from libs.common.web import ApiError, error_responses, signed_body
from libs.common.worktime import ChinaCalendar
from services.hotline_bridge.mapping import HotlineMapping, map_order
from services.hotline_bridge.partner import HotlineEvent, OrderCreated, PushedEvent
from services.hotline_bridge.settings import HotlineSettings

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/hotline", tags=["12345 platform"])
DISPATCH_CHANNEL = "dispatch"
PARTNER_CHANNEL = "partner"


class UnknownOrderError(LookupError):
    """A decision about an order the bridge never accepted."""


@dataclass
class HotlineContext:
    """What the bridge's handlers share, born in the app's lifespan."""

    runtime: Runtime
    settings: HotlineSettings
    mapping: HotlineMapping
    calendar: ChinaCalendar
    metrics: BridgeMetrics

    @property
    def system(self) -> str:
        return self.mapping.system


async def take(
    session: AsyncSession, events: Sequence[HotlineEvent], *, context: HotlineContext
) -> list[dict[str, Any]]:
    """Write what the events mean in the caller's transaction; one answer per event."""
    runtime, system, metrics = context.runtime, context.system, context.metrics
    now = runtime.clock.now()
    answers: list[dict[str, Any]] = []
    orders = [event.order for event in events if isinstance(event, OrderCreated)]
    mapped = []
    for order in orders:
        result = map_order(
            order,
            mapping=context.mapping,
            refdata=runtime.refdata,
            calendar=context.calendar,
            case_id=new_case_id(now),
            now=now,
        )
        for field in result.failures:
            metrics.mapping_failures.labels(system, field).inc()
        mapped.append((order.order_id, result.case))
    accepted = {
        a.external_id: a
        for a in await accept_cases(
            session, partner=system, cases=mapped, source=runtime.source, now=now
        )
    }
    decisions = [event for event in events if not isinstance(event, OrderCreated)]
    linked = await cases_of(
        session, partner=system, external_ids=[event.order_id for event in decisions]
    )
    for event in events:
        if isinstance(event, OrderCreated):
            done = accepted[event.order.order_id]
            outcome = "accepted" if done.new else "duplicate"
            metrics.inbound.labels(system, "order", outcome).inc()
            if done.new:
                metrics.inbound_lag.labels(system).observe(
                    max(0.0, (now - event.occurred_at).total_seconds())
                )
            log.info("order %s → case %s (%s)", event.order.order_id, done.case_id, outcome)
            answers.append(
                {"order_id": done.external_id, "case_id": done.case_id, "status": outcome}
            )
            continue
        case_id = linked.get(event.order_id)
        if case_id is None:
            metrics.inbound.labels(system, "decision", "refused").inc()
            raise UnknownOrderError(event.order_id)
        fresh = await queue_partner_event(
            session,
            partner=system,
            channel=DISPATCH_CHANNEL,
            case_id=case_id,
            event_id=event.event_id,
            kind=event.type,
            body=event.model_dump(mode="json"),
            now=now,
        )
        outcome = "accepted" if fresh else "duplicate"
        metrics.inbound.labels(system, "decision", outcome).inc()
        log.info("%s on order %s (case %s): %s", event.type, event.order_id, case_id, outcome)
        answers.append({"event_id": event.event_id, "case_id": case_id, "status": outcome})
    return answers


@router.post(
    "/events",
    summary="one event pushed by the 12345 platform (Standard Webhooks signature)",
    responses=error_responses(400, 401, 404),
    openapi_extra=signed_body(PushedEvent),
)
async def pushed(request: Request) -> JSONResponse:
    context: HotlineContext = request.app.state.hotline
    body = await request.body()
    event = read_push(
        PushedEvent,
        body=body,
        headers=request.headers,
        secrets=context.settings.inbound_secrets,
        now=context.runtime.clock.now(),
        metrics=context.metrics,
        partner=context.system,
    ).root
    try:
        async with context.runtime.sessions() as session, session.begin():
            answers = await take(session, [event], context=context)
    except UnknownOrderError as exc:
        raise ApiError(404, "unknown_order", "no order with this id came to gridflow") from exc
    context.runtime.relay.wake()
    request.app.state.wake_dispatch()
    return JSONResponse(answers[0], status_code=200)
