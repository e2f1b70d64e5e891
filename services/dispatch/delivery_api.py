"""Delivery administration for operators: delivery status, dead letters, replay, and the state of
each department's receiver (disabled, circuit breaker), with enable/disable.

Operator tokens as in operators.py; scopes `deliveries:read` to look and `deliveries:manage` to
replay. An operator sees and replays only deliveries of cases in their grid subtree; enabling or
disabling a receiver concerns every case, so it needs the city node in the token.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field, model_validator
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.auth import Principal
from libs.common.contract import CASE_ID_PATTERN, CaseId, Contract
from libs.common.runtime import Runtime
from libs.common.web import ApiError, error_responses
from services.dispatch.delivery import DeliveryStatus, breaker_phase
from services.dispatch.departments import MAX_PAGE, make_cursor, read_cursor
from services.dispatch.models import CaseRow, DeliveryRow, ReceiverRow
from services.dispatch.operators import _nodes, _operator, _scope_clause
from services.dispatch.webhooks import breaker_of, ensure_receivers

router = APIRouter(prefix="/v1/operator/deliveries", tags=["deliveries"])
_D = DeliveryRow.__table__.c  # type: ignore[attr-defined]  # SQLModel leaves __table__ untyped
_C = CaseRow.__table__.c  # type: ignore[attr-defined]
_R = ReceiverRow.__table__.c  # type: ignore[attr-defined]
_SECURITY: dict[str, Any] = {"security": [{"bearer": []}]}
DepartmentCode = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,39}$")]


class ReplayRequest(Contract):
    """Which deliveries to send again: those of one case, of one department, created in a time
    window — or any combination (all given must hold)."""

    case_id: CaseId | None = None
    department: DepartmentCode | None = None
    since: datetime | None = Field(default=None, description="created at or after")
    until: datetime | None = Field(default=None, description="created before")
    include_pending: bool = Field(
        default=False, description="also restart pending deliveries (attempts from 0, due now)"
    )

    @model_validator(mode="after")
    def _says_which(self) -> ReplayRequest:
        if not (self.case_id or self.department or self.since or self.until):
            raise ValueError("name case_id, department, or a since/until window")
        if self.since and self.until and self.since >= self.until:
            raise ValueError("since must be before until")
        return self


class DisableRequest(Contract):
    reason: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00]*$")]


def _visible_deliveries(runtime: Runtime, principal: Principal) -> Any:
    """Deliveries of cases in the operator's subtree (the case decides, not the department)."""
    cases = sa.select(_C.case_id).where(_scope_clause(runtime, _nodes(runtime, principal)))
    return _D.case_id.in_(cases)


def _next_cursor(row: DeliveryRow) -> str:
    return make_cursor(row.created_at, row.delivery_id)


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def delivery_view(row: DeliveryRow) -> dict[str, Any]:
    """A delivery without its payload (which may carry personal information)."""
    return {
        "delivery_id": row.delivery_id,
        "case_id": row.case_id,
        "department": row.department,
        "status": row.status,
        "attempts": row.attempts,
        "next_attempt_at": _when(row.next_attempt_at),
        "last_status_code": row.last_status_code,
        "last_error": row.last_error,
        "created_at": row.created_at.isoformat(),
        "delivered_at": _when(row.delivered_at),
    }


async def _page(
    request: Request,
    *,
    scope: str,
    case_id: str | None,
    department: str | None,
    status: DeliveryStatus | None,
    cursor: str | None,
    limit: int,
) -> JSONResponse:
    runtime, principal = _operator(request, scope)
    query = sa.select(DeliveryRow).where(_visible_deliveries(runtime, principal))
    if case_id:
        query = query.where(_D.case_id == case_id)
    if department:
        query = query.where(_D.department == department)
    if status:
        query = query.where(_D.status == status.value)
    after = read_cursor(cursor)
    if after is not None:
        query = query.where(sa.tuple_(_D.created_at, _D.delivery_id) > sa.tuple_(*after))
    query = query.order_by(_D.created_at, _D.delivery_id).limit(limit)
    async with runtime.sessions() as session:
        rows = list((await session.scalars(query)).all())
    next_cursor = _next_cursor(rows[-1]) if len(rows) == limit else None
    return JSONResponse(
        {"deliveries": [delivery_view(row) for row in rows], "next_cursor": next_cursor}
    )


@router.get("", summary="deliveries of the operator's cases, oldest first", openapi_extra=_SECURITY)
async def deliveries(
    request: Request,
    *,
    # a well-formed id only: PostgreSQL refuses some text (a NUL) with an error, not a row
    case_id: Annotated[str | None, Query(pattern=CASE_ID_PATTERN)] = None,
    department: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_]{1,39}$")] = None,
    status: DeliveryStatus | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> JSONResponse:
    return await _page(
        request,
        scope="deliveries:read",
        case_id=case_id,
        department=department,
        status=status,
        cursor=cursor,
        limit=limit,
    )


@router.get(
    "/dead", summary="dead letters: deliveries that ran out of attempts", openapi_extra=_SECURITY
)
async def dead_letters(
    request: Request,
    *,
    department: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_]{1,39}$")] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> JSONResponse:
    return await _page(
        request,
        scope="deliveries:read",
        case_id=None,
        department=department,
        status=DeliveryStatus.DEAD,
        cursor=cursor,
        limit=limit,
    )


@router.post(
    "/replay",
    summary="send dead (and optionally pending) deliveries again, attempts from 0",
    openapi_extra=_SECURITY,
)
async def replay(request: Request, body: ReplayRequest) -> JSONResponse:
    runtime, principal = _operator(request, "deliveries:manage")
    if body.department and body.department not in runtime.refdata.departments:
        raise ApiError(422, "invalid_request", "no such department", "body.department")
    statuses = [DeliveryStatus.DEAD.value]
    if body.include_pending:
        statuses.append(DeliveryStatus.PENDING.value)
    now = runtime.clock.now()
    # one arm per status, each the predicate of a partial index (IN would scan the table)
    chosen = [sa.or_(*(_D.status == s for s in statuses)), _visible_deliveries(runtime, principal)]
    if body.case_id:
        chosen.append(_D.case_id == body.case_id)
    if body.department:
        chosen.append(_D.department == body.department)
    if body.since:
        chosen.append(_D.created_at >= body.since)
    if body.until:
        chosen.append(_D.created_at < body.until)
    async with runtime.sessions() as session, session.begin():
        result = await session.execute(
            sa.update(DeliveryRow.__table__)  # type: ignore[attr-defined]
            .where(*chosen)
            .values(
                status=DeliveryStatus.PENDING.value,
                attempts=0,
                next_attempt_at=now,
                leased_until=None,
            )
        )
    requeued = int(result.rowcount)  # type: ignore[attr-defined]
    request.app.state.deliverer.wake()
    return JSONResponse({"requeued": requeued})


@router.get(
    "/receivers",
    summary="every department's receiver: kind, disabled, circuit breaker, backlog",
    openapi_extra=_SECURITY,
)
async def receivers(request: Request) -> JSONResponse:
    runtime, _ = _operator(request, "deliveries:read")
    now = runtime.clock.now()
    async with runtime.sessions() as session:
        rows = {row.department: row for row in (await session.scalars(sa.select(ReceiverRow)))}
        counts = (
            await session.execute(
                sa.select(_D.department, _D.status, sa.func.count())
                # all but the delivered ones, an arm per partial index (deliveries_due, _dead)
                .where(
                    sa.or_(
                        _D.status == DeliveryStatus.PENDING.value,
                        _D.status == DeliveryStatus.DEAD.value,
                    )
                )
                .group_by(_D.department, _D.status)
            )
        ).all()
    backlog: dict[tuple[str, str], int] = {(d, s): n for d, s, n in counts}
    answer = []
    for code, department in runtime.refdata.departments.items():
        row = rows.get(code) or ReceiverRow(department=code, updated_at=now)
        breaker = breaker_of(row)
        answer.append(
            {
                "department": code,
                "kind": department.receiver.kind,
                "disabled": row.disabled,
                "disabled_at": _when(row.disabled_at),
                "reason": row.reason,
                "breaker": {
                    "state": breaker_phase(breaker, now=now).value,
                    "consecutive_failures": breaker.failures,
                    "open_until": _when(breaker.open_until),
                    "cooldown_seconds": breaker.cooldown_seconds,
                },
                "pending": backlog.get((code, DeliveryStatus.PENDING.value), 0),
                "dead": backlog.get((code, DeliveryStatus.DEAD.value), 0),
            }
        )
    return JSONResponse({"receivers": answer})


def _city_operator(request: Request, department: str) -> tuple[Runtime, Principal]:
    runtime, principal = _operator(request, "deliveries:manage")
    if runtime.refdata.grid.city.code not in _nodes(runtime, principal):
        raise ApiError(403, "forbidden", "a receiver serves the whole city: city operators only")
    known = runtime.refdata.departments.get(department)
    if known is None:
        raise ApiError(404, "not_found", "no such department")
    if known.receiver.kind != "webhook":
        raise ApiError(409, "not_a_webhook", "a pull department has no receiver to switch")
    return runtime, principal


async def _locked_receiver(session: AsyncSession, department: str, now: datetime) -> ReceiverRow:
    """The department's receiver row (made if it is missing), locked for this transaction."""
    await ensure_receivers(session, [department], now)
    row = await session.get(ReceiverRow, department, with_for_update=True)
    assert row is not None  # noqa: S101  # ensured just above
    return row


@router.post(
    "/receivers/{department}/enable",
    summary="enable a receiver (after a 410 or an operator's disable): its deliveries resume",
    responses=error_responses(404, 409),
    openapi_extra=_SECURITY,
)
async def enable(request: Request, department: str) -> JSONResponse:
    runtime, _ = _city_operator(request, department)
    now = runtime.clock.now()
    async with runtime.sessions() as session, session.begin():
        row = await _locked_receiver(session, department, now)
        row.disabled = False
        row.disabled_at = None
        row.reason = None
        row.consecutive_failures = 0  # the operator says the endpoint works again
        row.open_until = None
        row.cooldown_seconds = 0.0
        row.probing = False
        row.updated_at = now
        await session.execute(
            sa.update(DeliveryRow.__table__)  # type: ignore[attr-defined]
            .where(
                _D.department == department,
                _D.status == DeliveryStatus.PENDING.value,
                sa.or_(_D.leased_until.is_(None), _D.leased_until <= now),
            )
            .values(next_attempt_at=now)
        )
    request.app.state.deliverer.wake()
    return JSONResponse({"department": department, "disabled": False})


@router.post(
    "/receivers/{department}/disable",
    summary="disable a receiver: its deliveries wait, pending, until it is enabled",
    responses=error_responses(404, 409),
    openapi_extra=_SECURITY,
)
async def disable(request: Request, department: str, body: DisableRequest) -> JSONResponse:
    runtime, principal = _city_operator(request, department)
    now = runtime.clock.now()
    async with runtime.sessions() as session, session.begin():
        row = await _locked_receiver(session, department, now)
        row.disabled = True
        row.disabled_at = now
        row.reason = f"operator {principal.subject}: {body.reason}"
        row.updated_at = now
    return JSONResponse({"department": department, "disabled": True})
