"""dispatch's batch path (a fetch handled in one transaction) against the real broker, database
and a department receiver: the same effects as handling the records one by one — redeliveries
and resubmissions inside a batch, a duplicate (并案) of an earlier case of the same batch, and a
record that fails the batch without losing or blocking the others."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from libs.common.envelope import Envelope
from libs.common.events import CaseLifecycleEvent, CaseSubmitted, DeadLetter, Transition
from libs.common.kafka import Delivery
from libs.common.topics import CASES_SUBMITTED, build_envelope
from services.dispatch.models import CaseRow, DeliveryRow
from tests.services.dispatch.conftest import DispatchStack
from tests.services.dispatch.test_duplicates_flow import MERGING, at, event
from tests.services.dispatch.test_flow import make_case


def envelope_of(case: CaseSubmitted) -> Envelope:
    return build_envelope(
        CASES_SUBMITTED, case, source="tests", key=case.case_id, now=datetime.now(UTC)
    )


def delivery(envelope: Envelope, case: CaseSubmitted, offset: int) -> Delivery:
    return Delivery(envelope, case, "cases.submitted", 0, offset)


async def handle_batch(stack: DispatchStack, *items: tuple[Envelope, CaseSubmitted]) -> None:
    await stack.app.state.submitted.handle_batch(
        [delivery(envelope, case, offset) for offset, (envelope, case) in enumerate(items)]
    )


async def rows(stack: DispatchStack, model: Any, **where: str) -> list[Any]:
    async with stack.app.state.runtime.sessions() as session:
        statement = sa.select(model).filter_by(**where)
        return list((await session.scalars(statement)).all())


def transitions(stack: DispatchStack, case_id: str) -> list[Transition]:
    return [
        p.transition
        for _, p in stack.lifecycle.seen
        if isinstance(p, CaseLifecycleEvent) and p.case_id == case_id
    ]


async def test_a_batch_with_a_redelivery_and_a_resubmission_stores_each_case_once(
    dispatch_stack: DispatchStack,
) -> None:
    stack = dispatch_stack
    first, other = make_case(), make_case("city.illegal_parking")
    again = envelope_of(first)  # the same case submitted again under a new event id
    original = envelope_of(first)
    batch = [(original, first), (original, first), (again, first), (envelope_of(other), other)]

    await handle_batch(stack, *batch)
    await handle_batch(stack, *batch)  # the whole batch redelivered (a crash before the commit)

    await stack.lifecycle.wait_for(event(other.case_id, Transition.RECEIVED))
    for case in (first, other):
        assert len(await rows(stack, CaseRow, case_id=case.case_id)) == 1
        assert len(await rows(stack, DeliveryRow, case_id=case.case_id)) == 1
    await stack.lifecycle.wait_for(event(first.case_id, Transition.ASSIGNED))
    await stack.lifecycle.wait_for(event(other.case_id, Transition.ASSIGNED))
    assert transitions(stack, first.case_id) == [Transition.RECEIVED, Transition.ASSIGNED]
    assert transitions(stack, other.case_id) == [Transition.RECEIVED, Transition.ASSIGNED]


@MERGING
async def test_a_case_duplicating_an_earlier_one_of_its_batch_is_merged_into_it(
    dispatch_stack: DispatchStack,
) -> None:
    stack = dispatch_stack
    first, second, third = at(0), at(0.0003), at(0.0006)  # 33 m apart in a row
    elsewhere, other_kind = at(0.01), at(0, "city.illegal_parking")
    cases = [first, second, third, elsewhere, other_kind]

    await handle_batch(stack, *((envelope_of(c), c) for c in cases))

    _, merged = await stack.lifecycle.wait_for(event(second.case_id, Transition.MERGED))
    assert isinstance(merged, CaseLifecycleEvent)
    assert merged.merged_into == first.case_id
    # the third is 33 m from the second but 66 m from the first: the second is merged, so it
    # is no primary, and the third stays on its own (as it would, one record at a time)
    for case_id, merged_into in [
        (first.case_id, None),
        (second.case_id, first.case_id),
        (third.case_id, None),
        (elsewhere.case_id, None),
        (other_kind.case_id, None),
    ]:
        [row] = await rows(stack, CaseRow, case_id=case_id)
        assert row.merged_into == merged_into, case_id
        expected = 0 if merged_into else 1
        assert len(await rows(stack, DeliveryRow, case_id=case_id)) == expected, case_id
    registry = stack.app.state.runtime.registry
    merged_total = registry.get_sample_value(
        "gridflow_cases_merged_total", {"category": "city.garbage"}
    )
    assert merged_total == 1


async def test_a_batch_failing_on_one_record_stores_nothing_of_it(
    dispatch_stack: DispatchStack,
) -> None:
    stack = dispatch_stack
    good = make_case()
    bad = make_case().model_copy(update={"description": "NUL \x00 in the text"})  # jsonb refuses

    # refused by PostgreSQL (the batch writes through asyncpg, so its own error class)
    with pytest.raises(asyncpg.UntranslatableCharacterError):
        await handle_batch(stack, (envelope_of(good), good), (envelope_of(bad), bad))

    # the transaction held the whole batch: nothing of it remains, so handling it again works
    assert await rows(stack, CaseRow, case_id=good.case_id) == []
    await handle_batch(stack, (envelope_of(good), good))
    assert len(await rows(stack, CaseRow, case_id=good.case_id)) == 1


async def test_a_record_failing_its_batch_is_dead_lettered_and_the_others_are_stored(
    dispatch_stack: DispatchStack,
) -> None:
    stack = dispatch_stack
    before, after = make_case(), make_case()
    bad = make_case().model_copy(update={"description": "NUL \x00 in the text"})
    publisher = stack.publisher
    # without waiting in between: they tend to arrive in one fetch (one batch)
    futures = [
        await publisher.enqueue(CASES_SUBMITTED, envelope_of(case)) for case in (before, bad, after)
    ]
    for future in futures:
        await future

    _, letter = await stack.deadletters.wait_for(lambda _, p: isinstance(p, DeadLetter))
    assert isinstance(letter, DeadLetter)
    assert letter.original_key == bad.case_id
    await stack.lifecycle.wait_for(event(before.case_id, Transition.ASSIGNED))
    await stack.lifecycle.wait_for(event(after.case_id, Transition.ASSIGNED))
    assert await rows(stack, CaseRow, case_id=bad.case_id) == []
    for case in (before, after):
        assert len(await rows(stack, CaseRow, case_id=case.case_id)) == 1
        assert transitions(stack, case.case_id) == [Transition.RECEIVED, Transition.ASSIGNED]
