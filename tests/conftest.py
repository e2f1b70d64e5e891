"""Test servers: those named by DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS, else embedded ones started
once per session. Each test gets its own topic prefix and database schemas (see `isolation`)."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from deploy.embedded import start_broker, start_postgres
from tests.factories import OPEN311_KEYS, Isolation


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield configured
        return
    # outside pytest's private temp folders: the server runs as its own OS user when we are root
    server = start_postgres(Path(__file__).resolve().parents[1] / ".run" / "test-postgres" / "data")
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    broker = start_broker(log_path=tmp_path_factory.mktemp("broker") / "tansu.log")
    yield broker.bootstrap_servers
    broker.stop()


@pytest.fixture
async def isolation(database_url: str, kafka_bootstrap: str) -> AsyncIterator[Isolation]:
    token = "t" + secrets.token_hex(4)
    iso = Isolation(token=token, database_url=database_url, kafka_bootstrap=kafka_bootstrap)
    yield iso
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        for schema in iso.schemas:
            await conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    await engine.dispose()


@pytest.fixture(autouse=True)
def open311_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """intake reads each Open311 client's key from the variable config/open311.yaml names."""
    for name, key in OPEN311_KEYS.items():
        monkeypatch.setenv(name, key)


@pytest.fixture
def config_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "config"
