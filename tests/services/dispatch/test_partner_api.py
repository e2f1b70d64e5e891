"""The partner API over HTTP: a bridge acts for its platform only on the cases that came from it,
only with the moves the platform decides, and with its own scoped token."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from libs.common.auth import mint_token
from libs.common.events import CaseLifecycleEvent, ExternalRef, Transition
from libs.common.topics import CASES_SUBMITTED
from tests.factories import DISPATCH_SECRET, make_department_token, make_operator_token
from tests.harness import WAIT_SECONDS
from tests.services.dispatch.conftest import DispatchStack
from tests.services.dispatch.test_flow import make_case

SYSTEM = "hotline12345"


def partner(
    subject: str = SYSTEM, scopes: list[str] | None = None, role: str = "partner"
) -> dict[str, str]:
    token = mint_token(
        secret=DISPATCH_SECRET,
        subject=subject,
        role=role,
        scopes=["cases:read", "cases:decide"] if scopes is None else scopes,
        grids=[],
        now=datetime.now(UTC),
        ttl=timedelta(hours=1),
    )
    return {"Authorization": f"Bearer {token}"}


async def _case_from(stack: DispatchStack, system: str | None) -> str:
    case = make_case()
    if system is not None:
        case = case.model_copy(update={"external_ref": ExternalRef(system=system, id="GD-1")})
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


async def _department(stack: DispatchStack, case_id: str, move: str, body: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {make_department_token('chengguan')}"}
    response = await stack.client.post(
        f"/v1/department/cases/{case_id}/{move}", json=body, headers=headers
    )
    assert response.status_code == 200, response.text


async def test_the_partner_reviews_closes_and_reopens_its_own_case(
    dispatch_stack: DispatchStack,
) -> None:
    stack, client = dispatch_stack, dispatch_stack.client
    case_id = await _case_from(stack, SYSTEM)
    standing = (await client.get(f"/v1/partner/cases/{case_id}", headers=partner())).json()
    assert (standing["state"], standing["verified"]) == ("assigned", False)

    await _department(stack, case_id, "sign", {})
    await _department(stack, case_id, "resolve", {"result": "垃圾已清运"})
    for move, body in (("verify", {"passed": True}), ("close", {})):
        response = await client.post(
            f"/v1/partner/cases/{case_id}/{move}",
            json=body,
            headers={**partner(), "Idempotency-Key": f"k-{move}"},
        )
        assert response.status_code == 200, response.text
    reopened = await client.post(
        f"/v1/partner/cases/{case_id}/reopen", json={"reason": "回访不满意"}, headers=partner()
    )
    assert (reopened.status_code, reopened.json()["state"]) == (200, "assigned")
    _, event = await stack.lifecycle.wait_for(
        lambda _, p: (
            isinstance(p, CaseLifecycleEvent)
            and p.case_id == case_id
            and p.transition is Transition.REOPENED
        )
    )
    assert isinstance(event, CaseLifecycleEvent)
    assert (event.actor.kind, event.actor.id) == ("partner", SYSTEM)


async def test_a_partner_sees_no_other_case_and_needs_its_scopes(
    dispatch_stack: DispatchStack,
) -> None:
    stack, client = dispatch_stack, dispatch_stack.client
    workers_case = await _case_from(stack, None)
    other_platform = await _case_from(stack, "citycare")
    for case_id in (workers_case, other_platform):
        seen = await client.get(f"/v1/partner/cases/{case_id}", headers=partner())
        assert seen.status_code == 404
        acted = await client.post(
            f"/v1/partner/cases/{case_id}/supervise", json={"note": "督办"}, headers=partner()
        )
        assert acted.status_code == 404

    own = await _case_from(stack, SYSTEM)
    read_only = await client.post(
        f"/v1/partner/cases/{own}/supervise",
        json={"note": "督办"},
        headers=partner(scopes=["cases:read"]),
    )
    assert read_only.status_code == 403
    operator = {"Authorization": f"Bearer {make_operator_token(['430281'])}"}
    assert (await client.get(f"/v1/partner/cases/{own}", headers=operator)).status_code == 403
    # the partner may not act as a department: signing is the department's move
    signing = await client.post(f"/v1/partner/cases/{own}/sign", json={}, headers=partner())
    assert signing.status_code in (404, 405)
    supervised = await client.post(
        f"/v1/partner/cases/{own}/supervise", json={"note": "催办：请尽快处理"}, headers=partner()
    )
    assert (supervised.status_code, supervised.json()["supervised"]) == (200, True)
