"""dispatch's migrated tables against the real PostgreSQL: the deliveries table carries only the
indexes its queries use. Each delivery row is updated twice (leased, then answered), and an
update that changes an indexed column writes a new entry into every index of the table."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from libs.common.db import migrate
from services.dispatch.consumer import _READ_BATCH
from services.dispatch.webhooks import _DUE_RECEIVERS
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


async def test_cases_keep_the_indexes_their_queries_use(isolation: Isolation) -> None:
    """A case row is updated at every transition, each update writing an entry into every index:
    no index that duplicates another or that no query can use."""
    schema = isolation.schema("dispatch")
    await migrate(database_url=isolation.database_url, schema=schema, versions_dir=VERSIONS)
    driver = await asyncpg.connect(isolation.database_url.replace("+asyncpg", ""))
    try:
        await driver.execute(f'SET search_path TO "{schema}"')
        indexes = {
            row["indexname"]: row["indexdef"]
            for row in await driver.fetch(
                "SELECT indexname, indexdef FROM pg_indexes"
                " WHERE schemaname = $1 AND tablename = 'cases'",
                schema,
            )
        }
        # can each be used? (with sequential scans off, the planner takes any usable index)
        await driver.execute("SET enable_seqscan = off")
        plans = {
            query: str(await driver.fetchval(f"EXPLAIN (FORMAT JSON) {query}"))
            for query in (
                "SELECT case_id FROM cases WHERE unit_grid LIKE '330102001%'",
                "SELECT case_id FROM cases WHERE merged_into = 'case-1'",
                "SELECT case_id FROM cases WHERE department = 'chengguan'",
            )
        }
    finally:
        await driver.close()
    assert sorted(indexes) == [
        "cases_department_updated",
        "cases_duplicate_candidates",
        "cases_merged_into",
        "cases_pkey",
        "cases_unit_grid_prefix",
        "ix_cases_state",
    ]
    assert indexes["cases_merged_into"].endswith("WHERE (merged_into IS NOT NULL)")
    used = [
        '"Index Name": "cases_unit_grid_prefix"',
        '"Index Name": "cases_merged_into"',
        '"Index Name": "cases_department_updated"',
    ]
    for (query, plan), index in zip(plans.items(), used, strict=True):
        assert index in plan, query


async def test_a_batch_s_duplicate_search_uses_the_candidates_index_in_a_generic_plan(
    isolation: Isolation,
) -> None:
    """The consumer's reads are one prepared statement, which PostgreSQL may plan once for any
    values (a generic plan): the search for duplicate candidates writes its state condition
    out, so that the partial index `cases_duplicate_candidates` still serves it."""
    schema = isolation.schema("dispatch")
    await migrate(database_url=isolation.database_url, schema=schema, versions_dir=VERSIONS)
    driver = await asyncpg.connect(isolation.database_url.replace("+asyncpg", ""))
    try:
        await driver.execute(f'SET search_path TO "{schema}"')
        await driver.execute("SET enable_seqscan = off")
        await driver.execute("SET plan_cache_mode = force_generic_plan")
        await driver.execute(f"PREPARE reads AS {_READ_BATCH}")
        plan = str(
            await driver.fetchval(
                "EXPLAIN (FORMAT JSON) EXECUTE reads('dispatch.submitted', ARRAY['event-1'],"
                " now(), ARRAY['case-1'], ARRAY[0], ARRAY['city.garbage'], ARRAY[30.0],"
                " ARRAY[30.1], ARRAY[120.0], ARRAY[120.1], now() - interval '24 hours')"
            )
        )
    finally:
        await driver.close()
    assert '"Index Name": "cases_duplicate_candidates"' in plan


async def test_a_lease_round_counts_a_department_s_attempts_in_flight_up_to_its_window(
    isolation: Isolation,
) -> None:
    """A lease round's first statement finds the departments with a delivery due, their
    receivers locked and their attempts in flight. The in-flight count walks
    `deliveries_leased` row by row and stops at the window. Every
    lease leaves a dead entry in that index until a vacuum; a bitmap scan (what the planner
    took for a grouped count over `status = 'pending'`) reads all of them again each round,
    2-4 ms a round under load, while a plain index scan marks them dead once and skips them."""
    schema = isolation.schema("dispatch")
    await migrate(database_url=isolation.database_url, schema=schema, versions_dir=VERSIONS)
    driver = await asyncpg.connect(isolation.database_url.replace("+asyncpg", ""))
    try:
        await driver.execute(f'SET search_path TO "{schema}"')
        now = datetime.now(UTC)
        until = now + timedelta(seconds=60)
        await driver.execute(
            """
            INSERT INTO deliveries (delivery_id, case_id, department, url, status, attempts,
                next_attempt_at, payload, created_at, leased_until)
            SELECT 'msg_' || d || '_' || n, 'case-' || n, d, 'http://x', 'pending', 0,
                $1::timestamptz, '{}', $1::timestamptz,
                CASE WHEN n % 3 = 0 AND d <> 'weijian' THEN $2::timestamptz END
            FROM generate_series(1, 3000) AS n,
                unnest(ARRAY['chengguan', 'gongan', 'weijian']) AS d
            """,
            now,
            until,
        )
        # answered: their leases are cleared, their old entries stay in the index
        await driver.execute(
            "UPDATE deliveries SET leased_until = NULL, status = 'delivered'"
            " WHERE leased_until IS NOT NULL AND split_part(case_id, '-', 2)::int > 333"
        )
        expected = dict(
            await driver.fetch(
                "SELECT department, count(*) FROM deliveries WHERE leased_until > $1"
                " GROUP BY department",
                now,
            )
        )
        assert expected == {"chengguan": 111, "gongan": 111}
        departments = ["chengguan", "gongan", "minzheng", "weijian"]
        await driver.execute(
            "INSERT INTO receivers (department, updated_at) SELECT unnest($1::text[]), $2",
            departments,
            now,
        )
        arguments = (departments, now, ["msg_gongan_3"], [8, 500, 8, 8])
        found = await driver.fetch(_DUE_RECEIVERS, *arguments)
        counted = {row["department"]: row["in_flight"] for row in found}
        plan = str(await driver.fetchval(f"EXPLAIN (FORMAT JSON) {_DUE_RECEIVERS}", *arguments))
    finally:
        await driver.close()
    # at most each department's window; an attempt answered but not yet recorded left out;
    # minzheng has nothing due
    assert counted == {"chengguan": 8, "gongan": 110, "weijian": 0}
    assert "Bitmap" not in plan
    assert '"Index Name": "deliveries_leased"' in plan
    assert '"Node Type": "Limit"' in plan


async def test_a_lease_round_probes_each_department_for_a_due_delivery_whatever_the_backlog(
    isolation: Isolation,
) -> None:
    """Which departments have a delivery due is one index probe each. asyncpg prepares the
    statement and PostgreSQL may plan it once for any values (a generic plan); with an EXISTS
    that plan, for a table of a few thousand deliveries, was a semi-join that read and sorted
    every due delivery each round. What the round reads must not grow with the backlog."""
    schema = isolation.schema("dispatch")
    await migrate(database_url=isolation.database_url, schema=schema, versions_dir=VERSIONS)
    driver = await asyncpg.connect(isolation.database_url.replace("+asyncpg", ""))
    departments = ["chengguan", "gongan", "gongdian", "minzheng", "weijian"]
    configured = [*departments, "shuzichengguan", "xiaofang", "yingji", "zongzhi"]
    try:
        await driver.execute(f'SET search_path TO "{schema}"')
        now = datetime.now(UTC)
        await driver.execute(
            "INSERT INTO receivers (department, updated_at) SELECT unnest($1::text[]), $2",
            configured,
            now,
        )
        await driver.execute("ANALYZE deliveries")  # the statistics of an empty table
        await driver.execute(
            """
            INSERT INTO deliveries (delivery_id, case_id, department, url, status, attempts,
                next_attempt_at, payload, created_at)
            SELECT 'msg_' || d || '_' || n, 'case-' || n, d, 'http://x', 'pending', 0,
                $1::timestamptz - make_interval(secs => n / 1000.0), '{}', $1::timestamptz
            FROM generate_series(1, 1700) AS n, unnest($2::text[]) AS d
            """,
            now,
            departments,
        )
        pages = await driver.fetchval("SELECT pg_relation_size('deliveries') / 8192")
        await driver.execute("SET plan_cache_mode = force_generic_plan")
        await driver.execute(f"PREPARE due AS {_DUE_RECEIVERS}")
        arguments = "(ARRAY[{}], now(), ARRAY['msg_x'], ARRAY[{}])".format(
            ", ".join(f"'{d}'" for d in configured), ", ".join("8" for _ in configured)
        )
        found = await driver.fetch(f"EXECUTE due{arguments}")
        plan = await driver.fetchval(
            f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE due{arguments}"
        )
    finally:
        await driver.close()
    assert [row["department"] for row in found] == departments
    assert pages > 100  # the due deliveries span this many pages ...
    read = json.loads(plan)[0]["Plan"]["Shared Hit Blocks"]
    assert read < 60, read  # ... the round reads a few per department (~200 with the EXISTS)
