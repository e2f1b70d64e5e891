from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from libs.common.db import outbox
from services.intake.app import create_app
from tests.factories import Isolation, make_intake_settings, make_worker_token
from tests.harness import running

Intake = tuple[FastAPI, httpx.AsyncClient]


@pytest.fixture
async def intake(isolation: Isolation, tmp_path: Path) -> AsyncIterator[Intake]:
    app = create_app(make_intake_settings(isolation, attachments_dir=tmp_path / "attachments"))
    async with running(app) as client:
        yield app, client


async def outbox_rows(app: FastAPI) -> list[Any]:
    async with app.state.intake.runtime.sessions() as session:
        return list((await session.execute(sa.select(outbox).order_by(outbox.c.id))).all())


def auth(token: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token or make_worker_token()}"}
