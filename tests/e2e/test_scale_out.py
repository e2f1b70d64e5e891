"""Operations, proven with real processes: two dispatch instances share the work and one of them
is killed (SIGKILL) mid-stream; one instance is stopped with SIGTERM mid-stream and started
again. Either way every case is stored once, gets one `received` event per version, and is
delivered to its department — nothing lost, nothing handled twice."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from deploy.demo_department import DepartmentReceiver
from deploy.embedded import free_port
from libs.common.events import CaseLifecycleEvent, Transition
from libs.common.kafka import Publisher, TopicNames
from libs.common.refdata import WebhookReceiver, load_reference_data
from libs.common.topics import CASES_LIFECYCLE, CASES_SUBMITTED
from tests.factories import DISPATCH_SECRET, Isolation, department_secret, make_config_dir
from tests.harness import WAIT_SECONDS, TopicWatcher, http_server
from tests.services.dispatch.test_flow import make_case

REPO = Path(__file__).resolve().parents[2]
CASES = 120


def dispatch_environ(isolation: Isolation, config: Path) -> dict[str, str]:
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GRIDFLOW_")},
        "DATABASE_URL": isolation.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": isolation.kafka_bootstrap,
        "GRIDFLOW_DB_SCHEMA": isolation.schema("dispatch"),
        "GRIDFLOW_TOPIC_PREFIX": isolation.topic_prefix,
        "GRIDFLOW_CONSUMER_GROUP": f"{isolation.token}-dispatch",
        "GRIDFLOW_API_JWT_SECRET": DISPATCH_SECRET,
        "GRIDFLOW_CONFIG_DIR": str(config),
        "GRIDFLOW_KAFKA_SESSION_TIMEOUT_MS": "2000",
        "GRIDFLOW_KAFKA_HEARTBEAT_INTERVAL_MS": "200",
        "GRIDFLOW_DELIVERY_BASE_DELAY_SECONDS": "0.05",
        "GRIDFLOW_DELIVERY_POLL_SECONDS": "0.05",
        "GRIDFLOW_DUPLICATE_DISTANCE_METERS": "0",  # the test's cases share one place
        "GRIDFLOW_LOG_LEVEL": "INFO",
    }
    for code, department in load_reference_data(config).departments.items():
        if isinstance(department.receiver, WebhookReceiver):
            environ[department.receiver.secret_env] = department_secret(code)
    return environ


class Instance:
    def __init__(self, process: asyncio.subprocess.Process, port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log

    async def ready(self) -> None:
        async with httpx.AsyncClient() as client, asyncio.timeout(WAIT_SECONDS * 2):
            while True:
                if self.process.returncode is not None:
                    raise RuntimeError(f"{self.log.name}: exited with {self.process.returncode}")
                try:
                    if (
                        await client.get(f"http://127.0.0.1:{self.port}/readyz")
                    ).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)

    async def stop(self, how: signal.Signals) -> int:
        if self.process.returncode is None:
            self.process.send_signal(how)
        async with asyncio.timeout(WAIT_SECONDS * 2):
            return await self.process.wait()


@asynccontextmanager
async def instances(
    environ: dict[str, str], count: int, logs: Path, *, service: str = "dispatch"
) -> AsyncIterator[list[Instance]]:
    started: list[Instance] = []
    try:
        for _ in range(count):
            port = free_port()
            log = logs / f"{service}-{port}.log"
            with log.open("wb") as sink:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    f"services.{service}",
                    cwd=REPO,
                    env={**environ, "GRIDFLOW_HTTP_PORT": str(port)},
                    stdout=sink,
                    stderr=sink,
                )
            started.append(Instance(process, port, log))
        await asyncio.gather(*(instance.ready() for instance in started))
        yield started
    finally:
        for instance in started:
            if instance.process.returncode is None:
                instance.process.kill()
                await instance.process.wait()


@asynccontextmanager
async def stack(
    isolation: Isolation, tmp_path: Path
) -> AsyncIterator[tuple[DepartmentReceiver, dict[str, str], Publisher, TopicWatcher]]:
    receiver = DepartmentReceiver(secrets={})
    async with http_server(receiver.app()) as base_url:
        config = make_config_dir(tmp_path, receiver_base=base_url)
        receiver.secrets = {
            code: [department_secret(code)] for code in load_reference_data(config).departments
        }
        names = TopicNames(isolation.topic_prefix)
        publisher = Publisher(
            bootstrap_servers=isolation.kafka_bootstrap, names=names, source="tests"
        )
        watcher = TopicWatcher(
            bootstrap=isolation.kafka_bootstrap,
            topic=CASES_LIFECYCLE,
            name=names(CASES_LIFECYCLE),
            group=f"{isolation.token}-lifecycle",
        )
        await publisher.start()
        try:
            async with watcher:
                yield receiver, dispatch_environ(isolation, config), publisher, watcher
        finally:
            await publisher.stop()


def received(watcher: TopicWatcher) -> set[str]:
    return {
        p.case_id
        for _, p in watcher.seen
        if isinstance(p, CaseLifecycleEvent) and p.transition is Transition.RECEIVED
    }


async def check_once(isolation: Isolation, watcher: TopicWatcher, case_ids: set[str]) -> None:
    """Every case stored once, assigned, and each (case, version) published as one event (a
    redelivered copy carries the same event id)."""
    await watcher.wait_for(
        lambda _, __: (
            {
                p.case_id
                for _, p in watcher.seen
                if isinstance(p, CaseLifecycleEvent) and p.transition is Transition.ASSIGNED
            }
            >= case_ids
        ),
        within=WAIT_SECONDS * 4,
    )
    ids: dict[tuple[str, int], set[str]] = defaultdict(set)
    for envelope, payload in watcher.seen:
        if isinstance(payload, CaseLifecycleEvent):
            ids[(payload.case_id, payload.version)].add(envelope.id)
    assert all(len(event_ids) == 1 for event_ids in ids.values())
    engine = create_async_engine(isolation.database_url)
    try:
        async with engine.connect() as conn:
            schema = isolation.schema("dispatch")
            await conn.execute(sa.text(f'SET search_path TO "{schema}"'))
            rows = (
                await conn.execute(sa.text("SELECT case_id, count(*) FROM cases GROUP BY case_id"))
            ).all()
            history = (
                await conn.execute(
                    sa.text("SELECT case_id, version, count(*) FROM case_history GROUP BY 1, 2")
                )
            ).all()
    finally:
        await engine.dispose()
    assert {case_id for case_id, _ in rows} == case_ids
    assert all(count == 1 for _, count in rows)
    assert all(count == 1 for _, _, count in history)


@pytest.mark.embedded
async def test_two_instances_share_the_work_and_one_is_killed_midstream(
    isolation: Isolation, tmp_path: Path
) -> None:
    async with (
        stack(isolation, tmp_path) as (_, environ, publisher, watcher),
        instances(environ, 2, tmp_path) as (first, second),
    ):
        cases = [make_case() for _ in range(CASES)]
        for case in cases[: CASES // 2]:
            await publisher.publish(CASES_SUBMITTED, case, key=case.case_id, now=datetime.now(UTC))
        await watcher.wait_for(lambda _, __: len(received(watcher)) >= CASES // 4)
        assert await second.stop(signal.SIGKILL) == -signal.SIGKILL
        for case in cases[CASES // 2 :]:
            await publisher.publish(CASES_SUBMITTED, case, key=case.case_id, now=datetime.now(UTC))
        await check_once(isolation, watcher, {case.case_id for case in cases})
        assert first.process.returncode is None


@pytest.mark.embedded
async def test_sigterm_midstream_then_restart_loses_and_doubles_nothing(
    isolation: Isolation, tmp_path: Path
) -> None:
    async with stack(isolation, tmp_path) as (_, environ, publisher, watcher):
        cases = [make_case() for _ in range(CASES)]
        async with instances(environ, 1, tmp_path) as [only]:
            for case in cases:
                await publisher.publish(
                    CASES_SUBMITTED, case, key=case.case_id, now=datetime.now(UTC)
                )
            await watcher.wait_for(lambda _, __: len(received(watcher)) >= CASES // 4)
            # uvicorn shuts down gracefully, then re-raises the signal: the exit says SIGTERM
            assert await only.stop(signal.SIGTERM) == -signal.SIGTERM
            assert "Application shutdown complete" in only.log.read_text(encoding="utf-8")
        async with instances(environ, 1, tmp_path):
            await check_once(isolation, watcher, {case.case_id for case in cases})
