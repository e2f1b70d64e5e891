"""Golden fixtures (tests/fixtures/hotline_bridge): the platform's payloads and what they must
become, both directions — orders → cases.submitted, lifecycle events → status updates, the
platform's decisions → dispatch partner-API calls."""

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
from services.hotline_bridge.mapping import load_mapping, map_order, plan, status_update
from services.hotline_bridge.partner import Decision, PushedEvent
from tests.factories import REPO_CONFIG

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hotline_bridge"
NOW = datetime(2026, 11, 27, 3, 0, 10, tzinfo=UTC)
REFDATA = load_reference_data(REPO_CONFIG)
MAPPING = load_mapping(REPO_CONFIG, refdata=REFDATA)
CALENDAR = load_calendar(REPO_CONFIG / "calendar.yaml")
NAMES = {code: d.short_name for code, d in REFDATA.departments.items()}


def _cases(name: str) -> list[dict[str, Any]]:
    return list(json.loads((FIXTURES / name).read_text()))


@pytest.mark.parametrize("fixture", _cases("orders.json"), ids=lambda f: f["name"])
def test_orders_become_the_golden_cases(fixture: dict[str, Any]) -> None:
    event = PushedEvent.model_validate(fixture["event"]).root
    case_id = new_case_id(NOW)
    mapped = map_order(
        event.order,  # type: ignore[union-attr]
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
        event, mapping=MAPPING, order_id="GD20261127000101", department_names=NAMES
    )
    got = None if update is None else update.model_dump(mode="json", exclude_none=True)
    expected = fixture["update"]
    if expected is not None:
        expected = dict(expected)
        for key in ("at", "until"):
            if key in expected:
                expected[key] = datetime.fromisoformat(expected[key]).astimezone(UTC).isoformat()
        assert got is not None
        got = {
            k: (
                datetime.fromisoformat(v).astimezone(UTC).isoformat() if k in ("at", "until") else v
            )
            for k, v in got.items()
        }
    assert got == expected


@pytest.mark.parametrize("fixture", _cases("decisions.json"), ids=lambda f: f["name"])
def test_decisions_become_the_golden_dispatch_calls(fixture: dict[str, Any]) -> None:
    decision = TypeAdapter(Decision).validate_python(fixture["decision"])
    standing = fixture["standing"]
    steps = plan(
        decision,
        state=CaseState(standing["state"]),
        verified=standing["verified"],
        pending=standing["pending"],
    )
    calls: list[list[Any]] = [[move, dict(body)] for move, body in steps.calls]
    for call in calls:  # times compared as instants
        if "until" in call[1]:
            call[1]["until"] = datetime.fromisoformat(call[1]["until"]).astimezone(UTC)
    for call in fixture["calls"]:
        if "until" in call[1]:
            call[1]["until"] = datetime.fromisoformat(call[1]["until"]).astimezone(UTC)
    assert (calls, steps.refusal) == (fixture["calls"], fixture["refusal"])
