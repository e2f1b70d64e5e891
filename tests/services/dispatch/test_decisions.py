"""dispatch's pure decisions: routing, lifecycle moves and the delivery schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from libs.common.events import (
    CaseState,
    CaseSubmitted,
    Category,
    Location,
    Reporter,
    Source,
    Transition,
)
from libs.common.ids import new_case_id
from libs.common.refdata import ReferenceData, WeekdayCalendar, load_reference_data
from services.dispatch.delivery import Outcome, classify, next_attempt_at, webhook_body
from services.dispatch.lifecycle import NO_RULE_MATCHED, TransitionRefusedError, admit, assign
from services.dispatch.routing import RoutingDecision, route

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
CONFIG = Path(__file__).resolve().parents[3] / "config"


@pytest.fixture(scope="module")
def refdata() -> ReferenceData:
    return load_reference_data(CONFIG)


def make_case(category: str = "city.garbage", **reporter: str) -> CaseSubmitted:
    return CaseSubmitted(
        case_id=new_case_id(NOW),
        source=Source.GRID_WORKER,
        category=Category(code=category),
        title="路边暴露垃圾",
        description="人民路有垃圾",
        location=Location(unit_grid="430281001001001"),
        reporter=Reporter(kind="resident", **reporter),  # type: ignore[arg-type]
        occurred_at=NOW - timedelta(minutes=5),
        reported_at=NOW,
    )


def decide(case: CaseSubmitted, refdata: ReferenceData) -> RoutingDecision:
    return route(case, refdata.routing, now=NOW, calendar=WeekdayCalendar(), grid=refdata.grid)


def test_first_matching_rule_wins_and_is_recorded(refdata: ReferenceData) -> None:
    decision = decide(make_case("city.garbage"), refdata)
    assert decision.department == "chengguan"
    assert decision.rule_id is not None
    assert decision.ruleset_version == refdata.routing.version
    fire = decide(make_case("safety.fire"), refdata)
    hazard = decide(make_case("safety.hazard"), refdata)
    assert fire.department == "xiaofang"
    assert hazard.department == "yingji"


def test_no_rule_means_triage(refdata: ReferenceData) -> None:
    case = make_case("other.general")
    decision = decide(case, refdata)
    assert decision.department is None and decision.rule_id is None
    admission = admit(case, decision, now=NOW)
    assert admission.state is CaseState.TRIAGE
    assert [e.transition for e in admission.events] == [Transition.RECEIVED, Transition.TRIAGED]
    assert [e.version for e in admission.events] == [1, 2]
    assert admission.events[1].reason == NO_RULE_MATCHED
    assert admission.deliver_to is None


def test_routed_case_waits_for_delivery_then_is_assigned(refdata: ReferenceData) -> None:
    case = make_case()
    decision = decide(case, refdata)
    admission = admit(case, decision, now=NOW)
    assert admission.state is CaseState.REPORTED
    assert admission.deliver_to == "chengguan"
    assert [e.version for e in admission.events] == [1]
    event = assign(
        case_id=case.case_id,
        state=admission.state,
        version=admission.version,
        category=case.category.code,
        unit_grid=case.location.unit_grid,
        department="chengguan",
        routing=decision.snapshot(),
        now=NOW,
    )
    assert (event.version, event.from_state, event.to_state) == (
        2,
        CaseState.REPORTED,
        CaseState.ASSIGNED,
    )


def test_assigning_a_case_in_triage_is_refused_naming_the_state() -> None:
    with pytest.raises(TransitionRefusedError, match=r"state triage; allowed: supervise$"):
        assign(
            case_id=new_case_id(NOW),
            state=CaseState.TRIAGE,
            version=2,
            category="city.garbage",
            unit_grid=None,
            department="chengguan",
            routing=None,
            now=NOW,
        )


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.DELIVERED),
        (204, Outcome.DELIVERED),
        (410, Outcome.GONE),
        (500, Outcome.RETRY),
        (429, Outcome.RETRY),
        (404, Outcome.RETRY),
        (None, Outcome.RETRY),
    ],
)
def test_receiver_answers_are_classified(status: int | None, outcome: Outcome) -> None:
    assert classify(status) is outcome


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    def delay(attempts: int, jitter: float) -> float:
        at = next_attempt_at(
            attempts=attempts, now=NOW, base_seconds=2, max_seconds=60, jitter=jitter
        )
        return (at - NOW).total_seconds()

    assert [delay(n, 1.0) for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert delay(3, 0.0) == 4  # half of 8: jitter scales into [50 %, 100 %]
    assert delay(20, 1.0) == 60
    with pytest.raises(ValueError, match="jitter"):
        delay(1, 1.5)


def test_webhook_body_masks_the_reporter() -> None:
    case = make_case(name="张三丰", phone="13812348000", id_number="110105199001010123")
    body = webhook_body(case, delivery_id="msg_1", department="chengguan")
    reporter = body["case"]["reporter"]
    assert reporter["name"] == "张**"
    assert reporter["phone"] == "138****8000"
    assert reporter["id_number"] == "110105********0123"
    assert body["case"]["case_id"] == case.case_id
