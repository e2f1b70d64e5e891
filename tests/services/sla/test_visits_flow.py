"""Visit obligations against the real broker and database: a recorded visit fulfils the week, a
missed one is reported to the worker's town once — also across a restart — and every ended
period is kept for the assessments."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import sqlalchemy as sa

from libs.common.events import VisitOutcome, VisitOverdue, VisitRecorded
from libs.common.ids import new_visit_id
from libs.common.kafka import TopicNames
from libs.common.topics import VISITS_OVERDUE, VISITS_RECORDED
from services.sla.app import create_app
from services.sla.models import VisitObligationRow, VisitPeriodRow
from services.sla.obligations import sync_register
from services.sla.visits import VISITS_FILE, load_register
from tests.factories import METRICS_TOKEN, Isolation, make_sla_settings
from tests.harness import TopicWatcher, running, until
from tests.services.sla.conftest import START, SlaStack


def visit(resident: str, when: datetime) -> VisitRecorded:
    return VisitRecorded(
        visit_id=new_visit_id(when),
        resident_id=resident,
        worker_id="W0001",
        unit_grid="430281001001001",
        visited_at=when,
        recorded_at=when,
        outcome=VisitOutcome.MET,
    )


async def test_a_week_without_a_visit_is_overdue_once(
    sla_stack: SlaStack, isolation: Isolation
) -> None:
    stack = sla_stack
    names = TopicNames(isolation.topic_prefix)
    tuesday = START + timedelta(days=1)
    await stack.publisher.publish(
        VISITS_RECORDED, visit("R0001", tuesday), key="R0001", now=tuesday
    )
    stranger = visit("R9999", tuesday)
    await stack.publisher.publish(VISITS_RECORDED, stranger, key="R9999", now=tuesday)

    async def recorded() -> bool:
        async with stack.app.state.runtime.sessions() as session:
            row = await session.get(VisitObligationRow, "R0001")
        return row is not None and row.last_visit_at == tuesday

    await until(recorded)
    async with TopicWatcher(
        bootstrap=isolation.kafka_bootstrap,
        topic=VISITS_OVERDUE,
        name=names(VISITS_OVERDUE),
        group=f"{isolation.token}-overdue",
    ) as overdue:
        # the week ends: R0001 was visited, R0004 (weekly) was not; the monthly ones wait
        stack.clock.advance(datetime.fromisoformat("2026-11-30T00:05:00+08:00") - START)
        stack.app.state.visit_watch.wake()
        _, event = await overdue.wait_for(lambda _, p: isinstance(p, VisitOverdue))
        assert isinstance(event, VisitOverdue)
        assert (event.resident_id, event.town, event.frequency.value) == (
            "R0004",
            "430281001",
            "weekly",
        )
        assert event.period_end == datetime.fromisoformat("2026-11-30T00:00:00+08:00")
        assert event.last_visit_at is None

        async def periods() -> list[tuple[str, bool]]:
            async with stack.app.state.runtime.sessions() as session:
                rows = (
                    await session.scalars(
                        sa.select(VisitPeriodRow).order_by(VisitPeriodRow.resident_id)
                    )
                ).all()
            return [(r.resident_id, r.fulfilled) for r in rows]

        assert await periods() == [("R0001", True), ("R0004", False)]
        # a restarted instance finds nothing to report again
        async with running(
            create_app(make_sla_settings(isolation, config_dir=stack.config), clock=stack.clock)
        ) as _:
            pass
        assert await stack.app.state.visit_watch.fire_due() == 0
        assert await periods() == [("R0001", True), ("R0004", False)]
        assert [p for _, p in overdue.seen if isinstance(p, VisitOverdue)] == [event]
    metrics = (
        await stack.client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    ).text
    assert 'gridflow_sla_visits_overdue_total{category="severe_mental_illness"} 1.0' in metrics
    assert "gridflow_sla_visits_unregistered_total 1.0" in metrics


async def test_instances_starting_together_both_synchronise_the_register(
    sla_stack: SlaStack,
) -> None:
    """Two instances starting at once both write the register into an empty table: they take
    turns (an advisory lock), so neither fails on the other's rows (found by the scale-out test:
    one of two sla processes exited at start-up with a unique violation)."""
    runtime = sla_stack.app.state.runtime
    register = load_register(sla_stack.config / VISITS_FILE, against=runtime.refdata)
    async with runtime.sessions() as session, session.begin():
        await session.execute(sa.delete(VisitObligationRow))
    counts = await asyncio.gather(
        sync_register(runtime, register), sync_register(runtime, register)
    )
    assert list(counts) == [len(register.residents)] * 2
    async with runtime.sessions() as session:
        stored = (await session.scalars(sa.select(VisitObligationRow))).all()
    assert sorted(row.resident_id for row in stored) == sorted(register.residents)
