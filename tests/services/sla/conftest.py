from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from libs.common.clock import FrozenClock
from libs.common.kafka import Publisher, TopicNames
from libs.common.topics import SLA_SIGNALS
from services.sla.app import create_app
from tests.factories import REPO_CONFIG, Isolation, make_sla_settings
from tests.harness import TopicWatcher, running

START = datetime.fromisoformat("2026-11-23T09:00:00+08:00")  # a Monday morning


@dataclass
class SlaStack:
    app: FastAPI
    client: httpx.AsyncClient
    clock: FrozenClock
    publisher: Publisher
    signals: TopicWatcher
    config: Path


def sla_config(tmp_path: Path) -> Path:
    import shutil  # noqa: PLC0415

    target = tmp_path / "config"
    if not target.exists():
        shutil.copytree(REPO_CONFIG, target)
    return target


@pytest.fixture
async def sla_stack(isolation: Isolation, tmp_path: Path) -> AsyncIterator[SlaStack]:
    clock = FrozenClock(START)
    config = sla_config(tmp_path)
    app = create_app(make_sla_settings(isolation, config_dir=config), clock=clock)
    names = TopicNames(isolation.topic_prefix)
    publisher = Publisher(bootstrap_servers=isolation.kafka_bootstrap, names=names, source="tests")
    async with running(app) as client:
        await publisher.start()
        signals = TopicWatcher(
            bootstrap=isolation.kafka_bootstrap,
            topic=SLA_SIGNALS,
            name=names(SLA_SIGNALS),
            group=f"{isolation.token}-signals",
        )
        try:
            async with signals:
                yield SlaStack(app, client, clock, publisher, signals, config)
        finally:
            await publisher.stop()
