"""dispatch against the real broker, database and a department receiver over HTTP."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from aiokafka import AIOKafkaProducer

from libs.common.events import (
    CaseLifecycleEvent,
    CaseState,
    CaseSubmitted,
    Category,
    DeadLetter,
    Location,
    Reporter,
    Source,
    Transition,
)
from libs.common.ids import new_case_id
from libs.common.topics import CASES_SUBMITTED, build_envelope
from services.dispatch.models import CaseRow, DeliveryRow
from tests.harness import WAIT_SECONDS
from tests.services.dispatch.conftest import DispatchStack


def make_case(category: str = "city.garbage") -> CaseSubmitted:
    now = datetime.now(UTC)
    return CaseSubmitted(
        case_id=new_case_id(now),
        source=Source.GRID_WORKER,
        category=Category(code=category),
        title="占道经营",
        description="菜市场门口流动摊贩占道经营",
        location=Location(unit_grid="430281001001001"),
        reporter=Reporter(kind="grid_worker", worker_id="W0001"),
        occurred_at=now - timedelta(minutes=1),
        reported_at=now,
    )


def _is(case_id: str, transition: Transition) -> object:
    def match(_: object, payload: object) -> bool:
        return (
            isinstance(payload, CaseLifecycleEvent)
            and payload.case_id == case_id
            and payload.transition is transition
        )

    return match


async def _rows(
    stack: DispatchStack, model: type[CaseRow] | type[DeliveryRow], case_id: str
) -> list:  # type: ignore[type-arg]
    async with stack.app.state.runtime.sessions() as session:
        return list((await session.scalars(sa.select(model).where(model.case_id == case_id))).all())  # type: ignore[arg-type]


async def test_receiver_failing_then_recovering_gets_the_case_once_with_one_webhook_id(
    dispatch_stack: DispatchStack,
) -> None:
    stack = dispatch_stack
    stack.receiver.fail_next("chengguan", 503, 500)
    case = make_case()
    await stack.publisher.publish(CASES_SUBMITTED, case, key=case.case_id, now=datetime.now(UTC))
    received = await asyncio.wait_for(stack.receiver.received.get(), WAIT_SECONDS)
    assert received.body["case"]["case_id"] == case.case_id
    assert stack.receiver.attempts["chengguan"] == 3
    await stack.lifecycle.wait_for(_is(case.case_id, Transition.ASSIGNED))  # type: ignore[arg-type]
    [delivery] = await _rows(stack, DeliveryRow, case.case_id)
    assert (delivery.status, delivery.attempts, delivery.delivery_id) == (
        "delivered",
        3,
        received.webhook_id,
    )
    assert stack.receiver.received.empty()


async def test_unrouted_case_goes_to_triage_and_is_not_delivered(
    dispatch_stack: DispatchStack,
) -> None:
    stack = dispatch_stack
    case = make_case("other.general")
    await stack.publisher.publish(CASES_SUBMITTED, case, key=case.case_id, now=datetime.now(UTC))
    _, event = await stack.lifecycle.wait_for(_is(case.case_id, Transition.TRIAGED))  # type: ignore[arg-type]
    assert isinstance(event, CaseLifecycleEvent)
    assert event.to_state is CaseState.TRIAGE and event.version == 2
    assert await _rows(stack, DeliveryRow, case.case_id) == []


async def test_a_redelivered_event_and_a_resubmitted_case_create_one_case(
    dispatch_stack: DispatchStack,
) -> None:
    stack = dispatch_stack
    case = make_case()
    envelope = build_envelope(
        CASES_SUBMITTED, case, source="tests", key=case.case_id, now=datetime.now(UTC)
    )
    await stack.publisher.send(CASES_SUBMITTED, envelope)
    await stack.publisher.send(CASES_SUBMITTED, envelope)  # the same event id again
    await stack.publisher.publish(CASES_SUBMITTED, case, key=case.case_id, now=datetime.now(UTC))
    marker = make_case()  # published after, on the same partition: handled after the duplicates
    await stack.publisher.publish(CASES_SUBMITTED, marker, key=case.case_id, now=datetime.now(UTC))
    await stack.lifecycle.wait_for(_is(marker.case_id, Transition.RECEIVED))  # type: ignore[arg-type]
    assert len(await _rows(stack, CaseRow, case.case_id)) == 1
    assert len(await _rows(stack, DeliveryRow, case.case_id)) == 1
    received = [
        p
        for _, p in stack.lifecycle.seen
        if isinstance(p, CaseLifecycleEvent)
        and p.case_id == case.case_id
        and p.transition is Transition.RECEIVED
    ]
    assert len(received) == 1


async def test_poison_record_is_dead_lettered_and_the_next_case_is_handled(
    dispatch_stack: DispatchStack,
) -> None:
    stack = dispatch_stack
    topic = stack.app.state.runtime.names(CASES_SUBMITTED)
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.app.state.runtime.settings.kafka_bootstrap_servers
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{not json", key=b"poison")
    finally:
        await producer.stop()
    case = make_case()
    await stack.publisher.publish(CASES_SUBMITTED, case, key="poison", now=datetime.now(UTC))
    _, letter = await stack.deadletters.wait_for(lambda _, p: isinstance(p, DeadLetter))
    assert isinstance(letter, DeadLetter)
    assert letter.topic == topic and letter.original_key == "poison"
    assert "missing CloudEvents attributes" in letter.error
    await stack.lifecycle.wait_for(_is(case.case_id, Transition.RECEIVED))  # type: ignore[arg-type]
