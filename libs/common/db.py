"""PostgreSQL plumbing: the async engine bound to the service's own schema, migrations at start,
and the two tables every service has (the outbox and the processed-event ledger).

Each service's tables live in its own schema; connections set `search_path` to it, so table
definitions and migrations stay schema-free and one database can host every service.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from asyncpg.transaction import Transaction
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from libs.common.kafka import dependency_unavailable

T = TypeVar("T")
ALEMBIC_DIR = Path(__file__).parent / "alembic"
MIGRATION_LOCK_ID = 0x67726964  # "grid": serialises migrations of concurrent instances
# Alembic's `context` is one proxy per process: two upgrades in threads at once break each other
_ALEMBIC_IN_USE = threading.Lock()

plumbing = sa.MetaData()

outbox = sa.Table(
    "outbox",
    plumbing,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("topic", sa.Text, nullable=False),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False, unique=True),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("data", JSONB, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("published_at", sa.DateTime(timezone=True)),
    sa.Index("outbox_unpublished", "id", postgresql_where=sa.text("published_at IS NULL")),
)

processed_events = sa.Table(
    "processed_events",
    plumbing,
    sa.Column("consumer", sa.Text, primary_key=True),
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
)


def create_engine(database_url: str, *, schema: str, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        # no pre-ping: it costs a round trip per checkout; a dead connection fails its
        # transaction, which every caller already retries or reports
        pool_pre_ping=False,
        pool_recycle=1800,
        connect_args={"server_settings": {"search_path": schema, "application_name": schema}},
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


class HeldConnection:
    """One connection kept out of the pool by a hot loop, used through the asyncpg driver in
    transactions of its own: no pool checkout and reset per round, no SQLAlchemy statement
    machinery per statement (~3x less CPU a statement). A failed round drops the connection;
    the next round opens a new one. A held connection that fails to begin (its server stopped
    or restarted while it sat idle) is replaced at once, before the caller's statements run."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None
        self._in_use = asyncio.Lock()  # one transaction at a time on the one connection

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._in_use:
            driver, transaction = await self._begin()
            try:
                yield driver
                await transaction.commit()
            except BaseException:
                await self._drop()  # closing it rolls back what the round did
                raise

    async def autocommit(self, statement: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run `statement`, a single SQL statement, outside a transaction: it commits on its own,
        in one round trip where `transaction` takes three (BEGIN, it, COMMIT).

        On a held connection whose session the server ended while it sat idle (a restart),
        the statement fails without having run; like `transaction` begins again, it is then run
        once more on a fresh connection. It must be safe to run twice: when a connection breaks
        during a statement, as during a COMMIT, nobody can tell whether it committed."""
        async with self._in_use:
            held = self._conn is not None
            try:
                return await statement(await self._driver())
            except Exception as exc:
                await self._drop()
                if not (held and dependency_unavailable(exc)):
                    raise
            except BaseException:  # cancelled: the connection's state is unknown
                await self._drop()
                raise
            try:
                return await statement(await self._driver())
            except BaseException:
                await self._drop()
                raise

    async def _driver(self) -> asyncpg.Connection:
        if self._conn is None:
            self._conn = await self._engine.connect()
        return await raw_driver(self._conn)

    async def _begin(self) -> tuple[asyncpg.Connection, Transaction]:
        held = self._conn is not None
        try:
            return await self._start()
        except Exception:
            if not held:
                raise  # a fresh connection that cannot begin: the server is away
        return await self._start()  # the held one had gone stale: once more, on a fresh one

    async def _start(self) -> tuple[asyncpg.Connection, Transaction]:
        try:
            driver = await self._driver()
            transaction = driver.transaction()
            await transaction.start()
        except BaseException:
            await self._drop()
            raise
        return driver, transaction

    async def close(self) -> None:
        async with self._in_use:
            await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()  # the connection may be broken: never back to the pool
            with contextlib.suppress(Exception):
                await conn.close()


async def driver_of(session: AsyncSession | asyncpg.Connection) -> asyncpg.Connection:
    """The asyncpg connection under `session`, inside the session's transaction, for hot
    statements that skip SQLAlchemy (positional `$n` parameters); given one already, that one.
    The session's pending ORM changes are flushed first, so the statements see them."""
    if isinstance(session, asyncpg.Connection):
        return session
    await session.flush()
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    adapter: Any = raw.dbapi_connection  # SQLAlchemy's asyncpg adapter
    if getattr(adapter, "_transaction", None) is None:
        # SQLAlchemy's asyncpg adapter sends BEGIN before the first statement it runs: begun
        # here as it would begin it, without a statement of ours (a round trip fewer than a
        # `SELECT 1` through it)
        await adapter._start_transaction()
    return await raw_driver(conn)


async def raw_driver(conn: AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection under a SQLAlchemy connection, for statements that skip
    SQLAlchemy (positional `$n` parameters)."""
    raw = await conn.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    return driver


# one write of a transaction: a statement with `$n` parameters, and their values
Write = tuple[str, Sequence[Any]]
_PARAMETER = re.compile(r"\$(\d+)")


def one_statement(writes: Sequence[Write]) -> Write:
    """Several writes of a transaction as one statement, sent in one round trip instead of one
    each: every write but the last becomes a data-modifying CTE (`WITH w0 AS (...)`), and their
    `$n` parameters are renumbered in turn. PostgreSQL runs them all on one snapshot, so none may
    depend on another's rows or touch a row another touches; none may have a RETURNING clause.
    The statement's text depends only on the writes' texts, so it is prepared once."""
    if not writes:
        raise ValueError("no write to send")
    text = _joined(tuple((text, len(args)) for text, args in writes))
    return text, [value for _, args in writes for value in args]


async def execute_writes(driver: asyncpg.Connection, writes: Sequence[Write]) -> None:
    """`writes` sent as `one_statement`, in the transaction open on `driver`."""
    text, values = one_statement(writes)
    await driver.execute(text, *values)


@functools.lru_cache(maxsize=256)
def _joined(writes: tuple[tuple[str, int], ...]) -> str:
    texts: list[str] = []
    offset = 0
    for text, count in writes:
        numbers = {int(n) for n in _PARAMETER.findall(text)}
        if numbers != set(range(1, count + 1)):
            raise ValueError(f"{count} values for parameters {sorted(numbers)}")
        texts.append(_PARAMETER.sub(functools.partial(_renumbered, offset=offset), text.strip()))
        offset += count
    *ctes, last = texts
    if not ctes:
        return last
    with_ = ", ".join(f"w{index} AS ({text})" for index, text in enumerate(ctes))
    return f"WITH {with_} {last}"


def _renumbered(match: re.Match[str], *, offset: int) -> str:
    return f"${int(match[1]) + offset}"


async def ping(engine: AsyncEngine) -> bool:
    try:
        async with asyncio.timeout(3), engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
    except Exception:  # readiness reports any failure as not ready
        return False
    return True


async def migrate(*, database_url: str, schema: str, versions_dir: Path) -> None:
    """Bring the service's schema to the newest revision (safe with several instances starting)."""
    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(versions_dir))
    config.attributes["database_url"] = database_url
    config.attributes["schema"] = schema
    config.attributes["lock_id"] = MIGRATION_LOCK_ID
    await asyncio.to_thread(_upgrade, config)


def _upgrade(config: Config) -> None:
    with _ALEMBIC_IN_USE:
        command.upgrade(config, "head")


async def claim_event(
    session: AsyncSession, *, consumer: str, event_id: str, now: datetime
) -> bool:
    """Record that `consumer` handled `event_id`; False when it already had (a redelivery)."""
    statement = (
        insert(processed_events)
        .values(consumer=consumer, event_id=event_id, processed_at=now)
        .on_conflict_do_nothing()
        .returning(processed_events.c.event_id)
    )
    return (await session.execute(statement)).first() is not None


async def claim_events(
    session: AsyncSession | asyncpg.Connection,
    *,
    consumer: str,
    event_ids: Sequence[str],
    now: datetime,
) -> set[str]:
    """`claim_event` for many events in one statement: the ids `consumer` had not handled yet."""
    if not event_ids:
        return set()
    driver = await driver_of(session)
    # a redelivery inside the batch is claimed once (and found already claimed)
    rows = await driver.fetch(_CLAIM_EVENTS, consumer, list(dict.fromkeys(event_ids)), now)
    return {row["event_id"] for row in rows}


_CLAIM_EVENTS = """
    INSERT INTO processed_events (consumer, event_id, processed_at)
    SELECT $1, unnest($2::text[]), $3
    ON CONFLICT DO NOTHING
    RETURNING event_id
"""


def create_plumbing_tables_v1() -> None:
    """Migration step: the outbox and processed-event tables as of revision 1 (a frozen copy:
    later changes to the tables above get their own migration step)."""
    from alembic import op  # noqa: PLC0415

    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False, unique=True),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True)),
    )
    op.create_index(
        "outbox_unpublished", "outbox", ["id"], postgresql_where=sa.text("published_at IS NULL")
    )
    op.create_table(
        "processed_events",
        sa.Column("consumer", sa.Text, primary_key=True),
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
    )
