"""Golden fixtures (tests/fixtures/citycare_bridge): the 数字城管 platform's payloads and what they
must become, both directions — filed cases → cases.submitted, lifecycle events → status updates,
verifications → dispatch partner-API moves; dispatch's deliveries → tasks filed on the platform,
the platform's steps on a task → department-API moves (and a passed 核查 → the partner-API moves
that close it), the centre's rework or reopen → the task taken back."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from libs.common.events import CaseLifecycleEvent, CaseState, CaseSubmitted
from libs.common.ids import new_case_id
from libs.common.refdata import load_reference_data
from libs.common.worktime import load_calendar
from services.citycare_bridge.inbound import Delivery
from services.citycare_bridge.mapping import (
    load_mapping,
    map_case,
    new_task,
    plan_task,
    plan_task_close,
    plan_verification,
    status_update,
    task_return,
)
from services.citycare_bridge.partner import (
    CaseVerified,
    PushedEvent,
    TaskProgressed,
    TaskVerified,
)
from tests.factories import REPO_CONFIG

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "citycare_bridge"
NOW = datetime(2026, 11, 27, 7, 0, 10, tzinfo=UTC)
REFDATA = load_reference_data(REPO_CONFIG)
MAPPING = load_mapping(REPO_CONFIG, refdata=REFDATA)
CALENDAR = load_calendar(REPO_CONFIG / "calendar.yaml")
NAMES = {code: d.short_name for code, d in REFDATA.departments.items()}
STEP: TypeAdapter[TaskProgressed | TaskVerified] = TypeAdapter(TaskProgressed | TaskVerified)


def _cases(name: str) -> list[dict[str, Any]]:
    return list(json.loads((FIXTURES / name).read_text()))


def _instants(body: dict[str, Any] | None) -> dict[str, Any] | None:
    """Times compared as instants (the platform speaks +08:00, events may say UTC)."""
    if body is None:
        return None
    return {
        k: datetime.fromisoformat(v).astimezone(UTC) if k in ("at", "deadline") else v
        for k, v in body.items()
    }


@pytest.mark.parametrize("fixture", _cases("filed_cases.json"), ids=lambda f: f["name"])
def test_filed_cases_become_the_golden_cases(fixture: dict[str, Any]) -> None:
    event = PushedEvent.model_validate(fixture["event"]).root
    case_id = new_case_id(NOW)
    mapped = map_case(
        event.case,  # type: ignore[union-attr]
        mapping=MAPPING,
        refdata=REFDATA,
        calendar=CALENDAR,
        case_id=case_id,
        now=NOW,
    )
    expected = CaseSubmitted.model_validate(
        {**fixture["case"], "case_id": case_id, "reported_at": NOW.isoformat()}
    )
    assert mapped.case == expected
    assert list(mapped.failures) == fixture["failures"]


@pytest.mark.parametrize("fixture", _cases("status_updates.json"), ids=lambda f: f["name"])
def test_lifecycle_events_become_the_golden_status_updates(fixture: dict[str, Any]) -> None:
    event = CaseLifecycleEvent.model_validate(fixture["event"])
    update = status_update(
        event, mapping=MAPPING, case_number="SZCG2026112700001", department_names=NAMES
    )
    got = None if update is None else update.model_dump(mode="json", exclude_none=True)
    assert _instants(got) == _instants(fixture["update"])


@pytest.mark.parametrize("fixture", _cases("verifications.json"), ids=lambda f: f["name"])
def test_verifications_become_the_golden_partner_calls(fixture: dict[str, Any]) -> None:
    verdict = CaseVerified.model_validate(fixture["verdict"])
    standing = fixture["standing"]
    steps = plan_verification(
        verdict, state=CaseState(standing["state"]), verified=standing["verified"]
    )
    calls = [[move, body] for move, body in steps.calls]
    assert (calls, steps.refusal) == (fixture["calls"], fixture["refusal"])


@pytest.mark.parametrize("fixture", _cases("tasks.json"), ids=lambda f: f["name"])
def test_deliveries_become_the_golden_tasks(fixture: dict[str, Any]) -> None:
    delivery = Delivery.model_validate(fixture["delivery"])
    task = new_task(delivery.case, mapping=MAPPING)
    got = task if isinstance(task, str) else task.model_dump(mode="json", exclude_none=True)
    assert got == fixture["task"]


@pytest.mark.parametrize("fixture", _cases("task_returns.json"), ids=lambda f: f["name"])
def test_tasks_taken_back_become_the_golden_returns(fixture: dict[str, Any]) -> None:
    taken_back = task_return(CaseLifecycleEvent.model_validate(fixture["event"]))
    kind = None if taken_back is None else taken_back.status
    body = None if taken_back is None else taken_back.model_dump(mode="json", exclude_none=True)
    assert kind == fixture["kind"]
    assert _instants(body) == _instants(fixture["body"])


@pytest.mark.parametrize("fixture", _cases("task_steps.json"), ids=lambda f: f["name"])
def test_task_steps_become_the_golden_department_calls(fixture: dict[str, Any]) -> None:
    step = None if fixture["step"] is None else STEP.validate_python(fixture["step"])
    steps = plan_task(step, state=CaseState(fixture["state"]))
    calls = [[move, body] for move, body in steps.calls]
    assert (calls, steps.refusal, steps.not_yet) == (
        fixture["calls"],
        fixture["refusal"],
        fixture["not_yet"],
    )


@pytest.mark.parametrize("fixture", _cases("task_closings.json"), ids=lambda f: f["name"])
def test_a_passed_task_verification_becomes_the_golden_closing_calls(
    fixture: dict[str, Any],
) -> None:
    step = TaskVerified.model_validate(fixture["step"])
    standing = fixture["standing"]
    steps = plan_task_close(step, state=CaseState(standing["state"]), verified=standing["verified"])
    calls = [[move, body] for move, body in steps.calls]
    assert (calls, steps.refusal) == (fixture["calls"], fixture["refusal"])
