"""dispatch's Kafka shell: a submitted case is stored, routed and queued for delivery in one
transaction, with its lifecycle events staged in the outbox of that same transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from libs.common.db import claim_event
from libs.common.events import CaseLifecycleEvent, CaseSubmitted
from libs.common.ids import new_event_id
from libs.common.kafka import Delivery
from libs.common.outbox import stage
from libs.common.refdata import WebhookReceiver, WeekdayCalendar
from libs.common.runtime import Runtime
from libs.common.topics import CASES_LIFECYCLE
from services.dispatch.delivery import DeliveryStatus, webhook_body
from services.dispatch.lifecycle import admit, assign, owning_node
from services.dispatch.models import CaseHistoryRow, CaseRow, DeliveryRow
from services.dispatch.routing import route


class SubmittedCases:
    """Handler of `cases.submitted`; idempotent on the event id and on the case id."""

    def __init__(self, *, runtime: Runtime, consumer: str, on_commit: Callable[[], None]) -> None:
        self._runtime = runtime
        self._consumer = consumer
        self._on_commit = on_commit

    async def __call__(self, delivery: Delivery) -> None:
        case = delivery.payload
        assert isinstance(case, CaseSubmitted)  # noqa: S101  # the topic carries only this type
        runtime = self._runtime
        now = runtime.clock.now()
        async with runtime.sessions() as session, session.begin():
            first = await claim_event(
                session, consumer=self._consumer, event_id=delivery.envelope.id, now=now
            )
            if not first or await session.get(CaseRow, case.case_id) is not None:
                return
            decision = route(
                case,
                runtime.refdata.routing,
                now=now,
                calendar=WeekdayCalendar(),
                grid=runtime.refdata.grid,
            )
            admission = admit(case, decision, now=now)
            row = CaseRow(
                case_id=case.case_id,
                version=admission.version,
                state=admission.state.value,
                source=case.source.value,
                category=case.category.code,
                urgency=case.urgency.value,
                unit_grid=case.location.unit_grid,
                department=admission.deliver_to,
                routing=decision.snapshot().model_dump(mode="json"),
                submitted=case.model_dump(mode="json", exclude_none=True),
                created_at=now,
                updated_at=now,
                owner_node=owning_node(case.location.unit_grid),
                co_handling=list(decision.co_handling),
            )
            session.add(row)
            for event in admission.events:
                await record_transition(session, event=event, runtime=runtime)
            department = admission.deliver_to
            if department is not None and is_pull(runtime, department):
                # nothing to deliver: the department reads its inbox, so the case is its now
                assigned = assign(
                    case_id=row.case_id,
                    state=admission.state,
                    version=admission.version,
                    category=row.category,
                    unit_grid=row.unit_grid,
                    department=department,
                    routing=decision.snapshot(),
                    now=now,
                )
                row.state = assigned.to_state.value
                row.version = assigned.version
                await record_transition(session, event=assigned, runtime=runtime)
            elif department is not None:
                queue_delivery(session, runtime=runtime, case=case, department=department, now=now)
        self._on_commit()


async def record_transition(session: Any, *, event: CaseLifecycleEvent, runtime: Runtime) -> None:
    """One audit row and one staged `cases.lifecycle` event per transition."""
    envelope = await stage(
        session,
        topic=CASES_LIFECYCLE,
        payload=event,
        key=event.case_id,
        source=runtime.source,
        now=event.at,
    )
    session.add(
        CaseHistoryRow(
            case_id=event.case_id,
            version=event.version,
            transition=event.transition.value,
            from_state=event.from_state.value if event.from_state else None,
            to_state=event.to_state.value,
            at=event.at,
            actor_kind=event.actor.kind,
            actor_id=event.actor.id,
            department=event.department,
            reason=event.reason,
            event_id=envelope.id,
            reason_code=event.reason_code,
            note=event.note,
        )
    )


def is_pull(runtime: Runtime, department: str) -> bool:
    """The department reads its inbox instead of receiving webhooks."""
    return runtime.refdata.departments[department].receiver.kind == "pull"


def queue_delivery(
    session: Any, *, runtime: Runtime, case: CaseSubmitted, department: str, now: datetime
) -> str | None:
    """A pending signed-webhook delivery of `case` to `department`; returns its webhook-id, or
    None for a pull department (it reads its inbox: nothing to deliver)."""
    receiver = runtime.refdata.departments[department].receiver
    if not isinstance(receiver, WebhookReceiver):
        return None
    delivery_id = "msg_" + new_event_id(now)
    session.add(
        DeliveryRow(
            delivery_id=delivery_id,
            case_id=case.case_id,
            department=department,
            url=str(receiver.url),
            status=DeliveryStatus.PENDING.value,
            attempts=0,
            next_attempt_at=now,
            payload=webhook_body(
                case, delivery_id=delivery_id, department=department, sharing=receiver.reporter
            ),
            created_at=now,
        )
    )
    return delivery_id
