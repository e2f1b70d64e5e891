"""The partner API: a bridge (hotline_bridge, citycare_bridge) carries its platform's decisions
into the cases that came from that platform.

Partner tokens (HS256 JWT signed with GRIDFLOW_API_JWT_SECRET, role `partner`, `sub` = the
platform's system name as the bridge writes it in `external_ref.system`, e.g. `hotline12345`)
see and touch only the cases whose `external_ref.system` is their `sub` and, when a department's
webhook receiver names them (`partner: <sub>` in departments.yaml: the department entry that is
their platform, e.g. 数字城管), the cases that department holds (not a merged duplicate, not a
case it only co-handles): there the on-site verification (核查) and the close are the
platform's, so only `verify` and `close` apply. Any other case (or command) is 404, exactly as
an unknown case. Scopes: `cases:read` to read a case's standing, `cases:decide` for the
platform's decisions (review, close, reopen after an unsatisfied return visit, extension
decision, supervision, cancellation). Every command takes an `Idempotency-Key`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from libs.common.auth import AuthError, TokenVerifier
from libs.common.events import Actor
from libs.common.runtime import Runtime
from libs.common.web import ApiError, CaseIdPath, bearer_token, error_responses
from services.dispatch.departments import Caller, add_command_route, summary
from services.dispatch.lifecycle import (
    Cancel,
    Close,
    Command,
    DecideExtension,
    Reopen,
    Supervise,
    Verify,
)
from services.dispatch.models import CaseRow

router = APIRouter(prefix="/v1/partner", tags=["partners"])
_SECURITY: dict[str, Any] = {"security": [{"bearer": []}]}


def _partner(request: Request, scope: str) -> tuple[Runtime, str]:
    runtime: Runtime = request.app.state.runtime
    verifier: TokenVerifier = request.app.state.verifier
    principal = verifier.verify(bearer_token(request), now=runtime.clock.now())
    if principal.role != "partner":
        raise AuthError(403, "not a partner's token")
    principal.require(scope)
    return runtime, principal.subject


def _from(runtime: Runtime, system: str, *, held: bool = True) -> Any:
    """Which cases partner `system` sees: those it filed and (`held`) those its platform's
    department entry holds (reference data decides which entry that is, if any)."""
    platform = runtime.refdata.partner_department(system) if held else None

    def visible(row: CaseRow) -> bool:
        ref = row.submitted.get("external_ref") or {}
        mine = platform is not None and row.department == platform and row.merged_into is None
        return bool(ref.get("system") == system) or mine

    return visible


@router.get(
    "/cases/{case_id}",
    responses=error_responses(404),
    summary="a case that came from this partner: its state and flags",
    openapi_extra=_SECURITY,
)
async def case_standing(request: Request, case_id: CaseIdPath) -> JSONResponse:
    runtime, system = _partner(request, "cases:read")
    async with runtime.sessions() as session:
        row = await session.get(CaseRow, case_id)
    if row is None or not _from(runtime, system)(row):
        raise ApiError(404, "not_found", "no such case from this partner")
    return JSONResponse({**summary(row), "verified": row.verified})


# on the cases its department entry holds a platform only verifies (核查) and closes (结案): the
# rest of the loop there is the grid centre's
HELD_CASE_MOVES: tuple[type[Command], ...] = (Verify, Close)


def _partner_caller(model: type[Command]) -> Any:
    def caller(request: Request) -> Caller:
        runtime, system = _partner(request, "cases:decide")
        visible = _from(runtime, system, held=model in HELD_CASE_MOVES)
        return Caller(runtime, Actor(kind="partner", id=system), visible, f"partner:{system}")

    return caller


def _command_route(path: str, model: type[Command], summary_text: str) -> None:
    add_command_route(
        router, path, model, summary_text, caller=_partner_caller(model), prefix="partner"
    )


_command_route("verify", Verify, "the platform's review (审核): pass, or rework with a note")
_command_route("close", Close, "close (办结) a verified case after a satisfied return visit")
_command_route("reopen", Reopen, "redo (重办) a closed case after an unsatisfied return visit")
_command_route("extension-decision", DecideExtension, "the platform's extension decision")
_command_route("supervise", Supervise, "supervision (督办/催办) by the platform")
_command_route("cancel", Cancel, "the platform cancelled its order")

COMMAND_MODELS: tuple[type[Command], ...] = (
    Verify,
    Close,
    Reopen,
    DecideExtension,
    Supervise,
    Cancel,
)
