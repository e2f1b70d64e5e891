"""dispatch acts on sla.signals: warnings and breaches mark the case (督办), an escalation hands
it up the grid; each once, even when the record is delivered twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from deploy.embedded import EMBEDDED_FETCH_MAX_WAIT_MS
from libs.common.events import (
    CaseLifecycleEvent,
    SlaSignal,
    SlaSignalKind,
    SlaStage,
    Transition,
)
from libs.common.ids import new_case_id
from libs.common.topics import SLA_SIGNALS, build_envelope
from services.dispatch.lifecycle import Escalate, Supervise
from services.dispatch.signals import command_for
from tests.services.dispatch.conftest import DispatchStack
from tests.services.dispatch.test_department_api import _assigned_case


def make_signal(
    case_id: str, kind: SlaSignalKind = SlaSignalKind.WARNING, **extra: Any
) -> SlaSignal:
    now = datetime.now(UTC)
    return SlaSignal(
        case_id=case_id,
        kind=kind,
        stage=SlaStage.SIGN,
        due_at=now + timedelta(hours=1),
        at=now,
        case_version=2,
        department="chengguan",
        policy="city.garbage/routine@test",
        **extra,
    )


def test_signals_become_system_moves() -> None:
    case_id = new_case_id(datetime.now(UTC))
    warning = command_for(make_signal(case_id))
    assert isinstance(warning, Supervise) and warning.actor.id == "sla"
    assert "签收即将超时" in warning.note
    escalation = command_for(make_signal(case_id, SlaSignalKind.ESCALATION, escalate_to="430281"))
    assert isinstance(escalation, Escalate)


def _events(stack: DispatchStack, case_id: str, transition: Transition) -> list[CaseLifecycleEvent]:
    return [
        p
        for _, p in stack.lifecycle.seen
        if isinstance(p, CaseLifecycleEvent) and p.case_id == case_id and p.transition is transition
    ]


async def test_warning_breach_and_escalation_each_apply_once(dispatch_stack: DispatchStack) -> None:
    stack = dispatch_stack
    case_id = await _assigned_case(stack)
    warning = build_envelope(
        SLA_SIGNALS, make_signal(case_id), source="tests", key=case_id, now=datetime.now(UTC)
    )
    await stack.publisher.send(SLA_SIGNALS, warning)
    await stack.publisher.send(SLA_SIGNALS, warning)  # delivered twice: applied once
    await stack.publisher.publish(
        SLA_SIGNALS, make_signal(case_id, SlaSignalKind.BREACH), key=case_id, now=datetime.now(UTC)
    )
    await stack.publisher.publish(
        SLA_SIGNALS,
        make_signal(case_id, SlaSignalKind.ESCALATION, escalate_to="430281001"),
        key=case_id,
        now=datetime.now(UTC),
    )
    _, escalated = await stack.lifecycle.wait_for(
        lambda _, p: (
            isinstance(p, CaseLifecycleEvent)
            and p.case_id == case_id
            and p.transition is Transition.ESCALATED
        )
    )
    supervised = _events(stack, case_id, Transition.SUPERVISED)
    assert len(supervised) == 2  # the warning once, the breach once
    assert all(e.actor.id == "sla" and e.supervised for e in supervised)
    assert isinstance(escalated, CaseLifecycleEvent)
    assert escalated.owner_node is not None and len(escalated.owner_node) < 15  # up the grid
    assert [e.version for e in supervised] + [escalated.version] == [3, 4, 5]


@pytest.mark.parametrize(
    "dispatch_stack", [{"kafka_background_fetch_max_wait_ms": 400}], indirect=True
)
async def test_signals_are_fetched_with_the_background_wait_and_still_apply(
    dispatch_stack: DispatchStack,
) -> None:
    """Signals are off a case's way to its department: their consumer fetches with the longer
    background wait (fewer fetches while idle), the submissions' consumer with the short one."""
    stack = dispatch_stack
    assert stack.app.state.signals.fetch_max_wait_ms == 400
    assert stack.app.state.consumer.fetch_max_wait_ms == EMBEDDED_FETCH_MAX_WAIT_MS
    case_id = await _assigned_case(stack)
    await stack.publisher.publish(
        SLA_SIGNALS, make_signal(case_id), key=case_id, now=datetime.now(UTC)
    )
    _, supervised = await stack.lifecycle.wait_for(
        lambda _, p: (
            isinstance(p, CaseLifecycleEvent)
            and p.case_id == case_id
            and p.transition is Transition.SUPERVISED
        )
    )
    assert isinstance(supervised, CaseLifecycleEvent) and supervised.actor.id == "sla"


async def test_a_signal_for_a_case_that_moved_on_is_dropped_and_the_next_applies(
    dispatch_stack: DispatchStack,
) -> None:
    stack = dispatch_stack
    stray = new_case_id(datetime.now(UTC))
    await stack.publisher.publish(SLA_SIGNALS, make_signal(stray), key=stray, now=datetime.now(UTC))
    case_id = await _assigned_case(stack)
    await stack.publisher.publish(
        SLA_SIGNALS, make_signal(case_id), key=stray, now=datetime.now(UTC)
    )  # same partition, after the stray one
    await stack.lifecycle.wait_for(
        lambda _, p: (
            isinstance(p, CaseLifecycleEvent)
            and p.case_id == case_id
            and p.transition is Transition.SUPERVISED
        )
    )
    assert not [p for _, p in stack.deadletters.seen]
