from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from deploy.demo_department import DepartmentReceiver
from libs.common.kafka import Publisher, TopicNames
from libs.common.refdata import load_reference_data
from libs.common.topics import CASES_LIFECYCLE, DEADLETTER
from services.dispatch.app import create_app
from tests.factories import Isolation, department_secret, make_config_dir, make_dispatch_settings
from tests.harness import TopicWatcher, http_server, running


@dataclass
class DispatchStack:
    app: FastAPI
    client: httpx.AsyncClient
    receiver: DepartmentReceiver
    publisher: Publisher
    lifecycle: TopicWatcher
    deadletters: TopicWatcher


@pytest.fixture
async def dispatch_stack(
    isolation: Isolation, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[DispatchStack]:
    """dispatch with a department receiver; settings overrides by indirect parametrization."""
    overrides = getattr(request, "param", {})
    receiver = DepartmentReceiver(secrets={})
    async with http_server(receiver.app()) as base_url:
        config = make_config_dir(tmp_path, receiver_base=base_url)
        departments = load_reference_data(config).departments
        receiver.secrets = {code: [department_secret(code)] for code in departments}
        environ = {d.receiver.secret_env: department_secret(c) for c, d in departments.items()}
        settings = make_dispatch_settings(isolation, config_dir=config, **overrides)
        app = create_app(settings, environ=environ)
        names = TopicNames(isolation.topic_prefix)
        publisher = Publisher(
            bootstrap_servers=isolation.kafka_bootstrap, names=names, source="tests"
        )
        async with running(app) as client:
            await publisher.start()
            lifecycle = TopicWatcher(
                bootstrap=isolation.kafka_bootstrap,
                topic=CASES_LIFECYCLE,
                name=names(CASES_LIFECYCLE),
                group=f"{isolation.token}-lifecycle",
            )
            deadletters = TopicWatcher(
                bootstrap=isolation.kafka_bootstrap,
                topic=DEADLETTER,
                name=names(DEADLETTER),
                group=f"{isolation.token}-deadletter",
            )
            try:
                async with lifecycle, deadletters:
                    yield DispatchStack(app, client, receiver, publisher, lifecycle, deadletters)
            finally:
                await publisher.stop()
