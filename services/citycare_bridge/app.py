"""The 数字城管 bridge: the platform's filed cases become gridflow cases (`cases.submitted`, through
the bridge's outbox), gridflow's moves go back to the platform as status updates (派遣, 处置, 反馈),
and the platform's verification (核查) reaches the case through dispatch's partner API. The other
way round, the bridge is the receiver of the platform's department entry: a gridflow case routed
there is filed on the platform as a task, and the platform's steps on it come back through
dispatch's department API. docs/bridges.md."""

from __future__ import annotations

import logging
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
from services.citycare_bridge import inbound, partner
from services.citycare_bridge.inbound import (
    DEPARTMENT_CHANNEL,
    DISPATCH_CHANNEL,
    PARTNER_CHANNEL,
    CitycareContext,
)
from services.citycare_bridge.mapping import load_mapping, status_update, task_return
from services.citycare_bridge.outbound import Outbound
from services.citycare_bridge.settings import CitycareSettings

VERSIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)


def create_app(settings: CitycareSettings, *, clock: Clock | None = None) -> FastAPI:
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
                    log.error("configuration: %s", issue)
                raise
            context = CitycareContext(runtime, settings, mapping, calendar, metrics)
            app.state.citycare = context
            outbound = Outbound(context=context, client=client)
            queues = start_queues(
                runtime,
                settings=settings,
                metrics=metrics,
                partner=context.system,
                senders={
                    PARTNER_CHANNEL: outbound.to_partner,
                    DISPATCH_CHANNEL: outbound.to_dispatch,
                    DEPARTMENT_CHANNEL: outbound.to_department,
                },
            )
            app.state.queues = queues
            outbound.on_task_filed = queues[DEPARTMENT_CHANNEL].wake

            follow_lifecycle(
                runtime,
                settings=settings,
                channel=PARTNER_CHANNEL,
                updates={
                    context.system: lambda event, case_number, names: status_update(
                        event, mapping=mapping, case_number=case_number, department_names=names
                    ),
                    context.task_partner: lambda event, case_id, _: task_return(event),
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
                    unknown=inbound.UnknownCaseError,
                    wake=[queues[DISPATCH_CHANNEL], queues[DEPARTMENT_CHANNEL]],
                )
            yield
        finally:
            await runtime.stop()
            await client.aclose()

    app = service_app(
        title="gridflow citycare_bridge",
        description="The 数字城管 platform's bridge. Pushes and deliveries are signed "
        "(Standard Webhooks).",
        runtime=runtime,
        lifespan=lifespan,
    )
    add_routes(app, inbound.router)
    install_openapi(app, (partner.PushedEvent, inbound.Delivery))
    return app
