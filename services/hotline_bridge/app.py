"""The 12345 hotline bridge: the platform's work orders become cases (`cases.submitted`, through
the bridge's outbox), gridflow's moves go back to the platform as status updates, and the
platform's decisions (review, return visit, supervision, extension, cancellation) reach the case
through dispatch's partner API. docs/bridges.md."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import httpx
from fastapi import FastAPI

from libs.common.bridge.metrics import BridgeMetrics
from libs.common.bridge.service import follow_lifecycle, start_poller, start_queues
from libs.common.clock import Clock, SystemClock
from libs.common.refdata import ConfigError
from libs.common.runtime import Runtime
from libs.common.web import add_routes, install_openapi, service_app
from libs.common.worktime import CalendarConfigError, load_calendar
from services.hotline_bridge import inbound, partner
from services.hotline_bridge.inbound import DISPATCH_CHANNEL, PARTNER_CHANNEL, HotlineContext
from services.hotline_bridge.mapping import load_mapping, status_update
from services.hotline_bridge.outbound import Outbound
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
            queues = start_queues(
                runtime,
                settings=settings,
                metrics=metrics,
                partner=context.system,
                senders={
                    PARTNER_CHANNEL: outbound.to_partner,
                    DISPATCH_CHANNEL: outbound.to_dispatch,
                },
            )
            app.state.wake_dispatch = queues[DISPATCH_CHANNEL].wake
            app.state.queues = queues

            follow_lifecycle(
                runtime,
                settings=settings,
                channel=PARTNER_CHANNEL,
                updates={
                    context.system: lambda event, order_id, names: status_update(
                        event, mapping=mapping, order_id=order_id, department_names=names
                    )
                },
                on_commit=queues[PARTNER_CHANNEL].wake,
            )
            if settings.partner_mode == "poll":
                app.state.poller = start_poller(
                    runtime,
                    settings=settings,
                    metrics=metrics,
                    partner=context.system,
                    fetch=outbound.feed,
                    take=partial(inbound.take, context=context),
                    unknown=inbound.UnknownOrderError,
                    wake=[queues[DISPATCH_CHANNEL]],
                )
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
    add_routes(app, inbound.router)
    install_openapi(app, (partner.PushedEvent,))
    return app


def runtime_log(line: str) -> None:
    import logging  # noqa: PLC0415

    logging.getLogger(__name__).error(line)
