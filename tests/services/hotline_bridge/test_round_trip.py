"""Issue 6's round trip for the 12345 platform, through the real broker, PostgreSQL and HTTP: an
order becomes a case, reaches the department's webhook, the department signs and resolves, the
platform sees each status, reviews, closes, and an unsatisfied return visit reopens the case."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from libs.common.events import CaseLifecycleEvent, Transition
from tests.factories import make_department_token
from tests.harness import WAIT_SECONDS
from tests.services.hotline_bridge.conftest import HotlineStack, statuses, wait_order


def _dept() -> dict[str, str]:
    return {"Authorization": f"Bearer {make_department_token('chengguan')}"}


async def _department(stack: HotlineStack, case_id: str, move: str, body: dict[str, Any]) -> None:
    response = await stack.dispatch.client.post(
        f"/v1/department/cases/{case_id}/{move}", json=body, headers=_dept()
    )
    assert response.status_code == 200, response.text


def _garbage_order(stack: HotlineStack) -> dict[str, Any]:
    return stack.simulator.new_order(
        classification={"code": "0101", "name": "城市管理-暴露垃圾"},
        grid_id="LQ-ZX-01",
        title="小区门口垃圾堆积",
        content="振兴路小区南门垃圾桶旁堆放大量生活垃圾，已有三天未清运。",
    )


@pytest.mark.parametrize("mode", ["push", "poll"])
async def test_an_order_goes_round_and_an_unsatisfied_visit_reopens_it(
    hotline_stack: HotlineStack, mode: str
) -> None:
    stack = hotline_stack
    stack.settings = stack.settings.model_copy(update={"partner_mode": mode})
    async with stack.running_bridge():
        order = _garbage_order(stack)
        order_id = order["order_id"]
        webhook = await asyncio.wait_for(stack.dispatch.receiver.received.get(), WAIT_SECONDS)
        case = webhook.body["case"]
        assert webhook.department == "chengguan"
        assert case["external_ref"]["system"] == "hotline12345"
        assert case["external_ref"]["id"] == order_id
        assert case["category"]["code"] == "city.garbage"
        assert case["category"]["origin"]["code"] == "0101"
        assert case["location"]["unit_grid"] == "430281001001001"
        case_id = case["case_id"]
        await wait_order(stack.simulator, order_id, lambda o: "assigned" in statuses(o))

        await _department(stack, case_id, "sign", {})
        await wait_order(stack.simulator, order_id, lambda o: o.state == "已签收")
        await _department(stack, case_id, "resolve", {"result": "垃圾已全部清运，现场已冲洗"})
        # the simulator reviews the reply (passes): the bridge verifies and closes the case
        closed = await wait_order(stack.simulator, order_id, lambda o: o.state == "已办结")
        assert statuses(closed) == ["assigned", "signed", "replied", "closed"]
        assert closed.updates[2]["result"] == "垃圾已全部清运，现场已冲洗"

        stack.simulator.decide(
            order_id,
            {
                "type": "order.return_visit",
                "satisfaction": "不满意",
                "department_responsible": True,
                "opinion": "垃圾桶旁仍有残留",
            },
        )
        _, reopened = await stack.dispatch.lifecycle.wait_for(
            lambda _, p: (
                isinstance(p, CaseLifecycleEvent)
                and p.case_id == case_id
                and p.transition is Transition.REOPENED
            )
        )
        assert isinstance(reopened, CaseLifecycleEvent)
        assert (reopened.actor.kind, reopened.actor.id) == ("partner", "hotline12345")
        assert reopened.department == "chengguan"
        again = await asyncio.wait_for(stack.dispatch.receiver.received.get(), WAIT_SECONDS)
        assert again.body["case"]["case_id"] == case_id  # the department gets it to redo
        redo = await wait_order(stack.simulator, order_id, lambda o: o.state == "重办")
        assert statuses(redo)[-1] == "reopened"
        counts = await stack.counts()
        assert counts["links"] == 1
        assert counts["outbox"] == 1  # one cases.submitted, however often the order was seen
