"""dispatch's migrated tables against the real PostgreSQL: the deliveries table carries only the
indexes its queries use. Each delivery row is updated twice (leased, then answered), and an
update that changes an indexed column writes a new entry into every index of the table."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from libs.common.db import migrate
from tests.factories import Isolation

VERSIONS = Path(__file__).resolve().parents[3] / "services" / "dispatch" / "migrations"


async def test_deliveries_are_indexed_by_key_case_time_and_partial_indexes_only(
    isolation: Isolation,
) -> None:
    schema = isolation.schema("dispatch")
    await migrate(database_url=isolation.database_url, schema=schema, versions_dir=VERSIONS)
    engine = create_async_engine(isolation.database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.text(
                    "SELECT indexname, indexdef FROM pg_indexes"
                    " WHERE schemaname = :schema AND tablename = 'deliveries'"
                ),
                {"schema": schema},
            )
            indexes: dict[str, str] = {str(name): str(text) for name, text in rows}
    finally:
        await engine.dispose()
    assert sorted(indexes) == [
        "deliveries_created_at",
        "deliveries_dead",
        "deliveries_due",
        "deliveries_leased",
        "deliveries_pkey",
        "ix_deliveries_case_id",
    ]
    assert indexes["deliveries_dead"].endswith(
        "(department, created_at) WHERE ((status)::text = 'dead'::text)"
    )
    assert indexes["deliveries_due"].endswith("WHERE ((status)::text = 'pending'::text)")
