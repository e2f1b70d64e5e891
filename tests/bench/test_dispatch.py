"""bench.dispatch's view of dispatch's tables from outside, against the real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from bench.dispatch import Observed, PhaseError
from libs.common.db import migrate
from tests.factories import Isolation

VERSIONS = Path(__file__).resolve().parents[2] / "services" / "dispatch" / "migrations"


async def _deliveries(isolation: Isolation, statuses: list[str]) -> str:
    schema = isolation.schema("dispatch")
    await migrate(database_url=isolation.database_url, schema=schema, versions_dir=VERSIONS)
    engine = create_async_engine(isolation.database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f'SET search_path TO "{schema}"'))
            await conn.execute(
                sa.text(
                    "INSERT INTO deliveries (delivery_id, case_id, department, url, status,"
                    " attempts, next_attempt_at, payload, created_at)"
                    " SELECT 'msg_' || n, 'case-' || n, 'chengguan', 'http://x', s, 0, :now,"
                    " '{}', :now FROM unnest(CAST(:statuses AS text[])) WITH ORDINALITY AS t(s, n)"
                ),
                {"now": datetime.now(UTC), "statuses": statuses},
            )
    finally:
        await engine.dispose()
    return schema


async def test_answered_counts_what_is_no_longer_pending_on_the_partial_index(
    isolation: Isolation,
) -> None:
    schema = await _deliveries(isolation, ["pending", "delivered", "delivered", "dead"])
    engine = create_async_engine(isolation.database_url)
    observed = Observed(engine, schema)
    try:
        assert await observed.answered(4) == 3
        compiled = observed.pending_count.compile(engine)
        async with engine.connect() as conn:
            await conn.execute(sa.text("SET enable_seqscan = off"))
            await conn.execute(sa.text("SET plan_cache_mode = force_generic_plan"))
            plan = "\n".join(row[0] for row in await conn.execute(sa.text(f"EXPLAIN {compiled}")))
    finally:
        await engine.dispose()
    assert "deliveries_due" in plan


async def test_all_delivered_fails_when_a_delivery_ended_dead(isolation: Isolation) -> None:
    schema = await _deliveries(isolation, ["delivered", "dead", "delivered"])
    engine = create_async_engine(isolation.database_url)
    try:
        with pytest.raises(PhaseError, match="delivered: 2 of 3"):
            await Observed(engine, schema).all_delivered(3)
    finally:
        await engine.dispose()


async def test_all_delivered_returns_once_every_delivery_is_delivered(
    isolation: Isolation,
) -> None:
    schema = await _deliveries(isolation, ["delivered", "delivered"])
    engine = create_async_engine(isolation.database_url)
    try:
        await Observed(engine, schema).all_delivered(2)
        assert await Observed(engine, schema).with_status("delivered") == 2
    finally:
        await engine.dispose()
