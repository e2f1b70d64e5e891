"""sla against the real broker and database: lifecycle events start and stop timers, due timers
send their signals exactly once — with two instances side by side and a restart in between —
and the API shows deadlines, clock history and the calendar."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from libs.common.clock import FrozenClock
from libs.common.events import (
    Actor,
    CaseLifecycleEvent,
    CaseState,
    SlaSignal,
    SlaSignalKind,
    Transition,
    Urgency,
)
from libs.common.ids import new_case_id
from libs.common.kafka import BatchHandler, Delivery, Publisher, TopicNames
from libs.common.topics import CASES_LIFECYCLE, SLA_SIGNALS, build_envelope
from services.sla.app import create_app
from services.sla.models import TimerRow
from tests.factories import (
    METRICS_TOKEN,
    Isolation,
    make_department_token,
    make_operator_token,
    make_sla_settings,
)
from tests.harness import TopicWatcher, running, until
from tests.services.sla.conftest import START, SlaStack, sla_config

UNIT_GRID = "430281001001001"
TOWN = "430281001"


def lifecycle(
    case_id: str,
    version: int,
    move: Transition,
    to_state: CaseState,
    at: datetime,
    *,
    department: str | None = "chengguan",
    category: str = "city.garbage",
    **details: Any,
) -> CaseLifecycleEvent:
    return CaseLifecycleEvent(
        case_id=case_id,
        version=version,
        transition=move,
        from_state=None,
        to_state=to_state,
        at=at,
        actor=Actor(kind="system", id="dispatch"),
        category=category,
        urgency=Urgency.ROUTINE,
        unit_grid=UNIT_GRID,
        department=department,
        **details,
    )


async def publish(stack_publisher: Any, event: CaseLifecycleEvent) -> None:
    await stack_publisher.publish(CASES_LIFECYCLE, event, key=event.case_id, now=event.at)


async def timers(app: Any, case_id: str) -> list[TimerRow]:
    async with app.state.runtime.sessions() as session:
        return list(
            (
                await session.scalars(
                    sa.select(TimerRow).where(TimerRow.case_id == case_id).order_by(TimerRow.id)  # type: ignore[arg-type]
                )
            ).all()
        )


def signals_of(stack: SlaStack, case_id: str) -> list[SlaSignal]:
    return [p for _, p in stack.signals.seen if isinstance(p, SlaSignal) and p.case_id == case_id]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_case_clocks_start_stop_and_signal_once_each(sla_stack: SlaStack) -> None:
    stack = sla_stack
    case_id = new_case_id(START)
    await publish(
        stack.publisher, lifecycle(case_id, 2, Transition.ASSIGNED, CaseState.ASSIGNED, START)
    )

    async def has_timer() -> bool:
        return len(await timers(stack.app, case_id)) == 1

    await until(has_timer)
    [sign] = await timers(stack.app, case_id)
    assert (sign.stage, sign.department, sign.status) == ("sign", "chengguan", "running")
    assert sign.due_at == START + timedelta(minutes=30)

    # 20 minutes on: past the 50 % warning (15 min), not yet the breach
    stack.clock.advance(timedelta(minutes=20))
    stack.app.state.firer.wake()
    await stack.signals.wait_for(lambda _, p: isinstance(p, SlaSignal) and p.case_id == case_id)
    # signing stops the sign clock and starts the handling clock
    signed_at = START + timedelta(minutes=25)
    await publish(
        stack.publisher, lifecycle(case_id, 3, Transition.SIGNED, CaseState.ACCEPTED, signed_at)
    )

    async def handling() -> bool:
        return [t.stage for t in await timers(stack.app, case_id) if t.status == "running"] == [
            "handle"
        ]

    await until(handling)
    # a whole day later every point of the handling clock has come due: sent once each, in order
    stack.clock.advance(timedelta(days=2))
    stack.app.state.firer.wake()
    await stack.signals.wait_for(
        lambda _, p: (
            isinstance(p, SlaSignal)
            and p.case_id == case_id
            and p.stage.value == "handle"
            and p.escalate_to == "430281"
        )
    )
    sent = signals_of(stack, case_id)
    assert [(s.stage.value, s.kind) for s in sent] == [
        ("sign", SlaSignalKind.WARNING),
        ("handle", SlaSignalKind.WARNING),
        ("handle", SlaSignalKind.WARNING),
        ("handle", SlaSignalKind.BREACH),
        ("handle", SlaSignalKind.ESCALATION),
        ("handle", SlaSignalKind.ESCALATION),
    ]
    breach = sent[3]
    assert breach.due_at == datetime.fromisoformat("2026-11-23T15:25:00+08:00")  # 4 working hours
    assert (breach.department, breach.case_version) == ("chengguan", 3)
    assert breach.policy.startswith("garbage@v1-")
    assert [s.escalate_to for s in sent[4:]] == [TOWN, "430281"]

    # the API: deadlines and history, scoped
    operator = auth(make_operator_token([TOWN], now=stack.clock.now()))
    body = (await stack.client.get(f"/v1/sla/cases/{case_id}", headers=operator)).json()
    assert [d["stage"] for d in body["deadlines"]] == ["handle"]
    assert [(h["stage"], h["status"], h["outcome"]) for h in body["history"]] == [
        ("sign", "stopped", "signed"),
        ("handle", "running", None),
    ]
    assert body["history"][0]["used_seconds"] == 25 * 60
    other_town = auth(make_operator_token(["430281002"], now=stack.clock.now()))
    assert (
        await stack.client.get(f"/v1/sla/cases/{case_id}", headers=other_town)
    ).status_code == 404
    other_department = auth(make_department_token("yingji", now=stack.clock.now()))
    assert (
        await stack.client.get(f"/v1/sla/cases/{case_id}", headers=other_department)
    ).status_code == 404
    holder = auth(make_department_token("chengguan", now=stack.clock.now()))
    assert (await stack.client.get(f"/v1/sla/cases/{case_id}", headers=holder)).status_code == 200
    assert (await stack.client.get(f"/v1/sla/cases/{case_id}")).status_code == 401

    # closing stops everything; no more signals come
    await publish(
        stack.publisher,
        lifecycle(case_id, 4, Transition.CANCELLED, CaseState.CANCELLED, START + timedelta(days=2)),
    )

    async def stopped() -> bool:
        return all(t.status == "stopped" for t in await timers(stack.app, case_id))

    await until(stopped)
    metrics = (await stack.client.get("/metrics", headers=auth(METRICS_TOKEN))).text
    assert (
        'gridflow_sla_signals_total{department="chengguan",kind="breach",stage="handle"} 1.0'
        in metrics
    )


async def test_a_redelivered_or_stale_event_changes_nothing(sla_stack: SlaStack) -> None:
    stack = sla_stack
    case_id = new_case_id(START)
    assigned = lifecycle(case_id, 2, Transition.ASSIGNED, CaseState.ASSIGNED, START)
    for event in (assigned, assigned):
        await publish(stack.publisher, event)
    signed = lifecycle(
        case_id, 3, Transition.SIGNED, CaseState.ACCEPTED, START + timedelta(minutes=5)
    )
    await publish(stack.publisher, signed)
    stale = lifecycle(
        case_id, 2, Transition.ASSIGNED, CaseState.ASSIGNED, START + timedelta(minutes=6)
    )
    await publish(stack.publisher, stale)
    marker = lifecycle(
        case_id, 4, Transition.PROGRESSED, CaseState.ACCEPTED, START + timedelta(minutes=7)
    )
    await publish(stack.publisher, marker)

    async def applied() -> bool:
        async with stack.app.state.runtime.sessions() as session:
            version = await session.scalar(
                sa.text("SELECT version FROM sla_cases WHERE case_id = :c"), {"c": case_id}
            )
        return bool(version == 4)

    await until(applied)
    rows = await timers(stack.app, case_id)
    assert [(t.stage, t.status) for t in rows] == [("sign", "stopped"), ("handle", "running")]


async def test_two_instances_and_a_restart_send_each_signal_exactly_once(
    isolation: Isolation, tmp_path: Path
) -> None:
    clock = FrozenClock(START)
    settings = make_sla_settings(isolation, config_dir=sla_config(tmp_path), fire_batch=7)
    names = TopicNames(isolation.topic_prefix)
    publisher = Publisher(bootstrap_servers=isolation.kafka_bootstrap, names=names, source="tests")
    watcher = TopicWatcher(
        bootstrap=isolation.kafka_bootstrap,
        topic=SLA_SIGNALS,
        name=names(SLA_SIGNALS),
        group=f"{isolation.token}-watch",
    )
    cases = [new_case_id(START) for _ in range(40)]

    def seen() -> list[SlaSignal]:
        return [p for _, p in watcher.seen if isinstance(p, SlaSignal)]

    first = create_app(settings, clock=clock)
    async with watcher, running(first):
        await publisher.start()
        try:
            for case_id in cases:
                event = lifecycle(case_id, 2, Transition.ASSIGNED, CaseState.ASSIGNED, START)
                await publish(publisher, event)
        finally:
            await publisher.stop()

        async def all_started() -> bool:
            async with first.state.runtime.sessions() as session:
                count = await session.scalar(sa.select(sa.func.count()).select_from(TimerRow))
            return bool(count == len(cases))

        await until(all_started)
        # 20 minutes: the 50 % warning of every 30-minute sign clock; two instances race for it
        async with running(create_app(settings, clock=clock)) as _:
            clock.advance(timedelta(minutes=20))
            await watcher.wait_for(lambda _, __: len(seen()) >= len(cases))
        # the second instance is gone; a new one starts (a restart) and the rest comes due
        second = create_app(settings, clock=clock)
        async with running(second):
            clock.advance(timedelta(days=3))
            await watcher.wait_for(lambda _, __: len(seen()) >= 5 * len(cases))
            assert await second.state.firer.fire_due() == 0  # nothing left for anyone
            assert await first.state.firer.fire_due() == 0
    # every point of every clock exactly once: 2 warnings, the breach, 2 escalation rungs
    points = Counter((s.case_id, s.kind, s.at) for s in seen())
    assert len(points) == 5 * len(cases) and set(points.values()) == {1}
    assert Counter(s.case_id for s in seen()) == dict.fromkeys(cases, 5)


async def test_the_calendar_api(sla_stack: SlaStack) -> None:
    client = sla_stack.client
    headers = auth(make_operator_token([TOWN], now=sla_stack.clock.now()))
    day = (await client.get("/v1/sla/calendar/days/2026-10-10", headers=headers)).json()
    assert day == {"date": "2026-10-10", "working": True, "kind": "makeup", "official": True}
    holiday = (await client.get("/v1/sla/calendar/days/2026-10-05", headers=headers)).json()
    assert (holiday["working"], holiday["kind"]) == (False, "holiday")
    deadline = await client.get(
        "/v1/sla/calendar/deadline",
        params={"start": "2026-09-30T10:00:00+08:00", "amount": "3d", "clock": "working_days"},
        headers=headers,
    )
    assert deadline.json() == {
        "due_at": "2026-10-10T10:00:00+08:00",
        "provisional": False,
        "clock": "working_days",
    }
    spent = await client.get(
        "/v1/sla/calendar/working-time",
        params={"start": "2026-09-30T16:00:00+08:00", "end": "2026-10-08T09:30:00+08:00"},
        headers=headers,
    )
    assert spent.json()["hours"] == 2.5
    naive = await client.get(
        "/v1/sla/calendar/deadline",
        params={"start": "2026-09-30T10:00:00", "amount": "4h"},
        headers=headers,
    )
    assert naive.status_code == 422 and naive.json()["detail"][0]["path"] == "query.start"
    wrong = await client.get(
        "/v1/sla/calendar/deadline",
        params={"start": "2026-09-30T10:00:00+08:00", "amount": "4h", "clock": "working_days"},
        headers=headers,
    )
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["path"] == "query.amount"
    assert (await client.get("/v1/sla/calendar/days/2026-10-10")).status_code == 401
    worker = auth(make_operator_token([TOWN], scopes=["cases:manage"], now=sla_stack.clock.now()))
    assert (await client.get("/v1/sla/calendar/days/2026-10-10", headers=worker)).status_code == 403


async def test_a_provisional_deadline_is_recounted_when_the_years_dates_arrive(
    sla_stack: SlaStack,
) -> None:
    stack = sla_stack
    case_id = new_case_id(START)
    late = datetime.fromisoformat("2026-12-28T09:00:00+08:00")
    stack.clock.advance(late - START)
    for version, (move, state) in enumerate(
        [(Transition.ASSIGNED, CaseState.ASSIGNED), (Transition.SIGNED, CaseState.ACCEPTED)],
        start=2,
    ):
        await publish(
            stack.publisher,
            lifecycle(
                case_id,
                version,
                move,
                state,
                late,
                category="dispute.neighbour",
                department="zongzhi",
            ),
        )

    async def provisional_handle() -> bool:
        rows = await timers(stack.app, case_id)
        return any(t.stage == "handle" and t.provisional for t in rows)

    await until(provisional_handle)
    watcher = stack.app.state.watcher
    await watcher.measure()
    metrics = (await stack.client.get("/metrics", headers=auth(METRICS_TOKEN))).text
    assert "gridflow_sla_provisional_timers 1.0" in metrics
    (stack.config / "calendar.yaml").write_text(
        "years:\n  2027:\n    source: test\n    holidays: [2027-01-01]\n    makeup_days: []\nclosures: []\n"
    )
    assert await watcher.reload("calendar.yaml")
    [handle] = [t for t in await timers(stack.app, case_id) if t.stage == "handle"]
    assert not handle.provisional
    assert handle.due_at == datetime.fromisoformat("2027-01-19T09:00:00+08:00")
    await watcher.measure()
    metrics = (await stack.client.get("/metrics", headers=auth(METRICS_TOKEN))).text
    assert "gridflow_sla_provisional_timers 0.0" in metrics
    assert "gridflow_sla_calendar_last_official_year 2027.0" in metrics


async def test_a_malformed_case_id_is_refused_before_any_query(sla_stack: SlaStack) -> None:
    # a NUL in the id reached PostgreSQL, which answers it with an error: it was a 500
    headers = auth(make_operator_token(["430281"], now=sla_stack.clock.now()))
    answer = await sla_stack.client.get("/v1/sla/cases/C%00", headers=headers)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["path"] == "path.case_id"
    unknown = await sla_stack.client.get(f"/v1/sla/cases/{new_case_id(START)}", headers=headers)
    assert unknown.status_code == 404


async def test_a_fetched_batch_moves_the_clocks_as_one_by_one_would(sla_stack: SlaStack) -> None:
    """Regression (make faults): sla handled each lifecycle event in a transaction and an offset
    commit of its own, and fell minutes behind dispatch under load; a fetched batch is now one
    transaction, with the same effects — a redelivery inside the batch and a stale event change
    nothing, two events of one case apply in order."""
    stack = sla_stack
    handler = stack.app.state.lifecycle
    assert isinstance(handler, BatchHandler)
    case_id, other = new_case_id(START), new_case_id(START)
    assigned = lifecycle(case_id, 2, Transition.ASSIGNED, CaseState.ASSIGNED, START)
    signed = lifecycle(
        case_id, 3, Transition.SIGNED, CaseState.ACCEPTED, START + timedelta(minutes=5)
    )
    stale = lifecycle(
        case_id, 2, Transition.ASSIGNED, CaseState.ASSIGNED, START + timedelta(minutes=6)
    )
    elsewhere = lifecycle(other, 2, Transition.ASSIGNED, CaseState.ASSIGNED, START)
    envelopes = [
        build_envelope(CASES_LIFECYCLE, e, source="tests", key=e.case_id, now=e.at)
        for e in (assigned, signed, stale, elsewhere)
    ]
    # the first event twice (a redelivery inside the batch), then the case's next and a stale one
    batch = [(0, assigned), (0, assigned), (1, signed), (2, stale), (3, elsewhere)]
    await handler.handle_batch(
        [
            Delivery(envelopes[n], event, "cases.lifecycle", 0, offset)
            for offset, (n, event) in enumerate(batch)
        ]
    )
    rows = await timers(stack.app, case_id)
    assert [(t.stage, t.status) for t in rows] == [("sign", "stopped"), ("handle", "running")]
    assert [(t.stage, t.status) for t in await timers(stack.app, other)] == [("sign", "running")]
    # a record of the batch delivered again later (after a crash before the offset commit)
    await handler.handle_batch([Delivery(envelopes[1], signed, "cases.lifecycle", 0, 9)])
    assert [(t.stage, t.status) for t in await timers(stack.app, case_id)] == [
        ("sign", "stopped"),
        ("handle", "running"),
    ]
