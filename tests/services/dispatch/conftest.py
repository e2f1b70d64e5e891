from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from deploy.demo_department import DepartmentReceiver
from libs.common.kafka import Publisher, TopicNames
from libs.common.refdata import WebhookReceiver, load_reference_data
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


def webhook_environ(config: Path) -> dict[str, str]:
    """Every variable the receivers name, each with its test secret (`…_NEXT` variables get the
    department's next secret)."""
    environ = {}
    for code, department in load_reference_data(config).departments.items():
        receiver = department.receiver
        if isinstance(receiver, WebhookReceiver):
            environ[receiver.secret_env] = department_secret(code)
            if receiver.secret_env_next:
                environ[receiver.secret_env_next] = department_secret(code + "-next")
    return environ


@asynccontextmanager
async def dispatch_stack_with(
    isolation: Isolation,
    tmp_path: Path,
    *,
    departments: Callable[[str], str] | None = None,
    **settings: Any,
) -> AsyncIterator[DispatchStack]:
    """dispatch and a department receiver; `departments` edits departments.yaml's text,
    `settings` override dispatch's settings."""
    receiver = DepartmentReceiver(secrets={})
    async with http_server(receiver.app()) as base_url:
        config = make_config_dir(tmp_path, receiver_base=base_url)
        if departments is not None:
            path = config / "departments.yaml"
            path.write_text(departments(path.read_text()))
        receiver.secrets = {
            code: [department_secret(code)] for code in load_reference_data(config).departments
        }
        settings_ = make_dispatch_settings(isolation, config_dir=config, **settings)
        app = create_app(settings_, environ=webhook_environ(config))
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


@pytest.fixture
async def dispatch_stack(
    isolation: Isolation, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[DispatchStack]:
    """dispatch with a department receiver; settings overrides by indirect parametrization."""
    async with dispatch_stack_with(isolation, tmp_path, **getattr(request, "param", {})) as stack:
        yield stack
