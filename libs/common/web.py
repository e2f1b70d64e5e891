"""What every service's HTTP app has: /healthz, /readyz, token-protected /metrics, request metrics,
and one error shape for refused input (status, field path, reason)."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, SecretStr, ValidationError
from sqlalchemy.exc import DBAPIError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from libs.common.auth import AuthError
from libs.common.kafka import dependency_unavailable

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from libs.common.runtime import Runtime

ReadinessCheck = Callable[[], Awaitable[Mapping[str, bool]]]


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

    @app.get("/readyz", tags=["platform"], summary="the broker and the database are reachable")
    async def readyz() -> JSONResponse:
        results = dict(await readiness())
        required = [ok for name, ok in results.items() if name not in optional]
        status = 200 if all(required) else 503
        body = {"status": "ready" if status == 200 else "not_ready", "checks": results}
        return JSONResponse(body, status_code=status)

    @app.get("/metrics", tags=["platform"], summary="Prometheus metrics (bearer token)")
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


def install_openapi(
    app: FastAPI,
    models: Sequence[type[BaseModel]],
    schemas: Mapping[str, dict[str, Any]] | None = None,
) -> None:
    """Add the models that `documented_body` refers to, and the bearer scheme, to the OpenAPI."""

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
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


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
    return app
