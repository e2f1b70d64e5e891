"""The 数字城管 bridge between the simulator of the platform and a real dispatch (real broker,
real PostgreSQL, real HTTP on every side). dispatch's configuration points the platform's
department entry at the bridge's port, chosen before either starts."""

from __future__ import annotations

import base64
import re
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

from deploy.citycare_simulator import CitycareSimulator, PlatformCase
from deploy.embedded import free_port
from libs.common.events import (
    CaseLifecycleEvent,
    CaseSubmitted,
    Category,
    Location,
    Reporter,
    Source,
    Transition,
)
from libs.common.ids import new_case_id
from libs.common.signing import signed_headers
from libs.common.topics import CASES_SUBMITTED
from services.citycare_bridge.app import create_app
from services.citycare_bridge.settings import CitycareSettings
from tests.bridges import bridge_counts, bridge_rows, bridge_values, wait_partner
from tests.factories import Isolation, department_secret, make_department_token
from tests.harness import WAIT_SECONDS, http_server
from tests.services.dispatch.conftest import DispatchStack, dispatch_stack_with

PUSH_SECRET = "whsec_" + base64.b64encode(b"test-citycare-push-secret-012345").decode()
CALL_SECRET = "whsec_" + base64.b64encode(b"test-citycare-call-secret-012345").decode()
SYSTEM = "citycare"
PLATFORM_DEPARTMENT = "shuzichengguan"


def make_citycare_settings(iso: Isolation, **overrides: Any) -> CitycareSettings:
    values = {
        **bridge_values(
            iso, "citycare_bridge", system=SYSTEM, push_secret=PUSH_SECRET, call_secret=CALL_SECRET
        ),
        "department_webhook_secret": department_secret(PLATFORM_DEPARTMENT),
        "department_token": make_department_token(PLATFORM_DEPARTMENT),
        **overrides,
    }
    return CitycareSettings.model_validate(values)


@dataclass
class CitycareStack:
    dispatch: DispatchStack
    simulator: CitycareSimulator
    settings: CitycareSettings
    bridge_port: int
    bridge: FastAPI | None = None
    bridge_url: str = ""

    @asynccontextmanager
    async def running_bridge(self) -> AsyncIterator[str]:
        """The bridge on its port; the simulator pushes to it while it runs."""
        app = create_app(self.settings)
        async with http_server(app, port=self.bridge_port) as url:
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


async def wait_case(
    simulator: CitycareSimulator,
    case_id: str,
    check: Callable[[PlatformCase], bool],
    *,
    within: float = WAIT_SECONDS,
) -> PlatformCase:
    """Wait until the simulator's case passes `check` (woken by each call it takes)."""
    return await wait_partner(
        simulator.changed, lambda: simulator.cases.get(case_id), check, within=within
    )


def grid_worker_case(
    category: str, title: str, description: str, *, unit_grid: str, worker: Reporter
) -> CaseSubmitted:
    """A grid worker's case as intake publishes it (湘江街道's city appearance → 数字城管)."""
    now = datetime.now(UTC)
    return CaseSubmitted(
        case_id=new_case_id(now),
        source=Source.GRID_WORKER,
        category=Category(code=category),
        title=title,
        description=description,
        location=Location(unit_grid=unit_grid),
        reporter=worker,
        occurred_at=now - timedelta(minutes=5),
        reported_at=now,
    )


async def publish(stack: CitycareStack, case: CaseSubmitted) -> None:
    await stack.dispatch.publisher.publish(
        CASES_SUBMITTED, case, key=case.case_id, now=datetime.now(UTC)
    )


def moved(case_id: str, transition: Transition) -> Callable[[object, object], bool]:
    """A TopicWatcher predicate: this case's lifecycle event of this transition."""

    def match(_: object, payload: object) -> bool:
        return (
            isinstance(payload, CaseLifecycleEvent)
            and payload.case_id == case_id
            and payload.transition is transition
        )

    return match


def statuses(case: PlatformCase) -> list[str]:
    return [update["status"] for update in case.updates]


def _to_bridge(port: int) -> Callable[[str], str]:
    """departments.yaml with the platform's department entry delivering to the bridge's port."""

    def edit(text: str) -> str:
        return re.sub(r"http://127\.0\.0\.1:8005/", f"http://127.0.0.1:{port}/", text)

    return edit


@asynccontextmanager
async def citycare_stack_with(
    isolation: Isolation, tmp_path: Path, **settings: Any
) -> AsyncIterator[CitycareStack]:
    simulator = CitycareSimulator(push_secret=PUSH_SECRET, call_secrets=[CALL_SECRET])
    port = free_port()
    async with (
        dispatch_stack_with(isolation, tmp_path, departments=_to_bridge(port)) as dispatch,
        http_server(dispatch.app, lifespan="off") as dispatch_url,
        http_server(simulator.app()) as simulator_url,
    ):
        values = {
            "partner_url": simulator_url,
            "dispatch_url": dispatch_url,
            "config_dir": tmp_path / "config",
            **settings,
        }
        yield CitycareStack(dispatch, simulator, make_citycare_settings(isolation, **values), port)


@pytest.fixture
async def citycare_stack(
    isolation: Isolation, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[CitycareStack]:
    async with citycare_stack_with(isolation, tmp_path, **getattr(request, "param", {})) as stack:
        yield stack


async def signed_post(
    client: httpx.AsyncClient, url: str, body: bytes, secret: str, msg_id: str = "push-1"
) -> httpx.Response:
    headers = signed_headers(secret=secret, msg_id=msg_id, now=datetime.now(UTC), body=body)
    return await client.post(
        url, content=body, headers={**headers, "content-type": "application/json"}
    )
