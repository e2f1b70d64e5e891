"""Case lifecycle as a pure state machine: a case's view and a command in, its new view and events out.

States are DESIGN.md's: reported → triage | assigned → accepted → resolved → closed, and cancelled.
Suspension (挂起), a pending extension request (延期), a verified result (审核/核查 passed) and
supervision (督办) are **flags** of the case, not states: each sits on top of a stage instead of
replacing it (a suspended accepted case is still accepted and resumes where it was), and sla pauses
its clocks on a flag without needing a state per combination.

Who may make which move in which state is data: `RULES`, one row per move, actor kinds and states
(`ACTORS` and `ALLOWED` are derived from it), narrowed by the flag guards of `GUARDS`.
`transition` checks, in this order, and a refused command changes nothing:
1. the actor's kind may make this move at all, else `NotAllowedError` (403);
2. a department acts only on the case it holds (departments assisting it, 协办, may only add
   progress notes), else `NotAllowedError` (403);
3. the move is open to this actor in the case's state and flags, else `TransitionRefusedError`
   (409), whose message names the state and the moves *this actor* may make now (`ALLOWED` is the
   union over all actors).
A command that is well-formed but impossible for this case (reassign to the holding department,
an extension ending in the past) raises `InvalidCommandError` (422).

Choices beyond DESIGN.md:
- A return (退单) puts the case back to `reported` and routes it again at once, so it produces two
  events: `returned`, then `assigned` (re-route excluding every department that ever returned the
  case) or `triaged` (no department left: at the owning node; the configured n-th return: at the
  city centre).
- A passed verification does not close the case: the 12345 order puts the return visit (回访)
  between review (审核) and close (办结), so `close` needs a verified result. A failed
  verification sends the case back to the same department in `accepted` (rework, counted). Reopen
  (unsatisfied return visit, 重办) sends a closed case back to the same department in `assigned`,
  which signs for it again.
- A new case is owned by the centre of its unit grid's town (the city's when it has no unit grid),
  where routing sends a case it cannot place. Escalation moves ownership one grid level up (unit
  grid → village → town → city: a child code is its parent's plus 3 digits, as the reference data
  enforces) and keeps the state: a triage case waits for the parent level's operators, a held case
  stays with its department under the parent level's watch.
- No suspension while an extension request waits for a decision and no extension asked while
  suspended, so sla pauses a clock for one reason at a time.
- A duplicate (并案: same category, near in place and time to an open case) is received and
  merged into that case instead of being dispatched again: it takes the primary's state and
  department and then follows each of its moves as an echo event of its own (`follow`), so its
  reporter and origin system see the handling. While merged it takes no move of its own but
  `split`, which sets it back to `reported` and routes it like a new case.
- Free text entering through a command (reasons, notes, results) is refused when it carries a
  mobile or ID number: lifecycle events carry no personal information.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, Field, model_validator

from libs.common.contract import Contract, DepartmentCode, ShortText, Timestamp
from libs.common.events import (
    Actor,
    ActorKind,
    AttachmentRef,
    CaseLifecycleEvent,
    CaseState,
    CaseSubmitted,
    Note,
    ReasonCode,
    RoutingSnapshot,
    Transition,
    Urgency,
)
from services.dispatch.routing import RoutingDecision

SYSTEM = Actor(kind="system", id="dispatch")
NO_RULE_MATCHED = "no routing rule matched"
NO_DEPARTMENT_LEFT = "no department left to route to: every candidate returned the case"
CITY_CODE_LENGTH = 6
TOWN_CODE_LENGTH = 9
CHILD_CODE_DIGITS = 3


class Move(StrEnum):
    """What an actor asks for: the commands' names, as refusals name them."""

    ASSIGN = "assign"
    SIGN_FOR = "sign_for"
    RETURN = "return"
    REASSIGN = "reassign"
    ESCALATE = "escalate"
    REQUEST_EXTENSION = "request_extension"
    DECIDE_EXTENSION = "decide_extension"
    SUSPEND = "suspend"
    RESUME = "resume"
    PROGRESS = "progress"
    RESOLVE = "resolve"
    VERIFY = "verify"
    CLOSE = "close"
    REOPEN = "reopen"
    SUPERVISE = "supervise"
    CANCEL = "cancel"
    SPLIT = "split"


# --- the case as the machine sees it --------------------------------------------------------------


@dataclass(frozen=True)
class CaseView:
    """What a decision needs to know about a case; time (deadlines) belongs to sla."""

    case_id: str
    version: int
    state: CaseState
    category: str
    unit_grid: str | None = None
    owner_node: str | None = None  # None: not placed in the grid, so the city centre's
    urgency: Urgency = Urgency.ROUTINE
    department: str | None = None
    co_handling: frozenset[str] = frozenset()
    returned_by: frozenset[str] = frozenset()
    return_count: int = 0
    rework_count: int = 0
    suspended: bool = False
    extension_pending: bool = False
    extension_requested_until: datetime | None = None  # what the pending request asks for
    verified: bool = False
    supervised: bool = False
    merged_into: str | None = None  # 并案: the case this one follows


@dataclass(frozen=True)
class Outcome:
    """The case after a move and the events that got it there (one per transition, version + 1)."""

    view: CaseView
    events: tuple[CaseLifecycleEvent, ...]


@dataclass(frozen=True)
class Rerouted:
    """A re-route's answer: the next department and the routing rule that chose it."""

    department: str
    routing: RoutingSnapshot | None = None


Reroute = Callable[[CaseView, frozenset[str]], Rerouted | str | None]
"""Next department for a returned case, never one of the excluded ones; None: nobody left."""


@dataclass(frozen=True)
class LifecyclePolicy:
    city_node: str  # the city centre's grid node code (6 digits)
    reroute: Reroute
    max_returns_before_city_triage: int = 3

    def __post_init__(self) -> None:
        if self.max_returns_before_city_triage < 1:
            raise ValueError("max_returns_before_city_triage must be at least 1")
        if len(self.city_node) != CITY_CODE_LENGTH or not self.city_node.isdigit():
            raise ValueError(f"city_node must be a 6-digit city code, got {self.city_node!r}")


# --- commands -------------------------------------------------------------------------------------

_PERSONAL_NUMBER = re.compile(r"(?<![0-9])(?:1[3-9][0-9]{9}|[0-9]{17}[0-9Xx])(?![0-9])")


def _no_personal_numbers(text: str) -> str:
    if _PERSONAL_NUMBER.search(text):
        raise ValueError("free text must not carry a phone or ID number (personal information)")
    return text


Reason = Annotated[ShortText, AfterValidator(_no_personal_numbers)]
Text = Annotated[Note, AfterValidator(_no_personal_numbers)]
CoHandling = Annotated[tuple[DepartmentCode, ...], Field(max_length=10)]


class Command(Contract):
    move: ClassVar[Move]
    actor: Actor


def _check_co_handling(department: str, co_handling: tuple[str, ...]) -> None:
    if department in co_handling or len(set(co_handling)) != len(co_handling):
        raise ValueError("co_handling lists other departments than the holding one, once each")


class Assign(Command):
    """The system: the routed case reached its department. An operator: triage decided."""

    move: ClassVar[Move] = Move.ASSIGN
    department: DepartmentCode
    co_handling: CoHandling = ()
    routing: RoutingSnapshot | None = None
    reason: Reason | None = None

    @model_validator(mode="after")
    def _distinct(self) -> Assign:
        _check_co_handling(self.department, self.co_handling)
        return self


class SignFor(Command):
    move: ClassVar[Move] = Move.SIGN_FOR


class Return(Command):
    move: ClassVar[Move] = Move.RETURN
    reason_code: ReasonCode
    note: Text | None = None


class Reassign(Command):
    move: ClassVar[Move] = Move.REASSIGN
    department: DepartmentCode
    co_handling: CoHandling = ()
    reason: Reason | None = None

    @model_validator(mode="after")
    def _distinct(self) -> Reassign:
        _check_co_handling(self.department, self.co_handling)
        return self


class Escalate(Command):
    move: ClassVar[Move] = Move.ESCALATE
    reason: Reason | None = None


class RequestExtension(Command):
    move: ClassVar[Move] = Move.REQUEST_EXTENSION
    until: Timestamp
    reason: Reason


class DecideExtension(Command):
    """Approve (by default until the requested time, or until `until`) or deny."""

    move: ClassVar[Move] = Move.DECIDE_EXTENSION
    approve: bool
    until: Timestamp | None = None
    note: Text | None = None

    @model_validator(mode="after")
    def _until_only_when_approving(self) -> DecideExtension:
        if self.until is not None and not self.approve:
            raise ValueError("a denied extension has no until")
        return self


class Suspend(Command):
    move: ClassVar[Move] = Move.SUSPEND
    reason: Reason


class Resume(Command):
    move: ClassVar[Move] = Move.RESUME
    note: Text | None = None


class Progress(Command):
    move: ClassVar[Move] = Move.PROGRESS
    note: Text


class Resolve(Command):
    move: ClassVar[Move] = Move.RESOLVE
    result: Text
    attachments: Annotated[tuple[AttachmentRef, ...], Field(max_length=20)] = ()


class Verify(Command):
    move: ClassVar[Move] = Move.VERIFY
    passed: bool
    note: Text | None = None

    @model_validator(mode="after")
    def _failure_says_why(self) -> Verify:
        if not self.passed and self.note is None:
            raise ValueError("a failed verification needs a note saying what to rework")
        return self


class Close(Command):
    move: ClassVar[Move] = Move.CLOSE
    note: Text | None = None


class Reopen(Command):
    move: ClassVar[Move] = Move.REOPEN
    reason: Reason


class Supervise(Command):
    move: ClassVar[Move] = Move.SUPERVISE
    note: Text


class Split(Command):
    """Undo a wrong merge (并案): the case leaves the one it followed and is routed on its own."""

    move: ClassVar[Move] = Move.SPLIT
    reason: Reason


class Cancel(Command):
    move: ClassVar[Move] = Move.CANCEL
    reason: Reason


# --- who may do what, when ------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    move: Move
    actors: frozenset[ActorKind]
    states: frozenset[CaseState]


def _rule(move: Move, actors: tuple[ActorKind, ...], *states: CaseState) -> Rule:
    return Rule(move, frozenset(actors), frozenset(states))


_S = CaseState
_OPEN = (_S.REPORTED, _S.TRIAGE, _S.ASSIGNED, _S.ACCEPTED, _S.RESOLVED)
_HELD = (_S.ASSIGNED, _S.ACCEPTED)

RULES: tuple[Rule, ...] = (
    _rule(Move.ASSIGN, ("system",), _S.REPORTED),  # the routed case reached its department
    _rule(Move.ASSIGN, ("operator",), _S.TRIAGE),
    _rule(Move.SIGN_FOR, ("department",), _S.ASSIGNED),
    _rule(Move.RETURN, ("department",), *_HELD),
    _rule(Move.REASSIGN, ("operator",), *_HELD),
    _rule(Move.ESCALATE, ("operator", "system"), _S.TRIAGE, *_HELD),  # system: sla's ladder
    _rule(Move.REQUEST_EXTENSION, ("department",), _S.ACCEPTED),
    _rule(Move.DECIDE_EXTENSION, ("operator", "partner"), _S.ACCEPTED),
    _rule(Move.SUSPEND, ("operator",), *_HELD),
    _rule(Move.RESUME, ("operator",), *_HELD),
    _rule(Move.PROGRESS, ("department",), _S.ACCEPTED),
    _rule(Move.RESOLVE, ("department",), _S.ACCEPTED),
    # partner: the platform a case came from (12345) reviews, return-visits, supervises and
    # cancels its own orders; the dispatch partner API lets it act only on those cases
    _rule(Move.VERIFY, ("operator", "partner"), _S.RESOLVED),
    _rule(Move.CLOSE, ("operator", "partner"), _S.RESOLVED),
    _rule(Move.REOPEN, ("operator", "partner"), _S.CLOSED),
    # system: sla's warnings, breaches
    _rule(Move.SUPERVISE, ("operator", "system", "partner"), *_OPEN),
    _rule(Move.CANCEL, ("operator", "partner"), *_OPEN),
    _rule(Move.SPLIT, ("operator",), *_OPEN),
)

# Moves a department assisting the holding one (协办) may make on the case.
CO_HANDLER_MOVES = frozenset({Move.PROGRESS})

ACTORS: dict[Move, frozenset[ActorKind]] = {
    move: frozenset(kind for rule in RULES if rule.move is move for kind in rule.actors)
    for move in Move
}
ALLOWED: dict[CaseState, tuple[Move, ...]] = {
    state: tuple(m for m in Move if any(r.move is m and state in r.states for r in RULES))
    for state in CaseState
}


def owning_node(unit_grid: str | None) -> str | None:
    """A new case's owner: the centre of its unit grid's town (as routing triages), else the city's."""
    return unit_grid[:TOWN_CODE_LENGTH] if unit_grid else None


def _at_city(view: CaseView) -> bool:
    return view.owner_node is None or len(view.owner_node) <= CITY_CODE_LENGTH


@dataclass(frozen=True)
class Guard:
    """While `holds`, the `blocks` moves are closed, `because` …"""

    because: str
    blocks: frozenset[Move]
    holds: Callable[[CaseView], bool] = field(compare=False)


_OPEN_WHILE_SUSPENDED = frozenset(
    {Move.RESUME, Move.PROGRESS, Move.SUPERVISE, Move.CANCEL, Move.SPLIT}
)

GUARDS: tuple[Guard, ...] = (
    # a merged case follows the one it is merged into: it is acted on through that case
    Guard(
        "the case is merged into another (并案): act on that case, or split this one",
        frozenset(Move) - {Move.SPLIT},
        lambda v: v.merged_into is not None,
    ),
    Guard(
        "the case is not merged into another", frozenset({Move.SPLIT}), lambda v: not v.merged_into
    ),
    Guard("the case is suspended", frozenset(Move) - _OPEN_WHILE_SUSPENDED, lambda v: v.suspended),
    Guard("the case is not suspended", frozenset({Move.RESUME}), lambda v: not v.suspended),
    Guard(
        "an extension request awaits a decision",
        frozenset({Move.REQUEST_EXTENSION, Move.SUSPEND}),
        lambda v: v.extension_pending,
    ),
    Guard(
        "no extension request is pending",
        frozenset({Move.DECIDE_EXTENSION}),
        lambda v: not v.extension_pending,
    ),
    Guard("the result is verified already", frozenset({Move.VERIFY}), lambda v: v.verified),
    Guard("the result is not verified yet", frozenset({Move.CLOSE}), lambda v: not v.verified),
    Guard("the city centre owns the case already", frozenset({Move.ESCALATE}), _at_city),
)


class TransitionRefusedError(ValueError):
    """The move is not open in the case's state and flags (409); nothing changed."""

    def __init__(
        self,
        current: CaseState,
        move: Move,
        allowed: tuple[Move, ...],
        because: str | None = None,
    ) -> None:
        names = ", ".join(m.value for m in allowed) or "none"
        why = f" ({because})" if because else ""
        super().__init__(
            f"cannot {move.value} a case in state {current.value}{why}; allowed: {names}"
        )
        self.current = current
        self.move = move
        self.allowed = allowed
        self.because = because


class NotAllowedError(ValueError):
    """This actor may not make this move on this case in any state (403); nothing changed."""

    def __init__(self, actor: Actor, move: Move, message: str) -> None:
        super().__init__(message)
        self.actor = actor
        self.move = move


class InvalidCommandError(ValueError):
    """The command is well-formed but cannot apply to this case (422); nothing changed."""


def _by_state(view: CaseView, kind: ActorKind) -> tuple[Move, ...]:
    return _moves_in(view.state, kind)


@functools.cache
def _moves_in(state: CaseState, kind: ActorKind) -> tuple[Move, ...]:
    """The moves the rules give this kind of actor in this state (the rules are constants)."""
    return tuple(
        move
        for move in Move
        if any(r.move is move and kind in r.actors and state in r.states for r in RULES)
    )


def _blocking(view: CaseView, move: Move) -> Guard | None:
    return next((g for g in GUARDS if move in g.blocks and g.holds(view)), None)


def _holds(view: CaseView, actor: Actor, move: Move) -> bool:
    if actor.kind != "department":
        return True
    if actor.id == view.department:
        return True
    return move in CO_HANDLER_MOVES and actor.id in view.co_handling


def allowed_moves(view: CaseView, actor: Actor) -> tuple[Move, ...]:
    """The moves this actor may make on this case now, in `Move` order."""
    return tuple(
        move
        for move in _by_state(view, actor.kind)
        if _holds(view, actor, move) and _blocking(view, move) is None
    )


def check(view: CaseView, actor: Actor, move: Move) -> None:
    """Raise NotAllowedError or TransitionRefusedError unless `actor` may `move` now."""
    if actor.kind not in ACTORS[move]:
        raise NotAllowedError(actor, move, f"a {actor.kind} may not {move.value} a case")
    if not _holds(view, actor, move):
        raise NotAllowedError(
            actor, move, f"department {actor.id} may not {move.value} a case it does not hold"
        )
    allowed = allowed_moves(view, actor)
    if move not in allowed:
        guard = _blocking(view, move) if move in _by_state(view, actor.kind) else None
        raise TransitionRefusedError(
            view.state, move, allowed, because=guard.because if guard else None
        )


# --- the moves ------------------------------------------------------------------------------------


def transition(
    view: CaseView, command: Command, *, now: datetime, policy: LifecyclePolicy
) -> Outcome:
    """Apply one command: the case after it and its events, or an error and nothing changed."""
    check(view, command.actor, command.move)
    return _apply(view, command, now=now, policy=policy)


def _apply(  # noqa: PLR0911, PLR0912  # one branch per move reads best as one table
    view: CaseView, command: Command, *, now: datetime, policy: LifecyclePolicy
) -> Outcome:
    actor = command.actor
    match command:
        case Assign():
            return _assigned(view, command, now=now)
        case SignFor():
            return _one(view, replace(view, state=_S.ACCEPTED), Transition.SIGNED, actor, now)
        case Return():
            return _returned(view, command, now=now, policy=policy)
        case Reassign():
            if command.department == view.department:
                raise InvalidCommandError(f"{command.department} holds the case already")
            after = replace(
                _without_extension(view),
                state=_S.ASSIGNED,
                department=command.department,
                co_handling=frozenset(command.co_handling),
            )
            return _one(
                view,
                after,
                Transition.REASSIGNED,
                actor,
                now,
                reason=command.reason,
                previous_department=view.department,
            )
        case Escalate():
            after = replace(view, owner_node=_parent(view.owner_node))
            return _one(view, after, Transition.ESCALATED, actor, now, reason=command.reason)
        case RequestExtension():
            if command.until <= now:
                raise InvalidCommandError("an extension must end in the future")
            after = replace(view, extension_pending=True, extension_requested_until=command.until)
            return _one(
                view,
                after,
                Transition.EXTENSION_REQUESTED,
                actor,
                now,
                reason=command.reason,
                extension_until=command.until,
            )
        case DecideExtension():
            return _extension_decided(view, command, now=now)
        case Suspend():
            after = replace(view, suspended=True)
            return _one(view, after, Transition.SUSPENDED, actor, now, reason=command.reason)
        case Resume():
            after = replace(view, suspended=False)
            return _one(view, after, Transition.RESUMED, actor, now, note=command.note)
        case Progress():
            return _one(view, view, Transition.PROGRESSED, actor, now, note=command.note)
        case Resolve():
            after = replace(_without_extension(view), state=_S.RESOLVED)
            return _one(
                view,
                after,
                Transition.RESOLVED,
                actor,
                now,
                result=command.result,
                attachments=command.attachments,
            )
        case Verify() if command.passed:
            after = replace(view, verified=True)
            return _one(view, after, Transition.VERIFIED, actor, now, note=command.note)
        case Verify():
            after = replace(view, state=_S.ACCEPTED, rework_count=view.rework_count + 1)
            return _one(view, after, Transition.REWORK, actor, now, note=command.note)
        case Close():
            after = replace(view, state=_S.CLOSED)
            return _one(view, after, Transition.CLOSED, actor, now, note=command.note)
        case Reopen():
            after = replace(view, state=_S.ASSIGNED, verified=False)
            return _one(view, after, Transition.REOPENED, actor, now, reason=command.reason)
        case Supervise():
            after = replace(view, supervised=True)
            return _one(view, after, Transition.SUPERVISED, actor, now, note=command.note)
        case Cancel():
            after = replace(_without_extension(view), state=_S.CANCELLED, suspended=False)
            return _one(view, after, Transition.CANCELLED, actor, now, reason=command.reason)
        case Split():
            return _split(view, command, now=now, policy=policy)
    raise TypeError(f"unknown command {type(command).__name__}")


def _assigned(view: CaseView, command: Assign, *, now: datetime) -> Outcome:
    after = replace(
        view,
        state=_S.ASSIGNED,
        department=command.department,
        co_handling=frozenset(command.co_handling),
    )
    return _one(
        view,
        after,
        Transition.ASSIGNED,
        command.actor,
        now,
        routing=command.routing,
        reason=command.reason,
    )


def _returned(
    view: CaseView, command: Return, *, now: datetime, policy: LifecyclePolicy
) -> Outcome:
    returner = view.department
    assert returner is not None  # noqa: S101  # check() let only the holding department return
    back, returned = _step(
        view,
        replace(
            _without_extension(view),
            state=_S.REPORTED,
            department=None,
            co_handling=frozenset(),
            returned_by=view.returned_by | {returner},
            return_count=view.return_count + 1,
        ),
        Transition.RETURNED,
        command.actor,
        now,
        reason_code=command.reason_code,
        note=command.note,
        previous_department=returner,
    )
    if back.return_count >= policy.max_returns_before_city_triage:
        reason = f"returned {back.return_count} times: the city centre triages"
        after = replace(back, state=_S.TRIAGE, owner_node=policy.city_node)
        after, routed = _step(back, after, Transition.TRIAGED, SYSTEM, now, reason=reason)
        return Outcome(after, (returned, routed))
    after, routed = _route_again(
        back, now=now, policy=policy, no_one=NO_DEPARTMENT_LEFT, previous_department=returner
    )
    return Outcome(after, (returned, routed))


def _route_again(
    back: CaseView, *, now: datetime, policy: LifecyclePolicy, no_one: str, **details: Any
) -> tuple[CaseView, CaseLifecycleEvent]:
    """A `reported` case routed anew, passing over whoever returned it: assigned, or triage."""
    choice = policy.reroute(back, back.returned_by)
    if isinstance(choice, str):
        choice = Rerouted(choice)
    if choice is None:
        after = replace(back, state=_S.TRIAGE)
        return _step(back, after, Transition.TRIAGED, SYSTEM, now, reason=no_one)
    if choice.department in back.returned_by:
        raise ValueError(f"reroute chose {choice.department}, which returned the case")
    after = replace(back, state=_S.ASSIGNED, department=choice.department)
    return _step(back, after, Transition.ASSIGNED, SYSTEM, now, routing=choice.routing, **details)


def _split(view: CaseView, command: Split, *, now: datetime, policy: LifecyclePolicy) -> Outcome:
    """The case stops following the one it was merged into and starts over on its own: back to
    `reported` with nothing of the other case's handling, then routed like a new case."""
    own = CaseView(
        case_id=view.case_id,
        version=view.version,
        state=_S.REPORTED,
        category=view.category,
        unit_grid=view.unit_grid,
        owner_node=view.owner_node,
    )
    back, split = _step(view, own, Transition.SPLIT, command.actor, now, reason=command.reason)
    after, routed = _route_again(back, now=now, policy=policy, no_one=NO_RULE_MATCHED)
    return Outcome(after, (split, routed))


def _extension_decided(view: CaseView, command: DecideExtension, *, now: datetime) -> Outcome:
    after = _without_extension(view)
    if not command.approve:
        return _one(view, after, Transition.EXTENSION_DENIED, command.actor, now, note=command.note)
    until = command.until or view.extension_requested_until
    if until is None or until <= now:
        raise InvalidCommandError("an approved extension must end in the future")
    return _one(
        view,
        after,
        Transition.EXTENSION_APPROVED,
        command.actor,
        now,
        note=command.note,
        extension_until=until,
    )


def _without_extension(view: CaseView) -> CaseView:
    return replace(view, extension_pending=False, extension_requested_until=None)


def _parent(node: str | None) -> str:
    assert node is not None and len(node) > CITY_CODE_LENGTH  # noqa: S101  # GUARDS' _at_city
    return node[:-CHILD_CODE_DIGITS]


def _one(
    before: CaseView,
    after: CaseView,
    move: Transition,
    actor: Actor,
    now: datetime,
    **details: Any,
) -> Outcome:
    view, event = _step(before, after, move, actor, now, **details)
    return Outcome(view, (event,))


def _step(
    before: CaseView,
    after: CaseView,
    move: Transition,
    actor: Actor,
    now: datetime,
    **details: Any,
) -> tuple[CaseView, CaseLifecycleEvent]:
    after = replace(after, version=before.version + 1)
    return after, _event(after, move, before.state, actor, now, **details)


def _event(
    view: CaseView,
    move: Transition,
    from_state: CaseState | None,
    actor: Actor,
    now: datetime,
    **details: Any,
) -> CaseLifecycleEvent:
    """The event of one transition: what the move says, and the case's standing after it."""
    return CaseLifecycleEvent(
        case_id=view.case_id,
        version=view.version,
        transition=move,
        from_state=from_state,
        to_state=view.state,
        at=now,
        actor=actor,
        category=view.category,
        urgency=view.urgency,
        unit_grid=view.unit_grid,
        department=view.department,
        co_handling=tuple(sorted(view.co_handling)),
        owner_node=view.owner_node,
        return_count=view.return_count,
        rework_count=view.rework_count,
        suspended=view.suspended,
        extension_pending=view.extension_pending,
        supervised=view.supervised,
        **details,
    )


# --- the entry points of the Kafka and webhook shells ---------------------------------------------


@dataclass(frozen=True)
class Admission:
    """What receiving a new case decides: its state, its events, and where to deliver it."""

    state: CaseState
    version: int
    events: tuple[CaseLifecycleEvent, ...]
    deliver_to: str | None
    view: CaseView


def _received(
    case: CaseSubmitted, decision: RoutingDecision, now: datetime
) -> tuple[CaseView, CaseLifecycleEvent]:
    """A new case as it arrives (`reported`, version 1, owned by its town) and its `received`."""
    view = CaseView(
        case_id=case.case_id,
        version=1,
        state=_S.REPORTED,
        category=case.category.code,
        unit_grid=case.location.unit_grid,
        owner_node=owning_node(case.location.unit_grid),
        urgency=case.urgency,
    )
    return view, _event(view, Transition.RECEIVED, None, SYSTEM, now, routing=decision.snapshot())


def admit(case: CaseSubmitted, decision: RoutingDecision, *, now: datetime) -> Admission:
    """A new case is `reported`; with no department to route it to, it goes on to `triage`."""
    view, received = _received(case, decision, now)
    if decision.department is not None:
        return Admission(_S.REPORTED, 1, (received,), decision.department, view)
    triage, triaged = _step(
        view,
        replace(view, state=_S.TRIAGE),
        Transition.TRIAGED,
        SYSTEM,
        now,
        routing=decision.snapshot(),
        reason=NO_RULE_MATCHED,
    )
    return Admission(triage.state, triage.version, (received, triaged), None, triage)


def merge(
    case: CaseSubmitted, decision: RoutingDecision, primary: CaseView, *, now: datetime
) -> Admission:
    """A new case that duplicates the open `primary` (并案) is received and merged into it: it
    takes the primary's state and department and is not delivered again; from now on it
    `follow`s every move of the primary, and only a split sets it free."""
    if primary.merged_into is not None or primary.state in (_S.CLOSED, _S.CANCELLED):
        raise ValueError(f"cannot merge into {primary.case_id}: it is not an open primary case")
    view, received = _received(case, decision, now)
    after, merged = _step(
        view,
        _following(view, primary),
        Transition.MERGED,
        SYSTEM,
        now,
        reason=f"duplicate of {primary.case_id} (并案)",
        merged_into=primary.case_id,
    )
    return Admission(after.state, after.version, (received, merged), None, after)


def _following(view: CaseView, primary: CaseView) -> CaseView:
    return replace(
        view,
        state=primary.state,
        department=primary.department,
        co_handling=primary.co_handling,
        suspended=primary.suspended,
        extension_pending=primary.extension_pending,
        extension_requested_until=primary.extension_requested_until,
        verified=primary.verified,
        supervised=primary.supervised,
        merged_into=primary.case_id,
    )


_UNVERIFIED_BY = frozenset({Transition.REWORK, Transition.REOPENED, Transition.RETURNED})


def follow(view: CaseView, event: CaseLifecycleEvent) -> Outcome:
    """A merged case's echo of one move of its primary: the same transition, actor, reason and
    result, with this case's id, version and location, so its reporter and origin system see the
    handling. Its standing after the move is the primary's, read from the event; its own return
    and rework counters stay as they were (the primary's count once, on the primary)."""
    if view.merged_into != event.case_id:
        raise ValueError(f"{view.case_id} does not follow {event.case_id}")
    verified = event.transition is Transition.VERIFIED or (
        view.verified and event.transition not in _UNVERIFIED_BY
    )
    after = replace(
        view,
        version=view.version + 1,
        state=event.to_state,
        department=event.department,
        co_handling=frozenset(event.co_handling),
        suspended=event.suspended,
        extension_pending=event.extension_pending,
        extension_requested_until=(
            (
                event.extension_until
                if event.transition is Transition.EXTENSION_REQUESTED
                else view.extension_requested_until
            )
            if event.extension_pending
            else None
        ),
        verified=verified,
        supervised=event.supervised,
    )
    echo = event.model_copy(
        update={
            "case_id": view.case_id,
            "version": after.version,
            "from_state": view.state,
            "unit_grid": view.unit_grid,
            "urgency": view.urgency,
            "owner_node": view.owner_node,
            "return_count": view.return_count,
            "rework_count": view.rework_count,
            "merged_into": event.case_id,
        }
    )
    return Outcome(after, (echo,))


def assign(
    *,
    case_id: str,
    state: CaseState,
    version: int,
    category: str,
    unit_grid: str | None,
    department: str,
    routing: RoutingSnapshot | None,
    now: datetime,
    urgency: Urgency = Urgency.ROUTINE,
) -> CaseLifecycleEvent:
    """The department's receiver took the routed case: the system's assign, the sign-for clock starts."""
    view = CaseView(
        case_id=case_id,
        version=version,
        state=state,
        category=category,
        unit_grid=unit_grid,
        owner_node=owning_node(unit_grid),
        urgency=urgency,
    )
    command = Assign(actor=SYSTEM, department=department, routing=routing)
    check(view, command.actor, command.move)
    [event] = _assigned(view, command, now=now).events
    return event
