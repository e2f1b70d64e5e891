"""What reaches the bridge: the 数字城管 platform's events, pushed (`POST /v1/citycare/events`,
signed) or polled, and dispatch's deliveries to the platform's department entry
(`POST /v1/citycare/deliveries`, signed by dispatch as any department webhook).

A filed case becomes a gridflow case once per platform case id; a verification of a filed case is
queued for dispatch's partner API, a step of the platform on a task for dispatch's department API
(once per event id); a delivery is queued as a new task for the platform (once per webhook-id).
Nothing of a refused request is written: a bad signature is 401, a body that does not fit is 400
with the field and reason, an event about a case the bridge does not know is 404, a case the
platform has no code for is 422. Logs name cases by id only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.bridge.inbound import (
    accept_cases,
    cases_of,
    link_case,
    queue_partner_event,
    read_push,
)
from libs.common.bridge.metrics import BridgeMetrics
from libs.common.bridge.queue import enqueue
from libs.common.ids import new_case_id
from libs.common.runtime import Runtime
from libs.common.web import ApiError, error_responses, signed_body
from libs.common.worktime import ChinaCalendar
from services.citycare_bridge.mapping import CitycareMapping, map_case, new_task
from services.citycare_bridge.partner import CaseFiled, CaseVerified, CitycareEvent, PushedEvent
from services.citycare_bridge.settings import CitycareSettings

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/citycare", tags=["数字城管 platform"])
DISPATCH_CHANNEL = "dispatch"  # the platform's verifications → dispatch's partner API
DEPARTMENT_CHANNEL = "department"  # the platform's steps on tasks → dispatch's department API
PARTNER_CHANNEL = "partner"  # status updates and new tasks → the platform


class UnknownCaseError(LookupError):
    """An event about a case the bridge never linked."""


@dataclass
class CitycareContext:
    """What the bridge's handlers share, born in the app's lifespan."""

    runtime: Runtime
    settings: CitycareSettings
    mapping: CitycareMapping
    calendar: ChinaCalendar
    metrics: BridgeMetrics

    @property
    def system(self) -> str:
        return self.mapping.system

    @property
    def task_partner(self) -> str:
        """The links of gridflow's cases filed on the platform: gridflow case id → itself."""
        return f"{self.mapping.system}.task"


async def take(
    session: AsyncSession, events: Sequence[CitycareEvent], *, context: CitycareContext
) -> list[dict[str, Any]]:
    """Write what the events mean in the caller's transaction; one answer per event."""
    runtime, system, metrics = context.runtime, context.system, context.metrics
    now = runtime.clock.now()
    mapped = []
    for event in events:
        if isinstance(event, CaseFiled):
            result = map_case(
                event.case,
                mapping=context.mapping,
                refdata=runtime.refdata,
                calendar=context.calendar,
                case_id=new_case_id(now),
                now=now,
            )
            for field in result.failures:
                metrics.mapping_failures.labels(system, field).inc()
            mapped.append((event.case.case_id, result.case))
    accepted = {
        a.external_id: a
        for a in await accept_cases(
            session, partner=system, cases=mapped, source=runtime.source, now=now
        )
    }
    answers: list[dict[str, Any]] = []
    for event in events:
        if isinstance(event, CaseFiled):
            done = accepted[event.case.case_id]
            outcome = "accepted" if done.new else "duplicate"
            metrics.inbound.labels(system, "case", outcome).inc()
            if done.new:
                metrics.inbound_lag.labels(system).observe(
                    max(0.0, (now - event.occurred_at).total_seconds())
                )
            log.info("case %s → %s (%s)", event.case.case_id, done.case_id, outcome)
            answers.append(
                {"case_id": done.external_id, "gridflow_case_id": done.case_id, "status": outcome}
            )
            continue
        if isinstance(event, CaseVerified):
            partner, key, channel = system, event.case_id, DISPATCH_CHANNEL
        else:
            partner, key, channel = context.task_partner, event.external_id, DEPARTMENT_CHANNEL
        case_id = (await cases_of(session, partner=partner, external_ids=[key])).get(key)
        if case_id is None:
            metrics.inbound.labels(system, event.type, "refused").inc()
            raise UnknownCaseError(key)
        fresh = await queue_partner_event(
            session,
            partner=system,
            channel=channel,
            case_id=case_id,
            event_id=event.event_id,
            kind=event.type,
            body=event.model_dump(mode="json"),
            now=now,
        )
        outcome = "accepted" if fresh else "duplicate"
        metrics.inbound.labels(system, event.type, outcome).inc()
        log.info("%s on %s (case %s): %s", event.type, event.case_id, case_id, outcome)
        answers.append({"event_id": event.event_id, "gridflow_case_id": case_id, "status": outcome})
    return answers


def _wake(request: Request) -> None:
    request.app.state.runtime.relay.wake()
    for queue in request.app.state.queues.values():
        queue.wake()


@router.post(
    "/events",
    summary="one event pushed by the 数字城管 platform (Standard Webhooks signature)",
    responses=error_responses(400, 401, 404),
    openapi_extra=signed_body(PushedEvent),
)
async def pushed(request: Request) -> JSONResponse:
    context: CitycareContext = request.app.state.citycare
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
    except UnknownCaseError as exc:
        raise ApiError(404, "unknown_case", "no such case came through gridflow") from exc
    _wake(request)
    return JSONResponse(answers[0], status_code=200)


class Delivery(BaseModel):
    """What the bridge reads of a dispatch webhook (the rest of the case is the task's text)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: Literal["case.assigned"]
    delivery_id: str
    department: str
    case: dict[str, Any]


@router.post(
    "/deliveries",
    summary="dispatch's webhook to the platform's department entry: file the case as a task",
    responses=error_responses(400, 401, 422),
    openapi_extra=signed_body(Delivery),
)
async def delivered(request: Request) -> JSONResponse:
    context: CitycareContext = request.app.state.citycare
    system, metrics = context.system, context.metrics
    delivery = read_push(
        Delivery,
        body=await request.body(),
        headers=request.headers,
        secrets=context.settings.delivery_secrets,
        now=context.runtime.clock.now(),
        metrics=metrics,
        partner=system,
        kind="delivery",
    )
    try:
        if delivery.department != context.mapping.tasks.department:
            raise ApiError(400, "malformed", "not the platform's department", "body.department")
        try:
            task = new_task(delivery.case, mapping=context.mapping)
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError(400, "malformed", f"case lacks {exc}", "body.case") from exc
        if isinstance(task, str):
            metrics.mapping_failures.labels(system, "task_category").inc()
            raise ApiError(422, "no_code", task, "body.case.category")
    except ApiError:
        metrics.inbound.labels(system, "delivery", "refused").inc()
        raise
    case_id = task.external_id
    now = context.runtime.clock.now()
    async with context.runtime.sessions() as session, session.begin():
        await link_case(
            session, partner=context.task_partner, external_id=case_id, case_id=case_id, now=now
        )
        fresh = await enqueue(
            session,
            channel=PARTNER_CHANNEL,
            case_id=case_id,
            message_id=f"delivery:{request.headers['webhook-id']}",
            kind="task",
            body=task.model_dump(mode="json", exclude_none=True),
            now=now,
        )
    outcome = "accepted" if fresh else "duplicate"
    metrics.inbound.labels(system, "delivery", outcome).inc()
    log.info("case %s delivered to the platform (%s)", case_id, outcome)
    _wake(request)
    return JSONResponse({"received": delivery.delivery_id, "status": outcome})
