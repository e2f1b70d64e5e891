"""sla's API: a case's deadlines and clock history, and the working calendar.

Bearer tokens are the departments' and operators' (HS256, GRIDFLOW_API_JWT_SECRET, scope
`cases:read`). An operator sees the cases located in their grid subtree; a department sees the
cases whose clock it has held; any other case is 404. The calendar answers any of them.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from libs.common.auth import AuthError, Principal, TokenVerifier
from libs.common.events import AssessmentLevel
from libs.common.runtime import Runtime
from libs.common.web import ApiError, CaseIdPath, bearer_token, error_responses
from services.sla.assessing import assessments
from services.sla.assessments import Period
from services.sla.config import SlaConfig
from services.sla.models import CaseClockRow, TimerRow
from services.sla.policies import ClockKind, parse_duration

router = APIRouter(prefix="/v1/sla", tags=["sla"])
_SECURITY: dict[str, Any] = {"security": [{"bearer": []}]}


def _caller(request: Request) -> tuple[Runtime, Principal]:
    runtime: Runtime = request.app.state.runtime
    verifier: TokenVerifier = request.app.state.verifier
    principal = verifier.verify(bearer_token(request), now=runtime.clock.now())
    if principal.role not in ("operator", "department"):
        raise AuthError(403, "not an operator's or a department's token")
    principal.require("cases:read")
    return runtime, principal


def _config(request: Request) -> SlaConfig:
    config: SlaConfig = request.app.state.config
    return config


def _timer(row: TimerRow) -> dict[str, Any]:
    return {
        "stage": row.stage,
        "limit_name": row.name,
        "department": row.department,
        "policy": row.policy,
        "clock": row.clock,
        "limit_seconds": row.limit_seconds,
        "status": row.status,
        "started_at": row.started_at.isoformat(),
        "due_at": row.due_at.isoformat(),
        "provisional": row.provisional,
        "used_seconds": row.used_seconds,
        "signals_sent": row.fired,
        "next_signal_at": row.next_fire_at.isoformat() if row.next_fire_at else None,
        "stopped_at": row.stopped_at.isoformat() if row.stopped_at else None,
        "outcome": row.outcome,
        "extended": row.extended,
    }


@router.get(
    "/cases/{case_id}",
    summary="a case's deadlines now, and its clock history (who held which clock, how long)",
    responses=error_responses(404),
    openapi_extra=_SECURITY,
)
async def case_clocks(request: Request, case_id: CaseIdPath) -> JSONResponse:
    runtime, principal = _caller(request)
    async with runtime.sessions() as session:
        case = await session.get(CaseClockRow, case_id)
        rows = (
            await session.scalars(
                sa.select(TimerRow)
                .where(TimerRow.case_id == case_id)  # type: ignore[arg-type]
                .order_by(TimerRow.id)  # type: ignore[arg-type]
            )
        ).all()
    if case is None or not _may_see(runtime, principal, case, rows):
        raise ApiError(404, "not_found", "no such case for this caller")
    open_rows = [row for row in rows if row.status != "stopped"]
    return JSONResponse(
        {
            "case_id": case_id,
            "state": case.state,
            "version": case.version,
            "deadlines": [_timer(row) for row in open_rows],
            "history": [_timer(row) for row in rows],
        }
    )


def _may_see(runtime: Runtime, principal: Principal, case: CaseClockRow, rows: Any) -> bool:
    if principal.role == "department":
        return any(row.department == principal.subject for row in rows)
    city = runtime.refdata.grid.city.code
    nodes = [node for node in principal.grids if node in runtime.refdata.grid]
    if city in nodes:
        return True
    return case.unit_grid is not None and any(case.unit_grid.startswith(n) for n in nodes)


@router.get(
    "/calendar/days/{day}",
    summary="is a date a working day (statutory holidays, make-up days, local closures)",
    openapi_extra=_SECURITY,
)
async def calendar_day(request: Request, day: date) -> JSONResponse:
    _caller(request)
    calendar = _config(request).calendar
    return JSONResponse(
        {
            "date": day.isoformat(),
            "working": calendar.is_working_day(day),
            "kind": calendar.day_kind(day).value,
            "official": calendar.is_official(day.year),
        }
    )


@router.get(
    "/calendar/deadline",
    summary="start + an amount on a clock (wall, working_hours, working_days)",
    openapi_extra=_SECURITY,
)
async def calendar_deadline(
    request: Request,
    start: datetime,
    amount: Annotated[str, Query(description="30m, 4h, 3d", max_length=16)],
    clock: ClockKind = ClockKind.WORKING_HOURS,
) -> JSONResponse:
    _caller(request)
    aware = _aware(start, "query.start")
    try:
        length = parse_duration(amount)
    except ValueError as exc:
        raise ApiError(422, "invalid_request", str(exc), "query.amount") from exc
    if clock is ClockKind.WORKING_DAYS and not amount.endswith("d"):
        raise ApiError(
            422, "invalid_request", "working days are counted in days (3d)", "query.amount"
        )
    if length > timedelta(days=366):
        raise ApiError(422, "invalid_request", "at most a year", "query.amount")
    deadline = _config(request).clocks.add(clock, aware, length)
    return JSONResponse(
        {
            "due_at": deadline.at.isoformat(),
            "provisional": deadline.provisional,
            "clock": clock.value,
        }
    )


@router.get(
    "/calendar/working-time",
    summary="clock time between two moments (working hours inside office windows, by default)",
    openapi_extra=_SECURITY,
)
async def calendar_working_time(
    request: Request,
    start: datetime,
    end: datetime,
    clock: ClockKind = ClockKind.WORKING_HOURS,
) -> JSONResponse:
    _caller(request)
    a, b = _aware(start, "query.start"), _aware(end, "query.end")
    if b - a > timedelta(days=3660):
        raise ApiError(422, "invalid_request", "at most ten years apart", "query.end")
    spent = _config(request).clocks.between(clock, a, b)
    return JSONResponse(
        {
            "seconds": spent.total_seconds(),
            "hours": round(spent / timedelta(hours=1), 4),
            "clock": clock.value,
        }
    )


@router.get(
    "/assessments",
    summary="KPIs per department, grid node or worker for a month (2026-11) or quarter (2026-Q4)",
    openapi_extra=_SECURITY,
)
async def assessments_of(
    request: Request,
    period: Annotated[str, Query(pattern=r"^[0-9]{4}-(?:[0-9]{2}|Q[1-4])$")],
    level: Annotated[AssessmentLevel, Query()] = "city",
    node: Annotated[str | None, Query(max_length=64)] = None,
) -> JSONResponse:
    runtime, principal = _caller(request)
    try:
        span = Period.parse(period)
    except ValueError as exc:
        raise ApiError(422, "invalid_request", str(exc), "query.period") from exc
    rows = await assessments(runtime, span, level, _config(request).clocks)
    visible = _assessment_scope(runtime, principal, level)
    chosen = [row for row in rows if visible(row.node) and (node is None or row.node == node)]
    return JSONResponse(
        {
            "period": span.name,
            "level": level,
            "assessments": [r.model_dump(mode="json") for r in chosen],
        }
    )


def _assessment_scope(runtime: Runtime, principal: Principal, level: str) -> Any:
    """A department sees its own row; an operator the grid nodes of its subtree (the city's
    operators everything, departments and workers included)."""
    if principal.role == "department":
        if level != "department":
            raise AuthError(403, "a department reads its own department assessment only")
        return lambda node: node == principal.subject
    nodes = [n for n in principal.grids if n in runtime.refdata.grid]
    if runtime.refdata.grid.city.code in nodes:
        return lambda node: True
    if level in ("department", "worker", "city"):
        raise AuthError(403, f"{level} assessments are for the city centre's operators")
    return lambda node: any(node.startswith(n) for n in nodes)


def _aware(moment: datetime, path: str) -> datetime:
    if moment.tzinfo is None:
        raise ApiError(422, "invalid_request", "give a timezone offset (e.g. +08:00)", path)
    return moment
