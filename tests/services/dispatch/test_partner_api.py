"""The partner API over HTTP: a bridge acts for its platform only on the cases that came from it,
only with the moves the platform decides, and with its own scoped token."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from libs.common.auth import mint_token
from libs.common.events import CaseLifecycleEvent, ExternalRef, Location, Transition
from libs.common.topics import CASES_SUBMITTED
from tests.factories import (
    DISPATCH_SECRET,
    Isolation,
    make_department_token,
    make_operator_token,
)
from tests.harness import WAIT_SECONDS
from tests.services.dispatch.conftest import DispatchStack, dispatch_stack_with
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


PLATFORM = "citycare"  # its bridge is department shuzichengguan's receiver (`partner: citycare`)


def _platform_at_the_test_receiver(text: str) -> str:
    """departments.yaml with 数字城管's receiver (the bridge) replaced by the test receiver."""
    match = re.search(r"url: (\S+)/departments/chengguan", text)
    assert match is not None
    return text.replace(
        "http://127.0.0.1:8005/v1/citycare/deliveries",
        f"{match.group(1)}/departments/shuzichengguan",
    )


def _assigned(case_id: str) -> Callable[[object, object], bool]:
    return lambda _, p: (
        isinstance(p, CaseLifecycleEvent)
        and p.case_id == case_id
        and p.transition is Transition.ASSIGNED
    )


async def test_the_platform_verifies_and_closes_only_the_cases_its_department_entry_holds(
    isolation: Isolation, tmp_path: Path
) -> None:
    async with dispatch_stack_with(
        isolation, tmp_path, departments=_platform_at_the_test_receiver
    ) as stack:
        client = stack.client
        # a grid worker's city-appearance case in 湘江街道 goes to 数字城管; one elsewhere does not
        held = make_case("city.illegal_ads").model_copy(
            update={"location": Location(unit_grid="430281003001001")}
        )
        elsewhere = make_case()
        for case in (held, elsewhere):
            await stack.publisher.publish(
                CASES_SUBMITTED, case, key=case.case_id, now=datetime.now(UTC)
            )
        departments: dict[str, str | None] = {}
        for case_id in (held.case_id, elsewhere.case_id):
            _, assigned = await stack.lifecycle.wait_for(_assigned(case_id))
            assert isinstance(assigned, CaseLifecycleEvent)
            departments[case_id] = assigned.department
        assert departments == {held.case_id: "shuzichengguan", elsewhere.case_id: "chengguan"}

        standing = await client.get(f"/v1/partner/cases/{held.case_id}", headers=partner(PLATFORM))
        assert standing.status_code == 200, standing.text
        assert (standing.json()["department"], standing.json()["state"]) == (
            "shuzichengguan",
            "assigned",
        )
        # least privilege: no other partner sees it, and the platform sees no other department's
        for who, case_id in ((SYSTEM, held.case_id), (PLATFORM, elsewhere.case_id)):
            seen = await client.get(f"/v1/partner/cases/{case_id}", headers=partner(who))
            assert seen.status_code == 404
        # on a case it holds the platform verifies and closes; the rest stays the grid centre's
        for move, words in (("supervise", {"note": "督办"}), ("cancel", {"reason": "撤销"})):
            refused = await client.post(
                f"/v1/partner/cases/{held.case_id}/{move}", json=words, headers=partner(PLATFORM)
            )
            assert refused.status_code == 404, refused.text

        platform = {"Authorization": f"Bearer {make_department_token('shuzichengguan')}"}
        for move, words in (("sign", {}), ("resolve", {"result": "小广告已清除"})):
            response = await client.post(
                f"/v1/department/cases/{held.case_id}/{move}", json=words, headers=platform
            )
            assert response.status_code == 200, response.text
        chengguan = {"Authorization": f"Bearer {make_department_token('chengguan')}"}
        for move, words in (("sign", {}), ("resolve", {"result": "垃圾已清运"})):
            response = await client.post(
                f"/v1/department/cases/{elsewhere.case_id}/{move}", json=words, headers=chengguan
            )
            assert response.status_code == 200, response.text

        for move, body in (("verify", {"passed": True}), ("close", {})):
            other = await client.post(
                f"/v1/partner/cases/{elsewhere.case_id}/{move}",
                json=body,
                headers={**partner(PLATFORM), "Idempotency-Key": f"other-{move}"},
            )
            assert other.status_code == 404
            response = await client.post(
                f"/v1/partner/cases/{held.case_id}/{move}",
                json=body,
                headers={**partner(PLATFORM), "Idempotency-Key": f"k-{move}"},
            )
            assert response.status_code == 200, response.text
        assert response.json()["state"] == "closed"
        _, closed = await stack.lifecycle.wait_for(
            lambda _, p: (
                isinstance(p, CaseLifecycleEvent)
                and p.case_id == held.case_id
                and p.transition is Transition.CLOSED
            )
        )
        assert isinstance(closed, CaseLifecycleEvent)
        assert (closed.actor.kind, closed.actor.id) == ("partner", PLATFORM)
        still = await client.get(f"/v1/partner/cases/{elsewhere.case_id}", headers=partner())
        assert still.status_code == 404
        operator = {"Authorization": f"Bearer {make_operator_token(['430281'])}"}
        untouched = await client.get(f"/v1/operator/cases/{elsewhere.case_id}", headers=operator)
        assert (untouched.status_code, untouched.json()["state"]) == (200, "resolved")
