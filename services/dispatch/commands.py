"""dispatch's command shell: one lifecycle command against one case, in one transaction.

Load the case under a row lock, decide with the pure `transition`, write the case, one audit row
and one staged `cases.lifecycle` event per transition, queue a delivery when the case reaches a
new department, and remember the answer under the caller's Idempotency-Key — or change nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import claim_event
from libs.common.events import CaseSubmitted, RoutingSnapshot, Transition
from libs.common.refdata import WeekdayCalendar
from libs.common.runtime import Runtime
from services.dispatch.consumer import queue_delivery, record_transition, store_view, view_of
from services.dispatch.lifecycle import CaseView, Command, LifecyclePolicy, Rerouted, transition
from services.dispatch.models import CaseRow, CommandKeyRow
from services.dispatch.routing import route

_DELIVERED_ON = frozenset({Transition.ASSIGNED, Transition.REASSIGNED, Transition.REOPENED})


class CaseNotFoundError(LookupError):
    """No such case for this caller (another department's case looks the same: no leak)."""


class KeyReusedError(ValueError):
    """The Idempotency-Key was used before with a different request."""


@dataclass(frozen=True)
class CommandKey:
    scope: str  # who used it: "department:chengguan", "operator:OP01"
    key: str
    fingerprint: str


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    replayed: bool = False


def fingerprint(case_id: str, command: Command) -> str:
    text = f"{case_id}\n{command.move}\n{command.model_dump_json(exclude={'actor'})}"
    return hashlib.sha256(text.encode()).hexdigest()


def policy_for(runtime: Runtime, row: CaseRow, now: datetime) -> LifecyclePolicy:
    """Re-routing a returned case uses the routing tree in force, excluding who returned it."""
    case = CaseSubmitted.model_validate(row.submitted)
    refdata = runtime.refdata

    def reroute(_: CaseView, excluded: frozenset[str]) -> Rerouted | None:
        decision = route(
            case,
            refdata.routing,
            now=now,
            calendar=WeekdayCalendar(),
            grid=refdata.grid,
            exclude=excluded,
        )
        if decision.department is None:
            return None
        return Rerouted(decision.department, RoutingSnapshot.model_validate(decision.snapshot()))

    return LifecyclePolicy(city_node=refdata.grid.city.code, reroute=reroute)


async def execute(
    *,
    runtime: Runtime,
    case_id: str,
    command: Command,
    key: CommandKey | None,
    visible: Callable[[CaseRow], bool],
    answer: Callable[[CaseRow], dict[str, Any]],
    cause: tuple[str, str] | None = None,
) -> Answer:
    """Apply `command`; raises CaseNotFoundError, KeyReusedError or the lifecycle's refusals.

    `cause` = (consumer, event id) when a Kafka record causes the command: claimed in the same
    transaction, so a redelivered record changes nothing (the answer is then marked replayed)."""
    now = runtime.clock.now()
    async with runtime.sessions() as session, session.begin():
        if cause is not None and not await claim_event(
            session, consumer=cause[0], event_id=cause[1], now=now
        ):
            return Answer(200, {}, replayed=True)
        if key is not None:
            earlier = await _earlier_answer(session, key)
            if earlier is not None:
                return earlier
        row = await session.get(CaseRow, case_id, with_for_update=True)
        if row is None or not visible(row):
            raise CaseNotFoundError(case_id)
        outcome = transition(view_of(row), command, now=now, policy=policy_for(runtime, row, now))
        store_view(row, outcome.view, now)
        for event in outcome.events:
            await record_transition(session, event=event, runtime=runtime)
        # a case that lands at a department (re-routed, reassigned, reopened, assigned from
        # triage) is delivered to that department's system like a new one
        landed = [e.department for e in outcome.events if e.transition in _DELIVERED_ON]
        if landed and landed[-1] is not None:
            case = CaseSubmitted.model_validate(row.submitted)
            queue_delivery(session, runtime=runtime, case=case, department=landed[-1], now=now)
        body = answer(row)
        if key is not None:
            session.add(
                CommandKeyRow(
                    scope=key.scope,
                    key=key.key,
                    fingerprint=key.fingerprint,
                    status=200,
                    response=body,
                    created_at=now,
                )
            )
    runtime.relay.wake()
    return Answer(200, body)


async def _earlier_answer(session: AsyncSession, key: CommandKey) -> Answer | None:
    # take the key first: a concurrent retry waits here and then finds the stored answer
    await session.execute(
        sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(f"{key.scope}\n{key.key}")))
    )
    stored = await session.get(CommandKeyRow, (key.scope, key.key))
    if stored is None:
        return None
    if stored.fingerprint != key.fingerprint:
        raise KeyReusedError(key.key)
    return Answer(stored.status, dict(stored.response), replayed=True)
