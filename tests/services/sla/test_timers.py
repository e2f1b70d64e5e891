"""The clocks of a case as a pure state machine, on the real working calendar: starts, stops,
pauses, extensions, rework, returns, staged limits, and the signal points of each timer."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from libs.common.events import (
    Actor,
    CaseLifecycleEvent,
    CaseState,
    SlaSignalKind,
    SlaStage,
    Transition,
    Urgency,
)
from libs.common.ids import new_case_id
from libs.common.refdata import load_reference_data
from libs.common.worktime import ChinaCalendar, OfficeHours, YearDates
from services.sla.clocks import Clockwork
from services.sla.policies import ClockKind, PolicySet, load_policies
from services.sla.timers import Timer, TimerStatus, apply, fire, schedule
from tests.factories import REPO_CONFIG

T, S = Transition, CaseState
POLICIES: PolicySet = load_policies(
    REPO_CONFIG / "sla.yaml", against=load_reference_data(REPO_CONFIG)
)
CLOCKS = Clockwork(calendar=ChinaCalendar(), office=OfficeHours(POLICIES.office_hours))
CASE = new_case_id(datetime(2026, 9, 30, tzinfo=UTC))
UNIT_GRID = "430281001001001"
STATE_AFTER = {
    T.ASSIGNED: S.ASSIGNED,
    T.REASSIGNED: S.ASSIGNED,
    T.REOPENED: S.ASSIGNED,
    T.SIGNED: S.ACCEPTED,
    T.RESOLVED: S.RESOLVED,
    T.VERIFIED: S.RESOLVED,
    T.REWORK: S.ACCEPTED,
    T.RETURNED: S.REPORTED,
    T.CLOSED: S.CLOSED,
    T.CANCELLED: S.CANCELLED,
}


def at(text: str) -> datetime:
    """A Beijing-time moment: "2026-09-30 16:00"."""
    return datetime.fromisoformat(text + "+08:00")


class Case:
    """Feeds a case's events through `apply`, numbering versions, keeping its timers."""

    def __init__(self, category: str = "city.garbage", urgency: Urgency = Urgency.ROUTINE) -> None:
        self.category, self.urgency = category, urgency
        self.version = 1
        self.timers: list[Timer] = []
        self.department: str | None = None

    def __call__(self, move: Transition, when: str, **details: object) -> list[Timer]:
        self.version += 1
        if "department" in details:
            self.department = details.pop("department")  # type: ignore[assignment]
        event = CaseLifecycleEvent(
            case_id=CASE,
            version=self.version,
            transition=move,
            from_state=None,
            to_state=STATE_AFTER.get(move, S.ACCEPTED),
            at=at(when),
            actor=Actor(kind="system", id="dispatch"),
            category=self.category,
            urgency=self.urgency,
            unit_grid=UNIT_GRID,
            department=self.department,
            **details,  # type: ignore[arg-type]
        )
        self.timers = apply(self.timers, event, policies=POLICIES, clocks=CLOCKS)
        return self.timers

    def live(self) -> list[Timer]:
        return [t for t in self.timers if t.status is not TimerStatus.STOPPED]


def signals(timer: Timer) -> list[tuple[SlaSignalKind, datetime, str | None]]:
    """Every signal the timer sends if nothing else happens."""
    sent = []
    while timer.next_fire_at is not None:
        signal, timer = fire(timer, CLOCKS)
        sent.append((signal.kind, signal.at, signal.escalate_to_level))
    return sent


def test_working_hour_limits_count_across_the_national_day_holiday() -> None:
    case = Case()
    [sign] = case(T.ASSIGNED, "2026-09-30 16:00", department="chengguan")
    assert (sign.stage, sign.department, sign.clock) == (
        SlaStage.SIGN,
        "chengguan",
        ClockKind.WORKING_HOURS,
    )
    assert sign.due_at == at("2026-09-30 16:30") and sign.policy.startswith("garbage@v1-")
    case(T.SIGNED, "2026-09-30 16:10")
    [handle] = case.live()
    # 16:10–17:30 is 1 h 20 of the 4 h; 1–7 October are holidays; the rest from 08:30 on the 8th
    assert handle.stage is SlaStage.HANDLE and handle.due_at == at("2026-10-08 11:10")
    assert signals(handle) == [
        (SlaSignalKind.WARNING, at("2026-10-08 09:10"), None),  # 50 %: 2 h
        (SlaSignalKind.WARNING, at("2026-10-08 10:22"), None),  # 80 %: 3 h 12
        (SlaSignalKind.BREACH, at("2026-10-08 11:10"), None),
        (SlaSignalKind.ESCALATION, at("2026-10-08 15:10"), "town"),  # + 2 working hours
        (SlaSignalKind.ESCALATION, at("2026-10-09 14:10"), "city"),  # + 8 working hours
    ]
    stopped = [t for t in case.timers if t.status is TimerStatus.STOPPED]
    assert [(t.stage, t.outcome, t.used) for t in stopped] == [
        (SlaStage.SIGN, "signed", timedelta(minutes=10))
    ]


def test_suspension_pauses_and_resumption_moves_the_deadline() -> None:
    case = Case()
    case(T.ASSIGNED, "2026-11-23 09:00", department="chengguan")  # a Monday
    case(T.SIGNED, "2026-11-23 09:00")
    assert case.live()[0].due_at == at("2026-11-23 15:00")  # 3 h before lunch, 1 h after
    case(T.SUSPENDED, "2026-11-23 10:00")
    [paused] = case.live()
    assert (paused.status, paused.used, paused.next_fire_at) == (
        TimerStatus.PAUSED,
        timedelta(hours=1),
        None,
    )
    case(T.RESUMED, "2026-11-24 09:00")  # a day later: 3 h left from 09:00 Tuesday
    [resumed] = case.live()
    assert resumed.status is TimerStatus.RUNNING and resumed.due_at == at("2026-11-24 12:00")
    case(
        T.EXTENSION_REQUESTED,
        "2026-11-24 10:00",
        extension_until=at("2026-11-27 17:30"),
        extension_pending=True,
    )
    assert case.live()[0].status is TimerStatus.PAUSED
    case(T.EXTENSION_APPROVED, "2026-11-24 11:00", extension_until=at("2026-11-27 17:30"))
    [extended] = case.live()
    assert extended.due_at == at("2026-11-27 17:30")
    # 2 h used before the request, 25.5 working hours from Tuesday 11:00 to Friday 17:30
    assert extended.limit == timedelta(hours=27.5)
    sent = signals(extended)
    assert [kind for kind, _, _ in sent] == [
        SlaSignalKind.WARNING,
        SlaSignalKind.WARNING,
        SlaSignalKind.BREACH,
        SlaSignalKind.ESCALATION,
        SlaSignalKind.ESCALATION,
    ]
    assert sent[0][1] == at("2026-11-26 08:45")  # 50 %: 13.75 h of 27.5
    assert sent[2][1] == at("2026-11-27 17:30")


def test_a_denied_extension_resumes_the_old_deadline() -> None:
    case = Case()
    case(T.ASSIGNED, "2026-11-23 09:00", department="chengguan")
    case(T.SIGNED, "2026-11-23 09:00")
    case(
        T.EXTENSION_REQUESTED,
        "2026-11-23 10:00",
        extension_until=at("2026-11-27 17:30"),
        extension_pending=True,
    )
    case(T.EXTENSION_DENIED, "2026-11-23 10:30")
    assert case.live()[0].due_at == at("2026-11-23 15:30")  # half an hour of waiting added


def test_a_return_charges_nobody_else_for_the_time_the_returner_held_it() -> None:
    case = Case()
    case(T.ASSIGNED, "2026-11-23 09:00", department="chengguan")
    case(T.SIGNED, "2026-11-23 09:10")
    case(T.RETURNED, "2026-11-25 09:10", department=None)  # two working days later
    assert case.live() == []
    case(T.ASSIGNED, "2026-11-25 09:20", department="yingji")
    [sign] = case.live()
    assert (sign.department, sign.started_at, sign.due_at) == (
        "yingji",
        at("2026-11-25 09:20"),
        at("2026-11-25 09:50"),
    )
    held = [
        (t.department, t.stage, t.used, t.outcome)
        for t in case.timers
        if t.status is TimerStatus.STOPPED
    ]
    assert held == [
        ("chengguan", SlaStage.SIGN, timedelta(minutes=10), "signed"),
        ("chengguan", SlaStage.HANDLE, timedelta(hours=14), "returned"),  # 2 × 7 working hours
    ]


def test_rework_restarts_the_handling_clock_by_default() -> None:
    case = Case()
    case(T.ASSIGNED, "2026-11-23 09:00", department="chengguan")
    case(T.SIGNED, "2026-11-23 09:00")
    case(T.RESOLVED, "2026-11-23 11:00")
    [verify] = case.live()
    assert (verify.stage, verify.department, verify.clock) == (
        SlaStage.VERIFY,
        "chengguan",
        ClockKind.WORKING_DAYS,
    )
    assert verify.due_at == at("2026-11-24 11:00")  # one working day
    case(T.REWORK, "2026-11-23 15:00")
    [handle] = case.live()
    assert handle.started_at == at("2026-11-23 15:00") and handle.due_at == at("2026-11-24 10:00")


def test_rework_keeps_the_handling_clock_when_the_policy_says_keep(tmp_path: Path) -> None:
    keep = load_policies_with(tmp_path, "on_rework: restart", "on_rework: keep")
    timers: list[Timer] = []
    events = [
        (T.ASSIGNED, "2026-11-23 09:00"),
        (T.SIGNED, "2026-11-23 09:00"),
        (T.RESOLVED, "2026-11-23 11:00"),
        (T.REWORK, "2026-11-23 15:00"),
    ]
    for version, (move, when) in enumerate(events, start=2):
        event = CaseLifecycleEvent(
            case_id=CASE,
            version=version,
            transition=move,
            from_state=None,
            to_state=STATE_AFTER[move],
            at=at(when),
            actor=Actor(kind="system", id="dispatch"),
            category="city.garbage",
            unit_grid=UNIT_GRID,
            department="chengguan",
        )
        timers = apply(timers, event, policies=keep, clocks=CLOCKS)
    [handle] = [t for t in timers if t.status is not TimerStatus.STOPPED]
    # 2 h used before resolving; 2 h left from 15:00
    assert (handle.used, handle.due_at) == (timedelta(hours=2), at("2026-11-23 17:00"))


def load_policies_with(folder: Path, old: str, new: str) -> PolicySet:
    text = (REPO_CONFIG / "sla.yaml").read_text()
    assert old in text
    target = folder / "sla.yaml"
    target.write_text(text.replace(old, new))
    return load_policies(target)


def test_emergencies_run_on_the_wall_clock_through_the_night() -> None:
    case = Case(category="city.garbage", urgency=Urgency.EMERGENCY)
    [sign] = case(T.ASSIGNED, "2026-10-01 23:50", department="chengguan")  # a holiday night
    assert (sign.clock, sign.due_at) == (ClockKind.WALL, at("2026-10-02 00:05"))
    assert sign.policy.startswith("emergency@")


def test_a_staged_category_has_one_timer_per_stage_limit() -> None:
    case = Case(category="city.illegal_building")
    case(T.ASSIGNED, "2026-11-23 09:00", department="chengguan")
    case(T.SIGNED, "2026-11-23 09:00")
    limits = {t.name: t.due_at for t in case.live()}
    assert limits == {
        "stop": at("2026-11-23 15:00"),  # 4 working hours
        "penalty": at("2026-12-02 09:00"),  # 7 working days
        "demolition": at("2026-12-21 09:00"),  # 20 working days
    }
    case(T.RESOLVED, "2026-11-24 09:00")
    assert [t.stage for t in case.live()] == [SlaStage.VERIFY]


def test_echoes_of_a_primary_start_nothing_and_a_merge_stops_everything() -> None:
    case = Case()
    case(
        T.ASSIGNED,
        "2026-11-23 09:00",
        department="chengguan",
        merged_into=new_case_id(datetime.now(UTC)),
    )
    assert case.timers == []
    case(T.ASSIGNED, "2026-11-23 09:00", department="chengguan")
    case(T.MERGED, "2026-11-23 09:05", merged_into=new_case_id(datetime.now(UTC)))
    assert case.live() == [] and case.timers[0].outcome == "merged"


@pytest.mark.parametrize("move", [T.CLOSED, T.CANCELLED, T.TRIAGED])
def test_the_end_of_the_case_stops_its_clocks(move: Transition) -> None:
    case = Case()
    case(T.ASSIGNED, "2026-11-23 09:00", department="chengguan")
    case(move, "2026-11-23 09:20")
    assert case.live() == [] and case.timers[0].used == timedelta(minutes=20)


def test_a_deadline_in_a_year_without_official_dates_is_provisional_until_they_come() -> None:
    case = Case(category="dispute.neighbour")
    case(T.ASSIGNED, "2026-12-28 09:00", department="zongzhi")
    case(T.SIGNED, "2026-12-28 09:00")
    [handle] = case.live()  # 15 working days: into January 2027, counted Monday to Friday
    assert handle.provisional and handle.due_at == at("2027-01-18 09:00")
    official = ChinaCalendar().with_year(
        YearDates(
            year=2027,
            holidays=frozenset({date(2027, 1, 1)}),
            makeup_days=frozenset(),
            source="test",
        )
    )
    clocks = Clockwork(calendar=official, office=CLOCKS.office)
    again = schedule(handle, clocks)
    assert not again.provisional and again.due_at == at("2027-01-19 09:00")


def test_reassignment_moves_the_clock_to_the_new_department() -> None:
    case = Case()
    case(T.ASSIGNED, "2026-11-23 09:00", department="chengguan")
    case(T.SIGNED, "2026-11-23 09:10")
    case(T.REASSIGNED, "2026-11-23 11:10", department="yingji")  # 2 working hours later
    [sign] = case.live()
    assert (sign.stage, sign.department, sign.due_at) == (
        SlaStage.SIGN,
        "yingji",
        at("2026-11-23 11:40"),
    )
    [old] = [t for t in case.timers if t.stage is SlaStage.HANDLE]
    assert (old.department, old.outcome, old.used) == (
        "chengguan",
        "reassigned",
        timedelta(hours=2),
    )
    case(T.SIGNED, "2026-11-23 11:20")
    [handle] = case.live()
    # a fresh limit for the new department: 4 working hours from 11:20
    assert (handle.department, handle.due_at) == ("yingji", at("2026-11-23 17:20"))


def test_a_reopened_case_restarts_handling_or_keeps_it_per_policy(tmp_path: Path) -> None:
    keep = load_policies_with(tmp_path, "on_rework: restart", "on_rework: keep")
    moves = [
        (T.ASSIGNED, "2026-11-23 09:00"),
        (T.SIGNED, "2026-11-23 09:00"),
        (T.RESOLVED, "2026-11-23 12:00"),  # 3 of the 4 working hours used
        (T.VERIFIED, "2026-11-23 14:00"),
        (T.CLOSED, "2026-11-23 14:30"),
        (T.REOPENED, "2026-11-24 09:00"),  # unsatisfied return visit: redo
        (T.SIGNED, "2026-11-24 09:00"),
    ]
    for policies, due in ((POLICIES, at("2026-11-24 15:00")), (keep, at("2026-11-24 10:00"))):
        timers: list[Timer] = []
        for version, (move, when) in enumerate(moves, start=2):
            event = CaseLifecycleEvent(
                case_id=CASE,
                version=version,
                transition=move,
                from_state=None,
                to_state=STATE_AFTER.get(move, S.RESOLVED),
                at=at(when),
                actor=Actor(kind="system", id="dispatch"),
                category="city.garbage",
                unit_grid=UNIT_GRID,
                department="chengguan",
            )
            timers = apply(timers, event, policies=policies, clocks=CLOCKS)
        [handle] = [t for t in timers if t.status is not TimerStatus.STOPPED]
        assert (handle.stage, handle.due_at) == (SlaStage.HANDLE, due)
