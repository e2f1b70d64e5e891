"""Running pieces inside a test: an app with its lifespan, a real HTTP server on a free port,
and a watcher that waits for events on a topic (tests wait on events, never on sleeps)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

import httpx
import uvicorn
from aiokafka import AIOKafkaConsumer
from fastapi import FastAPI

from deploy.embedded import free_port
from libs.common.contract import Contract
from libs.common.envelope import Envelope, decode
from libs.common.topics import Topic, parse_payload

WAIT_SECONDS = 30.0


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan started, and a client that calls it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            yield client


@asynccontextmanager
async def http_server(
    app: Any, *, lifespan: Literal["auto", "on", "off"] = "auto", port: int | None = None
) -> AsyncIterator[str]:
    """Serve an ASGI app on 127.0.0.1 (a real socket) and yield its base URL; `lifespan="off"`
    serves an app whose lifespan already runs (`running`); `port`: one chosen before (another
    service's configuration names it), else a free one."""
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan=lifespan
        )
    )
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(WAIT_SECONDS):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def until(check: Callable[[], Awaitable[bool]], *, within: float = WAIT_SECONDS) -> None:
    """Poll a condition that has no event to wait on (a committed database row), within a bound."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110  # nothing signals a commit in another task
            await asyncio.sleep(0.02)


class TopicWatcher:
    """Reads a topic from the beginning in its own consumer group and keeps what it saw."""

    def __init__(self, *, bootstrap: str, topic: Topic, name: str, group: str) -> None:
        self.topic = topic
        self.seen: list[tuple[Envelope, Contract]] = []
        self._arrived = asyncio.Condition()
        self._consumer = AIOKafkaConsumer(
            name,
            bootstrap_servers=bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=2000,
            heartbeat_interval_ms=200,
        )
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> TopicWatcher:
        await self._consumer.start()
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    async def _read(self) -> None:
        try:
            async for record in self._consumer:
                envelope = decode(record.key, record.value, record.headers)
                payload = parse_payload(self.topic, envelope)
                async with self._arrived:
                    self.seen.append((envelope, payload))
                    self._arrived.notify_all()
        finally:  # wake waiters so a broken watcher fails the test instead of timing out
            async with self._arrived:
                self._arrived.notify_all()

    async def wait_for(
        self, predicate: Callable[[Envelope, Contract], bool], *, within: float = WAIT_SECONDS
    ) -> tuple[Envelope, Contract]:
        async with asyncio.timeout(within), self._arrived:
            while True:
                for envelope, payload in self.seen:
                    if predicate(envelope, payload):
                        return envelope, payload
                if self._task is not None and self._task.done():
                    self._task.result()  # re-raises what stopped the reader
                    raise RuntimeError("the watcher stopped reading")
                await self._arrived.wait()
