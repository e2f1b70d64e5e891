"""The 12345 hotline bridge: the platform's work orders become cases (`cases.submitted`, through
the bridge's outbox), gridflow's moves go back to the platform as status updates, and the
platform's decisions (review, return visit, supervision, extension, cancellation) reach the case
through dispatch's partner API. docs/bridges.md."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI

from libs.common.bridge.metrics import BridgeMetrics
from libs.common.bridge.poll import PollLoop
from libs.common.bridge.queue import QueueWorker, Send
from libs.common.clock import Clock, SystemClock
from libs.common.refdata import ConfigError
from libs.common.runtime import Runtime
from libs.common.topics import CASES_LIFECYCLE
from libs.common.web import service_app
from libs.common.worktime import CalendarConfigError, load_calendar
from services.hotline_bridge import inbound
from services.hotline_bridge.consumer import LifecycleUpdates
from services.hotline_bridge.inbound import DISPATCH_CHANNEL, PARTNER_CHANNEL, HotlineContext
from services.hotline_bridge.mapping import load_mapping
from services.hotline_bridge.outbound import Outbound
from services.hotline_bridge.partner import HotlineEvent
from services.hotline_bridge.settings import HotlineSettings

VERSIONS = Path(__file__).parent / "migrations"


def create_app(settings: HotlineSettings, *, clock: Clock | None = None) -> FastAPI:
    runtime = Runtime(settings=settings, clock=clock or SystemClock(), versions_dir=VERSIONS)
    metrics = BridgeMetrics(runtime.registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        client = httpx.AsyncClient(follow_redirects=False)
        try:
            try:
                mapping = load_mapping(settings.config_dir, refdata=runtime.refdata)
                calendar = load_calendar(settings.config_dir / "calendar.yaml")
            except (ConfigError, CalendarConfigError) as exc:
                for issue in exc.issues:
                    runtime_log(f"configuration: {issue}")
                raise
            context = HotlineContext(runtime, settings, mapping, calendar, metrics)
            app.state.hotline = context
            outbound = Outbound(context=context, client=client)

            def worker(channel: str, send: Send) -> QueueWorker:
                queue = QueueWorker(
                    sessions=runtime.sessions,
                    clock=runtime.clock,
                    partner=context.system,
                    channel=channel,
                    send=send,
                    metrics=metrics,
                    base_delay=settings.outbound_base_delay_seconds,
                    max_delay=settings.outbound_max_delay_seconds,
                    lease_seconds=settings.outbound_lease_seconds,
                    poll_interval=settings.outbound_poll_seconds,
                )
                runtime.spawn(queue.run(), stop=queue.stop, name=f"queue-{channel}")
                return queue

            to_partner = worker(PARTNER_CHANNEL, outbound.to_partner)
            to_dispatch = worker(DISPATCH_CHANNEL, outbound.to_dispatch)
            app.state.wake_dispatch = to_dispatch.wake
            app.state.queues = {PARTNER_CHANNEL: to_partner, DISPATCH_CHANNEL: to_dispatch}
            runtime.consume(
                CASES_LIFECYCLE,
                group_id=settings.consumer_group,
                handler=LifecycleUpdates(context=context, on_commit=to_partner.wake),
                check="lifecycle_consumer",
            )
            if settings.partner_mode == "poll":

                def after_page() -> None:
                    runtime.relay.wake()
                    to_dispatch.wake()

                async def handle(session: object, events: object, cursor: str) -> None:
                    await inbound.take_page(session, events, cursor, context=context)  # type: ignore[arg-type]

                poller: PollLoop[HotlineEvent] = PollLoop(
                    sessions=runtime.sessions,
                    partner=context.system,
                    fetch=outbound.feed,
                    handle=handle,
                    metrics=metrics,
                    interval=settings.partner_poll_seconds,
                    after_commit=after_page,
                )
                app.state.poller = poller
                runtime.spawn(poller.run(), stop=poller.stop, name="poll")
            yield
        finally:
            await runtime.stop()
            await client.aclose()

    app = service_app(
        title="gridflow hotline_bridge",
        description="The 12345 hotline platform's bridge. Pushes are signed (Standard Webhooks).",
        runtime=runtime,
        lifespan=lifespan,
    )
    app.include_router(inbound.router)
    return app


def runtime_log(line: str) -> None:
    import logging  # noqa: PLC0415

    logging.getLogger(__name__).error(line)
