"""Duplicates (并案), the pure part: distances, the nearest open case, merging a new case into it,
a merged case following its primary, and splitting a wrong merge."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from libs.common.events import (
    Actor,
    CaseState,
    CaseSubmitted,
    Category,
    Coordinates,
    Location,
    Reporter,
    RoutingSnapshot,
    ServiceRequest,
    Source,
    Transition,
)
from libs.common.ids import new_case_id
from libs.common.refdata import load_reference_data
from services.dispatch.duplicates import (
    Candidate,
    DuplicatePolicy,
    box,
    distance_meters,
    mergeable,
    nearest,
    position,
)
from services.dispatch.lifecycle import (
    SYSTEM,
    CaseView,
    LifecyclePolicy,
    Move,
    Rerouted,
    SignFor,
    Split,
    Supervise,
    TransitionRefusedError,
    allowed_moves,
    follow,
    merge,
    transition,
)
from services.dispatch.routing import RoutingDecision
from tests.factories import REPO_CONFIG

S, T = CaseState, Transition
NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
UNIT_GRID = "430281001001001"
HOLDER = Actor(kind="department", id="chengguan")
OPERATOR = Actor(kind="operator", id="OP01")
REFDATA = load_reference_data(REPO_CONFIG)
HERE = (28.0, 113.0)


def make_case(**changes: object) -> CaseSubmitted:
    case = CaseSubmitted(
        case_id=new_case_id(NOW),
        source=Source.HOTLINE,
        category=Category(code="city.garbage"),
        title="路边暴露垃圾",
        description="人民路有垃圾",
        location=Location(unit_grid=UNIT_GRID),
        reporter=Reporter(kind="resident", name="张三", phone="13812348000"),
        occurred_at=NOW,
        reported_at=NOW,
    )
    return case.model_copy(update=changes)


def primary_view(state: CaseState = S.ACCEPTED, **changes: object) -> CaseView:
    view = CaseView(
        case_id=new_case_id(NOW),
        version=4,
        state=state,
        category="city.garbage",
        unit_grid="430281001001002",
        owner_node="430281001",
        department="chengguan",
        co_handling=frozenset({"yingji"}),
        return_count=1,
    )
    return replace(view, **changes)  # type: ignore[arg-type]


# --- where, and how far ---------------------------------------------------------------------------


def test_distances_are_great_circle_metres() -> None:
    north = (HERE[0] + 0.001, HERE[1])  # a thousandth of a degree of latitude: 111.2 m
    assert distance_meters(HERE, north) == pytest.approx(111.19, abs=0.05)
    assert distance_meters(HERE, north) == distance_meters(north, HERE)
    assert distance_meters(HERE, HERE) == 0
    east = (HERE[0], HERE[1] + 0.001)  # shorter by cos(28°)
    assert distance_meters(HERE, east) == pytest.approx(111.19 * 0.88295, abs=0.05)


def test_the_search_box_holds_every_point_within_the_distance() -> None:
    area = box(HERE, 100)
    for bearing in map(math.radians, range(0, 360, 15)):
        # 0.000899° of latitude is 99.96 m: walk that far out in each direction
        lat = HERE[0] + 0.000899 * math.cos(bearing)
        lon = HERE[1] + 0.000899 * math.sin(bearing) / math.cos(math.radians(HERE[0]))
        assert distance_meters(HERE, (lat, lon)) < 100
        assert area.min_lat <= lat <= area.max_lat and area.min_lon <= lon <= area.max_lon
    assert not area.min_lat <= HERE[0] + 0.0011 <= area.max_lat


def test_nearest_takes_the_closest_within_the_distance() -> None:
    far = Candidate("far", HERE[0] + 0.0008, HERE[1])  # 89 m
    near = Candidate("near", HERE[0] + 0.0003, HERE[1])  # 33 m
    beyond = Candidate("beyond", HERE[0] + 0.002, HERE[1])  # 222 m
    assert nearest(HERE, [far, beyond, near], 100) == near
    assert nearest(HERE, [far, beyond], 50) is None
    assert nearest(HERE, [], 50) is None


def test_a_case_is_at_its_coordinates_and_nowhere_without_them() -> None:
    point = Coordinates(lat=28.1, lon=113.2)
    exact = make_case(location=Location(unit_grid=UNIT_GRID, coordinates=point))
    assert position(exact) == (28.1, 113.2)
    # a unit grid spans hundreds of metres: a case placed only by it is never merged
    assert position(make_case()) is None
    assert position(make_case(location=Location(address="人民路 12 号"))) is None


def test_proxy_services_are_never_duplicates() -> None:
    assert mergeable(make_case(), REFDATA)
    item = next(iter(REFDATA.service_items.values()))
    service = make_case(
        category=Category(code=item.category),
        service=ServiceRequest(item=item.code, item_name=item.name, documents=()),
    )
    assert not mergeable(service, REFDATA)
    assert not mergeable(make_case(category=Category(code=item.category)), REFDATA)


def test_a_zero_distance_turns_merging_off() -> None:
    assert not DuplicatePolicy(0, timedelta(hours=1)).enabled
    assert DuplicatePolicy(50, timedelta(hours=1)).enabled


# --- merge ----------------------------------------------------------------------------------------


def test_a_duplicate_is_received_then_merged_and_takes_the_primarys_standing() -> None:
    primary = primary_view(supervised=True)
    case = make_case()
    admission = merge(case, RoutingDecision("chengguan", "r1", "v3"), primary, now=NOW)
    received, merged = admission.events
    assert (received.transition, received.to_state, received.version) == (T.RECEIVED, S.REPORTED, 1)
    assert received.routing == RoutingSnapshot(rule_id="r1", ruleset_version="v3")
    assert (merged.transition, merged.from_state, merged.to_state) == (
        T.MERGED,
        S.REPORTED,
        S.ACCEPTED,
    )
    assert (merged.merged_into, merged.version, merged.department) == (
        primary.case_id,
        2,
        "chengguan",
    )
    assert merged.reason == f"duplicate of {primary.case_id} (并案)"
    assert merged.unit_grid == UNIT_GRID and merged.owner_node == "430281001"
    assert merged.return_count == 0 and merged.supervised
    assert admission.deliver_to is None  # never delivered a second time
    view = admission.view
    assert (view.state, view.merged_into, view.co_handling) == (
        S.ACCEPTED,
        primary.case_id,
        frozenset({"yingji"}),
    )
    assert not any(
        "张三" in e.model_dump_json() or "1381234" in e.model_dump_json() for e in admission.events
    )


@pytest.mark.parametrize("state", [S.CLOSED, S.CANCELLED])
def test_nothing_merges_into_a_finished_or_merged_case(state: CaseState) -> None:
    decision = RoutingDecision("chengguan", "r1", "v3")
    with pytest.raises(ValueError, match="not an open primary"):
        merge(make_case(), decision, primary_view(state), now=NOW)
    with pytest.raises(ValueError, match="not an open primary"):
        merge(make_case(), decision, primary_view(merged_into=new_case_id(NOW)), now=NOW)


def _merged(primary: CaseView) -> CaseView:
    return merge(make_case(), RoutingDecision("chengguan", "r1", "v3"), primary, now=NOW).view


def _policy(department: str | None = "yingji") -> LifecyclePolicy:
    def reroute(_: CaseView, excluded: frozenset[str]) -> Rerouted | None:
        assert excluded == frozenset()  # a split case starts over: nobody returned it
        return (
            Rerouted(department, RoutingSnapshot(rule_id="r9", ruleset_version="v3"))
            if department
            else None
        )

    return LifecyclePolicy(city_node="430281", reroute=reroute)


def test_a_merged_case_follows_each_move_of_its_primary() -> None:
    primary = primary_view(S.ASSIGNED)
    view = _merged(primary)
    signed = transition(primary, SignFor(actor=HOLDER), now=NOW, policy=_policy()).events[0]
    echo_outcome = follow(view, signed)
    [echo] = echo_outcome.events
    assert (echo.case_id, echo.version, echo.merged_into) == (view.case_id, 3, primary.case_id)
    assert (echo.transition, echo.actor, echo.from_state, echo.to_state) == (
        T.SIGNED,
        HOLDER,
        S.ASSIGNED,
        S.ACCEPTED,
    )
    assert (echo.unit_grid, echo.return_count) == (UNIT_GRID, 0)
    assert echo_outcome.view.state is S.ACCEPTED and echo_outcome.view.version == 3

    supervised = transition(
        replace(primary, state=S.ACCEPTED),
        Supervise(actor=OPERATOR, note="督办"),
        now=NOW,
        policy=_policy(),
    ).events[0]
    after = follow(echo_outcome.view, supervised)
    assert after.view.supervised and after.events[0].note == "督办"
    with pytest.raises(ValueError, match="does not follow"):
        follow(primary_view(), signed)


def test_a_merged_case_takes_no_move_but_split() -> None:
    view = _merged(primary_view(S.ACCEPTED))
    assert allowed_moves(view, OPERATOR) == (Move.SPLIT,)
    assert allowed_moves(view, HOLDER) == ()
    with pytest.raises(
        TransitionRefusedError, match=r"merged into another \(并案\).*allowed: split"
    ):
        transition(view, Supervise(actor=OPERATOR, note="督办"), now=NOW, policy=_policy())
    suspended = replace(view, suspended=True)
    assert allowed_moves(suspended, OPERATOR) == (Move.SPLIT,)


def test_split_starts_the_case_over_and_routes_it_on_its_own() -> None:
    view = _merged(primary_view(S.ACCEPTED, supervised=True))
    outcome = transition(
        view, Split(actor=OPERATOR, reason="不是同一处垃圾"), now=NOW, policy=_policy()
    )
    split, routed = outcome.events
    assert (split.transition, split.from_state, split.to_state) == (T.SPLIT, S.ACCEPTED, S.REPORTED)
    assert (split.merged_into, split.department, split.reason) == (None, None, "不是同一处垃圾")
    assert (routed.transition, routed.to_state, routed.department) == (
        T.ASSIGNED,
        S.ASSIGNED,
        "yingji",
    )
    assert routed.actor == SYSTEM and routed.routing == RoutingSnapshot(
        rule_id="r9", ruleset_version="v3"
    )
    after = outcome.view
    assert (after.merged_into, after.supervised, after.co_handling) == (None, False, frozenset())
    assert after.version == view.version + 2

    nobody = transition(
        view, Split(actor=OPERATOR, reason="并案有误"), now=NOW, policy=_policy(None)
    )
    assert [e.transition for e in nobody.events] == [T.SPLIT, T.TRIAGED]
    assert nobody.view.owner_node == "430281001"


def test_only_a_merged_case_can_be_split() -> None:
    with pytest.raises(TransitionRefusedError, match=r"\(the case is not merged into another\)"):
        transition(
            primary_view(), Split(actor=OPERATOR, reason="并案有误"), now=NOW, policy=_policy()
        )
