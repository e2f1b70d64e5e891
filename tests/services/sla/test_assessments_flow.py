"""Assessments against the real broker and database: lifecycle events become KPIs served by the
API (scoped), gauges, and one publication per ended period."""

from __future__ import annotations

from datetime import datetime, timedelta

from libs.common.events import AssessmentPublished, CaseState, Transition
from libs.common.ids import new_case_id
from libs.common.kafka import TopicNames
from libs.common.topics import ASSESSMENTS
from tests.factories import METRICS_TOKEN, Isolation, make_department_token, make_operator_token
from tests.harness import TopicWatcher, until
from tests.services.sla.conftest import START, SlaStack
from tests.services.sla.test_flow import lifecycle, publish, timers

TOWN = "430281001"


async def test_kpis_from_lifecycle_events_served_measured_and_published_once(
    sla_stack: SlaStack, isolation: Isolation
) -> None:
    stack = sla_stack
    quick, slow = new_case_id(START), new_case_id(START)
    steps = [
        (quick, 2, Transition.ASSIGNED, CaseState.ASSIGNED, 0),
        (quick, 3, Transition.SIGNED, CaseState.ACCEPTED, 10),
        (quick, 4, Transition.RESOLVED, CaseState.RESOLVED, 70),  # within 4 working hours
        (slow, 2, Transition.ASSIGNED, CaseState.ASSIGNED, 0),
        (slow, 3, Transition.SIGNED, CaseState.ACCEPTED, 60),  # sign-for late (30 min)
    ]
    for case_id, version, move, state, minutes in steps:
        event = lifecycle(case_id, version, move, state, START + timedelta(minutes=minutes))
        await publish(stack.publisher, event)

    async def applied() -> bool:
        rows = await timers(stack.app, quick) + await timers(stack.app, slow)
        return len(rows) == 5  # quick: sign, handle, verify; slow: sign, handle

    await until(applied)
    stack.clock.advance(timedelta(days=2))  # slow's handling deadline passes, unresolved
    city = {"Authorization": f"Bearer {make_operator_token(['430281'], now=stack.clock.now())}"}
    answer = await stack.client.get(
        "/v1/sla/assessments", params={"period": "2026-11", "level": "department"}, headers=city
    )
    assert answer.status_code == 200, answer.text
    [row] = answer.json()["assessments"]
    assert (row["node"], row["due"], row["closed"], row["closed_on_time"]) == ("chengguan", 2, 1, 1)
    assert (row["closure_rate"], row["on_time_sign_rate"], row["assigned"]) == (50.0, 50.0, 2)
    assert row["average_handling_hours"] == 1.0

    town = {"Authorization": f"Bearer {make_operator_token([TOWN], now=stack.clock.now())}"}
    towns = await stack.client.get(
        "/v1/sla/assessments", params={"period": "2026-11", "level": "town"}, headers=town
    )
    assert [r["node"] for r in towns.json()["assessments"]] == [TOWN]
    refused = await stack.client.get(
        "/v1/sla/assessments", params={"period": "2026-11", "level": "department"}, headers=town
    )
    assert refused.status_code == 403
    own = {"Authorization": f"Bearer {make_department_token('yingji', now=stack.clock.now())}"}
    mine = await stack.client.get(
        "/v1/sla/assessments", params={"period": "2026-11", "level": "department"}, headers=own
    )
    assert mine.json()["assessments"] == []  # yingji held nothing
    bad = await stack.client.get("/v1/sla/assessments", params={"period": "2026-13"}, headers=city)
    assert bad.status_code == 422 and bad.json()["detail"][0]["path"] == "query.period"

    await stack.app.state.assessor.measure()
    metrics = (
        await stack.client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    ).text
    assert (
        'gridflow_sla_kpi{kpi="closure_rate",level="department",node="chengguan"} 50.0' in metrics
    )

    names = TopicNames(isolation.topic_prefix)
    async with TopicWatcher(
        bootstrap=isolation.kafka_bootstrap,
        topic=ASSESSMENTS,
        name=names(ASSESSMENTS),
        group=f"{isolation.token}-assessments",
    ) as published:
        stack.clock.advance(datetime.fromisoformat("2026-12-01T00:10:00+08:00") - stack.clock.now())
        assessor = stack.app.state.assessor
        assert "2026-11" in await assessor.publish_ended()
        assert await assessor.publish_ended() == []  # once per period
        _, found = await published.wait_for(
            lambda _, p: (
                isinstance(p, AssessmentPublished) and p.period == "2026-11" and p.level == "city"
            )
        )
        assert isinstance(found, AssessmentPublished)
        assert (found.node, found.due, found.closed, found.closure_rate) == ("430281", 2, 1, 50.0)
