"""The case lifecycle's pure state machine: every move, in every state, by every kind of actor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from libs.common.events import (
    Actor,
    ActorKind,
    AttachmentRef,
    CaseLifecycleEvent,
    CaseState,
    CaseSubmitted,
    Category,
    Location,
    Reporter,
    RoutingSnapshot,
    Source,
    Transition,
)
from libs.common.ids import new_case_id
from services.dispatch.lifecycle import (
    ALLOWED,
    SYSTEM,
    Assign,
    Cancel,
    CaseView,
    Close,
    Command,
    DecideExtension,
    Escalate,
    InvalidCommandError,
    LifecyclePolicy,
    Move,
    NotAllowedError,
    Outcome,
    Progress,
    Reassign,
    Reopen,
    RequestExtension,
    Rerouted,
    Resolve,
    Resume,
    Return,
    SignFor,
    Split,
    Supervise,
    Suspend,
    TransitionRefusedError,
    Verify,
    admit,
    allowed_moves,
    assign,
    transition,
)
from services.dispatch.routing import RoutingDecision

S = CaseState
T = Transition
NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
CITY = "430281"
UNIT_GRID = "430281001001001"
PRIMARY = new_case_id(NOW)  # the case a merged one (并案) follows
HOLDER = Actor(kind="department", id="chengguan")
OTHER_DEPARTMENT = Actor(kind="department", id="xiaofang")
OPERATOR = Actor(kind="operator", id="op-0001")
PARTNER = Actor(kind="partner", id="hotline12345")
ACTOR_OF_KIND: dict[ActorKind, Actor] = {
    "system": SYSTEM,
    "department": HOLDER,
    "operator": OPERATOR,
    "partner": PARTNER,
}
OPEN_STATES = {S.REPORTED, S.TRIAGE, S.ASSIGNED, S.ACCEPTED, S.RESOLVED}

# Written out by hand, not derived from lifecycle.RULES: the table the tests hold the code to.
EXPECTED: dict[tuple[Move, ActorKind], set[CaseState]] = {
    (Move.ASSIGN, "system"): {S.REPORTED},
    (Move.ASSIGN, "operator"): {S.TRIAGE},
    (Move.SIGN_FOR, "department"): {S.ASSIGNED},
    (Move.RETURN, "department"): {S.ASSIGNED, S.ACCEPTED},
    (Move.REASSIGN, "operator"): {S.ASSIGNED, S.ACCEPTED},
    (Move.ESCALATE, "operator"): {S.TRIAGE, S.ASSIGNED, S.ACCEPTED},
    (Move.ESCALATE, "system"): {S.TRIAGE, S.ASSIGNED, S.ACCEPTED},
    (Move.REQUEST_EXTENSION, "department"): {S.ACCEPTED},
    (Move.DECIDE_EXTENSION, "operator"): {S.ACCEPTED},
    (Move.DECIDE_EXTENSION, "partner"): {S.ACCEPTED},
    (Move.SUSPEND, "operator"): {S.ASSIGNED, S.ACCEPTED},
    (Move.RESUME, "operator"): {S.ASSIGNED, S.ACCEPTED},
    (Move.PROGRESS, "department"): {S.ACCEPTED},
    (Move.RESOLVE, "department"): {S.ACCEPTED},
    (Move.VERIFY, "operator"): {S.RESOLVED},
    (Move.VERIFY, "partner"): {S.RESOLVED},
    (Move.CLOSE, "operator"): {S.RESOLVED},
    (Move.CLOSE, "partner"): {S.RESOLVED},
    (Move.REOPEN, "operator"): {S.CLOSED},
    (Move.REOPEN, "partner"): {S.CLOSED},
    (Move.SUPERVISE, "operator"): OPEN_STATES,
    (Move.SUPERVISE, "system"): OPEN_STATES,
    (Move.SUPERVISE, "partner"): OPEN_STATES,
    (Move.CANCEL, "operator"): OPEN_STATES,
    (Move.CANCEL, "partner"): OPEN_STATES,
    (Move.SPLIT, "operator"): OPEN_STATES,
}
EXPECTED_TRANSITION: dict[Move, T] = {
    Move.ASSIGN: T.ASSIGNED,
    Move.SIGN_FOR: T.SIGNED,
    Move.RETURN: T.RETURNED,
    Move.REASSIGN: T.REASSIGNED,
    Move.ESCALATE: T.ESCALATED,
    Move.REQUEST_EXTENSION: T.EXTENSION_REQUESTED,
    Move.DECIDE_EXTENSION: T.EXTENSION_APPROVED,
    Move.SUSPEND: T.SUSPENDED,
    Move.RESUME: T.RESUMED,
    Move.PROGRESS: T.PROGRESSED,
    Move.RESOLVE: T.RESOLVED,
    Move.VERIFY: T.VERIFIED,
    Move.CLOSE: T.CLOSED,
    Move.REOPEN: T.REOPENED,
    Move.SUPERVISE: T.SUPERVISED,
    Move.CANCEL: T.CANCELLED,
    Move.SPLIT: T.SPLIT,
}
ATTACHMENT = AttachmentRef(sha256="ab" * 32, media_type="image/jpeg", size=48213)


def make_view(state: CaseState = S.ASSIGNED, **changes: object) -> CaseView:
    view = CaseView(
        case_id=new_case_id(NOW),
        version=5,
        state=state,
        category="city.garbage",
        unit_grid=UNIT_GRID,
        owner_node=UNIT_GRID,
        department="chengguan",
    )
    return replace(view, **changes)  # type: ignore[arg-type]


def make_command(move: Move, actor: Actor) -> Command:
    """A well-formed command of each move, by `actor`."""
    later = NOW + timedelta(days=3)
    builders: dict[Move, Callable[[], Command]] = {
        Move.ASSIGN: lambda: Assign(actor=actor, department="yingji"),
        Move.SIGN_FOR: lambda: SignFor(actor=actor),
        Move.RETURN: lambda: Return(actor=actor, reason_code="not_our_duty"),
        Move.REASSIGN: lambda: Reassign(actor=actor, department="yingji"),
        Move.ESCALATE: lambda: Escalate(actor=actor),
        Move.REQUEST_EXTENSION: lambda: RequestExtension(
            actor=actor, until=later, reason="需协调产权单位"
        ),
        Move.DECIDE_EXTENSION: lambda: DecideExtension(actor=actor, approve=True),
        Move.SUSPEND: lambda: Suspend(actor=actor, reason="等待法院裁定"),
        Move.RESUME: lambda: Resume(actor=actor),
        Move.PROGRESS: lambda: Progress(actor=actor, note="已联系环卫所"),
        Move.RESOLVE: lambda: Resolve(actor=actor, result="垃圾已清运", attachments=(ATTACHMENT,)),
        Move.VERIFY: lambda: Verify(actor=actor, passed=True),
        Move.CLOSE: lambda: Close(actor=actor),
        Move.REOPEN: lambda: Reopen(actor=actor, reason="回访不满意"),
        Move.SUPERVISE: lambda: Supervise(actor=actor, note="督办：请加快办理"),
        Move.CANCEL: lambda: Cancel(actor=actor, reason="重复上报"),
        Move.SPLIT: lambda: Split(actor=actor, reason="并案有误：不是同一处"),
    }
    return builders[move]()


def ready_for(move: Move, state: CaseState) -> CaseView:
    """A case in `state` with the flags `move` needs (a pending request to decide, …)."""
    flags: dict[Move, dict[str, object]] = {
        Move.DECIDE_EXTENSION: {
            "extension_pending": True,
            "extension_requested_until": NOW + timedelta(days=2),
        },
        Move.RESUME: {"suspended": True},
        Move.CLOSE: {"verified": True},
        Move.SPLIT: {"merged_into": PRIMARY},
    }
    return make_view(state, **flags.get(move, {}))


def policy(
    reroute: Callable[[CaseView, frozenset[str]], Rerouted | str | None] = lambda v, x: "yingji",
    max_returns: int = 3,
) -> LifecyclePolicy:
    return LifecyclePolicy(
        city_node=CITY, reroute=reroute, max_returns_before_city_triage=max_returns
    )


def run(view: CaseView, *commands: Command, at: datetime = NOW) -> Outcome:
    """Apply commands one after the other; the last view and every event."""
    events: list[CaseLifecycleEvent] = []
    for command in commands:
        outcome = transition(view, command, now=at, policy=policy())
        view = outcome.view
        events.extend(outcome.events)
    return Outcome(view, tuple(events))


def transitions(outcome: Outcome) -> list[T]:
    return [event.transition for event in outcome.events]


# --- the table ------------------------------------------------------------------------------------

TABLE = [(move, kind, state) for (move, kind) in EXPECTED for state in CaseState]


@pytest.mark.parametrize(("move", "kind", "state"), TABLE)
def test_every_move_in_every_state(move: Move, kind: ActorKind, state: CaseState) -> None:
    view = ready_for(move, state)
    actor = ACTOR_OF_KIND[kind]
    command = make_command(move, actor)

    if state in EXPECTED[(move, kind)]:
        outcome = transition(view, command, now=NOW, policy=policy())
        first = outcome.events[0]
        assert first.transition is EXPECTED_TRANSITION[move]
        assert (first.from_state, first.version, first.actor) == (state, view.version + 1, actor)
        assert [e.version for e in outcome.events] == list(
            range(view.version + 1, view.version + 1 + len(outcome.events))
        )
        assert outcome.view.version == outcome.events[-1].version
        assert outcome.view.state is outcome.events[-1].to_state
        assert all(e.at == NOW and e.case_id == view.case_id for e in outcome.events)
    else:
        with pytest.raises(TransitionRefusedError) as refused:
            transition(view, command, now=NOW, policy=policy())
        allowed = allowed_moves(view, actor)
        names = ", ".join(m.value for m in allowed) or "none"
        assert str(refused.value) == (
            f"cannot {move.value} a case in state {state.value}; allowed: {names}"
        )
        assert (refused.value.current, refused.value.move) == (state, move)
        assert refused.value.allowed == allowed
        assert all(state in EXPECTED[(m, kind)] for m in allowed)


def test_the_allowed_table_is_the_union_over_actors() -> None:
    for state in CaseState:
        expected = {move for (move, _), states in EXPECTED.items() if state in states}
        assert set(ALLOWED[state]) == expected
    assert ALLOWED[S.CANCELLED] == ()
    assert ALLOWED[S.CLOSED] == (Move.REOPEN,)


def test_refusal_names_the_state_and_the_moves_open_to_the_actor() -> None:
    with pytest.raises(
        TransitionRefusedError, match=r"^cannot sign_for a case in state reported; allowed: none$"
    ):
        transition(make_view(S.REPORTED), SignFor(actor=HOLDER), now=NOW, policy=policy())
    with pytest.raises(
        TransitionRefusedError,
        match=r"^cannot verify a case in state accepted; allowed: reassign, escalate, "
        r"suspend, supervise, cancel$",
    ):
        transition(
            make_view(S.ACCEPTED), Verify(actor=OPERATOR, passed=True), now=NOW, policy=policy()
        )
    with pytest.raises(
        TransitionRefusedError,
        match=r"^cannot sign_for a case in state accepted; allowed: return, "
        r"request_extension, progress, resolve$",
    ):
        transition(make_view(S.ACCEPTED), SignFor(actor=HOLDER), now=NOW, policy=policy())


# --- actors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("move", list(Move))
def test_an_actor_kind_without_the_move_is_not_allowed(move: Move) -> None:
    for kind, actor in ACTOR_OF_KIND.items():
        if (move, kind) in EXPECTED:
            continue
        view = ready_for(move, next(iter(states_of(move))))
        with pytest.raises(NotAllowedError, match=f"a {kind} may not {move.value} a case"):
            transition(view, make_command(move, actor), now=NOW, policy=policy())


def states_of(move: Move) -> set[CaseState]:
    return set().union(*(states for (m, _), states in EXPECTED.items() if m is move))


def test_a_department_acts_only_on_the_case_it_holds() -> None:
    view = make_view(S.ASSIGNED)
    with pytest.raises(NotAllowedError, match="department xiaofang may not sign_for"):
        transition(view, SignFor(actor=OTHER_DEPARTMENT), now=NOW, policy=policy())
    triage = make_view(S.TRIAGE, department=None)
    with pytest.raises(NotAllowedError):
        transition(triage, SignFor(actor=HOLDER), now=NOW, policy=policy())
    assert allowed_moves(view, OTHER_DEPARTMENT) == ()


def test_a_co_handling_department_may_add_progress_and_nothing_else() -> None:
    view = make_view(S.ACCEPTED, co_handling=frozenset({"xiaofang"}))
    outcome = transition(
        view, Progress(actor=OTHER_DEPARTMENT, note="已排查消防通道"), now=NOW, policy=policy()
    )
    assert transitions(outcome) == [T.PROGRESSED]
    assert outcome.events[0].co_handling == ("xiaofang",)
    assert allowed_moves(view, OTHER_DEPARTMENT) == (Move.PROGRESS,)
    with pytest.raises(NotAllowedError):
        transition(view, Resolve(actor=OTHER_DEPARTMENT, result="完成"), now=NOW, policy=policy())


def test_assign_with_co_handling_names_other_departments_once() -> None:
    outcome = transition(
        make_view(S.TRIAGE, department=None),
        Assign(actor=OPERATOR, department="chengguan", co_handling=("yingji", "xiaofang")),
        now=NOW,
        policy=policy(),
    )
    assert outcome.view.co_handling == {"yingji", "xiaofang"}
    assert outcome.events[0].co_handling == ("xiaofang", "yingji")
    with pytest.raises(ValidationError, match="co_handling"):
        Assign(actor=OPERATOR, department="chengguan", co_handling=("chengguan",))


# --- returns --------------------------------------------------------------------------------------


def test_a_return_needs_a_reason_code() -> None:
    with pytest.raises(ValidationError, match="reason_code"):
        Return(actor=HOLDER)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="reason_code"):
        Return(actor=HOLDER, reason_code="不是我们的")


def test_a_return_reroutes_excluding_every_department_that_returned_it() -> None:
    asked: list[frozenset[str]] = []
    chain = iter(["yingji", "minzheng"])

    def reroute(view: CaseView, excluded: frozenset[str]) -> Rerouted:
        asked.append(excluded)
        assert view.department is None and view.state is S.REPORTED
        return Rerouted(next(chain), RoutingSnapshot(rule_id="fallback", ruleset_version="v7"))

    rules = policy(reroute)
    view = make_view(S.ASSIGNED)
    first = transition(
        view,
        Return(actor=HOLDER, reason_code="not_our_duty", note="属环卫所职责"),
        now=NOW,
        policy=rules,
    )
    assert transitions(first) == [T.RETURNED, T.ASSIGNED]
    returned, assigned = first.events
    assert (returned.from_state, returned.to_state) == (S.ASSIGNED, S.REPORTED)
    assert (returned.reason_code, returned.note) == ("not_our_duty", "属环卫所职责")
    assert (returned.previous_department, returned.department) == ("chengguan", None)
    assert (returned.actor, returned.return_count) == (HOLDER, 1)
    assert (assigned.from_state, assigned.to_state, assigned.actor) == (
        S.REPORTED,
        S.ASSIGNED,
        SYSTEM,
    )
    assert (assigned.department, assigned.previous_department) == ("yingji", "chengguan")
    assert assigned.routing == RoutingSnapshot(rule_id="fallback", ruleset_version="v7")
    assert [e.version for e in first.events] == [6, 7]

    yingji = Actor(kind="department", id="yingji")
    signed = transition(first.view, SignFor(actor=yingji), now=NOW, policy=rules).view
    second = transition(
        signed, Return(actor=yingji, reason_code="wrong_location"), now=NOW, policy=rules
    )
    assert asked == [frozenset({"chengguan"}), frozenset({"chengguan", "yingji"})]
    assert second.view.department == "minzheng"
    assert second.view.returned_by == {"chengguan", "yingji"}
    assert second.view.return_count == 2


def test_the_configured_return_sends_the_case_to_triage_at_the_city_centre() -> None:
    rerouted: list[str] = []

    def reroute(view: CaseView, excluded: frozenset[str]) -> str:
        rerouted.append(view.case_id)
        return f"dept{len(excluded)}"

    rules = policy(reroute, max_returns=3)
    view = make_view(S.ASSIGNED)
    for expected in (T.ASSIGNED, T.ASSIGNED, T.TRIAGED):
        holder = Actor(kind="department", id=view.department or "")
        outcome = transition(
            view, Return(actor=holder, reason_code="not_our_duty"), now=NOW, policy=rules
        )
        assert transitions(outcome) == [T.RETURNED, expected]
        view = outcome.view
    assert len(rerouted) == 2  # the third return goes straight to the city
    triaged = outcome.events[-1]
    assert (triaged.to_state, triaged.owner_node, triaged.return_count) == (S.TRIAGE, CITY, 3)
    assert triaged.reason == "returned 3 times: the city centre triages"
    assert (view.state, view.department, view.owner_node) == (S.TRIAGE, None, CITY)

    once = policy(reroute, max_returns=1)
    first = transition(
        make_view(S.ACCEPTED), Return(actor=HOLDER, reason_code="x_y"), now=NOW, policy=once
    )
    assert transitions(first) == [T.RETURNED, T.TRIAGED]
    assert first.view.owner_node == CITY


def test_a_return_with_nobody_left_waits_in_triage_at_the_owning_node() -> None:
    outcome = transition(
        make_view(S.ACCEPTED, owner_node="430281001"),
        Return(actor=HOLDER, reason_code="not_our_duty"),
        now=NOW,
        policy=policy(lambda v, x: None),
    )
    assert transitions(outcome) == [T.RETURNED, T.TRIAGED]
    assert (outcome.view.state, outcome.view.owner_node) == (S.TRIAGE, "430281001")
    assert (
        outcome.events[-1].reason is not None and "returned the case" in outcome.events[-1].reason
    )


def test_a_reroute_choosing_a_returner_is_a_bug_not_a_move() -> None:
    with pytest.raises(ValueError, match="reroute chose chengguan"):
        transition(
            make_view(S.ASSIGNED),
            Return(actor=HOLDER, reason_code="not_our_duty"),
            now=NOW,
            policy=policy(lambda v, x: "chengguan"),
        )


def test_a_return_withdraws_a_pending_extension_request() -> None:
    view = make_view(
        S.ACCEPTED, extension_pending=True, extension_requested_until=NOW + timedelta(days=1)
    )
    outcome = transition(
        view, Return(actor=HOLDER, reason_code="not_our_duty"), now=NOW, policy=policy()
    )
    assert not outcome.view.extension_pending and outcome.view.extension_requested_until is None
    assert not any(e.extension_pending for e in outcome.events)


# --- reassign, escalate ---------------------------------------------------------------------------


def test_reassign_hands_the_case_to_another_department_which_signs_again() -> None:
    outcome = transition(
        make_view(S.ACCEPTED),
        Reassign(actor=OPERATOR, department="yingji", reason="属应急职责"),
        now=NOW,
        policy=policy(),
    )
    event = outcome.events[0]
    assert (event.transition, event.to_state) == (T.REASSIGNED, S.ASSIGNED)
    assert (event.department, event.previous_department, event.reason) == (
        "yingji",
        "chengguan",
        "属应急职责",
    )
    with pytest.raises(InvalidCommandError, match="holds the case already"):
        transition(
            make_view(S.ACCEPTED),
            Reassign(actor=OPERATOR, department="chengguan"),
            now=NOW,
            policy=policy(),
        )


def test_escalation_climbs_the_grid_to_the_city_and_keeps_the_state() -> None:
    view = make_view(S.TRIAGE, department=None)
    climbed = []
    for _ in range(3):
        outcome = transition(
            view, Escalate(actor=OPERATOR, reason="本级无法协调"), now=NOW, policy=policy()
        )
        view = outcome.view
        climbed.append(outcome.events[0].owner_node)
        assert outcome.events[0].to_state is S.TRIAGE
    assert climbed == ["430281001001", "430281001", "430281"]
    with pytest.raises(
        TransitionRefusedError,
        match=r"cannot escalate a case in state triage \(the city centre owns the case already\); "
        r"allowed: assign, supervise, cancel",
    ):
        transition(view, Escalate(actor=OPERATOR), now=NOW, policy=policy())
    not_placed = make_view(S.ASSIGNED, owner_node=None, unit_grid=None)
    assert Move.ESCALATE not in allowed_moves(not_placed, OPERATOR)


# --- flags ----------------------------------------------------------------------------------------


def test_suspension_blocks_handling_until_resumed() -> None:
    suspended = run(make_view(S.ACCEPTED), Suspend(actor=OPERATOR, reason="等待法院裁定"))
    view = suspended.view
    assert (view.state, view.suspended) == (S.ACCEPTED, True)
    assert suspended.events[0].suspended and suspended.events[0].to_state is S.ACCEPTED
    assert allowed_moves(view, HOLDER) == (Move.PROGRESS,)
    assert allowed_moves(view, OPERATOR) == (Move.RESUME, Move.SUPERVISE, Move.CANCEL)
    with pytest.raises(
        TransitionRefusedError,
        match=r"^cannot resolve a case in state accepted \(the case is suspended\); allowed: progress$",
    ):
        transition(view, Resolve(actor=HOLDER, result="完成"), now=NOW, policy=policy())
    with pytest.raises(TransitionRefusedError, match="the case is suspended"):
        transition(view, Suspend(actor=OPERATOR, reason="再次挂起"), now=NOW, policy=policy())
    noted = run(view, Progress(actor=HOLDER, note="仍在等待裁定"))
    assert noted.view.suspended and transitions(noted) == [T.PROGRESSED]

    resumed = run(view, Resume(actor=OPERATOR))
    assert not resumed.view.suspended and not resumed.events[0].suspended
    assert Move.RESOLVE in allowed_moves(resumed.view, HOLDER)
    with pytest.raises(TransitionRefusedError, match=r"\(the case is not suspended\)"):
        transition(resumed.view, Resume(actor=OPERATOR), now=NOW, policy=policy())


def test_a_pending_extension_request_waits_for_one_decision() -> None:
    until = NOW + timedelta(days=5)
    asked = run(
        make_view(S.ACCEPTED), RequestExtension(actor=HOLDER, until=until, reason="需协调产权单位")
    )
    view = asked.view
    event = asked.events[0]
    assert (event.transition, event.extension_until, event.extension_pending) == (
        T.EXTENSION_REQUESTED,
        until,
        True,
    )
    with pytest.raises(TransitionRefusedError, match=r"\(an extension request awaits a decision\)"):
        transition(
            view,
            RequestExtension(actor=HOLDER, until=until, reason="再次申请"),
            now=NOW,
            policy=policy(),
        )
    with pytest.raises(TransitionRefusedError, match=r"\(an extension request awaits a decision\)"):
        transition(view, Suspend(actor=OPERATOR, reason="挂起"), now=NOW, policy=policy())
    assert Move.PROGRESS in allowed_moves(view, HOLDER)

    approved = run(view, DecideExtension(actor=OPERATOR, approve=True))
    assert transitions(approved) == [T.EXTENSION_APPROVED]
    assert approved.events[0].extension_until == until
    assert not approved.view.extension_pending
    shorter = run(
        view, DecideExtension(actor=OPERATOR, approve=True, until=NOW + timedelta(days=2))
    )
    assert shorter.events[0].extension_until == NOW + timedelta(days=2)
    denied = run(view, DecideExtension(actor=OPERATOR, approve=False, note="理由不充分"))
    assert transitions(denied) == [T.EXTENSION_DENIED]
    assert denied.events[0].extension_until is None and not denied.view.extension_pending
    with pytest.raises(TransitionRefusedError, match=r"\(no extension request is pending\)"):
        transition(
            denied.view, DecideExtension(actor=OPERATOR, approve=True), now=NOW, policy=policy()
        )


def test_extensions_end_in_the_future() -> None:
    with pytest.raises(InvalidCommandError, match="future"):
        transition(
            make_view(S.ACCEPTED),
            RequestExtension(actor=HOLDER, until=NOW, reason="需协调"),
            now=NOW,
            policy=policy(),
        )
    pending = make_view(
        S.ACCEPTED, extension_pending=True, extension_requested_until=NOW + timedelta(days=1)
    )
    with pytest.raises(InvalidCommandError, match="future"):
        transition(
            pending,
            DecideExtension(actor=OPERATOR, approve=True),
            now=NOW + timedelta(days=2),
            policy=policy(),
        )
    with pytest.raises(ValidationError, match="denied extension"):
        DecideExtension(actor=OPERATOR, approve=False, until=NOW)


def test_resolving_withdraws_a_pending_extension_request() -> None:
    view = make_view(
        S.ACCEPTED, extension_pending=True, extension_requested_until=NOW + timedelta(days=1)
    )
    outcome = run(view, Resolve(actor=HOLDER, result="已提前办结"))
    assert outcome.view.state is S.RESOLVED and not outcome.view.extension_pending


def test_supervision_is_a_flag_and_keeps_the_state() -> None:
    for state in OPEN_STATES:
        view = make_view(state)
        outcome = run(
            view,
            Supervise(actor=OPERATOR, note="督办：限期办结"),
            Supervise(actor=OPERATOR, note="二次督办"),
        )
        assert [e.to_state for e in outcome.events] == [state, state]
        assert all(e.supervised for e in outcome.events) and outcome.view.supervised
        assert outcome.view.version == view.version + 2
    suspended = make_view(S.ACCEPTED, suspended=True)
    assert run(suspended, Supervise(actor=OPERATOR, note="督办")).view.supervised


# --- verification, close, reopen, cancel ----------------------------------------------------------


def test_failed_verification_sends_the_case_back_to_the_same_department_counted() -> None:
    resolved = make_view(S.RESOLVED)
    with pytest.raises(ValidationError, match="failed verification needs a note"):
        Verify(actor=OPERATOR, passed=False)
    once = run(resolved, Verify(actor=OPERATOR, passed=False, note="现场仍有垃圾"))
    event = once.events[0]
    assert (event.transition, event.from_state, event.to_state) == (
        T.REWORK,
        S.RESOLVED,
        S.ACCEPTED,
    )
    assert (event.department, event.rework_count, event.note) == ("chengguan", 1, "现场仍有垃圾")
    twice = run(
        once.view,
        Resolve(actor=HOLDER, result="已再次清运"),
        Verify(actor=OPERATOR, passed=False, note="仍未清理干净"),
    )
    assert twice.view.rework_count == 2 and twice.view.department == "chengguan"
    passed = run(
        twice.view, Resolve(actor=HOLDER, result="清运完毕"), Verify(actor=OPERATOR, passed=True)
    )
    assert passed.view.state is S.RESOLVED and passed.view.verified
    assert transitions(passed) == [T.RESOLVED, T.VERIFIED]


def test_close_needs_a_verified_result() -> None:
    with pytest.raises(
        TransitionRefusedError, match=r"\(the result is not verified yet\); allowed: verify"
    ):
        transition(make_view(S.RESOLVED), Close(actor=OPERATOR), now=NOW, policy=policy())
    verified = make_view(S.RESOLVED, verified=True)
    with pytest.raises(TransitionRefusedError, match=r"\(the result is verified already\)"):
        transition(verified, Verify(actor=OPERATOR, passed=True), now=NOW, policy=policy())
    assert run(verified, Close(actor=OPERATOR)).view.state is S.CLOSED


def test_reopen_after_close_sends_the_case_back_to_the_same_department_to_sign_again() -> None:
    closed = make_view(S.CLOSED, verified=True)
    outcome = run(closed, Reopen(actor=OPERATOR, reason="回访不满意：垃圾又堆积"))
    event = outcome.events[0]
    assert (event.transition, event.from_state, event.to_state) == (
        T.REOPENED,
        S.CLOSED,
        S.ASSIGNED,
    )
    assert event.department == "chengguan" and event.reason == "回访不满意：垃圾又堆积"
    assert not outcome.view.verified
    assert allowed_moves(outcome.view, HOLDER) == (Move.SIGN_FOR, Move.RETURN)


@pytest.mark.parametrize("state", sorted(OPEN_STATES))
def test_cancel_from_any_open_state(state: CaseState) -> None:
    view = make_view(state, suspended=state in {S.ASSIGNED, S.ACCEPTED})
    outcome = run(view, Cancel(actor=OPERATOR, reason="重复上报"))
    assert outcome.events[0].to_state is S.CANCELLED and outcome.events[0].reason == "重复上报"
    assert not outcome.view.suspended
    assert allowed_moves(outcome.view, OPERATOR) == ()


@pytest.mark.parametrize("state", [S.CLOSED, S.CANCELLED])
def test_no_cancel_once_closed_or_cancelled(state: CaseState) -> None:
    with pytest.raises(
        TransitionRefusedError, match=f"cannot cancel a case in state {state.value}"
    ):
        transition(
            make_view(state), Cancel(actor=OPERATOR, reason="撤销"), now=NOW, policy=policy()
        )


# --- whole paths ----------------------------------------------------------------------------------


def test_happy_path() -> None:
    reported = make_view(S.REPORTED, version=1, department=None)
    outcome = run(
        reported,
        Assign(
            actor=SYSTEM,
            department="chengguan",
            routing=RoutingSnapshot(rule_id="r1", ruleset_version="v1"),
        ),
        SignFor(actor=HOLDER),
        Progress(actor=HOLDER, note="已安排环卫车"),
        Resolve(actor=HOLDER, result="垃圾已清运", attachments=(ATTACHMENT,)),
        Verify(actor=OPERATOR, passed=True, note="现场核查通过"),
        Close(actor=OPERATOR),
    )
    assert transitions(outcome) == [
        T.ASSIGNED,
        T.SIGNED,
        T.PROGRESSED,
        T.RESOLVED,
        T.VERIFIED,
        T.CLOSED,
    ]
    assert [e.version for e in outcome.events] == [2, 3, 4, 5, 6, 7]
    assert [(e.from_state, e.to_state) for e in outcome.events] == [
        (S.REPORTED, S.ASSIGNED),
        (S.ASSIGNED, S.ACCEPTED),
        (S.ACCEPTED, S.ACCEPTED),
        (S.ACCEPTED, S.RESOLVED),
        (S.RESOLVED, S.RESOLVED),
        (S.RESOLVED, S.CLOSED),
    ]
    resolved = outcome.events[3]
    assert resolved.result == "垃圾已清运" and resolved.attachments == (ATTACHMENT,)
    assert all(e.department == "chengguan" for e in outcome.events)
    assert outcome.view.state is S.CLOSED and outcome.view.version == 7


def test_the_12345_order_with_an_approved_extension_and_an_unsatisfied_return_visit() -> None:
    until = NOW + timedelta(days=10)
    first = run(
        make_view(S.TRIAGE, version=2, department=None),
        Assign(actor=OPERATOR, department="chengguan", reason="派单"),  # 派单
        SignFor(actor=HOLDER),  # 签收
        RequestExtension(actor=HOLDER, until=until, reason="需协调产权单位"),  # 延期申请
        DecideExtension(actor=OPERATOR, approve=True, note="同意延期"),  # 热线中心审批
        Progress(actor=HOLDER, note="已与物业约定清理时间"),  # 办理
        Resolve(actor=HOLDER, result="已清理完毕"),  # 回复
        Verify(actor=OPERATOR, passed=True),  # 审核
        Close(actor=OPERATOR),  # 办结
        Reopen(actor=OPERATOR, reason="回访不满意"),  # 回访 → 重办
    )
    assert transitions(first) == [
        T.ASSIGNED,
        T.SIGNED,
        T.EXTENSION_REQUESTED,
        T.EXTENSION_APPROVED,
        T.PROGRESSED,
        T.RESOLVED,
        T.VERIFIED,
        T.CLOSED,
        T.REOPENED,
    ]
    assert first.events[3].extension_until == until
    assert first.view.state is S.ASSIGNED and first.view.department == "chengguan"
    redo = run(
        first.view,
        SignFor(actor=HOLDER),
        Resolve(actor=HOLDER, result="已彻底清理并加装围挡"),
        Verify(actor=OPERATOR, passed=True),
        Close(actor=OPERATOR),
    )
    versions = [e.version for e in first.events + redo.events]
    assert versions == list(range(3, 3 + len(versions)))
    assert redo.view.state is S.CLOSED


# --- what a command may carry ---------------------------------------------------------------------


@pytest.mark.parametrize("text", ["请联系13812348000", "身份证110105199001010123"])
def test_free_text_refuses_phone_and_id_numbers(text: str) -> None:
    with pytest.raises(ValidationError, match="personal information"):
        Progress(actor=HOLDER, note=text)
    with pytest.raises(ValidationError, match="personal information"):
        Cancel(actor=OPERATOR, reason=text)
    assert Progress(actor=HOLDER, note="工单号 20261127000123 已处理").note


def test_policy_is_checked_when_built() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        policy(max_returns=0)
    with pytest.raises(ValueError, match="6-digit"):
        LifecyclePolicy(city_node=UNIT_GRID, reroute=lambda v, x: None)


# --- the shells' entry points ---------------------------------------------------------------------


def test_admission_and_delivery_leave_the_case_with_its_town_centre() -> None:
    case = CaseSubmitted(
        case_id=new_case_id(NOW),
        source=Source.GRID_WORKER,
        category=Category(code="city.garbage"),
        title="路边暴露垃圾",
        description="人民路有垃圾",
        location=Location(unit_grid=UNIT_GRID),
        reporter=Reporter(kind="grid_worker", worker_id="W0001"),
        occurred_at=NOW,
        reported_at=NOW,
    )
    triage = admit(case, RoutingDecision(None, None, "v1"), now=NOW)
    assert [e.owner_node for e in triage.events] == ["430281001", "430281001"]
    routed = admit(case, RoutingDecision("chengguan", "r1", "v1"), now=NOW)
    event = assign(
        case_id=case.case_id,
        state=routed.state,
        version=routed.version,
        category="city.garbage",
        unit_grid=UNIT_GRID,
        department="chengguan",
        routing=None,
        now=NOW,
    )
    assert (event.version, event.owner_node, event.department) == (2, "430281001", "chengguan")
    assert (event.return_count, event.suspended, event.supervised) == (0, False, False)
    unplaced = case.model_copy(update={"location": Location(address="人民路 12 号")})
    assert admit(unplaced, RoutingDecision(None, None, "v1"), now=NOW).events[-1].owner_node is None
