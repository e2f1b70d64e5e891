"""Database plumbing against the real PostgreSQL: migrations are idempotent, wait for each other,
and land in the service's own schema; the migrated tables are the ones the code uses; the event
ledger claims an event once; readiness tells a reachable server from an unreachable one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from libs.common.db import (
    ALEMBIC_DIR,
    MIGRATION_LOCK_ID,
    HeldConnection,
    claim_event,
    create_engine,
    migrate,
    one_statement,
    ping,
    plumbing,
    session_factory,
)
from tests.factories import Isolation
from tests.harness import WAIT_SECONDS, until

REPO = Path(__file__).resolve().parents[3]
VERSIONS = REPO / "services" / "intake" / "migrations"
PLUMBING = {"alembic_version", "outbox", "processed_events"}  # intake adds its own beside them
NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
# another service instance starting at the same moment: its own process, its own Alembic
MIGRATE_IN_ANOTHER_PROCESS = """
import asyncio, sys
from pathlib import Path
from libs.common.db import migrate
url, schema, versions = sys.argv[1:]
asyncio.run(migrate(database_url=url, schema=schema, versions_dir=Path(versions)))
"""


@pytest.fixture
async def admin(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url)
    yield engine
    await engine.dispose()


async def run_migrate(isolation: Isolation, schema: str) -> None:
    await migrate(database_url=isolation.database_url, schema=schema, versions_dir=VERSIONS)


def describe(conn: Connection, schema: str) -> dict[str, Any]:
    """Everything the migration decides about a schema, comparable between runs."""
    inspector = sa.inspect(conn)
    tables: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names(schema=schema)):
        tables[table] = {
            "columns": [
                (c["name"], str(c["type"].compile(dialect=conn.dialect)), c["nullable"])
                for c in inspector.get_columns(table, schema=schema)
            ],
            "primary_key": inspector.get_pk_constraint(table, schema=schema)["constrained_columns"],
            "unique": sorted(
                tuple(u["column_names"])
                for u in inspector.get_unique_constraints(table, schema=schema)
            ),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), str(i.get("dialect_options", {})))
                for i in inspector.get_indexes(table, schema=schema)
                if not i.get("duplicates_constraint")  # a unique constraint's own index
            ),
        }
    version_table = sa.table("alembic_version", sa.column("version_num"), schema=schema)
    versions = conn.execute(sa.select(version_table.c.version_num)).scalars().all()
    return {"tables": tables, "versions": versions}


def newest_revision() -> str | None:
    return ScriptDirectory(str(ALEMBIC_DIR), version_locations=[str(VERSIONS)]).get_current_head()


async def snapshot(engine: AsyncEngine, schema: str) -> dict[str, Any]:
    async with engine.connect() as conn:
        return await conn.run_sync(describe, schema)


async def tables_in(engine: AsyncEngine, schema: str) -> set[str]:
    async with engine.connect() as conn:
        names = await conn.execute(
            sa.text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
            {"s": schema},
        )
        return set(names.scalars().all())


async def test_migrate_twice_gives_the_same_schema(
    isolation: Isolation, admin: AsyncEngine
) -> None:
    schema = isolation.schema("intake")
    await run_migrate(isolation, schema)
    once = await snapshot(admin, schema)
    await run_migrate(isolation, schema)

    assert await snapshot(admin, schema) == once
    assert set(once["tables"]) >= PLUMBING
    assert once["versions"] == [newest_revision()]


async def test_tables_land_in_the_service_schema_not_in_public(
    isolation: Isolation, admin: AsyncEngine
) -> None:
    schema = isolation.schema("intake")
    public_before = await tables_in(admin, "public")
    await run_migrate(isolation, schema)

    migrated = await tables_in(admin, schema)
    assert migrated >= PLUMBING
    assert (await tables_in(admin, "public")) & migrated == public_before & migrated
    # and the service's engine finds them unqualified, through its search_path
    engine = create_engine(isolation.database_url, schema=schema, pool_size=1)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(sa.text("SELECT current_schema()"))).scalar() == schema
            assert (await conn.execute(sa.text("SELECT count(*) FROM outbox"))).scalar() == 0
    finally:
        await engine.dispose()


async def migration_waiters(conn: AsyncConnection) -> int:
    """Sessions of this database waiting for the migration lock (a bigint advisory key)."""
    statement = sa.text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND classid = 0 AND objid = :low AND objsubid = 1"
    )
    return int((await conn.execute(statement, {"low": MIGRATION_LOCK_ID})).scalar_one())


async def test_concurrent_migrations_wait_for_the_advisory_lock_and_all_succeed(
    isolation: Isolation, admin: AsyncEngine
) -> None:
    schema = isolation.schema("intake")
    async with admin.connect() as holder, admin.connect() as observer:
        # hold the lock, so every migration below is started before any may run
        await holder.execute(sa.text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        await holder.commit()
        released = False
        try:
            here = [asyncio.create_task(run_migrate(isolation, schema)) for _ in range(2)]
            there = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                MIGRATE_IN_ANOTHER_PROCESS,
                isolation.database_url,
                schema,
                str(VERSIONS),
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )

            async def both_processes_wait() -> bool:
                await observer.rollback()  # a fresh snapshot of pg_locks each time
                return await migration_waiters(observer) >= 2

            await until(both_processes_wait)
            assert not any(task.done() for task in here)
            assert await tables_in(admin, schema) == set()  # nobody got past the lock
            await holder.execute(
                sa.text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID}
            )
            await holder.commit()
            released = True
            await asyncio.wait_for(asyncio.gather(*here), WAIT_SECONDS)
            _, stderr = await asyncio.wait_for(there.communicate(), WAIT_SECONDS)
        finally:
            if not released:
                await holder.execute(
                    sa.text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID}
                )
                await holder.commit()

    assert there.returncode == 0, stderr.decode()
    described = await snapshot(admin, schema)
    assert set(described["tables"]) >= PLUMBING
    assert described["versions"] == [newest_revision()]


async def test_migrated_tables_match_the_runtime_table_definitions(
    isolation: Isolation, admin: AsyncEngine
) -> None:
    schema = isolation.schema("intake")
    await run_migrate(isolation, schema)
    migrated = (await snapshot(admin, schema))["tables"]
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]

    for table in plumbing.sorted_tables:
        assert migrated[table.name]["columns"] == [
            (c.name, str(c.type.compile(dialect=dialect)), c.nullable) for c in table.columns
        ], table.name
        assert migrated[table.name]["primary_key"] == [c.name for c in table.primary_key]
        assert migrated[table.name]["unique"] == [(c.name,) for c in table.columns if c.unique]
        declared = {i.name for i in table.indexes}
        # a service may add indexes of its own to these tables (intake: Open311's lookup)
        assert [i[:2] for i in migrated[table.name]["indexes"] if i[0] in declared] == sorted(
            (i.name, tuple(c.name for c in i.columns)) for i in table.indexes
        )
    [unpublished] = [i for i in migrated["outbox"]["indexes"] if i[0] == "outbox_unpublished"]
    assert "published_at IS NULL" in unpublished[2]


async def test_claim_event_is_true_once_then_false(isolation: Isolation) -> None:
    schema = isolation.schema("intake")
    await run_migrate(isolation, schema)
    engine = create_engine(isolation.database_url, schema=schema, pool_size=2)
    sessions = session_factory(engine)
    try:
        async with sessions() as session, session.begin():
            assert await claim_event(session, consumer="dispatch", event_id="E1", now=NOW)
            assert not await claim_event(session, consumer="dispatch", event_id="E1", now=NOW)
        async with sessions() as session, session.begin():  # a redelivery, later
            assert not await claim_event(session, consumer="dispatch", event_id="E1", now=NOW)
            assert await claim_event(session, consumer="sla", event_id="E1", now=NOW)
            assert await claim_event(session, consumer="dispatch", event_id="E2", now=NOW)
        with pytest.raises(RuntimeError, match="handler failed"):  # its claim is rolled back
            async with sessions() as session, session.begin():
                assert await claim_event(session, consumer="dispatch", event_id="E3", now=NOW)
                raise RuntimeError("the handler failed")
        async with sessions() as session, session.begin():
            assert await claim_event(session, consumer="dispatch", event_id="E3", now=NOW)
    finally:
        await engine.dispose()


async def test_ping_tells_a_reachable_database_from_an_unreachable_one(
    isolation: Isolation,
) -> None:
    nowhere = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/test", schema="public")
    real = create_engine(isolation.database_url, schema="public", pool_size=1)
    try:
        assert await ping(nowhere) is False
        assert await ping(real) is True
    finally:
        await nowhere.dispose()
        await real.dispose()


async def test_a_held_connection_whose_server_session_ended_is_replaced_before_the_round(
    isolation: Isolation, admin: AsyncEngine
) -> None:
    """A server stopping or restarting ends every idle session: the next round of a hot loop
    must not fail for the stale connection (intake answered 500 for the first round on each of
    its committers' connections when PostgreSQL stopped: asyncpg's InternalClientError)."""
    async with _held_marks(isolation, admin, "held", "n int") as held:
        async with held.transaction() as conn:
            first_pid = await conn.fetchval("SELECT pg_backend_pid()")
            await conn.execute("INSERT INTO marks VALUES (1)")
        assert await _end_session(admin, first_pid) is True

        async with held.transaction() as conn:  # the dead session is replaced, silently
            assert await conn.fetchval("SELECT pg_backend_pid()") != first_pid
            await conn.execute("INSERT INTO marks VALUES (2)")
        with pytest.raises(RuntimeError, match="round failed"):  # nothing of it is kept
            async with held.transaction() as conn:
                await conn.execute("INSERT INTO marks VALUES (3)")
                raise RuntimeError("the round failed")
        async with held.transaction() as conn:
            assert await conn.fetch("SELECT n FROM marks ORDER BY n") == [(1,), (2,)]


async def test_a_statement_outside_a_transaction_survives_a_stale_connection_once(
    isolation: Isolation, admin: AsyncEngine
) -> None:
    """`autocommit` runs one statement in one round trip. Its session ended by the server while
    idle, the statement runs again on a fresh connection, as `transaction` begins again; any
    other failure is the caller's, not retried."""
    runs: list[int] = []

    def mark(n: int) -> Callable[[asyncpg.Connection], Awaitable[str]]:
        async def statement(conn: asyncpg.Connection) -> str:
            runs.append(n)
            status: str = await conn.execute("INSERT INTO marks VALUES ($1)", n)
            return status

        return statement

    async with _held_marks(isolation, admin, "autocommit", "n int PRIMARY KEY") as held:
        assert await held.autocommit(mark(1)) == "INSERT 0 1"
        first_pid = await held.autocommit(lambda conn: conn.fetchval("SELECT pg_backend_pid()"))
        assert await _end_session(admin, first_pid) is True

        assert await held.autocommit(mark(2)) == "INSERT 0 1"  # on a fresh connection
        assert runs == [1, 2, 2]  # the stale one failed before it ran: run once more
        with pytest.raises(asyncpg.UniqueViolationError):  # refused: not run again
            await held.autocommit(mark(2))
        assert runs == [1, 2, 2, 2]
        async with held.transaction() as conn:  # each committed on its own, once
            assert await conn.fetch("SELECT n FROM marks ORDER BY n") == [(1,), (2,)]
            assert await conn.fetchval("SELECT pg_backend_pid()") != first_pid


async def test_several_writes_go_as_one_statement_with_their_parameters_renumbered(
    isolation: Isolation, admin: AsyncEngine
) -> None:
    """`one_statement` sends a transaction's independent writes in one round trip: each lands,
    with its own values, and a write whose values do not fit its parameters is refused before
    anything is sent."""
    marks = ("INSERT INTO marks SELECT unnest($1::int[]), $2", [[1, 2], "first"])
    more = ("INSERT INTO marks SELECT unnest($1::int[]), $2", [[3], "second"])
    renamed = ("UPDATE other SET label = $2 WHERE n = $1", [7, "seventh"])
    text, values = one_statement([marks, more, renamed])
    assert text.startswith("WITH w0 AS (INSERT INTO marks SELECT unnest($1::int[]), $2), ")
    assert "w1 AS (INSERT INTO marks SELECT unnest($3::int[]), $4)" in text
    assert text.endswith("UPDATE other SET label = $6 WHERE n = $5")
    assert values == [[1, 2], "first", [3], "second", 7, "seventh"]
    assert one_statement([more]) == (more[0], more[1])  # alone: as it is

    columns = "n int, label text"
    async with (
        _held_marks(isolation, admin, "one_statement", columns) as held,
        held.transaction() as conn,
    ):
        await conn.execute("CREATE TABLE other (n int PRIMARY KEY, label text)")
        await conn.execute("INSERT INTO other VALUES (7, 'unnamed'), (8, 'eighth')")
        assert await conn.execute(text, *values) == "UPDATE 1"
        assert await conn.fetch("SELECT n, label FROM marks ORDER BY n") == [
            (1, "first"),
            (2, "first"),
            (3, "second"),
        ]
        assert await conn.fetch("SELECT n, label FROM other ORDER BY n") == [
            (7, "seventh"),
            (8, "eighth"),
        ]
    with pytest.raises(ValueError, match=r"1 values for parameters \[1, 2\]"):
        one_statement([marks, ("INSERT INTO marks VALUES ($1, $2)", [9])])
    with pytest.raises(ValueError, match="no write"):
        one_statement([])


@contextlib.asynccontextmanager
async def _held_marks(
    isolation: Isolation, admin: AsyncEngine, name: str, column: str
) -> AsyncIterator[HeldConnection]:
    """A held connection on a schema of its own with one table, `marks` (`column`)."""
    schema = isolation.schema(name)
    async with admin.begin() as conn:
        await conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        await conn.execute(sa.text(f'CREATE TABLE "{schema}".marks ({column})'))
    engine = create_engine(isolation.database_url, schema=schema, pool_size=1)
    held = HeldConnection(engine)
    try:
        yield held
    finally:
        await held.close()
        await engine.dispose()


async def _end_session(admin: AsyncEngine, pid: int) -> bool:
    """End a server session as a restart would; waits (5 s at most) until it is gone."""
    async with admin.connect() as conn:
        ended: bool = await conn.scalar(sa.text(f"SELECT pg_terminate_backend({pid}, 5000)"))
    return ended
