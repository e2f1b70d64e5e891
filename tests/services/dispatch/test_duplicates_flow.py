"""Duplicates (并案) against the real broker, database and a department receiver: a second report
of the same thing is merged instead of delivered again, follows the first one's handling as its
own lifecycle events, is hidden from the department, and an operator can split a wrong merge."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from libs.common.events import CaseLifecycleEvent, CaseSubmitted, Coordinates, Location, Transition
from libs.common.topics import CASES_SUBMITTED
from services.dispatch.models import CaseRow, DeliveryRow
from tests.factories import make_department_token, make_operator_token
from tests.harness import WAIT_SECONDS
from tests.services.dispatch.conftest import DispatchStack
from tests.services.dispatch.test_flow import make_case

MERGING = pytest.mark.parametrize(
    "dispatch_stack", [{"duplicate_distance_meters": 50.0}], indirect=True
)
GRID = "430281001001001"
TOWN = "430281001"
SPOT = (27.7, 113.0)  # somewhere inside the town; only the distances between reports matter


def at(lat_offset: float, category: str = "city.garbage") -> CaseSubmitted:
    """A case of `category` `lat_offset` degrees north of SPOT (0.0001° ≈ 11 m)."""
    case = make_case(category)
    point = Coordinates(lat=SPOT[0] + lat_offset, lon=SPOT[1])
    return case.model_copy(update={"location": Location(unit_grid=GRID, coordinates=point)})


def event(case_id: str, transition: Transition) -> Any:
    def match(_: object, payload: object) -> bool:
        return (
            isinstance(payload, CaseLifecycleEvent)
            and payload.case_id == case_id
            and payload.transition is transition
        )

    return match


async def submit(stack: DispatchStack, case: CaseSubmitted) -> None:
    await stack.publisher.publish(CASES_SUBMITTED, case, key=case.case_id, now=datetime.now(UTC))


async def deliveries(stack: DispatchStack, case_id: str) -> int:
    async with stack.app.state.runtime.sessions() as session:
        count = await session.scalar(
            sa.select(sa.func.count()).where(DeliveryRow.case_id == case_id)  # type: ignore[arg-type]
        )
    return int(count or 0)


DEPT = {"Authorization": f"Bearer {make_department_token('chengguan')}"}
OPERATOR = {"Authorization": f"Bearer {make_operator_token([TOWN])}"}


@MERGING
async def test_a_second_report_nearby_is_merged_follows_the_first_and_can_be_split(
    dispatch_stack: DispatchStack,
) -> None:
    stack, client = dispatch_stack, dispatch_stack.client
    first = at(0)
    await submit(stack, first)
    await stack.lifecycle.wait_for(event(first.case_id, Transition.ASSIGNED))
    delivered = await asyncio.wait_for(stack.receiver.received.get(), WAIT_SECONDS)
    assert delivered.body["case"]["case_id"] == first.case_id

    second = at(0.0003)  # 33 m north
    await submit(stack, second)
    _, merged = await stack.lifecycle.wait_for(event(second.case_id, Transition.MERGED))
    assert isinstance(merged, CaseLifecycleEvent)
    assert (merged.merged_into, merged.to_state, merged.department) == (
        first.case_id,
        "assigned",
        "chengguan",
    )
    assert await deliveries(stack, second.case_id) == 0

    # the department sees and works only the first; the second follows it
    inbox = (await client.get("/v1/department/cases", headers=DEPT)).json()
    assert [c["case_id"] for c in inbox["cases"]] == [first.case_id]
    hidden = await client.get(f"/v1/department/cases/{second.case_id}", headers=DEPT)
    assert hidden.status_code == 404
    acted = await client.post(f"/v1/department/cases/{second.case_id}/sign", json={}, headers=DEPT)
    assert acted.status_code == 404
    signed = await client.post(f"/v1/department/cases/{first.case_id}/sign", json={}, headers=DEPT)
    assert signed.status_code == 200, signed.text
    _, echo = await stack.lifecycle.wait_for(event(second.case_id, Transition.SIGNED))
    assert isinstance(echo, CaseLifecycleEvent)
    assert (echo.merged_into, echo.version, echo.to_state, echo.actor.id) == (
        first.case_id,
        3,
        "accepted",
        "chengguan",
    )

    # the operator sees the merge, cannot act on the merged case but split it
    detail = (await client.get(f"/v1/operator/cases/{second.case_id}", headers=OPERATOR)).json()
    assert detail["merged_into"] == first.case_id
    assert [t["transition"] for t in detail["timeline"]] == ["received", "merged", "signed"]
    refused = await client.post(
        f"/v1/operator/cases/{second.case_id}/supervise", json={"note": "督办"}, headers=OPERATOR
    )
    assert refused.status_code == 409
    assert "merged into another" in refused.json()["detail"][0]["reason"]
    split = await client.post(
        f"/v1/operator/cases/{second.case_id}/split",
        json={"reason": "不是同一处：隔一条街"},
        headers=OPERATOR,
    )
    assert split.status_code == 200, split.text
    assert split.json()["merged_into"] is None
    await stack.lifecycle.wait_for(event(second.case_id, Transition.SPLIT))
    own = await asyncio.wait_for(stack.receiver.received.get(), WAIT_SECONDS)
    assert own.body["case"]["case_id"] == second.case_id  # delivered on its own now
    await stack.lifecycle.wait_for(event(second.case_id, Transition.ASSIGNED))
    again = await client.post(
        f"/v1/operator/cases/{second.case_id}/split", json={"reason": "再拆"}, headers=OPERATOR
    )
    assert again.status_code == 409
    assert "not merged into another" in again.json()["detail"][0]["reason"]

    # the first's later moves no longer reach the split case
    resolved = await client.post(
        f"/v1/department/cases/{first.case_id}/resolve", json={"result": "已清运"}, headers=DEPT
    )
    assert resolved.status_code == 200
    await stack.lifecycle.wait_for(event(first.case_id, Transition.RESOLVED))
    async with stack.app.state.runtime.sessions() as session:
        row = await session.get(CaseRow, second.case_id)
    assert row is not None and (row.state, row.merged_into) == ("assigned", None)
    assert not [
        p
        for _, p in stack.lifecycle.seen
        if isinstance(p, CaseLifecycleEvent)
        and p.case_id == second.case_id
        and p.transition is Transition.RESOLVED
    ]


@MERGING
async def test_far_away_or_another_category_or_a_closed_case_is_no_duplicate(
    dispatch_stack: DispatchStack,
) -> None:
    stack = dispatch_stack
    first = at(0)
    await submit(stack, first)
    await stack.lifecycle.wait_for(event(first.case_id, Transition.ASSIGNED))
    far = at(0.001)  # 111 m away
    other = at(0.0001, category="city.street_vending")
    for case in (far, other):
        await submit(stack, case)
    for case in (far, other):
        _, received = await stack.lifecycle.wait_for(event(case.case_id, Transition.RECEIVED))
        assert isinstance(received, CaseLifecycleEvent) and received.merged_into is None
    await stack.lifecycle.wait_for(event(far.case_id, Transition.ASSIGNED))
    assert not [
        p
        for _, p in stack.lifecycle.seen
        if isinstance(p, CaseLifecycleEvent) and p.transition is Transition.MERGED
    ]
    # a cancelled case draws no duplicates either
    cancelled = await stack.client.post(
        f"/v1/operator/cases/{first.case_id}/cancel", json={"reason": "误报"}, headers=OPERATOR
    )
    assert cancelled.status_code == 200, cancelled.text
    cancelled_far = await stack.client.post(
        f"/v1/operator/cases/{far.case_id}/cancel", json={"reason": "误报"}, headers=OPERATOR
    )
    assert cancelled_far.status_code == 200, cancelled_far.text
    late = at(0.00005)
    await submit(stack, late)
    await stack.lifecycle.wait_for(event(late.case_id, Transition.ASSIGNED))
    assert await deliveries(stack, late.case_id) == 1
