"""Shared Alembic environment: each service passes its URL, schema and versions folder."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

config = context.config


def _run(connection: Connection) -> None:
    schema = config.attributes["schema"]
    connection.execute(
        sa.text("SELECT pg_advisory_lock(:id)"), {"id": config.attributes["lock_id"]}
    )
    try:
        connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        connection.execute(sa.text(f'SET search_path TO "{schema}"'))
        connection.commit()
        context.configure(
            connection=connection, version_table_schema=schema, transaction_per_migration=True
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        connection.execute(
            sa.text("SELECT pg_advisory_unlock(:id)"), {"id": config.attributes["lock_id"]}
        )
        connection.commit()


async def _main() -> None:
    engine = create_async_engine(config.attributes["database_url"])
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


asyncio.run(_main())
