"""Issue 6's round trips for the 数字城管 platform, through the real broker, PostgreSQL and HTTP:
a filed case with a 2013 code and one with a 2026 code both reach the right department; the
platform's verification closes a case or sends it back for rework; a grid worker's case routed
to the platform is filed there as a task, handled by the platform, and comes back closed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from libs.common.events import (
    CaseLifecycleEvent,
    Reporter,
    Transition,
)
from tests.factories import make_department_token, make_operator_token
from tests.harness import WAIT_SECONDS
from tests.services.citycare_bridge.conftest import (
    PLATFORM_DEPARTMENT,
    CitycareStack,
    grid_worker_case,
    moved,
    publish,
    statuses,
    wait_case,
)

GARBAGE_2013, MANHOLE_2013, ADS_2026, VENDING_2026, PARKING_2026 = range(5)


async def _department(
    stack: CitycareStack, department: str, case_id: str, move: str, body: dict[str, Any]
) -> None:
    headers = {"Authorization": f"Bearer {make_department_token(department)}"}
    response = await stack.dispatch.client.post(
        f"/v1/department/cases/{case_id}/{move}", json=body, headers=headers
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("mode", ["push", "poll"])
async def test_a_2013_and_a_2026_case_reach_their_departments_and_close(
    citycare_stack: CitycareStack, mode: str
) -> None:
    stack = citycare_stack
    stack.settings = stack.settings.model_copy(update={"partner_mode": mode})
    async with stack.running_bridge():
        manhole = stack.simulator.file_case(MANHOLE_2013)  # 部件 0101 上水井盖, 2013 table
        ads = stack.simulator.file_case(ADS_2026)  # 事件 07001 非法小广告, 2026 table
        webhooks = [
            await asyncio.wait_for(stack.dispatch.receiver.received.get(), WAIT_SECONDS)
            for _ in range(2)
        ]
        by_number = {w.body["case"]["external_ref"]["id"]: w for w in webhooks}
        first, second = by_number[manhole["case_id"]], by_number[ads["case_id"]]
        assert first.department == second.department == "chengguan"
        assert first.body["case"]["category"] == {
            "code": "city.manhole_cover",
            "origin": {
                "code": "0101",
                "standard": "GB/T 30428.2-2013",
                "name": "部件·公用设施·上水井盖",
            },
        }
        assert first.body["case"]["urgency"] == "urgent"
        assert first.body["case"]["location"]["unit_grid"] == "430281001001001"
        assert second.body["case"]["category"]["code"] == "city.illegal_ads"
        assert second.body["case"]["category"]["origin"] == {
            "code": "07001",
            "standard": "GB/T 47678.5-2026",
            "name": "事件·非法小广告",
        }
        assert second.body["case"]["source"] == "citycare"

        case_id, number = first.body["case"]["case_id"], manhole["case_id"]
        await wait_case(stack.simulator, number, lambda c: statuses(c) == ["dispatched"])
        await _department(stack, "chengguan", case_id, "sign", {})
        await _department(stack, "chengguan", case_id, "resolve", {"result": "已更换新井盖"})
        # the platform verifies on site once it hears feedback (passes): verify and close
        closed = await wait_case(stack.simulator, number, lambda c: c.state == "已结案")
        assert statuses(closed) == ["dispatched", "handling", "feedback", "closed"]
        assert closed.updates[2]["result"] == "已更换新井盖"
        _, event = await stack.dispatch.lifecycle.wait_for(moved(case_id, Transition.CLOSED))
        assert isinstance(event, CaseLifecycleEvent)
        assert (event.actor.kind, event.actor.id) == ("partner", "citycare")
        counts = await stack.counts()
        assert (counts["links"], counts["outbox"]) == (2, 2)


async def test_a_failed_verification_sends_the_case_back_for_rework(
    citycare_stack: CitycareStack,
) -> None:
    stack = citycare_stack
    async with stack.running_bridge():
        filed = stack.simulator.file_case(GARBAGE_2013)
        number = filed["case_id"]
        stack.simulator.fail_next_verification.add(number)
        webhook = await asyncio.wait_for(stack.dispatch.receiver.received.get(), WAIT_SECONDS)
        case_id = webhook.body["case"]["case_id"]
        assert webhook.body["case"]["category"]["origin"]["standard"] == "GB/T 30428.2-2013"
        await wait_case(stack.simulator, number, lambda c: statuses(c) == ["dispatched"])
        await _department(stack, "chengguan", case_id, "sign", {})
        await _department(stack, "chengguan", case_id, "resolve", {"result": "垃圾已清运"})
        _, rework = await stack.dispatch.lifecycle.wait_for(moved(case_id, Transition.REWORK))
        assert isinstance(rework, CaseLifecycleEvent)
        assert (rework.actor.kind, rework.actor.id) == ("partner", "citycare")
        assert rework.note == "现场核查仍有问题，需返工"
        await wait_case(stack.simulator, number, lambda c: statuses(c)[-1:] == ["rework"])
        await _department(stack, "chengguan", case_id, "resolve", {"result": "已二次清运并冲洗"})
        closed = await wait_case(stack.simulator, number, lambda c: c.state == "已结案")
        assert statuses(closed) == [
            "dispatched",
            "handling",
            "feedback",
            "rework",
            "feedback",
            "closed",
        ]


@pytest.mark.parametrize("mode", ["push", "poll"])
async def test_a_grid_workers_case_routed_to_the_platform_comes_back_closed(
    citycare_stack: CitycareStack, mode: str
) -> None:
    stack = citycare_stack
    stack.settings = stack.settings.model_copy(update={"partner_mode": mode})
    case = grid_worker_case(
        "city.illegal_ads",
        "配电箱上小广告",
        "胜利路社区3栋旁配电箱上贴满办证小广告。",
        unit_grid="430281003001001",  # 湘江街道: its city appearance → 数字城管
        worker=Reporter(kind="grid_worker", worker_id="W0031", name="汪湘云"),
    )
    stack.simulator.fail_next_verification.add(case.case_id)  # its first 核查 fails
    async with stack.running_bridge():
        await publish(stack, case)
        _, assigned = await stack.dispatch.lifecycle.wait_for(
            moved(case.case_id, Transition.ASSIGNED)
        )
        assert isinstance(assigned, CaseLifecycleEvent)
        assert assigned.department == PLATFORM_DEPARTMENT
        # the platform files it with its 2026 code, runs its own loop, and verifies on site
        _, resolved = await stack.dispatch.lifecycle.wait_for(
            moved(case.case_id, Transition.RESOLVED)
        )
        assert isinstance(resolved, CaseLifecycleEvent)
        assert (resolved.actor.kind, resolved.actor.id) == ("department", PLATFORM_DEPARTMENT)
        assert resolved.result is not None and "数字城管核查通过" in resolved.result
        number = stack.simulator.tasks[case.case_id]
        task = stack.simulator.cases[number]
        assert task.state == "已结案"
        assert task.record["classification"] == {
            "standard": "GB/T 47678.5-2026",
            "kind": "事件",
            "code": "07001",
            "name": "非法小广告",
        }
        assert task.record["grid_id"] == "430281003001001"
        assert "汪湘云" not in str(task.record)  # the reporter stays in gridflow
        # the platform's 核查 passed: its inspectors' pass is gridflow's verification and close
        _, verified = await stack.dispatch.lifecycle.wait_for(
            moved(case.case_id, Transition.VERIFIED)
        )
        _, closed = await stack.dispatch.lifecycle.wait_for(moved(case.case_id, Transition.CLOSED))
        assert isinstance(verified, CaseLifecycleEvent) and isinstance(closed, CaseLifecycleEvent)
        for decided in (verified, closed):
            assert (decided.actor.kind, decided.actor.id) == ("partner", "citycare")
        assert (verified.note, closed.version) == ("监督员现场核查通过", resolved.version + 2)
        moves = [
            p.transition
            for _, p in stack.dispatch.lifecycle.seen
            if isinstance(p, CaseLifecycleEvent) and p.case_id == case.case_id
        ]
        assert moves[:3] == [Transition.RECEIVED, Transition.ASSIGNED, Transition.SIGNED]
        # 派遣, 处置, 反馈, the failed 核查 (a note: the platform's unit works on), 反馈 again
        assert moves[3:] == [Transition.PROGRESSED] * 5 + [
            Transition.RESOLVED,
            Transition.VERIFIED,
            Transition.CLOSED,
        ]
        operator = {"Authorization": f"Bearer {make_operator_token(['430281003'])}"}
        shown = await stack.dispatch.client.get(
            f"/v1/operator/cases/{case.case_id}", headers=operator
        )
        assert shown.status_code == 200, shown.text
        assert shown.json()["state"] == "closed"  # without any step of the grid centre
        # the grid centre may still reopen it: the platform handles the task again and closes it
        reopened = await stack.dispatch.client.post(
            f"/v1/operator/cases/{case.case_id}/reopen",
            json={"reason": "居民反映配电箱侧面仍有残留"},
            headers=operator,
        )
        assert reopened.status_code == 200, reopened.text
        returned = await wait_case(stack.simulator, number, lambda c: len(c.updates) == 1)
        assert returned.updates[0]["action"] == "reopened"
        assert returned.updates[0]["reason"] == "居民反映配电箱侧面仍有残留"

        def closings() -> list[CaseLifecycleEvent]:
            return [
                p
                for _, p in stack.dispatch.lifecycle.seen
                if isinstance(p, CaseLifecycleEvent)
                and p.case_id == case.case_id
                and p.transition is Transition.CLOSED
            ]

        await stack.dispatch.lifecycle.wait_for(lambda _, __: len(closings()) == 2)
        again = closings()[1]
        assert (again.actor.kind, again.actor.id) == ("partner", "citycare")
        assert stack.simulator.cases[number].state == "已结案"
        assert list(stack.simulator.tasks) == [case.case_id]  # one platform case throughout
        counts = await stack.counts()
        assert counts["outbox"] == 0  # nothing of a task goes onto cases.submitted
        assert counts["links"] == 1
