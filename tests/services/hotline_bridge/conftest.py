"""The 12345 bridge between the simulator of the platform and a real dispatch (real broker, real
PostgreSQL, real HTTP on both sides)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from deploy.hotline_simulator import HotlineSimulator, Order
from services.hotline_bridge.app import create_app
from services.hotline_bridge.settings import HotlineSettings
from tests.bridges import bridge_counts, bridge_rows, bridge_values, wait_partner
from tests.factories import Isolation
from tests.harness import WAIT_SECONDS, http_server
from tests.services.dispatch.conftest import DispatchStack, dispatch_stack_with

PUSH_SECRET = "whsec_" + base64.b64encode(b"test-hotline-push-secret-0123456").decode()
CALL_SECRET = "whsec_" + base64.b64encode(b"test-hotline-call-secret-0123456").decode()
SYSTEM = "hotline12345"


def make_hotline_settings(iso: Isolation, **overrides: Any) -> HotlineSettings:
    values = {
        **bridge_values(
            iso, "hotline_bridge", system=SYSTEM, push_secret=PUSH_SECRET, call_secret=CALL_SECRET
        ),
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
        return await bridge_rows(self.bridge, table)

    async def counts(self) -> dict[str, int]:
        return await bridge_counts(self.bridge)


async def wait_order(
    simulator: HotlineSimulator,
    order_id: str,
    check: Callable[[Order], bool],
    *,
    within: float = WAIT_SECONDS,
) -> Order:
    """Wait until the simulator's order passes `check` (woken by each call it takes)."""
    return await wait_partner(
        simulator.changed, lambda: simulator.orders.get(order_id), check, within=within
    )


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
