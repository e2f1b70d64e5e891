"""The 12345 bridge between the simulator of the platform and a real dispatch (real broker, real
PostgreSQL, real HTTP on both sides)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from deploy.hotline_simulator import HotlineSimulator, Order
from libs.common.auth import mint_token
from libs.common.bridge.tables import links, queue
from libs.common.db import outbox, processed_events
from services.hotline_bridge.app import create_app
from services.hotline_bridge.settings import HotlineSettings
from tests.factories import DISPATCH_SECRET, Isolation
from tests.harness import WAIT_SECONDS, http_server
from tests.services.dispatch.conftest import DispatchStack, dispatch_stack_with

PUSH_SECRET = "whsec_" + base64.b64encode(b"test-hotline-push-secret-0123456").decode()
CALL_SECRET = "whsec_" + base64.b64encode(b"test-hotline-call-secret-0123456").decode()
SYSTEM = "hotline12345"


def partner_token(scopes: tuple[str, ...] = ("cases:read", "cases:decide")) -> str:
    return mint_token(
        secret=DISPATCH_SECRET,
        subject=SYSTEM,
        role="partner",
        scopes=list(scopes),
        grids=[],
        now=datetime.now(UTC),
        ttl=timedelta(hours=2),
    )


def make_hotline_settings(iso: Isolation, **overrides: Any) -> HotlineSettings:
    values = {
        **iso.common("hotline_bridge"),
        "partner_url": "http://127.0.0.1:9",
        "partner_inbound_secret": PUSH_SECRET,
        "partner_outbound_secret": CALL_SECRET,
        "partner_poll_seconds": 0.05,
        "partner_timeout_seconds": 5,
        "dispatch_url": "http://127.0.0.1:9",
        "dispatch_token": partner_token(),
        "outbound_base_delay_seconds": 0.05,
        "outbound_max_delay_seconds": 0.3,
        "outbound_poll_seconds": 0.05,
        "lifecycle_consumer_group": f"{iso.token}-hotline",
        **overrides,
    }
    return HotlineSettings.model_validate(values)


@dataclass
class HotlineStack:
    dispatch: DispatchStack
    simulator: HotlineSimulator
    simulator_url: str
    dispatch_url: str
    settings: HotlineSettings
    bridge: FastAPI | None = None
    bridge_url: str = ""

    @asynccontextmanager
    async def running_bridge(self) -> AsyncIterator[str]:
        """The bridge on a real socket; the simulator pushes to it while it runs."""
        app = create_app(self.settings)
        async with http_server(app) as url:
            self.bridge, self.bridge_url = app, url
            if self.settings.partner_mode == "push":
                self.simulator.bridge_url = url
            try:
                yield url
            finally:
                self.simulator.bridge_url = None

    async def rows(self, table: sa.Table) -> list[sa.Row[Any]]:
        assert self.bridge is not None
        async with self.bridge.state.runtime.sessions() as session:
            return list((await session.execute(sa.select(table))).all())

    async def counts(self) -> dict[str, int]:
        return {t.name: len(await self.rows(t)) for t in (links, outbox, processed_events, queue)}


async def wait_order(
    simulator: HotlineSimulator,
    order_id: str,
    check: Callable[[Order], bool],
    *,
    within: float = WAIT_SECONDS,
) -> Order:
    """Wait until the simulator's order passes `check` (woken by each status update it takes)."""
    async with asyncio.timeout(within), simulator.changed:
        while True:
            order = simulator.orders[order_id]
            if check(order):
                return order
            await simulator.changed.wait()


def statuses(order: Order) -> list[str]:
    return [update["status"] for update in order.updates]


@asynccontextmanager
async def hotline_stack_with(
    isolation: Isolation, tmp_path: Path, **settings: Any
) -> AsyncIterator[HotlineStack]:
    simulator = HotlineSimulator(push_secret=PUSH_SECRET, call_secrets=[CALL_SECRET])
    async with (
        dispatch_stack_with(isolation, tmp_path) as dispatch,
        http_server(dispatch.app, lifespan="off") as dispatch_url,
        http_server(simulator.app()) as simulator_url,
    ):
        values = {
            "partner_url": simulator_url,
            "dispatch_url": dispatch_url,
            "config_dir": tmp_path / "config",
            **settings,
        }
        yield HotlineStack(
            dispatch,
            simulator,
            simulator_url,
            dispatch_url,
            make_hotline_settings(isolation, **values),
        )


@pytest.fixture
async def hotline_stack(
    isolation: Isolation, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[HotlineStack]:
    async with hotline_stack_with(isolation, tmp_path, **getattr(request, "param", {})) as stack:
        yield stack


async def signed_push(
    client: httpx.AsyncClient, url: str, body: bytes, secret: str
) -> httpx.Response:
    from libs.common.signing import signed_headers  # noqa: PLC0415

    headers = signed_headers(secret=secret, msg_id="push-1", now=datetime.now(UTC), body=body)
    return await client.post(
        f"{url}/v1/hotline/events",
        content=body,
        headers={**headers, "content-type": "application/json"},
    )
