"""The department API: a department's own system reads its inbox and works its cases.

Each department has its own bearer token (HS256 JWT signed with GRIDFLOW_DISPATCH_JWT_SECRET,
role `department`, `sub` = its short code, scopes `cases:read` / `cases:write`). A department
sees and touches only the cases it holds or co-handles: any other case id answers 404, exactly
as an unknown one does. Every command takes an `Idempotency-Key`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from libs.common.auth import AuthError, Principal, TokenVerifier
from libs.common.events import Actor, CaseSubmitted
from libs.common.runtime import Runtime
from libs.common.web import (
    NUL_REASON,
    ApiError,
    CaseIdPath,
    bearer_token,
    error_responses,
    nul_path,
)
from services.dispatch.commands import (
    CaseNotFoundError,
    CommandKey,
    KeyReusedError,
    execute,
    fingerprint,
)
from services.dispatch.delivery import shared_case
from services.dispatch.lifecycle import (
    Command,
    InvalidCommandError,
    NotAllowedError,
    Progress,
    RequestExtension,
    Resolve,
    Return,
    SignFor,
    TransitionRefusedError,
)
from services.dispatch.models import CaseHistoryRow, CaseRow

router = APIRouter(prefix="/v1/department", tags=["departments"])
MAX_PAGE = 200
_SECURITY: dict[str, Any] = {"security": [{"bearer": []}]}


def _department(request: Request, scope: str) -> tuple[Runtime, str]:
    runtime: Runtime = request.app.state.runtime
    verifier: TokenVerifier = request.app.state.verifier
    principal: Principal = verifier.verify(bearer_token(request), now=runtime.clock.now())
    if principal.role != "department" or principal.subject not in runtime.refdata.departments:
        raise AuthError(403, "not a department's token")
    principal.require(scope)
    return runtime, principal.subject


def _holds(department: str) -> Any:
    # a merged duplicate (并案) is never delivered: the department handles its primary
    return lambda row: (
        row.merged_into is None and (row.department == department or department in row.co_handling)
    )


def summary(row: CaseRow, department: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "case_id": row.case_id,
        "version": row.version,
        "state": row.state,
        "category": row.category,
        "urgency": row.urgency,
        "unit_grid": row.unit_grid,
        "department": row.department,
        "co_handling": list(row.co_handling),
        "suspended": row.suspended,
        "extension_pending": row.extension_pending,
        "supervised": row.supervised,
        "merged_into": row.merged_into,
        "updated_at": row.updated_at.isoformat(),
    }
    if department is not None:
        body["role"] = "primary" if row.department == department else "co_handling"
    return body


def read_cursor(text: str | None) -> tuple[datetime, str] | None:
    """A page cursor this API gave: (moment, key) of the last row of the page before."""
    if not text:
        return None
    refused = ApiError(422, "invalid_request", "not a cursor this API gave", "query.cursor")
    try:
        moment, key = base64.urlsafe_b64decode(text.encode()).decode().split("|", 1)
        when = datetime.fromisoformat(moment)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise refused from exc
    # what it gave is aware and has no NUL (which PostgreSQL refuses with an error)
    if when.tzinfo is None or "\x00" in key:
        raise refused
    return when, key


def make_cursor(moment: datetime, key: str) -> str:
    return base64.urlsafe_b64encode(f"{moment.isoformat()}|{key}".encode()).decode()


def _next_cursor(row: CaseRow) -> str:
    return make_cursor(row.updated_at, row.case_id)


@router.get(
    "/cases",
    summary="the inbox: cases this department holds or co-handles, oldest change first",
    openapi_extra=_SECURITY,
)
async def inbox(
    request: Request,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> JSONResponse:
    runtime, department = _department(request, "cases:read")
    after = read_cursor(cursor)
    mine = sa.and_(
        sa.or_(
            CaseRow.department == department,  # type: ignore[arg-type]
            CaseRow.co_handling.contains([department]),  # type: ignore[attr-defined]
        ),
        CaseRow.merged_into.is_(None),  # type: ignore[union-attr]
    )
    query = sa.select(CaseRow).where(mine)
    if after is not None:
        query = query.where(sa.tuple_(CaseRow.updated_at, CaseRow.case_id) > sa.tuple_(*after))
    query = query.order_by(CaseRow.updated_at, CaseRow.case_id).limit(limit)  # type: ignore[arg-type]
    async with runtime.sessions() as session:
        rows = list((await session.scalars(query)).all())
    next_cursor = _next_cursor(rows[-1]) if len(rows) == limit else None
    body = {"cases": [summary(row, department) for row in rows], "next_cursor": next_cursor}
    return JSONResponse(body)


@router.get(
    "/cases/{case_id}",
    responses=error_responses(404),
    summary="one case: what was reported, and its timeline",
    openapi_extra=_SECURITY,
)
async def case_detail(request: Request, case_id: CaseIdPath) -> JSONResponse:
    runtime, department = _department(request, "cases:read")
    async with runtime.sessions() as session:
        row = await session.get(CaseRow, case_id)
        if row is None or not _holds(department)(row):
            raise ApiError(404, "not_found", "no such case for this department")
        history = (
            await session.scalars(
                sa.select(CaseHistoryRow)
                .where(CaseHistoryRow.case_id == case_id)  # type: ignore[arg-type]
                .order_by(CaseHistoryRow.version)  # type: ignore[arg-type]
            )
        ).all()
    case = CaseSubmitted.model_validate(row.submitted)
    sharing = runtime.refdata.departments[department].receiver.reporter
    shared = shared_case(case, sharing)  # as much of the reporter as its receiver may see
    body = {
        **summary(row, department),
        "case": shared.model_dump(mode="json", exclude_none=True),
        "timeline": [_timeline_entry(entry) for entry in history],
    }
    return JSONResponse(body)


def _timeline_entry(entry: CaseHistoryRow) -> dict[str, Any]:
    return {
        "version": entry.version,
        "transition": entry.transition,
        "from_state": entry.from_state,
        "to_state": entry.to_state,
        "at": entry.at.isoformat(),
        "actor": {"kind": entry.actor_kind, "id": entry.actor_id},
        "department": entry.department,
        "reason_code": entry.reason_code,
        "reason": entry.reason,
        "note": entry.note,
    }


async def run_command(
    request: Request,
    case_id: str,
    model: type[Command],
    *,
    runtime: Runtime,
    actor: Actor,
    visible: Any,
    scope: str,
) -> JSONResponse:
    """Parse the body into `model` (the actor comes from the token), execute, map refusals."""
    raw = await request.body()
    try:
        data = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise ApiError(422, "invalid_request", "the body is not JSON", "body") from exc
    found = nul_path(data)
    if found is not None:
        raise ApiError(422, "invalid_request", NUL_REASON, ".".join(map(str, ("body", *found))))
    if not isinstance(data, dict) or "actor" in data:
        raise ApiError(
            422, "invalid_request", "a JSON object without `actor` (the token says who)", "body"
        )
    try:
        command = model.model_validate({**data, "actor": actor.model_dump()})
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from exc
    header = request.headers.get("idempotency-key")
    key = CommandKey(scope, header, fingerprint(case_id, command)) if header else None
    try:
        answer = await execute(
            runtime=runtime,
            case_id=case_id,
            command=command,
            key=key,
            visible=visible,
            answer=summary,
        )
    except CaseNotFoundError as exc:
        raise ApiError(404, "not_found", "no such case for this caller") from exc
    except KeyReusedError as exc:
        raise ApiError(
            409,
            "idempotency_conflict",
            "this key was used for another request",
            "header.Idempotency-Key",
        ) from exc
    except NotAllowedError as exc:
        raise ApiError(403, "forbidden", str(exc)) from exc
    except TransitionRefusedError as exc:
        raise ApiError(409, "transition_refused", str(exc)) from exc
    except InvalidCommandError as exc:
        raise ApiError(422, "invalid_request", str(exc), "body") from exc
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    return JSONResponse(answer.body, status_code=answer.status, headers=headers)


@dataclass(frozen=True)
class Caller:
    """Who sends a command, as an API authenticates them."""

    runtime: Runtime
    actor: Actor
    visible: Callable[[CaseRow], bool]
    scope: str  # the Idempotency-Key's owner


def add_command_route(
    target: APIRouter,
    path: str,
    model: type[Command],
    summary_text: str,
    *,
    caller: Callable[[Request], Caller],
    prefix: str,
) -> None:
    """POST <prefix>/cases/{case_id}/<path>: one lifecycle command, its body `model` less actor."""

    async def endpoint(request: Request, case_id: CaseIdPath) -> JSONResponse:
        who = caller(request)
        return await run_command(
            request,
            case_id,
            model,
            runtime=who.runtime,
            actor=who.actor,
            visible=who.visible,
            scope=who.scope,
        )

    endpoint.__name__ = f"{prefix}_{path.replace('-', '_')}"
    body = {"$ref": f"#/components/schemas/{model.__name__}"}
    target.add_api_route(
        f"/cases/{{case_id}}/{path}",
        endpoint,
        methods=["POST"],
        summary=summary_text,
        openapi_extra={
            **_SECURITY,
            "requestBody": {"content": {"application/json": {"schema": body}}},
        },
        responses={403: {}, 404: {}, 409: {}, 422: {}},
    )


def _department_caller(request: Request) -> Caller:
    runtime, department = _department(request, "cases:write")
    return Caller(
        runtime,
        Actor(kind="department", id=department),
        _holds(department),
        f"department:{department}",
    )


def _command_route(path: str, model: type[Command], summary_text: str) -> None:
    add_command_route(
        router, path, model, summary_text, caller=_department_caller, prefix="department"
    )


_command_route("sign", SignFor, "sign for the case (签收): the handling clock starts")
_command_route("return", Return, "return the case (退单) with a reason code: it is re-routed")
_command_route("progress", Progress, "add a progress note")
_command_route("extension", RequestExtension, "ask for an extension (延期) until a time")
_command_route("resolve", Resolve, "report the result (办结反馈): verification follows")

COMMAND_MODELS: tuple[type[Command], ...] = (SignFor, Return, Progress, RequestExtension, Resolve)


def command_schemas(models: tuple[type[Command], ...]) -> dict[str, dict[str, Any]]:
    """Request-body schemas of commands: the model's, less `actor` (the token says who)."""
    schemas: dict[str, dict[str, Any]] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in schema.pop("$defs", {}).items():
            schemas.setdefault(name, definition)
        schema.get("properties", {}).pop("actor", None)
        schema["required"] = [name for name in schema.get("required", []) if name != "actor"]
        schemas[model.__name__] = schema
    return schemas
