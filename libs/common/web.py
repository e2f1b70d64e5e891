"""What every service's HTTP app has: /healthz, /readyz, token-protected /metrics, request metrics,
and one error shape for refused input (status, field path, reason)."""

from __future__ import annotations

import hmac
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import asyncpg
from aiokafka.errors import KafkaError
from fastapi import APIRouter, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, SecretStr, ValidationError
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import request_response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from libs.common.auth import AuthError
from libs.common.contract import CASE_ID_PATTERN
from libs.common.kafka import dependency_unavailable

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from libs.common.runtime import Runtime

ReadinessCheck = Callable[[], Awaitable[Mapping[str, bool]]]


class ErrorDetail(BaseModel):
    """One reason of a refusal: what is wrong and, where it applies, the field path."""

    reason: str
    path: str | None = None
    type: str | None = None  # pydantic's error type, for refused input (422)


class ErrorBody(BaseModel):
    """Every refusal outside Open311: a machine-readable code and the reasons."""

    error: str
    detail: list[ErrorDetail]


ERROR_STATUSES = {
    400: "Bad Request: the body or a parameter cannot be read",
    401: "Unauthorized: the credentials are missing, invalid or expired",
    403: "Forbidden: the credentials do not allow this",
    404: "Not Found",
    409: "Conflict: refused in the current state (or an idempotency key reused)",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content: the input does not fit the schema",
    503: "Service Unavailable: the database or broker cannot be reached; retry after Retry-After",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a route that refuses with these statuses (documented as ErrorBody)."""
    return {status: {"description": ERROR_STATUSES[status]} for status in statuses}


_READINESS = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["ready", "not_ready"]},
        "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
    },
    "required": ["status", "checks"],
}


class ApiError(Exception):
    """A refusal with a status, a machine-readable code and, where it applies, the field path."""

    def __init__(self, status: int, code: str, reason: str, path: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason
        self.path = path


def _dotted(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


RETRY_AFTER_SECONDS = 5  # what a 503 tells a client to wait while the database or broker is away
# what a database or broker that cannot be reached raises (dependency_unavailable tells which do)
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    DBAPIError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    KafkaError,
)
log = logging.getLogger(__name__)


class _Quiet:
    """One warning for the first 503 of an outage, then at most one every `every` seconds with
    the count since: an outage at hundreds of requests a second must not flood the log."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._last = -every
        self._since = 0

    def note(self, exc: BaseException) -> None:
        self._since += 1
        now = time.monotonic()
        if now - self._last >= self.every:
            log.warning(
                "%d request(s) answered 503: the database or broker cannot be reached (%s)",
                self._since,
                type(exc).__name__,
            )
            self._last, self._since = now, 0


def unavailable_response(exc: Exception) -> JSONResponse | None:
    """503 with Retry-After when `exc` says the database or broker cannot be reached; else
    None (a fault of the service's own, left to become a 500)."""
    if not dependency_unavailable(exc):
        return None
    return JSONResponse(
        {
            "error": "unavailable",
            "detail": [{"reason": "the service cannot reach its database or broker; retry later"}],
        },
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def install_error_handlers(app: FastAPI) -> None:
    quiet = _Quiet()

    async def _unavailable(_: Request, exc: Exception) -> Response:
        response = unavailable_response(exc)
        if response is None:
            raise exc  # a fault of ours: Starlette's last handler answers 500 and logs it
        quiet.note(exc)
        return response

    # handled here, not by Starlette's last resort: that one answers 500, logs a traceback per
    # request and closes the connection, cutting the client's other requests on it
    for error in UNAVAILABLE_ERRORS:
        app.add_exception_handler(error, _unavailable)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"path": _dotted(err["loc"]), "reason": err["msg"], "type": err["type"]}
            for err in exc.errors()
        ]
        return JSONResponse({"error": "invalid_request", "detail": errors}, status_code=422)

    @app.exception_handler(ApiError)
    async def _refused(_: Request, exc: ApiError) -> JSONResponse:
        detail: dict[str, str] = {"reason": exc.reason}
        if exc.path:
            detail["path"] = exc.path
        return JSONResponse({"error": exc.code, "detail": [detail]}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own refusals too (a body that cannot be decoded is 400), in the one shape
        try:
            code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
        except ValueError:
            code = "http_error"
        return JSONResponse(
            {"error": code, "detail": [{"reason": str(exc.detail)}]},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(AuthError)
    async def _unauthorised(_: Request, exc: AuthError) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Bearer realm="gridflow"'} if exc.status == 401 else None
        code = "unauthenticated" if exc.status == 401 else "forbidden"
        return JSONResponse(
            {"error": code, "detail": [{"reason": exc.reason}]},
            status_code=exc.status,
            headers=headers,
        )


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(401, "missing bearer token")
    return token.strip()


def install_platform_routes(
    app: FastAPI,
    *,
    registry: CollectorRegistry,
    metrics_token: SecretStr | None,
    readiness: ReadinessCheck,
    optional: frozenset[str] = frozenset(),
) -> None:
    """`optional` names readiness checks reported but not required (intake accepts without the
    broker: its outbox holds what it accepted until the broker is back)."""
    requests = Counter(
        "gridflow_http_requests_total",
        "HTTP requests by route template, method and status",
        ["route", "method", "status"],
        registry=registry,
    )
    latency = Histogram(
        "gridflow_http_request_seconds",
        "HTTP request latency by route template",
        ["route", "method"],
        registry=registry,
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    )

    app.add_middleware(_Measure, requests=requests, latency=latency)

    @app.get("/healthz", tags=["platform"], summary="the process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["platform"],
        summary="the broker and the database are reachable",
        responses={
            503: {
                "description": "not ready: a required check failed",
                "content": {"application/json": {"schema": _READINESS}},
            }
        },
    )
    async def readyz() -> JSONResponse:
        results = dict(await readiness())
        required = [ok for name, ok in results.items() if name not in optional]
        status = 200 if all(required) else 503
        body = {"status": "ready" if status == 200 else "not_ready", "checks": results}
        return JSONResponse(body, status_code=status)

    @app.get(
        "/metrics",
        tags=["platform"],
        summary="Prometheus metrics (bearer token)",
        response_class=Response,
        responses={
            200: {
                "description": "the Prometheus text format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            **error_responses(401, 403),
        },
        openapi_extra={"security": [{"bearer": []}]},
    )
    async def metrics(request: Request) -> Response:
        if metrics_token is None:
            raise AuthError(403, "metrics are disabled: GRIDFLOW_METRICS_TOKEN is not set")
        offered = bearer_token(request)
        if not hmac.compare_digest(offered.encode(), metrics_token.get_secret_value().encode()):
            raise AuthError(401, "wrong metrics token")
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class _Measure:
    """Counts and times requests by route template; plain ASGI, so it adds almost nothing."""

    def __init__(self, app: ASGIApp, *, requests: Counter, latency: Histogram) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def remember_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, remember_status)
        finally:
            # the matched route's template (`/v1/cases/{case_id}`) keeps label values few
            route = str(getattr(scope.get("route"), "path", "unmatched"))
            key = (route, scope["method"], status)
            children = self._children.get(key)
            if children is None:  # labels() takes a lock and builds a key: do it once per key
                children = (
                    self.latency.labels(route, key[1]),
                    self.requests.labels(*key[:2], str(status)),
                )
                self._children[key] = children
            children[0].observe(time.perf_counter() - started)
            children[1].inc()


M = TypeVar("M", bound=BaseModel)


async def parse_body(request: Request, model: type[M]) -> M:
    """Validate the JSON body in one pass (pydantic's own JSON parser); errors keep FastAPI's
    shape (`body.<field>`). Hot endpoints use this instead of a body parameter, so that they
    authenticate before they look at the body and skip FastAPI's per-parameter machinery."""
    raw = await request.body()
    try:
        return model.model_validate_json(raw or b"null")
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from exc


# a case id in a path: well-formed, or refused before any query (PostgreSQL answers an id with a
# NUL in it with an error, not with "no such row")
CaseIdPath = Annotated[
    str, Path(pattern=CASE_ID_PATTERN, description="gridflow case id: 'C' + a 26-character ULID")
]
NUL_REASON = "text must not contain the NUL character (U+0000): it cannot be stored"


def nul_path(value: Any, path: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    """The path of the first text (or key) in parsed JSON that holds a NUL character, which
    PostgreSQL refuses in text and jsonb with an error (so the whole transaction fails)."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    items: Any = ()
    if isinstance(value, dict):
        for key in value:
            if "\x00" in key:
                return (*path, key)
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    for key, item in items:
        found = nul_path(item, (*path, key))
        if found is not None:
            return found
    return None


def json_nul_path(raw: bytes) -> tuple[str | int, ...] | None:
    """`nul_path` of a JSON body; quick when there is none (in JSON a NUL can only be written
    as the escape \\u0000). A body that is not JSON is left to the parser's own refusal."""
    if b"\\u0000" not in raw:
        return None
    try:
        return nul_path(json.loads(raw))
    except ValueError:
        return None


def refuse_nul(raw: bytes) -> None:
    """RequestValidationError (422, with the field path) for a JSON body with a NUL in a text."""
    found = json_nul_path(raw)
    if found is not None:
        error = {"loc": ("body", *found), "msg": NUL_REASON, "type": "string_nul"}
        raise RequestValidationError([error])


def documented_body(model: type[BaseModel], *headers: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI for an endpoint that parses its body with `parse_body` (see `install_openapi`)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        },
        "parameters": list(headers),
        "security": [{"bearer": []}],
    }


_NO_DEPENDENCY = frozenset({"/healthz", "/metrics"})  # answered without the database or broker


def document_errors(schema: dict[str, Any], *, own_format: Sequence[str] = ()) -> None:
    """The refusals every route can give, in the OpenAPI: 401 and 403 where a bearer token is
    required, 422 where there is input to refuse, and each error status in ErrorBody's shape
    (FastAPI's default HTTPValidationError is not what `install_error_handlers` answers).
    Paths starting with one of `own_format` document their errors themselves (Open311)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in body.pop("$defs", {}).items():
        components[name] = definition
    components["ErrorBody"] = body
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for path, item in schema.get("paths", {}).items():
        if any(path.startswith(prefix) for prefix in own_format):
            for operation in item.values():  # FastAPI's own 422 is never answered there
                operation.get("responses", {}).pop("422", None)
            continue
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            if operation.get("security"):
                responses.setdefault("401", {})
                responses.setdefault("403", {})
            if operation.get("parameters") or operation.get("requestBody"):
                responses.setdefault("422", {})
            if operation.get("requestBody"):
                responses.setdefault("400", {})  # e.g. JSON that is not UTF-8
            if path not in _NO_DEPENDENCY:  # install_error_handlers: the database or broker away
                responses.setdefault("503", {})
            for status, response in responses.items():
                described = "content" in response and "HTTPValidationError" not in str(response)
                if status.isdigit() and int(status) >= 400 and not described:
                    default = ERROR_STATUSES.get(int(status), "refused")
                    response["description"] = response.get("description") or default
                    response["content"] = content
    if "HTTPValidationError" not in json.dumps(schema.get("paths", {})):
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)


def signed_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for an endpoint that reads a Standard-Webhooks-signed body as `model` (the
    bridges' inbound routes; add the model with `install_openapi`)."""
    headers = [
        {"name": name, "in": "header", "required": True, "schema": {"type": "string"}}
        for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
    ]
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        },
        "parameters": headers,
    }


def install_openapi(
    app: FastAPI,
    models: Sequence[type[BaseModel]],
    schemas: Mapping[str, dict[str, Any]] | None = None,
    *,
    own_format: Sequence[str] = (),
) -> None:
    """Add the models that `documented_body` refers to, the bearer scheme and the refusals
    (`document_errors`, with `own_format`) to the OpenAPI."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {})
        known = components.setdefault("schemas", {})
        for model in models:
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, definition in body.pop("$defs", {}).items():
                known.setdefault(name, definition)
            known[model.__name__] = body
        known.update(schemas or {})
        components.setdefault("securitySchemes", {})["bearer"] = {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
        }
        document_errors(schema, own_format=own_format)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def add_routes(app: FastAPI, *routers: APIRouter) -> None:
    """Serve the routers' routes as the app's own, first in line.

    `app.include_router` would serve each router through a wrapper (FastAPI 0.16x) that matches
    a request twice, once to pick the router and once to pick its route, after the platform
    routes were tried in turn: routing a report to intake cost 8.4 µs that way, 1.7 µs here
    (a microbenchmark; a few per cent of a hot endpoint's work). The routers carry their paths
    and documentation themselves (no prefix, tags or dependencies are added on inclusion).
    Endpoints that take the request alone are called directly (`call_directly`)."""
    own = [route for router in routers for route in router.routes]
    for route in own:
        if isinstance(route, APIRoute):
            call_directly(route)
    app.router.routes[:0] = own


def call_directly(route: APIRoute) -> bool:
    """Call an endpoint that takes the request alone and returns a Response as Starlette would,
    without FastAPI's request handler (True if it was such an endpoint).

    Such an endpoint reads and checks its body itself, so the handler has nothing to do for it,
    yet per request it opens two exit stacks, solves an empty set of dependencies and runs its
    telemetry hooks: about a tenth of a report's CPU in intake (cProfile). Errors the endpoint
    raises still reach the app's exception handlers; the route's documentation is unchanged."""
    if route.dependencies or not inspect.iscoroutinefunction(route.endpoint):
        return False
    signature = inspect.signature(route.endpoint, eval_str=True)
    parameters = list(signature.parameters.values())
    if len(parameters) != 1 or parameters[0].annotation is not Request:
        return False
    returned = signature.return_annotation
    if not (isinstance(returned, type) and issubclass(returned, Response)):
        return False
    route.app = request_response(route.endpoint)
    return True


def service_app(
    *,
    title: str,
    description: str,
    runtime: Runtime,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    optional: frozenset[str] = frozenset(),
) -> FastAPI:
    """A service's FastAPI app with what every service has: the runtime in `app.state`, the
    error format, and /healthz, /readyz and /metrics (`optional`: see install_platform_routes)."""
    app = FastAPI(title=title, version="0.1.0", lifespan=lifespan, description=description)
    app.state.runtime = runtime
    install_error_handlers(app)
    install_platform_routes(
        app,
        registry=runtime.registry,
        metrics_token=runtime.settings.metrics_token,
        readiness=runtime.ready,
        optional=optional,
    )
    install_openapi(app, ())  # services with body models of their own install it again
    return app
