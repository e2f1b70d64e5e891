"""Bad input is refused with nothing written; unknown codes reach triage with their standard; a
platform outage and a bridge restart lose and duplicate nothing (issue 6, "Bad input and faults")."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from typing import Any

import httpx

from libs.common.bridge.tables import queue
from libs.common.events import (
    CaseLifecycleEvent,
    CaseSubmitted,
    Reporter,
    Transition,
)
from libs.common.kafka import TopicNames
from libs.common.topics import CASES_SUBMITTED
from tests.factories import METRICS_TOKEN, Isolation, department_secret, make_department_token
from tests.harness import WAIT_SECONDS, TopicWatcher, until
from tests.services.citycare_bridge.conftest import (
    CALL_SECRET,
    PLATFORM_DEPARTMENT,
    PUSH_SECRET,
    CitycareStack,
    grid_worker_case,
    moved,
    publish,
    signed_post,
    statuses,
    wait_case,
)

METRICS = {"Authorization": f"Bearer {METRICS_TOKEN}"}
FILED: dict[str, Any] = {
    "event_id": "SZ-T-0001",
    "type": "case.filed",
    "occurred_at": "2026-11-27T09:00:00+08:00",
    "case": {
        "case_id": "SZCG2026112799001",
        "classification": {
            "standard": "GB/T 30428.2-2013",
            "kind": "部件",
            "code": "0103",
            "name": "雨水井盖",
            "major_name": "公用设施",
        },
        "component_id": "4302810103000417",
        "description": "书院路雨水井盖缺失，井口敞开。",
        "level": "紧急",
        "filed_at": "2026-11-27T08:58:00+08:00",
        "grid_id": "430281001001002",
        "reporter": {"role": "监督员", "id": "J0007"},
    },
}


def _from_platform(number: str) -> Callable[[object, object], bool]:
    def match(_: object, payload: object) -> bool:
        ref = payload.external_ref if isinstance(payload, CaseSubmitted) else None
        return ref is not None and ref.id == number

    return match


def _with(path: tuple[str, ...], value: Any) -> bytes:
    body = copy.deepcopy(FILED)
    node = body
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return json.dumps(body, ensure_ascii=False).encode()


async def test_bad_signatures_malformed_and_unknown_input_write_nothing(
    citycare_stack: CitycareStack,
) -> None:
    stack = citycare_stack
    async with stack.running_bridge() as url, httpx.AsyncClient() as client:
        events, deliveries = f"{url}/v1/citycare/events", f"{url}/v1/citycare/deliveries"
        body = json.dumps(FILED, ensure_ascii=False).encode()
        assert (await signed_post(client, events, body, CALL_SECRET)).status_code == 401
        assert (await client.post(events, content=body)).status_code == 401

        async def refused(sent: bytes) -> dict[str, Any]:
            response = await signed_post(client, events, sent, PUSH_SECRET)
            assert response.status_code == 400, response.text
            detail: dict[str, Any] = response.json()["detail"][0]
            return detail

        too_long = await refused(_with(("case", "classification", "code"), "01030"))
        assert too_long["path"] == "body.case"
        assert "a GB/T 30428.2-2013 code has 4 digits" in too_long["reason"]
        component = await refused(_with(("case", "component_id"), "43028101030004170"))
        assert "component id has 16 digits" in component["reason"]
        kind = await refused(_with(("case", "classification", "kind"), "案件"))
        assert kind["path"] == "body.case.classification.kind"
        assert (await refused(b"{not json"))["path"] == "body"
        verdict = {
            "event_id": "SZ-T-0002",
            "type": "case.verified",
            "occurred_at": "2026-11-27T10:00:00+08:00",
            "case_id": "SZCG0000000000",
            "passed": True,
        }
        unknown = await signed_post(client, events, json.dumps(verdict).encode(), PUSH_SECRET)
        assert unknown.status_code == 404

        delivery = {
            "type": "case.assigned",
            "delivery_id": "D1",
            "department": PLATFORM_DEPARTMENT,
            "case": {"case_id": "C" + "0" * 26},
        }
        sent = json.dumps(delivery).encode()
        secret = department_secret(PLATFORM_DEPARTMENT)
        assert (await signed_post(client, deliveries, sent, PUSH_SECRET)).status_code == 401
        lacking = await signed_post(client, deliveries, sent, secret)
        assert lacking.status_code == 400
        other = {**delivery, "department": "chengguan"}
        wrong = await signed_post(client, deliveries, json.dumps(other).encode(), secret)
        assert wrong.status_code == 400
        assert await stack.counts() == {"links": 0, "outbox": 0, "processed_events": 0, "queue": 0}

        taken = await signed_post(client, events, body, PUSH_SECRET)
        again = await signed_post(client, events, body, PUSH_SECRET)  # the platform's retry
        assert taken.status_code == again.status_code == 200
        assert (taken.json()["status"], again.json()["status"]) == ("accepted", "duplicate")
        assert taken.json()["gridflow_case_id"] == again.json()["gridflow_case_id"]
        counts = await stack.counts()
        assert (counts["links"], counts["outbox"]) == (1, 1)


async def test_unknown_codes_and_standards_go_to_triage_with_the_original_visible(
    citycare_stack: CitycareStack, isolation: Isolation
) -> None:
    stack = citycare_stack
    unknown_code = {
        "standard": "GB/T 47678.5-2026",
        "kind": "事件",
        "code": "11002",
        "name": "违规户外广告设施",
    }
    unknown_standard = {
        "standard": "DB43/T 2145-2021",
        "kind": "事件",
        "code": "0304",
        "name": "渣土撒漏",
    }
    submitted = TopicWatcher(
        bootstrap=isolation.kafka_bootstrap,
        topic=CASES_SUBMITTED,
        name=TopicNames(isolation.topic_prefix)(CASES_SUBMITTED),
        group=f"{isolation.token}-submitted",
    )
    async with submitted, stack.running_bridge() as url:
        cases = [
            (stack.simulator.file_case(0, classification=unknown_code), unknown_code),
            (stack.simulator.file_case(0, classification=unknown_standard), unknown_standard),
        ]
        for filed, classification in cases:
            _, case = await submitted.wait_for(_from_platform(filed["case_id"]))
            assert isinstance(case, CaseSubmitted)
            assert case.category.code == "other.general"
            assert case.category.origin is not None
            assert case.category.origin.model_dump() == {
                "code": classification["code"],
                "standard": classification["standard"],
                "name": f"事件·{classification['name']}",
            }
            await stack.dispatch.lifecycle.wait_for(moved(case.case_id, Transition.TRIAGED))
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"{url}/metrics", headers=METRICS)).text
        assert 'gridflow_bridge_mapping_failures_total{field="code",partner="citycare"} 1.0' in (
            metrics
        )
        assert (
            'gridflow_bridge_mapping_failures_total{field="standard",partner="citycare"} 1.0'
            in metrics
        )


async def test_an_outage_and_a_restart_lose_and_duplicate_nothing(
    citycare_stack: CitycareStack,
) -> None:
    stack = citycare_stack
    async with stack.running_bridge():
        number = stack.simulator.file_case(1)["case_id"]
        webhook = await asyncio.wait_for(stack.dispatch.receiver.received.get(), WAIT_SECONDS)
        case_id = webhook.body["case"]["case_id"]
        await wait_case(stack.simulator, number, lambda c: statuses(c) == ["dispatched"])
        stack.simulator.down = True  # the platform answers 503 from now on
        headers = {"Authorization": f"Bearer {make_department_token('chengguan')}"}
        for move, body in (("sign", {}), ("resolve", {"result": "已补装雨水井盖"})):
            response = await stack.dispatch.client.post(
                f"/v1/department/cases/{case_id}/{move}", json=body, headers=headers
            )
            assert response.status_code == 200, response.text

        async def retried() -> bool:
            rows = await stack.rows(queue)
            return any(
                r.kind == "handling" and r.attempts >= 2 and r.finished_at is None for r in rows
            )

        await until(retried)
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"{stack.bridge_url}/metrics", headers=METRICS)).text
        metrics = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("gridflow_bridge_")
        }
        errors = 'gridflow_bridge_partner_errors_total{operation="status",partner="citycare"}'
        assert metrics[errors] >= 1
        lag = 'gridflow_bridge_sync_lag_seconds{channel="partner",partner="citycare"}'
        assert metrics[lag] > 0
    # the bridge is stopped with both updates undelivered; the platform comes back meanwhile
    stack.simulator.down = False
    async with stack.running_bridge():
        # feedback reaches the platform, which verifies (passes): the bridge closes the case
        done = await wait_case(stack.simulator, number, lambda c: c.state == "已结案")
        assert statuses(done) == ["dispatched", "handling", "feedback", "closed"]

        async def recorded() -> bool:  # the simulator answers before the bridge records
            return all(r.finished_at is not None for r in await stack.rows(queue))

        await until(recorded)
        rows = await stack.rows(queue)
        assert sorted(r.kind for r in rows) == sorted(
            ["dispatched", "handling", "feedback", "case.verified", "closed"]
        )
        assert {r.outcome for r in rows} == {"sent"}
        counts = await stack.counts()
        assert (counts["links"], counts["outbox"]) == (1, 1)


async def test_a_task_survives_an_outage_and_a_restart_and_is_filed_once(
    citycare_stack: CitycareStack,
) -> None:
    stack = citycare_stack
    case = grid_worker_case(
        "city.street_vending",
        "人行道占道经营",
        "胜利路社区北门外水果摊占用人行道。",
        unit_grid="430281003001002",
        worker=Reporter(kind="grid_worker", worker_id="W0032"),
    )
    stack.simulator.down = True
    stack.simulator.fail_next_verification.add(case.case_id)  # its first 核查 fails
    async with stack.running_bridge():
        await publish(stack, case)

        async def retried() -> bool:
            rows = await stack.rows(queue)
            return any(r.kind == "task" and r.attempts >= 2 for r in rows)

        await until(retried)
    stack.simulator.down = False
    async with stack.running_bridge():
        await stack.dispatch.lifecycle.wait_for(moved(case.case_id, Transition.RESOLVED))

        async def recorded() -> bool:
            return all(r.finished_at is not None for r in await stack.rows(queue))

        await until(recorded)
    assert list(stack.simulator.tasks) == [case.case_id]  # filed once
    notes = [
        p.note
        for _, p in stack.dispatch.lifecycle.seen
        if isinstance(p, CaseLifecycleEvent)
        and p.case_id == case.case_id
        and p.transition is Transition.PROGRESSED
    ]
    assert len(notes) == 5  # 派遣, 处置, 反馈, the failed 核查, 反馈 again
    assert notes[3] == "数字城管核查未通过，返工：现场仍有残留，返工"
    assert {r.outcome for r in await stack.rows(queue)} == {"sent"}
