"""The grid workers' API: reports, proxy services, visits, attachments and offline batches."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import Field, TypeAdapter, ValidationError

from libs.common.auth import AuthError, Principal
from libs.common.contract import Contract
from libs.common.ids import new_case_id, new_visit_id
from libs.common.topics import CASES_SUBMITTED, VISITS_RECORDED
from libs.common.web import ApiError, bearer_token, documented_body, parse_body, refuse_nul
from services.intake.acceptance import Claim, Replay, Staged
from services.intake.deps import IntakeState, refusal
from services.intake.reports import (
    Accepted,
    ProxyServiceRequest,
    VisitReport,
    WorkerReport,
    accept_proxy_service,
    accept_report,
    accept_visit,
)

router = APIRouter(prefix="/v1", tags=["grid workers"])
SOURCE = "grid_worker"
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="a retry with the same key returns the first answer; another body gets 409",
    ),
]
_KEY = re.compile(r"[\x21-\x7e]{1,200}")
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    "description": "a retry with the same key returns the first answer; another body gets 409",
}
REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no or bad bearer token"},
    403: {"description": "token lacks the scope, or the worker does not serve the grid"},
    409: {"description": "the Idempotency-Key was used with a different request"},
    422: {"description": "invalid: each error names the field path and the reason"},
}

Work = WorkerReport | ProxyServiceRequest | VisitReport
Decision = tuple[list[Staged], Accepted]


def fingerprint(route: str, model: Contract) -> str:
    """What makes two requests with one idempotency key "the same": the route and the validated
    body. A batch item's `kind` is left out: it names the route, so a batch item and the same
    item sent alone have one fingerprint."""
    exclude = _NOT_FINGERPRINTED if "kind" in type(model).model_fields else None
    # the JSON as bytes, as `model_dump_json` would give it encoded
    dumped = model.__pydantic_serializer__.to_json(model, exclude=exclude)
    return hashlib.sha256(route.encode() + b"\n" + dumped).hexdigest()


_NOT_FINGERPRINTED = {"kind"}


def decide(work: Work, *, state: IntakeState, principal: Principal, now: datetime) -> Decision:
    """The events to stage and the answer to give for one valid item (raises ApiError)."""
    refdata = state.runtime.refdata
    skew = timedelta(seconds=state.settings.clock_skew_seconds)
    known = state.store.known
    if isinstance(work, VisitReport):
        visit = accept_visit(
            work,
            principal=principal,
            refdata=refdata,
            now=now,
            visit_id=new_visit_id(now),
            clock_skew=skew,
        )
        staged = Staged(VISITS_RECORDED, visit, key=visit.resident_id)
        return [staged], Accepted(visit_id=visit.visit_id)
    if isinstance(work, ProxyServiceRequest):
        case = accept_proxy_service(
            work,
            principal=principal,
            refdata=refdata,
            now=now,
            case_id=new_case_id(now),
            known_attachment=known,
        )
    else:
        case = accept_report(
            work,
            principal=principal,
            refdata=refdata,
            now=now,
            case_id=new_case_id(now),
            clock_skew=skew,
            known_attachment=known,
        )
    return [Staged(CASES_SUBMITTED, case, key=case.case_id)], Accepted(case_id=case.case_id)


async def _accept_one(
    work: Work, *, route: str, key: str | None, state: IntakeState, principal: Principal
) -> JSONResponse:
    try:
        staged, answer = decide(
            work, state=state, principal=principal, now=state.runtime.clock.now()
        )
    except ApiError as exc:
        state.count(SOURCE, refusal(exc.code, exc.path))
        raise
    key = key or work.client_id
    body = answer.body()
    claim = None
    if key is not None:
        claim = Claim(f"worker:{principal.subject}", key, fingerprint(route, work), 202, body)
    replay = await state.acceptor.submit(staged, claim)
    if replay is None:
        state.count(SOURCE, "accepted")
        return JSONResponse(body, status_code=202)
    return _replayed(replay, state)


def _replayed(replay: Replay, state: IntakeState) -> JSONResponse:
    if not replay.same_request:
        state.count(SOURCE, "idempotency_conflict")
        raise ApiError(
            409,
            "idempotency_conflict",
            "this key was already used for a different request",
            path="header.Idempotency-Key",
        )
    state.count(SOURCE, "replayed")
    return JSONResponse(
        replay.response, status_code=replay.status, headers={"Idempotent-Replayed": "true"}
    )


def _caller(request: Request) -> tuple[IntakeState, Principal]:
    """The state and the authenticated, scoped worker (before anything looks at the body)."""
    state: IntakeState = request.app.state.intake
    try:
        principal = state.verifier.verify(bearer_token(request), now=state.runtime.clock.now())
        principal.require("reports:write")
    except AuthError as exc:
        state.count(SOURCE, "unauthenticated" if exc.status == 401 else "forbidden:scope")
        raise
    return state, principal


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not _KEY.fullmatch(key):
        raise ApiError(
            422,
            "invalid_request",
            "1 to 200 visible ASCII characters",
            path="header.Idempotency-Key",
        )
    return key


async def _submit(request: Request, model: type[Work], route: str) -> JSONResponse:
    state, worker = _caller(request)
    try:
        refuse_nul(await request.body())  # else it fails the commit of every report batched with it
        work = await parse_body(request, model)
        key = _idempotency_key(request)
    except RequestValidationError as exc:
        first = exc.errors()[0]["loc"] if exc.errors() else ()
        state.count(SOURCE, refusal("invalid_request", ".".join(map(str, first))))
        raise
    except ApiError as exc:
        state.count(SOURCE, refusal(exc.code, exc.path))
        raise
    return await _accept_one(work, route=route, key=key, state=state, principal=worker)


@router.post(
    "/reports",
    status_code=202,
    summary="report an incident, hazard or dispute",
    responses=REFUSALS,
    openapi_extra=documented_body(WorkerReport, IDEMPOTENCY_KEY),
)
async def submit_report(request: Request) -> JSONResponse:
    return await _submit(request, WorkerReport, "reports")


@router.post(
    "/proxy-services",
    status_code=202,
    summary="file a proxy service (帮代办)",
    responses=REFUSALS,
    openapi_extra=documented_body(ProxyServiceRequest, IDEMPOTENCY_KEY),
)
async def submit_proxy_service(request: Request) -> JSONResponse:
    return await _submit(request, ProxyServiceRequest, "proxy-services")


@router.post(
    "/visits",
    status_code=202,
    summary="record a visit to a key resident (走访)",
    responses=REFUSALS,
    openapi_extra=documented_body(VisitReport, IDEMPOTENCY_KEY),
)
async def submit_visit(request: Request) -> JSONResponse:
    return await _submit(request, VisitReport, "visits")


@router.put(
    "/attachments",
    summary="upload a photo or document (raw body, its Content-Type); returns its reference",
    responses={
        201: {"description": "stored"},
        200: {"description": "already stored"},
        413: {},
        415: {},
        **REFUSALS,
    },
    openapi_extra={"security": [{"bearer": []}]},
)
async def upload_attachment(request: Request) -> JSONResponse:
    state, _ = _caller(request)  # any worker may upload: the store is shared by content
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > state.store.max_bytes:
            raise ApiError(
                413, "too_large", f"larger than {state.store.max_bytes} bytes", path="body"
            )
    ref, new = state.store.put(bytes(data), request.headers.get("content-type", ""))
    return JSONResponse(ref.model_dump(mode="json"), status_code=201 if new else 200)


class BatchRequest(Contract):
    """Items a worker's app stored while offline; each gets its own result."""

    items: Annotated[list[dict[str, Any]], Field(min_length=1)]


class ItemResult(Contract):
    index: int
    client_id: str | None
    status: Literal["accepted", "replayed", "refused", "conflict"]
    case_id: str | None = None
    visit_id: str | None = None
    errors: tuple[dict[str, str], ...] = ()


class BatchResult(Contract):
    results: list[ItemResult]
    accepted: int
    replayed: int
    refused: int


_KINDS: dict[str, tuple[str, TypeAdapter[Any]]] = {
    "report": ("reports", TypeAdapter(WorkerReport)),
    "proxy_service": ("proxy-services", TypeAdapter(ProxyServiceRequest)),
    "visit": ("visits", TypeAdapter(VisitReport)),
}


# The common case, a batch whose every item is valid, is validated in one pass over the raw body
# by these typed items (the models above plus their `kind`); any error sends the batch through
# `_parse_item`, item by item, which names each refused item's field and reason.
class _BatchedReport(WorkerReport):
    kind: Literal["report"]


class _BatchedProxyService(ProxyServiceRequest):
    kind: Literal["proxy_service"]


class _BatchedVisit(VisitReport):
    kind: Literal["visit"]


class _TypedBatch(Contract):
    items: Annotated[
        list[
            Annotated[
                _BatchedReport | _BatchedProxyService | _BatchedVisit,
                Field(discriminator="kind"),
            ]
        ],
        Field(min_length=1),
    ]


def _parse_item(index: int, item: dict[str, Any]) -> tuple[str, Work] | ItemResult:
    raw = dict(item)
    kind = raw.pop("kind", None)
    client_id = raw.get("client_id") if isinstance(raw.get("client_id"), str) else None
    prefix = f"body.items.{index}"
    if kind not in _KINDS:
        reason = f"kind must be one of: {', '.join(_KINDS)}"
        return ItemResult(
            index=index,
            client_id=client_id,
            status="refused",
            errors=({"path": f"{prefix}.kind", "reason": reason},),
        )
    route, adapter = _KINDS[kind]
    try:
        work: Work = adapter.validate_python(raw)
    except ValidationError as exc:
        errors = [
            {"path": ".".join([prefix, *map(str, e["loc"])]), "reason": e["msg"]}
            for e in exc.errors()
        ]
        return ItemResult(index=index, client_id=client_id, status="refused", errors=tuple(errors))
    return _with_client_id(index, route, work)


def _with_client_id(index: int, route: str, work: Work) -> tuple[str, Work] | ItemResult:
    if work.client_id is None:
        return ItemResult(
            index=index,
            client_id=None,
            status="refused",
            errors=(
                {
                    "path": f"body.items.{index}.client_id",
                    "reason": "required in a batch (it makes retries safe)",
                },
            ),
        )
    return route, work


async def _parse_batch(request: Request, limit: int) -> list[tuple[str, Work] | ItemResult]:
    """Each item's route and validated body, or its refusal (raises for a malformed batch)."""
    refuse_nul(await request.body())
    try:
        typed: _TypedBatch | None = _TypedBatch.model_validate_json(await request.body())
    except ValidationError:
        typed = None
    if typed is None:
        batch = await parse_body(request, BatchRequest)  # the body was read once and kept
        _check_size(len(batch.items), limit)
        return [_parse_item(index, item) for index, item in enumerate(batch.items)]
    _check_size(len(typed.items), limit)
    return [
        _with_client_id(index, _KINDS[work.kind][0], work) for index, work in enumerate(typed.items)
    ]


def _check_size(items: int, limit: int) -> None:
    if items > limit:
        raise ApiError(422, "invalid_request", f"at most {limit} items", path="body.items")


@router.post(
    "/batch",
    summary="upload items stored offline; a retried batch creates nothing twice",
    responses=REFUSALS,
    response_model=BatchResult,
    openapi_extra=documented_body(BatchRequest),
)
async def submit_batch(request: Request) -> Response:
    state, worker = _caller(request)
    items = await _parse_batch(request, state.settings.batch_max_items)
    now = state.runtime.clock.now()
    results: list[ItemResult | None] = [None] * len(items)
    pending: list[tuple[int, Work, Accepted]] = []
    submissions: list[tuple[Sequence[Staged], Claim | None]] = []
    for index, parsed in enumerate(items):
        if isinstance(parsed, ItemResult):
            results[index] = parsed
            continue
        route, work = parsed
        try:
            staged, answer = decide(work, state=state, principal=worker, now=now)
        except ApiError as exc:
            path = (exc.path or "body").replace("body.", f"body.items.{index}.", 1)
            results[index] = ItemResult(
                index=index,
                client_id=work.client_id,
                status="refused",
                errors=({"path": path, "reason": exc.reason},),
            )
            continue
        body = answer.body()
        assert work.client_id is not None  # noqa: S101  # checked by _parse_item
        claim = Claim(
            f"worker:{worker.subject}", work.client_id, fingerprint(route, work), 202, body
        )
        pending.append((index, work, answer))
        submissions.append((staged, claim))
    outcomes = await state.acceptor.submit_many(submissions) if submissions else []
    for (index, work, answer), replay in zip(pending, outcomes, strict=True):
        results[index] = _item_result(index, work, answer, replay)
    final = [r for r in results if r is not None]
    counts = {
        status: sum(r.status == status for r in final)
        for status in ("accepted", "replayed", "refused", "conflict")
    }
    for status, count in counts.items():
        if count:
            state.count(SOURCE, status, count)
    result = BatchResult(
        results=final,
        accepted=counts["accepted"],
        replayed=counts["replayed"],
        refused=counts["refused"] + counts["conflict"],
    )
    # serialised once here, rather than validated again as a response model
    return Response(result.model_dump_json(), media_type="application/json")


def _item_result(index: int, work: Work, answer: Accepted, replay: Replay | None) -> ItemResult:
    if replay is None:
        return ItemResult(
            index=index,
            client_id=work.client_id,
            status="accepted",
            case_id=answer.case_id,
            visit_id=answer.visit_id,
        )
    if not replay.same_request:
        return ItemResult(
            index=index,
            client_id=work.client_id,
            status="conflict",
            errors=(
                {
                    "path": f"body.items.{index}.client_id",
                    "reason": "already used for a different item",
                },
            ),
        )
    return ItemResult(
        index=index,
        client_id=work.client_id,
        status="replayed",
        case_id=replay.response.get("case_id"),
        visit_id=replay.response.get("visit_id"),
    )


BODY_MODELS = (WorkerReport, ProxyServiceRequest, VisitReport, BatchRequest)
"""Bodies parsed by `parse_body`; app.py puts them into the OpenAPI document."""
