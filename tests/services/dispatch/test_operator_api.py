"""The operator API over HTTP, against the real broker and database: operators of a grid
subtree triage, verify, close and steer cases, and cannot reach outside their subtree."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from libs.common.events import CaseLifecycleEvent, Transition
from libs.common.topics import CASES_SUBMITTED
from tests.factories import make_department_token, make_operator_token
from tests.harness import WAIT_SECONDS
from tests.services.dispatch.conftest import DispatchStack
from tests.services.dispatch.test_department_api import _assigned_case
from tests.services.dispatch.test_flow import make_case

TOWN = "430281001"  # the town of the test cases' unit grid 430281001001001
OTHER_TOWN = "430281002"
CITY = "430281"


def op(grids: list[str] | None = None, **kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_operator_token(grids or [TOWN], **kwargs)}"}


def dept(code: str = "chengguan") -> dict[str, str]:
    return {"Authorization": f"Bearer {make_department_token(code)}"}


async def _post(
    stack: DispatchStack, case_id: str, move: str, body: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any]:
    response = await stack.client.post(
        f"/v1/operator/cases/{case_id}/{move}", json=body, headers=headers
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def _worked_case(stack: DispatchStack) -> str:
    case_id = await _assigned_case(stack)
    for move, body in (("sign", {}), ("resolve", {"result": "已清运"})):
        response = await stack.client.post(
            f"/v1/department/cases/{case_id}/{move}", json=body, headers=dept()
        )
        assert response.status_code == 200, response.text
    return case_id


async def test_triage_assign_then_verify_and_close(dispatch_stack: DispatchStack) -> None:
    stack, client = dispatch_stack, dispatch_stack.client
    case = make_case("other.general")
    await stack.publisher.publish(CASES_SUBMITTED, case, key=case.case_id, now=datetime.now(UTC))
    await stack.lifecycle.wait_for(
        lambda _, p: (
            isinstance(p, CaseLifecycleEvent)
            and p.case_id == case.case_id
            and p.transition is Transition.TRIAGED
        )
    )
    found = (await client.get("/v1/operator/cases?state=triage", headers=op())).json()
    assert case.case_id in [c["case_id"] for c in found["cases"]]
    assigned = await _post(stack, case.case_id, "assign", {"department": "minzheng"}, op())
    assert (assigned["state"], assigned["department"]) == ("assigned", "minzheng")
    received = await asyncio.wait_for(stack.receiver.received.get(), WAIT_SECONDS)
    assert (received.department, received.body["case"]["case_id"]) == ("minzheng", case.case_id)

    for move, body in (("sign", {}), ("resolve", {"result": "已上门核实并办理"})):
        response = await client.post(
            f"/v1/department/cases/{case.case_id}/{move}", json=body, headers=dept("minzheng")
        )
        assert response.status_code == 200, response.text
    early = await client.post(f"/v1/operator/cases/{case.case_id}/close", json={}, headers=op())
    assert early.status_code == 409  # close needs a verified result
    await _post(stack, case.case_id, "verify", {"passed": True}, op())
    closed = await _post(stack, case.case_id, "close", {}, op())
    assert closed["state"] == "closed"
    detail = (await client.get(f"/v1/operator/cases/{case.case_id}", headers=op())).json()
    assert [t["transition"] for t in detail["timeline"]] == [
        "received",
        "triaged",
        "assigned",
        "signed",
        "resolved",
        "verified",
        "closed",
    ]
    assert detail["timeline"][2]["actor"] == {"kind": "operator", "id": "OP01"}


async def test_failed_verification_sends_the_case_back_and_counts_it(
    dispatch_stack: DispatchStack,
) -> None:
    case_id = await _worked_case(dispatch_stack)
    reworked = await _post(
        dispatch_stack, case_id, "verify", {"passed": False, "note": "现场仍有垃圾"}, op()
    )
    assert (reworked["state"], reworked["department"]) == ("accepted", "chengguan")
    _, event = await dispatch_stack.lifecycle.wait_for(
        lambda _, p: (
            isinstance(p, CaseLifecycleEvent)
            and p.case_id == case_id
            and p.transition is Transition.REWORK
        )
    )
    assert event.rework_count == 1  # type: ignore[attr-defined]


async def test_extension_suspension_supervision_reopen_and_cancel(
    dispatch_stack: DispatchStack,
) -> None:
    stack, client = dispatch_stack, dispatch_stack.client
    case_id = await _assigned_case(stack)
    await client.post(f"/v1/department/cases/{case_id}/sign", json={}, headers=dept())
    until = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    requested = await client.post(
        f"/v1/department/cases/{case_id}/extension",
        json={"until": until, "reason": "待材料"},
        headers=dept(),
    )
    assert requested.status_code == 200
    decided = await _post(stack, case_id, "extension-decision", {"approve": True}, op())
    assert decided["extension_pending"] is False
    suspended = await _post(stack, case_id, "suspend", {"reason": "等待法院裁定"}, op())
    assert suspended["suspended"] is True
    blocked = await client.post(
        f"/v1/department/cases/{case_id}/resolve", json={"result": "x"}, headers=dept()
    )
    assert blocked.status_code == 409 and "suspended" in blocked.json()["detail"][0]["reason"]
    await _post(stack, case_id, "resume", {}, op())
    flagged = await _post(stack, case_id, "supervise", {"note": "市领导批示督办"}, op())
    assert flagged["supervised"] is True and flagged["state"] == "accepted"
    cancelled = await _post(stack, case_id, "cancel", {"reason": "重复上报"}, op())
    assert cancelled["state"] == "cancelled"

    closed_id = await _worked_case(stack)
    await _post(stack, closed_id, "verify", {"passed": True}, op())
    await _post(stack, closed_id, "close", {}, op())
    reopened = await _post(stack, closed_id, "reopen", {"reason": "回访不满意"}, op())
    assert (reopened["state"], reopened["department"]) == ("assigned", "chengguan")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "", None),
        ("POST", "/reassign", {"department": "yingji"}),
        ("POST", "/escalate", {}),
        ("POST", "/suspend", {"reason": "x"}),
        ("POST", "/supervise", {"note": "x"}),
        ("POST", "/cancel", {"reason": "x"}),
    ],
)
async def test_another_towns_operator_cannot_reach_the_case(
    dispatch_stack: DispatchStack, method: str, path: str, body: dict[str, Any] | None
) -> None:
    stack, client = dispatch_stack, dispatch_stack.client
    case_id = await _assigned_case(stack)
    response = await client.request(
        method, f"/v1/operator/cases/{case_id}{path}", json=body, headers=op([OTHER_TOWN])
    )
    assert response.status_code == 404, response.text
    listed = (await client.get("/v1/operator/cases", headers=op([OTHER_TOWN]))).json()
    assert case_id not in [c["case_id"] for c in listed["cases"]]
    city = (await client.get(f"/v1/operator/cases/{case_id}", headers=op([CITY]))).json()
    assert city["version"] == 2  # untouched, and the city centre sees it


async def test_operator_credentials_and_filters(dispatch_stack: DispatchStack) -> None:
    stack, client = dispatch_stack, dispatch_stack.client
    case_id = await _assigned_case(stack)
    assert (await client.get("/v1/operator/cases")).status_code == 401
    assert (await client.get("/v1/operator/cases", headers=dept())).status_code == 403
    reader = op(scopes=["cases:read"])
    assert (await client.get("/v1/operator/cases", headers=reader)).status_code == 200
    refused = await client.post(f"/v1/operator/cases/{case_id}/escalate", json={}, headers=reader)
    assert refused.status_code == 403
    outside = await client.get(f"/v1/operator/cases?grid={OTHER_TOWN}", headers=op())
    assert outside.status_code == 403
    by_department = (
        await client.get("/v1/operator/cases?department=chengguan&category=city.", headers=op())
    ).json()
    assert case_id in [c["case_id"] for c in by_department["cases"]]
    none = (await client.get("/v1/operator/cases?department=yingji", headers=op())).json()
    assert case_id not in [c["case_id"] for c in none["cases"]]
    escalated = await _post(stack, case_id, "escalate", {"reason": "跨部门协调"}, op())
    assert escalated["state"] == "assigned"
    wrong_actor = await client.post(
        f"/v1/department/cases/{case_id}/sign", json={}, headers=dept("yingji")
    )
    assert wrong_actor.status_code == 404
