"""A case's clocks as a pure state machine: lifecycle events in, timers and signals out.

A timer is one limit of one stage held by one department (or, for verification, by the grid
centre): it starts when the stage starts, pauses while the case is suspended or waits for an
extension decision, moves its deadline when an extension is approved, and stops when the stage
ends — kept, so the case's clock history says who held it for how long. A case returned by a
department that held it two days starts a fresh timer at the next department: it is not charged
for the days of the one before.

Counting: a timer has used `used` of its clock before `anchor` and runs from `anchor` while
running; the deadline is where `limit - used` more clock time ends, counted from `anchor`. Its
signal points are the warnings (fractions of the limit), the breach (the limit) and the rungs of
the escalation ladder (limit + after), in order; `fired` says how many have been sent, so each
is sent once.

| event | timers |
|---|---|
| assigned, reassigned, reopened | stop the running ones; sign-for starts for the department |
| signed | sign-for stops; handling starts (after a reopen with `keep`: resumes where it stopped) |
| resolved | handling stops; verification starts (the grid centre's; it names the department) |
| verified | verification stops |
| rework (verification failed) | verification stops; handling restarts, or resumes (`keep`) |
| returned, triaged, closed, cancelled, merged | everything stops |
| suspended / resumed | every running timer pauses / resumes |
| extension requested / denied | handling pauses / resumes |
| extension approved | handling resumes with the granted date as its deadline |
| an echo of a merged case's primary | nothing: a merged case has no clock of its own |
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from libs.common.events import CaseLifecycleEvent, SlaSignalKind, SlaStage, Transition
from services.sla.clocks import Clockwork
from services.sla.policies import ClockKind, PolicySet, Rung

_T = Transition
_ZERO = timedelta(0)


class TimerStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Timer:
    case_id: str
    stage: SlaStage
    name: str | None  # a staged limit's name
    department: str | None
    policy: str  # policy id@version, as it was when the timer started
    clock: ClockKind
    limit: timedelta
    warnings: tuple[float, ...]
    escalation: tuple[Rung, ...]
    started_at: datetime
    anchor: datetime
    used: timedelta
    due_at: datetime
    provisional: bool
    status: TimerStatus
    fired: int = 0
    next_fire_at: datetime | None = None
    stopped_at: datetime | None = None
    outcome: str | None = None  # the transition that stopped it
    unit_grid: str | None = None
    case_version: int = 1
    extended: bool = False  # an extension was approved (延期)
    id: int | None = None  # the database row; None until stored

    @property
    def points(self) -> tuple[tuple[SlaSignalKind, timedelta, str | None], ...]:
        """(kind, clock time consumed when it fires, the level an escalation goes to)."""
        warnings = tuple((SlaSignalKind.WARNING, self.limit * f, None) for f in self.warnings)
        breach = ((SlaSignalKind.BREACH, self.limit, None),)
        rungs = tuple(
            (SlaSignalKind.ESCALATION, self.limit + r.after, r.to) for r in self.escalation
        )
        return warnings + breach + rungs

    @property
    def label(self) -> str:
        return self.policy if self.name is None else f"{self.policy}#{self.name}"


@dataclass(frozen=True)
class Signal:
    kind: SlaSignalKind
    timer: Timer  # as it was when the point came due
    at: datetime  # when the point came due
    escalate_to_level: str | None


def schedule(timer: Timer, clocks: Clockwork) -> Timer:
    """The timer with its deadline and next signal time worked out from its counters."""
    if timer.status is not TimerStatus.RUNNING:
        return replace(timer, next_fire_at=None)
    remaining = timer.limit - timer.used
    due = clocks.add(timer.clock, timer.anchor, max(remaining, _ZERO))
    points = timer.points
    next_at = None
    provisional = due.provisional
    if timer.fired < len(points):
        consumed = points[timer.fired][1]
        point = clocks.add(timer.clock, timer.anchor, max(consumed - timer.used, _ZERO))
        next_at, provisional = point.at, provisional or point.provisional
    return replace(timer, due_at=due.at, next_fire_at=next_at, provisional=provisional)


def fire(timer: Timer, clocks: Clockwork) -> tuple[Signal, Timer]:
    """Send the next signal point of a timer that came due, and move to the one after."""
    assert timer.next_fire_at is not None and timer.fired < len(timer.points)  # noqa: S101
    kind, _, level = timer.points[timer.fired]
    signal = Signal(kind, timer, timer.next_fire_at, level)
    return signal, schedule(replace(timer, fired=timer.fired + 1), clocks)


def _stop(timer: Timer, at: datetime, outcome: str, clocks: Clockwork) -> Timer:
    used = timer.used
    if timer.status is TimerStatus.RUNNING:
        used += clocks.between(timer.clock, timer.anchor, at)
    return replace(
        timer,
        status=TimerStatus.STOPPED,
        used=used,
        stopped_at=at,
        outcome=outcome,
        next_fire_at=None,
    )


def _pause(timer: Timer, at: datetime, clocks: Clockwork) -> Timer:
    used = timer.used + clocks.between(timer.clock, timer.anchor, at)
    return replace(timer, status=TimerStatus.PAUSED, used=used, anchor=at, next_fire_at=None)


def _resume(timer: Timer, at: datetime, clocks: Clockwork) -> Timer:
    return schedule(replace(timer, status=TimerStatus.RUNNING, anchor=at), clocks)


def _extend(timer: Timer, at: datetime, until: datetime, clocks: Clockwork) -> Timer:
    """Resume with the granted date as the deadline: the limit grows to what is used plus the
    clock time left until then; points already passed stay passed, later ones are sent."""
    limit = timer.used + clocks.between(timer.clock, at, until)
    extended = replace(timer, status=TimerStatus.RUNNING, anchor=at, limit=limit, extended=True)
    passed = sum(1 for _, consumed, _ in extended.points if consumed <= timer.used)
    return schedule(replace(extended, fired=max(passed, 0)), clocks)


def _start(
    event: CaseLifecycleEvent,
    stage: SlaStage,
    department: str | None,
    policies: PolicySet,
    clocks: Clockwork,
) -> list[Timer]:
    policy, limits = policies.limits(event.category, event.urgency, stage)
    return [
        schedule(
            Timer(
                case_id=event.case_id,
                stage=stage,
                name=limit.name,
                department=department,
                policy=policy.tag,
                clock=limit.clock,
                limit=limit.amount,
                warnings=policy.warnings,
                escalation=policy.escalation,
                started_at=event.at,
                anchor=event.at,
                used=_ZERO,
                due_at=event.at,
                provisional=False,
                status=TimerStatus.RUNNING,
                unit_grid=event.unit_grid,
                case_version=event.version,
            ),
            clocks,
        )
        for limit in limits
    ]


_STARTS_SIGN = frozenset({_T.ASSIGNED, _T.REASSIGNED, _T.REOPENED})
_STOPS_ALL = frozenset({_T.RETURNED, _T.TRIAGED, _T.CLOSED, _T.CANCELLED, _T.MERGED})


def apply(  # noqa: PLR0912  # one branch per transition reads best as the table above
    timers: list[Timer],
    event: CaseLifecycleEvent,
    *,
    policies: PolicySet,
    clocks: Clockwork,
) -> list[Timer]:
    """The case's timers after `event`: changed ones replaced, new ones appended.

    `timers` are the case's running and paused timers, and its stopped handling timers (a
    rework with `keep` resumes them)."""
    move, at = event.transition, event.at
    if event.merged_into is not None and move is not _T.MERGED:
        return timers  # an echo of the primary's move: the primary's clocks count
    live = [t for t in timers if t.status is not TimerStatus.STOPPED]
    result = list(timers)

    def put(old: Timer, new: Timer) -> None:
        result[result.index(old)] = replace(new, case_version=event.version)

    def stop_where(stage: SlaStage | None) -> None:
        for timer in live:
            if stage is None or timer.stage is stage:
                put(timer, _stop(timer, at, move.value, clocks))

    if move in _STOPS_ALL:
        stop_where(None)
    elif move in _STARTS_SIGN:
        stop_where(None)
        result += _start(event, SlaStage.SIGN, event.department, policies, clocks)
    elif move is _T.SIGNED:
        stop_where(SlaStage.SIGN)
        result = _handling(result, event, policies, clocks)
    elif move is _T.RESOLVED:
        stop_where(SlaStage.HANDLE)
        # the grid centre verifies; the clock names the department whose result it is
        result += _start(event, SlaStage.VERIFY, event.department, policies, clocks)
    elif move is _T.VERIFIED:
        stop_where(SlaStage.VERIFY)
    elif move is _T.REWORK:
        stop_where(SlaStage.VERIFY)
        result = _handling(result, event, policies, clocks)
    elif move is _T.SUSPENDED:
        for timer in live:
            if timer.status is TimerStatus.RUNNING:
                put(timer, _pause(timer, at, clocks))
    elif move is _T.RESUMED:
        for timer in live:
            if timer.status is TimerStatus.PAUSED:
                put(timer, _resume(timer, at, clocks))
    elif move is _T.EXTENSION_REQUESTED:
        for timer in live:
            if timer.stage is SlaStage.HANDLE and timer.status is TimerStatus.RUNNING:
                put(timer, _pause(timer, at, clocks))
    elif move in (_T.EXTENSION_DENIED, _T.EXTENSION_APPROVED):
        until = event.extension_until if move is _T.EXTENSION_APPROVED else None
        for timer in live:
            if timer.stage is SlaStage.HANDLE and timer.status is TimerStatus.PAUSED:
                moved = _extend(timer, at, until, clocks) if until else _resume(timer, at, clocks)
                put(timer, moved)
    return result


def _handling(
    timers: list[Timer], event: CaseLifecycleEvent, policies: PolicySet, clocks: Clockwork
) -> list[Timer]:
    """Handling starts (signed) or starts again (rework; signed after a reopen): a fresh clock,
    or — when the policy says `keep` and this department resolved the case before — its
    stopped handling timers resumed where they stopped."""
    policy = policies.select(event.category, event.urgency)
    stopped = [
        t
        for t in timers
        if t.stage is SlaStage.HANDLE
        and t.status is TimerStatus.STOPPED
        and t.department == event.department
        and t.outcome == _T.RESOLVED.value
    ]
    if policy.on_rework == "keep" and stopped:
        # the latest stopped handling timers: one per staged limit
        latest: dict[str | None, Timer] = {}
        for timer in stopped:
            if timer.name not in latest or timer.started_at >= latest[timer.name].started_at:
                latest[timer.name] = timer
        result = list(timers)
        for timer in latest.values():
            resumed = _resume(
                replace(timer, stopped_at=None, outcome=None, case_version=event.version),
                event.at,
                clocks,
            )
            result[result.index(timer)] = resumed
        return result
    return timers + _start(event, SlaStage.HANDLE, event.department, policies, clocks)
