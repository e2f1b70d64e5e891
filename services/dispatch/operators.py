"""The operator API: the grid centres' operators search cases, read timelines and decide.

Operator tokens (HS256 JWT signed with GRIDFLOW_API_JWT_SECRET, role `operator`, `sub` = the
operator, `grids` = the grid nodes they answer for — a town's operator has the town's code, the
city centre's has the city's) scope everything: an operator sees and acts only on cases located
in their subtree (grid codes nest by prefix, so the subtree is a prefix); any other case is 404.
Scopes: `cases:read` to look, `cases:manage` to decide.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from libs.common.auth import AuthError, Principal, TokenVerifier
from libs.common.events import Actor, CaseState
from libs.common.runtime import Runtime
from libs.common.web import ApiError, CaseIdPath, bearer_token, error_responses
from services.dispatch.departments import (
    MAX_PAGE,
    Caller,
    _next_cursor,
    _timeline_entry,
    add_command_route,
    read_cursor,
    summary,
)
from services.dispatch.lifecycle import (
    Assign,
    Cancel,
    Close,
    Command,
    DecideExtension,
    Escalate,
    Reassign,
    Reopen,
    Resume,
    Split,
    Supervise,
    Suspend,
    Verify,
)
from services.dispatch.models import CaseHistoryRow, CaseRow

router = APIRouter(prefix="/v1/operator", tags=["operators"])
_C = CaseRow.__table__.c  # type: ignore[attr-defined]  # SQLModel leaves __table__ untyped
_SECURITY: dict[str, Any] = {"security": [{"bearer": []}]}


def _operator(request: Request, scope: str) -> tuple[Runtime, Principal]:
    runtime: Runtime = request.app.state.runtime
    verifier: TokenVerifier = request.app.state.verifier
    principal = verifier.verify(bearer_token(request), now=runtime.clock.now())
    if principal.role != "operator":
        raise AuthError(403, "not an operator's token")
    principal.require(scope)
    if not [node for node in principal.grids if node in runtime.refdata.grid]:
        raise AuthError(403, "the token names no grid node of this city")
    return runtime, principal


def _nodes(runtime: Runtime, principal: Principal) -> list[str]:
    return [node for node in principal.grids if node in runtime.refdata.grid]


def _scope_clause(runtime: Runtime, nodes: list[str]) -> Any:
    city = runtime.refdata.grid.city.code
    if city in nodes:
        return sa.true()
    return sa.or_(*(_C.unit_grid.startswith(node) for node in nodes))


def _visible(runtime: Runtime, nodes: list[str]) -> Any:
    city = runtime.refdata.grid.city.code

    def visible(row: CaseRow) -> bool:
        if city in nodes:
            return True
        return row.unit_grid is not None and any(row.unit_grid.startswith(n) for n in nodes)

    return visible


@router.get(
    "/cases", summary="search the cases of the operator's grid subtree", openapi_extra=_SECURITY
)
async def search(
    request: Request,
    *,
    state: Annotated[list[CaseState] | None, Query()] = None,
    department: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_]{1,31}$")] = None,
    grid: Annotated[str | None, Query(pattern=r"^[0-9]{6,15}$", description="a subtree")] = None,
    category: Annotated[
        str | None,
        Query(max_length=64, pattern=r"^[a-z][a-z_.]*$", description="a code or a prefix"),
    ] = None,
    since: Annotated[datetime | None, Query(description="created at or after")] = None,
    until: Annotated[datetime | None, Query(description="created before")] = None,
    supervised: bool | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> JSONResponse:
    runtime, principal = _operator(request, "cases:read")
    nodes = _nodes(runtime, principal)
    query = sa.select(CaseRow).where(_scope_clause(runtime, nodes))
    if state:
        query = query.where(_C.state.in_([s.value for s in state]))
    if department:
        query = query.where(_C.department == department)
    if grid:
        if (
            not any(grid.startswith(node) for node in nodes)
            and runtime.refdata.grid.city.code not in nodes
        ):
            raise ApiError(403, "forbidden", "outside the operator's grid subtree", "query.grid")
        query = query.where(_C.unit_grid.startswith(grid))
    if category:
        query = query.where(_C.category.startswith(category))
    if since:
        query = query.where(_C.created_at >= since)
    if until:
        query = query.where(_C.created_at < until)
    if supervised is not None:
        query = query.where(_C.supervised == supervised)
    after = read_cursor(cursor)
    if after is not None:
        query = query.where(sa.tuple_(_C.updated_at, _C.case_id) > sa.tuple_(*after))
    query = query.order_by(_C.updated_at, _C.case_id).limit(limit)
    async with runtime.sessions() as session:
        rows = list((await session.scalars(query)).all())
    next_cursor = _next_cursor(rows[-1]) if len(rows) == limit else None
    return JSONResponse({"cases": [summary(row) for row in rows], "next_cursor": next_cursor})


@router.get(
    "/cases/{case_id}",
    responses=error_responses(404),
    summary="one case with its timeline (who, when, what, why)",
    openapi_extra=_SECURITY,
)
async def case_detail(request: Request, case_id: CaseIdPath) -> JSONResponse:
    runtime, principal = _operator(request, "cases:read")
    async with runtime.sessions() as session:
        row = await session.get(CaseRow, case_id)
        if row is None or not _visible(runtime, _nodes(runtime, principal))(row):
            raise ApiError(404, "not_found", "no such case in this operator's subtree")
        history = (
            await session.scalars(
                sa.select(CaseHistoryRow)
                .where(CaseHistoryRow.case_id == case_id)  # type: ignore[arg-type]
                .order_by(CaseHistoryRow.version)  # type: ignore[arg-type]
            )
        ).all()
    return JSONResponse(
        {**summary(row), "routing": row.routing, "timeline": [_timeline_entry(h) for h in history]}
    )


def _operator_caller(request: Request) -> Caller:
    runtime, principal = _operator(request, "cases:manage")
    return Caller(
        runtime,
        Actor(kind="operator", id=principal.subject),
        _visible(runtime, _nodes(runtime, principal)),
        f"operator:{principal.subject}",
    )


def _command_route(path: str, model: type[Command], summary_text: str) -> None:
    add_command_route(router, path, model, summary_text, caller=_operator_caller, prefix="operator")


_command_route("assign", Assign, "assign a case from triage to a department")
_command_route("reassign", Reassign, "move a case to another department")
_command_route("escalate", Escalate, "hand the case up to the parent grid level")
_command_route("extension-decision", DecideExtension, "approve or deny a requested extension")
_command_route("suspend", Suspend, "suspend (挂起): the clocks pause")
_command_route("resume", Resume, "resume a suspended case")
_command_route("verify", Verify, "verify the result (核查): pass, or rework with a note")
_command_route("close", Close, "close (结案) a verified case")
_command_route("reopen", Reopen, "reopen a closed case (unsatisfied return visit: redo)")
_command_route("supervise", Supervise, "flag the case for supervision (督办)")
_command_route("cancel", Cancel, "cancel the case")
_command_route("split", Split, "split a wrong merge (并案): the case is routed on its own")

COMMAND_MODELS: tuple[type[Command], ...] = (
    Assign,
    Reassign,
    Escalate,
    DecideExtension,
    Suspend,
    Resume,
    Verify,
    Close,
    Reopen,
    Supervise,
    Cancel,
    Split,
)
