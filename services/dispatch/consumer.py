"""dispatch's Kafka shell: a submitted case is stored, routed and queued for delivery — or merged
into the open case it duplicates (并案) — in one transaction, with its lifecycle events staged in
the outbox of that same transaction.

A fetched batch of submissions is handled in one transaction with set-based statements (one claim,
one lookup of stored cases, one search for duplicates, multi-row inserts), with the same effects as
handling its records one after the other: a case may duplicate an earlier case of the same batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import sqlalchemy as sa
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import Write, claim_event, driver_of, execute_writes
from libs.common.events import CaseLifecycleEvent, CaseState, CaseSubmitted, Urgency
from libs.common.ids import new_event_id
from libs.common.kafka import Delivery
from libs.common.outbox import StagedRows, stage
from libs.common.refdata import WebhookReceiver, WeekdayCalendar
from libs.common.runtime import Runtime
from libs.common.topics import CASES_LIFECYCLE
from services.dispatch.delivery import DeliveryStatus, webhook_json
from services.dispatch.duplicates import (
    Candidate,
    DuplicatePolicy,
    box,
    mergeable,
    nearest,
    position,
)
from services.dispatch.lifecycle import (
    Admission,
    CaseView,
    admit,
    assign,
    follow,
    merge,
    owning_node,
)
from services.dispatch.models import CaseHistoryRow, CaseRow, DeliveryRow
from services.dispatch.routing import RoutingDecision, route

_CASES = CaseRow.__table__  # type: ignore[attr-defined]  # SQLModel leaves __table__ untyped
_C = _CASES.c
_HISTORY = CaseHistoryRow.__table__  # type: ignore[attr-defined]
_DELIVERIES = DeliveryRow.__table__  # type: ignore[attr-defined]
_CLOSED = ("closed", "cancelled")
# a batch's reads in one statement (SubmittedCases._read): its events claimed, its cases stored
# already, and the duplicate candidates near its cases. The state and merge conditions are
# written out so that the partial index cases_duplicate_candidates serves every plan.
_READ_BATCH = """
    WITH claimed AS (
        INSERT INTO processed_events (consumer, event_id, processed_at)
        SELECT $1, unnest($2::text[]), $3
        ON CONFLICT DO NOTHING
        RETURNING event_id
    )
    SELECT 'claimed' AS kind, event_id AS key, NULL::int AS wanted, NULL::float8 AS lat,
        NULL::float8 AS lon
    FROM claimed
    UNION ALL
    SELECT 'stored', case_id, NULL, NULL, NULL FROM cases WHERE case_id = ANY($4::text[])
    UNION ALL
    SELECT 'near', c.case_id, w.wanted, c.lat, c.lon
    FROM unnest($5::int[], $6::text[], $7::float8[], $8::float8[], $9::float8[], $10::float8[])
         AS w(wanted, category, min_lat, max_lat, min_lon, max_lon)
    JOIN cases c ON c.category = w.category
        AND c.lat BETWEEN w.min_lat AND w.max_lat AND c.lon BETWEEN w.min_lon AND w.max_lon
    WHERE c.created_at >= $11 AND c.merged_into IS NULL
        AND c.state NOT IN ('closed', 'cancelled')
"""


class RoutingMetrics:
    def __init__(self, runtime: Runtime) -> None:
        self.decisions = Counter(
            "gridflow_routing_decisions_total",
            "Routing decisions for new cases by deciding rule (`triage`: no rule matched)",
            ["rule"],
            registry=runtime.registry,
        )
        self.merged = Counter(
            "gridflow_cases_merged_total",
            "New cases merged into an open case they duplicate (并案), by category",
            ["category"],
            registry=runtime.registry,
        )


class SubmittedCases:
    """Handler of `cases.submitted`; idempotent on the event id and on the case id."""

    def __init__(
        self,
        *,
        runtime: Runtime,
        consumer: str,
        on_commit: Callable[[], None],
        duplicates: DuplicatePolicy,
    ) -> None:
        self._runtime = runtime
        self._consumer = consumer
        self._on_commit = on_commit
        self._duplicates = duplicates
        self._metrics = RoutingMetrics(runtime)

    async def __call__(self, delivery: Delivery) -> None:
        case = _submitted(delivery)
        runtime = self._runtime
        now = runtime.clock.now()
        async with runtime.sessions() as session, session.begin():
            first = await claim_event(
                session, consumer=self._consumer, event_id=delivery.envelope.id, now=now
            )
            if not first or await session.get(CaseRow, case.case_id) is not None:
                return
            decision = self._route(case, now)
            at = position(case)
            primary = None
            if at is not None and self._merging(case):
                primary = await _open_case_near(
                    session, case=case, at=at, now=now, policy=self._duplicates
                )
            if primary is not None:
                admission = merge(case, decision, view_of(primary), now=now)
                self._metrics.merged.labels(case.category.code).inc()
            else:
                admission = admit(case, decision, now=now)
            values = case_values(case, decision, admission, at=at, now=now)
            assigned = self._assigned_at_once(case, decision, admission, values, now)
            row = CaseRow(**_orm_values(values))
            session.add(row)
            self._metrics.decisions.labels(decision.rule_id or "triage").inc()
            for event in admission.events:
                await record_transition(session, event=event, runtime=runtime, followers=False)
            if assigned is not None:
                await record_transition(session, event=assigned, runtime=runtime, followers=False)
            elif admission.deliver_to is not None:
                queue_delivery(
                    session, runtime=runtime, case=case, department=admission.deliver_to, now=now
                )
        self._on_commit()

    async def handle_batch(self, deliveries: Sequence[Delivery]) -> None:
        """The records in one transaction, with the effects of handling them one by one."""
        runtime = self._runtime
        now = runtime.clock.now()
        batch = _Batch()
        payloads = [_submitted(delivery) for delivery in deliveries]
        places = [position(case) for case in payloads]
        wanted = [
            (index, case.category.code, at)
            for index, (case, at) in enumerate(zip(payloads, places, strict=True))
            if at is not None and self._merging(case)
        ]
        async with runtime.sessions() as session, session.begin():
            driver = await driver_of(session)  # the hot statements skip SQLAlchemy
            claimed, stored, nearby = await self._read(driver, deliveries, payloads, wanted, now)
            chosen: dict[str, int] = {}  # case id → index of the delivery that counts
            for index, delivery in enumerate(deliveries):
                if delivery.envelope.id in claimed:
                    claimed.discard(delivery.envelope.id)  # a second copy in the batch is not new
                    chosen.setdefault(payloads[index].case_id, index)  # a resubmission: the first
            for case_id, index in chosen.items():
                if case_id not in stored:
                    await self._admit_into(
                        batch,
                        session,
                        case=payloads[index],
                        at=places[index],
                        nearby=nearby.get(index),
                        now=now,
                    )
            await batch.write(session, runtime=runtime)
        for rule in batch.decisions:
            self._metrics.decisions.labels(rule).inc()
        for category in batch.merged:
            self._metrics.merged.labels(category).inc()
        if batch.cases:
            self._on_commit()

    async def _read(
        self,
        driver: asyncpg.Connection,
        deliveries: Sequence[Delivery],
        payloads: Sequence[CaseSubmitted],
        wanted: Sequence[tuple[int, str, tuple[float, float]]],
        now: datetime,
    ) -> tuple[set[str], set[str], dict[int, list[Candidate]]]:
        """What a batch needs to know, in one statement: which of its events are new to this
        consumer (claimed now), which of its cases are stored already, and for each wanted
        delivery (index, category, position) the open unmerged cases of its category within its
        box (`_open_case_near`'s search). The last two are asked for every case of the batch;
        only those of claimed events are used."""
        areas = [box(at, self._duplicates.distance_meters) for _, _, at in wanted]
        rows = await driver.fetch(
            _READ_BATCH,
            self._consumer,
            list(dict.fromkeys(d.envelope.id for d in deliveries)),
            now,
            list({case.case_id for case in payloads}),
            [index for index, _, _ in wanted],
            [category for _, category, _ in wanted],
            [a.min_lat for a in areas],
            [a.max_lat for a in areas],
            [a.min_lon for a in areas],
            [a.max_lon for a in areas],
            now - self._duplicates.window,
        )
        claimed: set[str] = set()
        stored: set[str] = set()
        nearby: dict[int, list[Candidate]] = {index: [] for index, _, _ in wanted}
        for kind, key, index, lat, lon in rows:
            if kind == "claimed":
                claimed.add(key)
            elif kind == "stored":
                stored.add(key)
            else:
                nearby[index].append(Candidate(key, lat, lon))
        return claimed, stored, nearby

    async def _admit_into(
        self,
        batch: _Batch,
        session: Any,
        *,
        case: CaseSubmitted,
        at: tuple[float, float] | None,
        nearby: list[Candidate] | None,
        now: datetime,
    ) -> None:
        """One case of a batch: decided against the stored cases and the batch's earlier ones."""
        decision = self._route(case, now)
        primary: CaseView | None = None
        if at is not None and nearby is not None:
            area = box(at, self._duplicates.distance_meters)
            earlier = [
                c
                for c in batch.open_cases.get(case.category.code, [])
                if area.min_lat <= c.lat <= area.max_lat and area.min_lon <= c.lon <= area.max_lon
            ]
            found = nearest(at, [*nearby, *earlier], self._duplicates.distance_meters)
            if found is not None and found.case_id in batch.views:
                primary = batch.views[found.case_id]
            elif found is not None:
                row = await _locked_open_case(session, found.case_id)
                primary = view_of(row) if row is not None else None
        if primary is not None:
            admission = merge(case, decision, primary, now=now)
            batch.merged.append(case.category.code)
        else:
            admission = admit(case, decision, now=now)
        batch.decisions.append(decision.rule_id or "triage")
        values = case_values(case, decision, admission, at=at, now=now)
        assigned = self._assigned_at_once(case, decision, admission, values, now)
        batch.cases.append(values)
        batch.events.extend(admission.events)
        if assigned is not None:
            batch.events.append(assigned)
        elif admission.deliver_to is not None:
            delivery = delivery_values(
                runtime=self._runtime, case=case, department=admission.deliver_to, now=now
            )
            if delivery is not None:
                batch.deliveries.append(delivery)
        view = view_of_values(values)
        batch.views[case.case_id] = view
        if at is not None and view.merged_into is None:
            candidate = Candidate(case.case_id, at[0], at[1])
            batch.open_cases.setdefault(case.category.code, []).append(candidate)

    def _route(self, case: CaseSubmitted, now: datetime) -> RoutingDecision:
        refdata = self._runtime.refdata
        return route(case, refdata.routing, now=now, calendar=WeekdayCalendar(), grid=refdata.grid)

    def _merging(self, case: CaseSubmitted) -> bool:
        return self._duplicates.enabled and mergeable(case, self._runtime.refdata)

    def _assigned_at_once(
        self,
        case: CaseSubmitted,
        decision: RoutingDecision,
        admission: Admission,
        values: dict[str, Any],
        now: datetime,
    ) -> CaseLifecycleEvent | None:
        """A pull department reads its inbox: nothing to deliver, the case is its at once (the
        case's values are moved on to the assignment)."""
        department = admission.deliver_to
        if department is None or not is_pull(self._runtime, department):
            return None
        assigned = assign(
            case_id=case.case_id,
            state=admission.state,
            version=admission.version,
            category=case.category.code,
            unit_grid=case.location.unit_grid,
            department=department,
            routing=decision.snapshot(),
            now=now,
            urgency=case.urgency,
        )
        values["state"] = assigned.to_state.value
        values["version"] = assigned.version
        return assigned


def _submitted(delivery: Delivery) -> CaseSubmitted:
    case = delivery.payload
    assert isinstance(case, CaseSubmitted)  # noqa: S101  # the topic carries only this type
    return case


@dataclass
class _Batch:
    """What a batch of submissions writes, gathered in order, and its new cases so far."""

    cases: list[dict[str, Any]] = field(default_factory=list)
    events: list[CaseLifecycleEvent] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)
    views: dict[str, CaseView] = field(default_factory=dict)
    open_cases: dict[str, list[Candidate]] = field(default_factory=dict)  # by category

    async def write(self, session: Any, *, runtime: Runtime) -> None:
        if not self.cases:
            return
        writes: list[Write] = [(_INSERT_CASES, _columns(self.cases, _CASE_COLUMNS))]
        if self.deliveries:
            writes.append((_INSERT_DELIVERIES, _columns(self.deliveries, _DELIVERY_COLUMNS)))
        # new cases: nobody follows them yet. The batch's writes are one statement
        await write_transitions(session, events=self.events, runtime=runtime, writes=writes)


# new cases and deliveries in one statement each, from arrays (`case_values`, `delivery_values`)
_CASE_COLUMNS = {
    "case_id": "text",
    "version": "int",
    "state": "text",
    "source": "text",
    "category": "text",
    "urgency": "text",
    "unit_grid": "text",
    "department": "text",
    "routing": "jsonb",
    "submitted": "jsonb",
    "created_at": "timestamptz",
    "updated_at": "timestamptz",
    "owner_node": "text",
    "co_handling": "jsonb",
    "returned_by": "jsonb",
    "return_count": "int",
    "rework_count": "int",
    "suspended": "bool",
    "extension_pending": "bool",
    "extension_requested_until": "timestamptz",
    "verified": "bool",
    "supervised": "bool",
    "lat": "float8",
    "lon": "float8",
    "merged_into": "text",
}
_DELIVERY_COLUMNS = {
    "delivery_id": "text",
    "case_id": "text",
    "department": "text",
    "url": "text",
    "status": "text",
    "attempts": "int",
    "next_attempt_at": "timestamptz",
    "last_error": "text",
    "last_status_code": "int",
    "payload": "jsonb",
    "created_at": "timestamptz",
    "delivered_at": "timestamptz",
    "leased_until": "timestamptz",
}


def _insert_from_arrays(table: str, columns: dict[str, str]) -> str:
    """INSERT of many rows given as one array per column; jsonb columns come as JSON text."""
    arrays = ", ".join(
        f"${i}::text[]" if kind == "jsonb" else f"${i}::{kind}[]"
        for i, kind in enumerate(columns.values(), start=1)
    )
    names = ", ".join(columns)
    values = ", ".join(
        f"{name}::jsonb" if kind == "jsonb" else name for name, kind in columns.items()
    )
    return f"INSERT INTO {table} ({names}) SELECT {values} FROM unnest({arrays}) AS t({names})"  # noqa: S608  # constant names


_INSERT_CASES = _insert_from_arrays("cases", _CASE_COLUMNS)
_INSERT_DELIVERIES = _insert_from_arrays("deliveries", _DELIVERY_COLUMNS)


def _columns(rows: Sequence[dict[str, Any]], columns: dict[str, str]) -> list[list[Any]]:
    return [
        [
            json.dumps(row[name])
            if kind == "jsonb" and not isinstance(row[name], str | None)
            else row[name]
            for row in rows
        ]
        for name, kind in columns.items()
    ]


def _orm_values(values: dict[str, Any]) -> dict[str, Any]:
    """`case_values` for an ORM row (its JSON columns as Python values)."""
    return {
        **values,
        "routing": json.loads(values["routing"]),
        "submitted": json.loads(values["submitted"]),
    }


def case_values(
    case: CaseSubmitted,
    decision: RoutingDecision,
    admission: Admission,
    *,
    at: tuple[float, float] | None,
    now: datetime,
) -> dict[str, Any]:
    """The new case's row (every column; `routing` and `submitted` as JSON text)."""
    view = admission.view
    return {
        "case_id": case.case_id,
        "version": view.version,
        "state": view.state.value,
        "source": case.source.value,
        "category": case.category.code,
        "urgency": case.urgency.value,
        "unit_grid": case.location.unit_grid,
        "department": view.department or admission.deliver_to,
        "routing": decision.snapshot().model_dump_json(),  # jsonb columns as JSON text
        "submitted": case.model_dump_json(exclude_none=True),
        "created_at": now,
        "updated_at": now,
        "owner_node": owning_node(case.location.unit_grid),
        "co_handling": sorted(view.co_handling or decision.co_handling),
        "returned_by": [],
        "return_count": 0,
        "rework_count": 0,
        "suspended": view.suspended,
        "extension_pending": view.extension_pending,
        "extension_requested_until": view.extension_requested_until,
        "verified": view.verified,
        "supervised": view.supervised,
        "lat": at[0] if at else None,
        "lon": at[1] if at else None,
        "merged_into": view.merged_into,
    }


async def _open_case_near(
    session: Any,
    *,
    case: CaseSubmitted,
    at: tuple[float, float],
    now: datetime,
    policy: DuplicatePolicy,
) -> CaseRow | None:
    """The open, unmerged case of the same category nearest to `at` within the policy's distance
    and window, locked so its state cannot move while this one is merged into it."""
    area = box(at, policy.distance_meters)
    rows = (
        await session.execute(
            sa.select(_C.case_id, _C.lat, _C.lon).where(
                _C.category == case.category.code,
                _C.created_at >= now - policy.window,
                _C.merged_into.is_(None),
                _C.state.not_in(_CLOSED),
                _C.lat.between(area.min_lat, area.max_lat),
                _C.lon.between(area.min_lon, area.max_lon),
            )
        )
    ).all()
    found = nearest(at, (Candidate(r.case_id, r.lat, r.lon) for r in rows), policy.distance_meters)
    if found is None:
        return None
    return await _locked_open_case(session, found.case_id)


async def _locked_open_case(session: Any, case_id: str) -> CaseRow | None:
    """The case, locked so its state cannot move while a new one is merged into it; None when it
    moved on between the search and the lock (then the new case is dispatched normally)."""
    row: CaseRow | None = await session.get(CaseRow, case_id, with_for_update=True)
    if row is None or row.merged_into is not None or row.state in _CLOSED:
        return None
    return row


def view_of(row: CaseRow) -> CaseView:
    return _view(lambda name: getattr(row, name))


def view_of_values(values: dict[str, Any]) -> CaseView:
    """The view of a case row given as its column values (`case_values`)."""
    return _view(values.__getitem__)


_VIEW_COLUMNS = (
    "case_id",
    "version",
    "state",
    "category",
    "unit_grid",
    "owner_node",
    "department",
    "co_handling",
    "returned_by",
    "return_count",
    "rework_count",
    "suspended",
    "extension_pending",
    "extension_requested_until",
    "verified",
    "supervised",
    "merged_into",
    "urgency",
)


def _view(column: Callable[[str], Any]) -> CaseView:
    return CaseView(
        case_id=column("case_id"),
        version=column("version"),
        state=CaseState(column("state")),
        category=column("category"),
        unit_grid=column("unit_grid"),
        owner_node=column("owner_node"),
        department=column("department"),
        co_handling=frozenset(column("co_handling")),
        returned_by=frozenset(column("returned_by")),
        return_count=column("return_count"),
        rework_count=column("rework_count"),
        suspended=column("suspended"),
        extension_pending=column("extension_pending"),
        extension_requested_until=column("extension_requested_until"),
        verified=column("verified"),
        supervised=column("supervised"),
        merged_into=column("merged_into"),
        urgency=Urgency(column("urgency")),
    )


def store_view(row: CaseRow, view: CaseView, now: datetime) -> None:
    row.version = view.version
    row.state = view.state.value
    row.owner_node = view.owner_node
    row.department = view.department
    row.co_handling = sorted(view.co_handling)
    row.returned_by = sorted(view.returned_by)
    row.return_count = view.return_count
    row.rework_count = view.rework_count
    row.suspended = view.suspended
    row.extension_pending = view.extension_pending
    row.extension_requested_until = view.extension_requested_until
    row.verified = view.verified
    row.supervised = view.supervised
    row.merged_into = view.merged_into
    row.updated_at = now


async def record_transition(
    session: Any, *, event: CaseLifecycleEvent, runtime: Runtime, followers: bool = True
) -> None:
    """One audit row and one staged `cases.lifecycle` event per transition; the cases merged into
    this one (并案) follow it with an echo each (`followers=False`: it can have none yet)."""
    envelope = await stage(
        session,
        topic=CASES_LIFECYCLE,
        payload=event,
        key=event.case_id,
        source=runtime.source,
        now=event.at,
    )
    session.add(CaseHistoryRow(**history_values(event, event_id=envelope.id)))
    if followers and event.merged_into is None:
        await _echo_to_followers(session, event=event, runtime=runtime)


async def record_transitions(
    session: AsyncSession | asyncpg.Connection,
    *,
    events: Sequence[CaseLifecycleEvent],
    runtime: Runtime,
    writes: Sequence[Write] = (),
) -> None:
    """`record_transition` of many events, in order, with set-based statements: one search for
    the followers of them all, and multi-row inserts of the audit rows and staged events, sent
    in one statement with `writes` (other writes of the transaction, which must not touch the
    followers)."""
    driver = await driver_of(session)
    primaries = sorted({e.case_id for e in events if e.merged_into is None})
    followers: dict[str, list[CaseView]] = {}
    if primaries:
        for record in await driver.fetch(_FOLLOWERS, primaries):
            followers.setdefault(record["merged_into"], []).append(_view(record.__getitem__))
    staged: list[CaseLifecycleEvent] = []
    moved: dict[str, tuple[CaseView, datetime]] = {}
    for event in events:
        staged.append(event)
        if event.merged_into is not None:
            continue
        for index, view in enumerate(followers.get(event.case_id, [])):
            outcome = follow(view, event)
            followers[event.case_id][index] = outcome.view
            moved[view.case_id] = (outcome.view, event.at)
            staged.extend(outcome.events)
    if moved:
        await driver.executemany(_STORE_VIEW, [_view_args(v, at) for v, at in moved.values()])
    await write_transitions(driver, events=staged, runtime=runtime, writes=writes)


# the followers of many cases (并案), locked, with the columns of their view
_FOLLOWERS = f"""
    SELECT {", ".join(_VIEW_COLUMNS)} FROM cases
    WHERE merged_into = ANY($1::text[]) ORDER BY case_id FOR UPDATE
"""  # noqa: S608  # the column names of this module, no input
_STORE_VIEW = """
    UPDATE cases SET version = $2, state = $3, owner_node = $4, department = $5,
        co_handling = $6, returned_by = $7, return_count = $8, rework_count = $9,
        suspended = $10, extension_pending = $11, extension_requested_until = $12,
        verified = $13, supervised = $14, merged_into = $15, updated_at = $16
    WHERE case_id = $1
"""
_HISTORY_ROWS = """
    INSERT INTO case_history (case_id, version, transition, from_state, to_state, at,
        actor_kind, actor_id, department, reason, event_id, reason_code, note)
    SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[],
        $6::timestamptz[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
        $12::text[], $13::text[])
"""


def _view_args(view: CaseView, at: datetime) -> tuple[Any, ...]:
    """`_STORE_VIEW`'s parameters: what `store_view` writes."""
    return (
        view.case_id,
        view.version,
        view.state.value,
        view.owner_node,
        view.department,
        json.dumps(sorted(view.co_handling)),  # jsonb columns take JSON text
        json.dumps(sorted(view.returned_by)),
        view.return_count,
        view.rework_count,
        view.suspended,
        view.extension_pending,
        view.extension_requested_until,
        view.verified,
        view.supervised,
        view.merged_into,
        at,
    )


async def write_transitions(
    session: AsyncSession | asyncpg.Connection,
    *,
    events: Sequence[CaseLifecycleEvent],
    runtime: Runtime,
    writes: Sequence[Write] = (),
) -> None:
    """The audit rows and staged `cases.lifecycle` events of transitions (no followers), in one
    statement with `writes`, the transaction's other writes that do not depend on them."""
    writes = [*writes, *_transition_writes(events, runtime=runtime)]
    if writes:
        await execute_writes(await driver_of(session), writes)


def _transition_writes(events: Sequence[CaseLifecycleEvent], *, runtime: Runtime) -> list[Write]:
    """The inserts of `write_transitions`: the staged events, then their audit rows."""
    if not events:
        return []
    staged = StagedRows(
        [(CASES_LIFECYCLE, event, event.case_id, event.at) for event in events],
        source=runtime.source,
    )
    rows = [
        history_values(event, event_id=envelope.id)
        for event, envelope in zip(events, staged.envelopes, strict=True)
    ]
    return [staged.write, (_HISTORY_ROWS, [[row[name] for row in rows] for name in _HISTORY_ORDER])]


_HISTORY_ORDER = (
    "case_id",
    "version",
    "transition",
    "from_state",
    "to_state",
    "at",
    "actor_kind",
    "actor_id",
    "department",
    "reason",
    "event_id",
    "reason_code",
    "note",
)


def history_values(event: CaseLifecycleEvent, *, event_id: str) -> dict[str, Any]:
    """The audit row of a transition (every column but the id)."""
    return {
        "case_id": event.case_id,
        "version": event.version,
        "transition": event.transition.value,
        "from_state": event.from_state.value if event.from_state else None,
        "to_state": event.to_state.value,
        "at": event.at,
        "actor_kind": event.actor.kind,
        "actor_id": event.actor.id,
        "department": event.department,
        "reason": event.reason,
        "event_id": event_id,
        "reason_code": event.reason_code,
        "note": event.note,
    }


async def _echo_to_followers(session: Any, *, event: CaseLifecycleEvent, runtime: Runtime) -> None:
    merged = (
        await session.scalars(
            sa.select(CaseRow)
            .where(_C.merged_into == event.case_id)
            .order_by(_C.case_id)
            .with_for_update()
        )
    ).all()
    if not merged:
        return
    for row in merged:
        outcome = follow(view_of(row), event)
        store_view(row, outcome.view, event.at)
        for echo in outcome.events:
            await record_transition(session, event=echo, runtime=runtime, followers=False)


def is_pull(runtime: Runtime, department: str) -> bool:
    """The department reads its inbox instead of receiving webhooks."""
    return runtime.refdata.departments[department].receiver.kind == "pull"


def queue_delivery(
    session: Any, *, runtime: Runtime, case: CaseSubmitted, department: str, now: datetime
) -> str | None:
    """A pending signed-webhook delivery of `case` to `department`; returns its webhook-id, or
    None for a pull department (it reads its inbox: nothing to deliver)."""
    values = delivery_values(runtime=runtime, case=case, department=department, now=now)
    if values is None:
        return None
    session.add(DeliveryRow(**{**values, "payload": json.loads(values["payload"])}))
    return str(values["delivery_id"])


def delivery_values(
    *, runtime: Runtime, case: CaseSubmitted, department: str, now: datetime
) -> dict[str, Any] | None:
    """The row of a pending delivery of `case` to `department` (every column), or None for a
    pull department."""
    receiver = runtime.refdata.departments[department].receiver
    if not isinstance(receiver, WebhookReceiver):
        return None
    delivery_id = "msg_" + new_event_id(now)
    return {
        "delivery_id": delivery_id,
        "case_id": case.case_id,
        "department": department,
        "url": str(receiver.url),
        "status": DeliveryStatus.PENDING.value,
        "attempts": 0,
        "next_attempt_at": now,
        "last_error": None,
        "last_status_code": None,
        "payload": webhook_json(  # JSON text
            case, delivery_id=delivery_id, department=department, sharing=receiver.reporter
        ),
        "created_at": now,
        "delivered_at": None,
        "leased_until": None,
    }
