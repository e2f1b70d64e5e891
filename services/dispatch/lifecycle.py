"""Case lifecycle transitions as pure functions: current state and a command in, events out.

The walking skeleton knows three moves: received (→ reported), triaged (no rule matched) and
assigned (the department's receiver accepted the delivery). The full move set comes with the
dispatch issue; every move keeps the same shape: one event per transition, version + 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from libs.common.events import (
    Actor,
    CaseLifecycleEvent,
    CaseState,
    CaseSubmitted,
    RoutingSnapshot,
    Transition,
)
from services.dispatch.routing import RoutingDecision

SYSTEM = Actor(kind="system", id="dispatch")
NO_RULE_MATCHED = "no routing rule matched"


class TransitionRefusedError(ValueError):
    def __init__(
        self, current: CaseState, move: Transition, allowed: tuple[Transition, ...]
    ) -> None:
        names = ", ".join(m.value for m in allowed) or "none"
        super().__init__(f"cannot {move.value} a case in state {current.value}; allowed: {names}")
        self.current = current
        self.move = move
        self.allowed = allowed


ALLOWED: dict[CaseState, tuple[Transition, ...]] = {
    CaseState.REPORTED: (Transition.ASSIGNED, Transition.TRIAGED),
}


@dataclass(frozen=True)
class Admission:
    """What receiving a new case decides: its state, its events, and where to deliver it."""

    state: CaseState
    version: int
    events: tuple[CaseLifecycleEvent, ...]
    deliver_to: str | None


def admit(case: CaseSubmitted, decision: RoutingDecision, *, now: datetime) -> Admission:
    received = CaseLifecycleEvent(
        case_id=case.case_id,
        version=1,
        transition=Transition.RECEIVED,
        from_state=None,
        to_state=CaseState.REPORTED,
        at=now,
        actor=SYSTEM,
        category=case.category.code,
        unit_grid=case.location.unit_grid,
        routing=decision.snapshot(),
    )
    if decision.department is not None:
        return Admission(CaseState.REPORTED, 1, (received,), decision.department)
    triaged = _move(
        received,
        Transition.TRIAGED,
        CaseState.TRIAGE,
        now=now,
        routing=decision.snapshot(),
        reason=NO_RULE_MATCHED,
    )
    return Admission(CaseState.TRIAGE, 2, (received, triaged), None)


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
) -> CaseLifecycleEvent:
    """The department's receiver took the case: the sign-for clock starts."""
    _check(state, Transition.ASSIGNED)
    return CaseLifecycleEvent(
        case_id=case_id,
        version=version + 1,
        transition=Transition.ASSIGNED,
        from_state=state,
        to_state=CaseState.ASSIGNED,
        at=now,
        actor=SYSTEM,
        category=category,
        unit_grid=unit_grid,
        department=department,
        routing=routing,
    )


def _check(state: CaseState, move: Transition) -> None:
    allowed = ALLOWED.get(state, ())
    if move not in allowed:
        raise TransitionRefusedError(state, move, allowed)


def _move(
    previous: CaseLifecycleEvent,
    move: Transition,
    to_state: CaseState,
    *,
    now: datetime,
    routing: RoutingSnapshot | None = None,
    reason: str | None = None,
) -> CaseLifecycleEvent:
    _check(previous.to_state, move)
    return previous.model_copy(
        update={
            "version": previous.version + 1,
            "transition": move,
            "from_state": previous.to_state,
            "to_state": to_state,
            "at": now,
            "routing": routing,
            "reason": reason,
        }
    )
