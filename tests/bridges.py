"""What the bridges' tests share: a bridge's rows, and waiting on a partner simulator."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from fastapi import FastAPI

from libs.common.auth import mint_token
from libs.common.bridge.tables import links, queue
from libs.common.db import outbox, processed_events
from tests.factories import DISPATCH_SECRET, Isolation
from tests.harness import WAIT_SECONDS

T = TypeVar("T")


def partner_token(system: str, scopes: tuple[str, ...] = ("cases:read", "cases:decide")) -> str:
    """A bridge's token for dispatch's partner API: role partner, sub = the platform's system."""
    return mint_token(
        secret=DISPATCH_SECRET,
        subject=system,
        role="partner",
        scopes=list(scopes),
        grids=[],
        now=datetime.now(UTC),
        ttl=timedelta(hours=2),
    )


def bridge_values(
    iso: Isolation, service: str, *, system: str, push_secret: str, call_secret: str
) -> dict[str, Any]:
    """Every bridge setting a test needs (fast retries and polls); URLs are placeholders."""
    return {
        **iso.common(service),
        "partner_url": "http://127.0.0.1:9",
        "partner_inbound_secret": push_secret,
        "partner_outbound_secret": call_secret,
        "partner_poll_seconds": 0.05,
        "partner_timeout_seconds": 5,
        "dispatch_url": "http://127.0.0.1:9",
        "dispatch_token": partner_token(system),
        "outbound_base_delay_seconds": 0.05,
        "outbound_max_delay_seconds": 0.3,
        "outbound_poll_seconds": 0.05,
        "lifecycle_consumer_group": f"{iso.token}-{service}",
    }


async def bridge_rows(bridge: FastAPI | None, table: sa.Table) -> list[sa.Row[Any]]:
    assert bridge is not None, "the bridge is not running"
    async with bridge.state.runtime.sessions() as session:
        return list((await session.execute(sa.select(table))).all())


async def bridge_counts(bridge: FastAPI | None) -> dict[str, int]:
    """Rows in the tables a bridge writes: links, outbox, processed events, queue."""
    return {
        t.name: len(await bridge_rows(bridge, t)) for t in (links, outbox, processed_events, queue)
    }


async def wait_partner(
    changed: asyncio.Condition,
    find: Callable[[], T | None],
    check: Callable[[T], bool],
    *,
    within: float = WAIT_SECONDS,
) -> T:
    """Wait until what `find` returns passes `check`; woken by each call the simulator takes."""
    async with asyncio.timeout(within), changed:
        while True:
            found = find()
            if found is not None and check(found):
                return found
            await changed.wait()
