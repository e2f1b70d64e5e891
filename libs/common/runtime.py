"""The resources every service holds, born in the app's lifespan and torn down in reverse order.

Start-up order does not matter: the runtime waits for the database and the broker with a clear log
line, and a bad configuration stops the service with the `check` command's message.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from libs.common.clock import Clock
from libs.common.db import create_engine, migrate, ping, session_factory
from libs.common.kafka import (
    ConsumerLoop,
    ConsumerMetrics,
    Handler,
    Publisher,
    TopicNames,
    ensure_topics,
)
from libs.common.outbox import OutboxMetrics, OutboxRelay
from libs.common.refdata import ConfigError, ReferenceData, load_reference_data
from libs.common.settings import ServiceSettings
from libs.common.topics import CATALOGUE, Topic

log = logging.getLogger(__name__)
T = TypeVar("T")


async def wait_for(what: str, attempt: Callable[[], Awaitable[T]], *, within: float) -> T:
    """Retry `attempt` with backoff until it succeeds or `within` seconds have passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    delay = 0.2
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if loop.time() + delay > deadline:
                raise
            log.warning("waiting for %s (%s: %s)", what, type(exc).__name__, str(exc)[:200])
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


class Runtime:
    def __init__(self, *, settings: ServiceSettings, clock: Clock, versions_dir: Path) -> None:
        self.settings = settings
        self.clock = clock
        self.versions_dir = versions_dir
        self.registry = CollectorRegistry()
        self.names = TopicNames(settings.topic_prefix)
        self.source = f"gridflow/{settings.service_name}"
        self.consumer_metrics = ConsumerMetrics(self.registry)
        self.outbox_metrics = OutboxMetrics(self.registry)
        self._tasks: list[asyncio.Task[None]] = []
        self._stoppers: list[Callable[[], None]] = []
        self._checks: dict[str, Callable[[], bool]] = {}
        self.refdata: ReferenceData
        self.engine: AsyncEngine
        self.sessions: async_sessionmaker[AsyncSession]
        self.publisher: Publisher
        self.relay: OutboxRelay

    async def start(self, *, startup_timeout: float = 120.0) -> None:
        try:
            self.refdata = load_reference_data(self.settings.config_dir)
        except ConfigError as exc:
            for issue in exc.issues:
                log.error("configuration: %s", issue)
            raise
        schema = self.settings.schema_name
        await wait_for(
            "the database",
            lambda: migrate(
                database_url=self.settings.database_url,
                schema=schema,
                versions_dir=self.versions_dir,
            ),
            within=startup_timeout,
        )
        self.engine = create_engine(self.settings.database_url, schema=schema)
        self.sessions = session_factory(self.engine)
        await wait_for(
            "the Kafka broker",
            lambda: ensure_topics(
                bootstrap_servers=self.settings.kafka_bootstrap_servers,
                names=[self.names(topic) for topic in CATALOGUE],
                partitions=self.settings.kafka_partitions,
                replication_factor=self.settings.kafka_replication_factor,
            ),
            within=startup_timeout,
        )
        self.publisher = Publisher(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            names=self.names,
            source=self.source,
            request_timeout_ms=self.settings.kafka_request_timeout_ms,
        )
        await self.publisher.start()
        self.relay = OutboxRelay(
            engine=self.engine,
            publisher=self.publisher,
            clock=self.clock,
            metrics=self.outbox_metrics,
            linger=self.settings.outbox_linger_ms / 1000,
        )
        self.spawn(self.relay.run(), stop=self.relay.stop, name="outbox-relay")
        # what start-up loaded (reference data, polygons) lives as long as the process: keep
        # it out of the collector's way, and collect young objects less often (requests make
        # many short-lived ones), so collections stay short and rare under load
        gc.freeze()
        gc.set_threshold(100_000, 50, 20)

    def spawn(
        self, coro: Coroutine[Any, Any, None], *, stop: Callable[[], None], name: str
    ) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(_report_crash)
        self._tasks.append(task)
        self._stoppers.append(stop)
        return task

    def consume(
        self,
        topic: Topic,
        *,
        group_id: str,
        handler: Handler,
        check: str,
        background: bool = False,
    ) -> ConsumerLoop:
        """Consume `topic` in `group_id` with `handler`, as a task of this runtime; readiness
        waits (check `check`) until the loop has joined its group. A consumer `background`, off
        a case's way from report to department, fetches with the longer wait of
        `kafka_background_fetch_max_wait_ms`."""
        loop = ConsumerLoop(
            settings=self.settings,
            topic=topic,
            group_id=group_id,
            handler=handler,
            publisher=self.publisher,
            clock=self.clock,
            metrics=self.consumer_metrics,
            names=self.names,
            background=background,
        )
        self.spawn(loop.run(), stop=loop.stop, name=topic.name)
        self.add_check(check, loop.joined.is_set)
        return loop

    def add_check(self, name: str, check: Callable[[], bool]) -> None:
        """A readiness condition of the service's own (e.g. a consumer has joined its group)."""
        self._checks[name] = check

    async def ready(self) -> dict[str, bool]:
        return {
            "database": await ping(self.engine),
            "broker": await self.publisher.ping(),
            "workers": all(not task.done() for task in self._tasks),
            **{name: check() for name, check in self._checks.items()},
        }

    async def stop(self, *, grace: float = 10.0) -> None:
        """Stop fetching, let in-flight work finish and commit, then close connections."""
        for stopper in reversed(self._stoppers):
            stopper()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.publisher.stop()
        await self.engine.dispose()


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s crashed", task.get_name(), exc_info=task.exception())


__all__ = ["ConsumerMetrics", "Runtime", "wait_for"]
