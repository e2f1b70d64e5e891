"""dispatch's Kafka shell: a submitted case is stored, routed and queued for delivery — or merged
into the open case it duplicates (并案) — in one transaction, with its lifecycle events staged in
the outbox of that same transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client import Counter

from libs.common.db import claim_event
from libs.common.events import CaseLifecycleEvent, CaseState, CaseSubmitted, Urgency
from libs.common.ids import new_event_id
from libs.common.kafka import Delivery
from libs.common.outbox import stage
from libs.common.refdata import WebhookReceiver, WeekdayCalendar
from libs.common.runtime import Runtime
from libs.common.topics import CASES_LIFECYCLE
from services.dispatch.delivery import DeliveryStatus, webhook_body
from services.dispatch.duplicates import (
    Candidate,
    DuplicatePolicy,
    box,
    mergeable,
    nearest,
    position,
)
from services.dispatch.lifecycle import CaseView, admit, assign, follow, merge, owning_node
from services.dispatch.models import CaseHistoryRow, CaseRow, DeliveryRow
from services.dispatch.routing import route

_C = CaseRow.__table__.c  # type: ignore[attr-defined]  # SQLModel leaves __table__ untyped
_CLOSED = ("closed", "cancelled")


class RoutingMetrics:
    def __init__(self, runtime: Runtime) -> None:
        self.decisions = Counter(
            "gridflow_routing_decisions_total",
            "Routing decisions for new cases by deciding rule (`triage`: no rule matched)",
            ["rule"],
            registry=runtime.registry,
        )
        self.merged = Counter(
            "gridflow_cases_merged_total",
            "New cases merged into an open case they duplicate (并案), by category",
            ["category"],
            registry=runtime.registry,
        )


class SubmittedCases:
    """Handler of `cases.submitted`; idempotent on the event id and on the case id."""

    def __init__(
        self,
        *,
        runtime: Runtime,
        consumer: str,
        on_commit: Callable[[], None],
        duplicates: DuplicatePolicy,
    ) -> None:
        self._runtime = runtime
        self._consumer = consumer
        self._on_commit = on_commit
        self._duplicates = duplicates
        self._metrics = RoutingMetrics(runtime)

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
            at = position(case)
            primary = None
            if at is not None and self._duplicates.enabled and mergeable(case, runtime.refdata):
                primary = await _open_case_near(
                    session, case=case, at=at, now=now, policy=self._duplicates
                )
            if primary is not None:
                admission = merge(case, decision, view_of(primary), now=now)
                self._metrics.merged.labels(case.category.code).inc()
            else:
                admission = admit(case, decision, now=now)
            view = admission.view
            row = CaseRow(
                case_id=case.case_id,
                version=view.version,
                state=view.state.value,
                source=case.source.value,
                category=case.category.code,
                urgency=case.urgency.value,
                unit_grid=case.location.unit_grid,
                department=view.department or admission.deliver_to,
                routing=decision.snapshot().model_dump(mode="json"),
                submitted=case.model_dump(mode="json", exclude_none=True),
                created_at=now,
                updated_at=now,
                owner_node=owning_node(case.location.unit_grid),
                co_handling=sorted(view.co_handling or decision.co_handling),
                suspended=view.suspended,
                extension_pending=view.extension_pending,
                extension_requested_until=view.extension_requested_until,
                verified=view.verified,
                supervised=view.supervised,
                lat=at[0] if at else None,
                lon=at[1] if at else None,
                merged_into=view.merged_into,
            )
            session.add(row)
            self._metrics.decisions.labels(decision.rule_id or "triage").inc()
            for event in admission.events:
                await record_transition(session, event=event, runtime=runtime, followers=False)
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
                    urgency=case.urgency,
                )
                row.state = assigned.to_state.value
                row.version = assigned.version
                await record_transition(session, event=assigned, runtime=runtime, followers=False)
            elif department is not None:
                queue_delivery(session, runtime=runtime, case=case, department=department, now=now)
        self._on_commit()


async def _open_case_near(
    session: Any,
    *,
    case: CaseSubmitted,
    at: tuple[float, float],
    now: datetime,
    policy: DuplicatePolicy,
) -> CaseRow | None:
    """The open, unmerged case of the same category nearest to `at` within the policy's distance
    and window, locked so its state cannot move while this one is merged into it."""
    area = box(at, policy.distance_meters)
    rows = (
        await session.execute(
            sa.select(_C.case_id, _C.lat, _C.lon).where(
                _C.category == case.category.code,
                _C.created_at >= now - policy.window,
                _C.merged_into.is_(None),
                _C.state.not_in(_CLOSED),
                _C.lat.between(area.min_lat, area.max_lat),
                _C.lon.between(area.min_lon, area.max_lon),
            )
        )
    ).all()
    found = nearest(at, (Candidate(r.case_id, r.lat, r.lon) for r in rows), policy.distance_meters)
    if found is None:
        return None
    row: CaseRow | None = await session.get(CaseRow, found.case_id, with_for_update=True)
    if row is None or row.merged_into is not None or row.state in _CLOSED:
        return None  # it moved on between the search and the lock: dispatch the case normally
    return row


def view_of(row: CaseRow) -> CaseView:
    return CaseView(
        case_id=row.case_id,
        version=row.version,
        state=CaseState(row.state),
        category=row.category,
        unit_grid=row.unit_grid,
        owner_node=row.owner_node,
        department=row.department,
        co_handling=frozenset(row.co_handling),
        returned_by=frozenset(row.returned_by),
        return_count=row.return_count,
        rework_count=row.rework_count,
        suspended=row.suspended,
        extension_pending=row.extension_pending,
        extension_requested_until=row.extension_requested_until,
        verified=row.verified,
        supervised=row.supervised,
        merged_into=row.merged_into,
        urgency=Urgency(row.urgency),
    )


def store_view(row: CaseRow, view: CaseView, now: datetime) -> None:
    row.version = view.version
    row.state = view.state.value
    row.owner_node = view.owner_node
    row.department = view.department
    row.co_handling = sorted(view.co_handling)
    row.returned_by = sorted(view.returned_by)
    row.return_count = view.return_count
    row.rework_count = view.rework_count
    row.suspended = view.suspended
    row.extension_pending = view.extension_pending
    row.extension_requested_until = view.extension_requested_until
    row.verified = view.verified
    row.supervised = view.supervised
    row.merged_into = view.merged_into
    row.updated_at = now


async def record_transition(
    session: Any, *, event: CaseLifecycleEvent, runtime: Runtime, followers: bool = True
) -> None:
    """One audit row and one staged `cases.lifecycle` event per transition; the cases merged into
    this one (并案) follow it with an echo each (`followers=False`: it can have none yet)."""
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
    if followers and event.merged_into is None:
        await _echo_to_followers(session, event=event, runtime=runtime)


async def _echo_to_followers(session: Any, *, event: CaseLifecycleEvent, runtime: Runtime) -> None:
    merged = (
        await session.scalars(
            sa.select(CaseRow)
            .where(_C.merged_into == event.case_id)
            .order_by(_C.case_id)
            .with_for_update()
        )
    ).all()
    if not merged:
        return
    for row in merged:
        outcome = follow(view_of(row), event)
        store_view(row, outcome.view, event.at)
        for echo in outcome.events:
            await record_transition(session, event=echo, runtime=runtime, followers=False)


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
