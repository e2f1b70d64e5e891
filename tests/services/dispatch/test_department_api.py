"""The department API over HTTP against the real broker and database: a department works its
own cases through the lifecycle, and cannot see or touch anybody else's."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from libs.common.events import CaseLifecycleEvent, Transition
from libs.common.topics import CASES_SUBMITTED
from tests.factories import make_department_token
from tests.harness import WAIT_SECONDS
from tests.services.dispatch.conftest import DispatchStack
from tests.services.dispatch.test_flow import make_case


def auth(department: str = "chengguan", **kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_department_token(department, **kwargs)}"}


async def _assigned_case(stack: DispatchStack, category: str = "city.garbage") -> str:
    case = make_case(category)
    await stack.publisher.publish(CASES_SUBMITTED, case, key=case.case_id, now=datetime.now(UTC))
    await stack.lifecycle.wait_for(
        lambda _, p: (
            isinstance(p, CaseLifecycleEvent)
            and p.case_id == case.case_id
            and p.transition is Transition.ASSIGNED
        )
    )
    await asyncio.wait_for(stack.receiver.received.get(), WAIT_SECONDS)
    return case.case_id


async def test_a_department_works_its_case_from_sign_to_resolve(
    dispatch_stack: DispatchStack,
) -> None:
    stack, client = dispatch_stack, dispatch_stack.client
    case_id = await _assigned_case(stack)

    inbox = (await client.get("/v1/department/cases", headers=auth())).json()
    assert [c["case_id"] for c in inbox["cases"]] == [case_id]
    assert inbox["cases"][0]["role"] == "primary"

    early = await client.post(
        f"/v1/department/cases/{case_id}/resolve", json={"result": "已清理"}, headers=auth()
    )
    assert early.status_code == 409
    assert "state assigned" in early.json()["detail"][0]["reason"]

    signed = await client.post(f"/v1/department/cases/{case_id}/sign", json={}, headers=auth())
    assert signed.status_code == 200, signed.text
    assert signed.json()["state"] == "accepted"
    progress = await client.post(
        f"/v1/department/cases/{case_id}/progress", json={"note": "已安排环卫车辆"}, headers=auth()
    )
    assert progress.status_code == 200, progress.text
    until = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    extension = await client.post(
        f"/v1/department/cases/{case_id}/extension",
        json={"until": until, "reason": "需协调产权单位"},
        headers=auth(),
    )
    assert extension.status_code == 200 and extension.json()["extension_pending"] is True
    resolved = await client.post(
        f"/v1/department/cases/{case_id}/resolve",
        json={"result": "垃圾已清运，现场已冲洗"},
        headers=auth(),
    )
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["state"] == "resolved"

    detail = (await client.get(f"/v1/department/cases/{case_id}", headers=auth())).json()
    assert [t["transition"] for t in detail["timeline"]] == [
        "received",
        "assigned",
        "signed",
        "progressed",
        "extension_requested",
        "resolved",
    ]
    assert [t["version"] for t in detail["timeline"]] == [1, 2, 3, 4, 5, 6]
    assert detail["case"]["case_id"] == case_id
    transitions = await stack.lifecycle.wait_for(
        lambda _, p: (
            isinstance(p, CaseLifecycleEvent)
            and p.case_id == case_id
            and p.transition is Transition.RESOLVED
        )
    )
    assert transitions[1].version == 6  # type: ignore[attr-defined]


async def test_a_return_needs_a_reason_and_reroutes_elsewhere(
    dispatch_stack: DispatchStack,
) -> None:
    stack, client = dispatch_stack, dispatch_stack.client
    case_id = await _assigned_case(stack, "safety.fire")  # → xiaofang; its parent route: yingji
    no_reason = await client.post(
        f"/v1/department/cases/{case_id}/return", json={}, headers=auth("xiaofang")
    )
    assert no_reason.status_code == 422
    assert no_reason.json()["detail"][0]["path"] == "body.reason_code"
    returned = await client.post(
        f"/v1/department/cases/{case_id}/return",
        json={"reason_code": "not_our_duty", "note": "属于安全生产隐患"},
        headers=auth("xiaofang"),
    )
    assert returned.status_code == 200, returned.text
    assert returned.json()["department"] not in (None, "xiaofang")
    redelivered = await asyncio.wait_for(stack.receiver.received.get(), WAIT_SECONDS)
    assert redelivered.department == returned.json()["department"]
    assert redelivered.body["case"]["case_id"] == case_id
    gone = await client.get(f"/v1/department/cases/{case_id}", headers=auth("xiaofang"))
    assert gone.status_code == 404  # no longer its case


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "", None),
        ("POST", "/sign", {}),
        ("POST", "/return", {"reason_code": "not_our_duty"}),
        ("POST", "/progress", {"note": "x"}),
        ("POST", "/extension", {"until": "2030-01-01T00:00:00+08:00", "reason": "x"}),
        ("POST", "/resolve", {"result": "x"}),
    ],
)
async def test_another_departments_case_is_refused_for_every_endpoint(
    dispatch_stack: DispatchStack, method: str, path: str, body: dict[str, Any] | None
) -> None:
    stack, client = dispatch_stack, dispatch_stack.client
    case_id = await _assigned_case(stack)  # chengguan's
    response = await client.request(
        method, f"/v1/department/cases/{case_id}{path}", json=body, headers=auth("yingji")
    )
    assert response.status_code == 404, response.text
    inbox = (await client.get("/v1/department/cases", headers=auth("yingji"))).json()
    assert case_id not in [c["case_id"] for c in inbox["cases"]]
    detail = (await client.get(f"/v1/department/cases/{case_id}", headers=auth())).json()
    assert detail["version"] == 2  # nothing changed


async def test_credentials_and_scopes(dispatch_stack: DispatchStack) -> None:
    client = dispatch_stack.client
    assert (await client.get("/v1/department/cases")).status_code == 401
    reader = auth(scopes=["cases:read"])
    assert (await client.get("/v1/department/cases", headers=reader)).status_code == 200
    writes = await client.post(
        "/v1/department/cases/C01M8DR9RE17VR76DTDKNYK7RAJ/sign", json={}, headers=reader
    )
    assert writes.status_code == 403
    operator = auth("OP01", role="operator")
    assert (await client.get("/v1/department/cases", headers=operator)).status_code == 403
    unknown = auth("nobody")
    assert (await client.get("/v1/department/cases", headers=unknown)).status_code == 403


async def test_idempotency_key_replays_and_refuses_reuse(dispatch_stack: DispatchStack) -> None:
    stack, client = dispatch_stack, dispatch_stack.client
    case_id = await _assigned_case(stack)
    headers = {**auth(), "Idempotency-Key": "sign-1"}
    first = await client.post(f"/v1/department/cases/{case_id}/sign", json={}, headers=headers)
    again = await client.post(f"/v1/department/cases/{case_id}/sign", json={}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    other = await client.post(
        f"/v1/department/cases/{case_id}/progress", json={"note": "x"}, headers=headers
    )
    assert other.status_code == 409
    detail = (await client.get(f"/v1/department/cases/{case_id}", headers=auth())).json()
    assert detail["version"] == 3  # one sign, nothing else


async def test_inbox_pages_with_a_cursor(dispatch_stack: DispatchStack) -> None:
    stack, client = dispatch_stack, dispatch_stack.client
    ids = [await _assigned_case(stack) for _ in range(3)]
    first = (await client.get("/v1/department/cases?limit=2", headers=auth())).json()
    assert len(first["cases"]) == 2 and first["next_cursor"]
    rest = (
        await client.get(
            f"/v1/department/cases?limit=2&cursor={first['next_cursor']}", headers=auth()
        )
    ).json()
    assert [c["case_id"] for c in first["cases"] + rest["cases"]] == ids
    bad = await client.get("/v1/department/cases?cursor=@@@", headers=auth())
    assert bad.status_code == 422


async def test_a_nul_in_a_command_is_refused_and_changes_nothing(
    dispatch_stack: DispatchStack,
) -> None:
    # PostgreSQL refuses a NUL in text and jsonb: the note would fail the command's transaction
    stack = dispatch_stack
    case_id = await _assigned_case(stack)
    answer = await stack.client.post(
        f"/v1/department/cases/{case_id}/progress",
        json={"note": "已到现场\x00"},
        headers=auth(),
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["path"] == "body.note"
    case = await stack.client.get(f"/v1/department/cases/{case_id}", headers=auth())
    assert case.json()["state"] == "assigned"
