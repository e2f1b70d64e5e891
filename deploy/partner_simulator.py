"""What every partner platform simulator (deploy/hotline_simulator.py, deploy/citycare_simulator.py)
does the same way: checks the bridge's signed calls, answers slowly or with errors when told to,
keeps its events in order and either pushes them to the bridge (signed, retried until taken) or
serves them as a feed, and runs stand-alone with a little demo traffic."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from libs.common.signing import SignatureError, signed_headers, verify

log = logging.getLogger("partner_simulator")
CST = timezone(timedelta(hours=8))  # the platforms speak Beijing time


def cst(moment: datetime) -> datetime:
    return moment.astimezone(CST)


@dataclass
class PartnerSimulator:
    push_secret: str  # the platform signs its pushes with it
    call_secrets: list[str]  # the bridge's calls are signed with one of these
    bridge_url: str | None = None  # push mode when set, else the feed serves the events
    delay_seconds: float = 0.0
    error_rate: float = 0.0
    down: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)  # the feed, in order
    seen: set[str] = field(default_factory=set)  # webhook-ids of calls taken
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _pushed: int = 0
    _rng: random.Random = field(default_factory=random.Random)

    event_prefix: ClassVar[str] = "EV"
    push_path: ClassVar[str] = ""  # the bridge's push endpoint
    feed_path: ClassVar[str] = ""
    pushes_for_unknown: ClassVar[int] = 0  # a 404 is pushed again this many times

    def routes(self) -> list[Route]:
        """The platform's own endpoints (the feed, /sim/outage and /healthz are added)."""
        raise NotImplementedError

    def error(self, status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def emit(self, body: dict[str, Any]) -> dict[str, Any]:
        event = {
            "event_id": f"{self.event_prefix}{len(self.events) + 1:08d}",
            "occurred_at": cst(datetime.now(UTC)).isoformat(),
            **body,
        }
        self.events.append(event)
        return event

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    # --- HTTP ----------------------------------------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(self.feed_path, self._feed, methods=["GET"]),
                *self.routes(),
                Route("/sim/outage", self._outage, methods=["POST"]),
                Route("/healthz", lambda _: JSONResponse({"status": "ok"}), methods=["GET"]),
            ],
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, _: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(self._push_loop())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def refuse(self, request: Request, body: bytes) -> JSONResponse | None:
        """None when the bridge's call may be taken: signed, and the platform is not down."""
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        try:
            verify(
                secrets=self.call_secrets, headers=request.headers, body=body, now=datetime.now(UTC)
            )
        except SignatureError as exc:
            return self.error(401, str(exc))
        if self.down or self._rng.random() < self.error_rate:
            return self.error(503, "系统繁忙，请稍后重试")
        return None

    async def _feed(self, request: Request) -> JSONResponse:
        refused = await self.refuse(request, b"")
        if refused is not None:
            return refused
        after = int(request.query_params.get("after", "0"))
        page = self.events[after : after + 100]
        return JSONResponse({"events": page, "next_cursor": str(after + len(page))})

    async def _outage(self, request: Request) -> JSONResponse:
        self.down = bool((await request.json())["down"])
        return JSONResponse({"down": self.down})

    # --- push mode -----------------------------------------------------------------------------

    async def _push_loop(self) -> None:
        """Push every event in order; one that fails is pushed again (the platform's retry)."""
        unknown = 0
        async with httpx.AsyncClient() as client:
            while True:
                if self.bridge_url is None or self._pushed >= len(self.events):
                    await asyncio.sleep(0.05)
                    continue
                event = self.events[self._pushed]
                body = json.dumps(event, ensure_ascii=False).encode()
                headers = signed_headers(
                    secret=self.push_secret,
                    msg_id=event["event_id"],
                    now=datetime.now(UTC),
                    body=body,
                )
                headers["content-type"] = "application/json"
                try:
                    response = await client.post(
                        f"{self.bridge_url}{self.push_path}",
                        content=body,
                        headers=headers,
                        timeout=10,
                    )
                except httpx.HTTPError as exc:
                    log.warning("push of %s failed: %s", event["event_id"], type(exc).__name__)
                    await asyncio.sleep(0.5)
                    continue
                status = response.status_code
                if status >= 500 or (status == 404 and unknown < self.pushes_for_unknown):
                    unknown += status == 404
                    await asyncio.sleep(0.5 if status >= 500 else 0.2)
                    continue
                if status >= 400:
                    log.error("bridge refused %s: %s", event["event_id"], response.text[:200])
                unknown = 0
                self._pushed += 1


# --- stand-alone ----------------------------------------------------------------------------------


def arguments(prog: str, argv: list[str] | None, *, port: int, demo: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--bridge", default=None, help="the bridge's base URL: push mode")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of calls answered 503")
    parser.add_argument("--demo", type=float, default=0.0, help=f"{demo} every N seconds")
    return parser.parse_args(argv)


def secrets_from_environment() -> dict[str, Any]:
    return {
        "push_secret": os.environ["GRIDFLOW_PARTNER_INBOUND_SECRET"],
        "call_secrets": [os.environ["GRIDFLOW_PARTNER_OUTBOUND_SECRET"]],
    }


def serve(
    simulator: PartnerSimulator, *, port: int, demo_every: float, demo: Callable[[], str]
) -> None:
    """Serve the simulator on 127.0.0.1:`port`; every `demo_every` seconds `demo()` makes a new
    order or case and says which (logged)."""

    async def run() -> None:
        server = uvicorn.Server(
            uvicorn.Config(
                simulator.app(), host="127.0.0.1", port=port, log_config=None, access_log=False
            )
        )

        async def traffic() -> None:
            while demo_every > 0:
                log.info("demo: %s", demo())
                await asyncio.sleep(demo_every)

        task = asyncio.create_task(traffic())
        try:
            await server.serve()
        finally:
            task.cancel()

    asyncio.run(run())
