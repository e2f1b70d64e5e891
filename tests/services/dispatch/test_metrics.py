"""dispatch's metrics: open cases by state and department, the triage queue, routing decisions."""

from __future__ import annotations

from datetime import UTC, datetime

from libs.common.events import CaseLifecycleEvent, Transition
from libs.common.topics import CASES_SUBMITTED
from tests.factories import METRICS_TOKEN
from tests.services.dispatch.conftest import DispatchStack
from tests.services.dispatch.test_department_api import _assigned_case
from tests.services.dispatch.test_flow import make_case


async def test_open_cases_and_triage_queue_are_gauges(dispatch_stack: DispatchStack) -> None:
    stack = dispatch_stack
    await _assigned_case(stack)
    triaged = make_case("other.general")
    await stack.publisher.publish(
        CASES_SUBMITTED, triaged, key=triaged.case_id, now=datetime.now(UTC)
    )
    await stack.lifecycle.wait_for(
        lambda _, p: (
            isinstance(p, CaseLifecycleEvent)
            and p.case_id == triaged.case_id
            and p.transition is Transition.TRIAGED
        )
    )
    await stack.app.state.gauges.measure()
    text = (
        await stack.client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    ).text
    assert 'gridflow_dispatch_open_cases{department="chengguan",state="assigned"} 1.0' in text
    assert 'gridflow_dispatch_open_cases{department="",state="triage"} 1.0' in text
    assert 'gridflow_dispatch_triage_queue{owner_node="430281001"} 1.0' in text
    assert "gridflow_routing_ruleset_info{version=" in text
    # which rule decided: the garbage route for the first, none (triage) for the second
    assert 'gridflow_routing_decisions_total{rule="triage"} 1.0' in text
    decided = [
        line
        for line in text.splitlines()
        if line.startswith("gridflow_routing_decisions_total{") and 'rule="triage"' not in line
    ]
    assert len(decided) == 1 and decided[0].endswith(" 1.0")
