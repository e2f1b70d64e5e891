"""The common error format's answer to a database or broker out of reach: 503 with Retry-After,
handled (no traceback per request, the connection kept); a fault of the service's own stays a
500. Any OSError counts as out of reach (a socket, a disk): the same rule as the consumer loop's
(`libs.common.kafka.dependency_unavailable`)."""

from __future__ import annotations

import logging

import asyncpg
import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.exc import DBAPIError

from libs.common.web import ApiError, add_routes, call_directly, install_error_handlers


class _InvalidatedError(DBAPIError):
    def __init__(self) -> None:
        super().__init__("SELECT 1", None, ConnectionResetError(), connection_invalidated=True)


def _app(error: Exception) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/fails")
    async def fails() -> None:
        raise error

    return app


@pytest.mark.parametrize(
    "error",
    [
        FileNotFoundError(2, "No such file or directory"),  # the server's Unix socket is gone
        ConnectionRefusedError(111, "Connection refused"),
        asyncpg.InterfaceError("connection is closed"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        _InvalidatedError(),
    ],
)
async def test_an_unreachable_database_is_answered_503_with_retry_after(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    transport = httpx.ASGITransport(app=_app(error))
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        with caplog.at_level(logging.WARNING, logger="libs.common.web"):
            first = await client.get("/fails")
            second = await client.get("/fails")
    for response in (first, second):
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert response.json()["error"] == "unavailable"
    # one warning for the outage's start, not one per request
    assert len([r for r in caplog.records if "answered 503" in r.getMessage()]) == 1


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        DBAPIError("SELECT 1", None, ValueError("bad parameter")),
        RuntimeError("a bug"),
    ],
)
async def test_a_fault_of_the_service_own_is_still_a_500(error: Exception) -> None:
    transport = httpx.ASGITransport(app=_app(error), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        response = await client.get("/fails")
    assert response.status_code == 500


def _routed(router_way: str) -> FastAPI:
    router = APIRouter(prefix="/v1", tags=["work"])

    @router.post("/reports", status_code=202, summary="file a report")
    async def report() -> dict[str, str]:
        return {"status": "accepted"}

    @router.get("/reports/{report_id}")
    async def one(report_id: str) -> dict[str, str]:
        return {"id": report_id}

    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    if router_way == "add_routes":
        add_routes(app, router)
    else:
        app.include_router(router)
    return app


async def test_add_routes_serves_a_router_first_and_documents_it_as_include_router_does() -> None:
    app = _routed("add_routes")
    # the router's own routes come first, unwrapped: a request matches them without detours
    assert [type(route) for route in app.router.routes[:2]] == [APIRoute, APIRoute]
    paths = [getattr(route, "path", None) for route in app.router.routes[:2]]
    assert paths == ["/v1/reports", "/v1/reports/{report_id}"]
    assert app.openapi()["paths"] == _routed("include_router").openapi()["paths"]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        filed = await client.post("/v1/reports")
        found = await client.get("/v1/reports/R1")
        health = await client.get("/healthz")
        missing = await client.get("/v1/nothing")
    assert (filed.status_code, filed.json()) == (202, {"status": "accepted"})
    assert found.json() == {"id": "R1"}
    assert health.json() == {"status": "ok"}
    assert missing.status_code == 404


def _mixed_routes() -> FastAPI:
    router = APIRouter(prefix="/v1")

    @router.post("/raw", status_code=202, summary="reads its own body")
    async def raw(request: Request) -> JSONResponse:
        body = await request.body()
        if not body:
            raise ApiError(422, "invalid_request", "a body is needed", path="body")
        return JSONResponse({"length": len(body)}, status_code=202)

    @router.get("/typed/{item}")
    async def typed(item: int) -> dict[str, int]:
        return {"item": item}

    @router.get("/plain")
    async def plain(request: Request) -> dict[str, str]:  # a dict: FastAPI must serialise it
        return {"path": request.url.path}

    app = FastAPI()
    install_error_handlers(app)
    add_routes(app, router)
    return app


async def test_an_endpoint_taking_the_request_alone_is_called_without_fastapi_handler() -> None:
    app = _mixed_routes()
    handled = {route.path: route.app.__module__ for route in app.router.routes[:3]}  # type: ignore[attr-defined]
    # only the endpoint that takes the request and returns a Response skips FastAPI's handler
    assert handled == {
        "/v1/raw": "starlette.routing",
        "/v1/typed/{item}": "fastapi.routing",
        "/v1/plain": "fastapi.routing",
    }
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        accepted = await client.post("/v1/raw", content=b"abc")
        refused = await client.post("/v1/raw")
        typed = await client.get("/v1/typed/7")
        invalid = await client.get("/v1/typed/seven")
        plain = await client.get("/v1/plain")
    assert (accepted.status_code, accepted.json()) == (202, {"length": 3})
    # the app's error handlers still answer for it
    assert refused.status_code == 422
    assert refused.json() == {
        "error": "invalid_request",
        "detail": [{"reason": "a body is needed", "path": "body"}],
    }
    assert typed.json() == {"item": 7}
    assert invalid.status_code == 422
    assert plain.json() == {"path": "/v1/plain"}
    documented = app.openapi()["paths"]["/v1/raw"]["post"]
    assert (documented["summary"], list(documented["responses"])) == ("reads its own body", ["202"])


def test_call_directly_leaves_a_route_with_dependencies_to_fastapi() -> None:
    async def endpoint(request: Request) -> JSONResponse:
        return JSONResponse({})

    async def needed() -> None:
        return None

    guarded = APIRoute("/guarded", endpoint, dependencies=[Depends(needed)])
    bare = APIRoute("/bare", endpoint)
    assert (call_directly(guarded), call_directly(bare)) == (False, True)
