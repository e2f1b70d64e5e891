"""dispatch's app: consumes `cases.submitted`, routes, delivers to departments, publishes
`cases.lifecycle`; the department, operator and delivery-admin APIs."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import aiohttp
from fastapi import FastAPI

from libs.common.auth import TokenVerifier
from libs.common.clock import Clock, SystemClock
from libs.common.runtime import Runtime
from libs.common.topics import CASES_SUBMITTED, SLA_SIGNALS
from libs.common.web import add_routes, install_openapi, service_app
from services.dispatch import delivery_api, departments, operators, partners
from services.dispatch.consumer import SubmittedCases
from services.dispatch.duplicates import DuplicatePolicy
from services.dispatch.gauges import CaseGauges
from services.dispatch.reload import RoutingReloader
from services.dispatch.settings import DispatchSettings
from services.dispatch.signals import SlaSignals
from services.dispatch.webhooks import Deliverer, webhook_secrets

VERSIONS = Path(__file__).parent / "migrations"


def create_app(
    settings: DispatchSettings,
    *,
    clock: Clock | None = None,
    environ: Mapping[str, str] | None = None,
) -> FastAPI:
    runtime = Runtime(settings=settings, clock=clock or SystemClock(), versions_dir=VERSIONS)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        # one pool for every department's endpoint: kept-alive connections, at most as many as
        # attempts may run at once
        client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=settings.delivery_concurrency, ttl_dns_cache=300),
            auto_decompress=False,
            raise_for_status=False,
        )
        try:
            secrets = webhook_secrets(runtime.refdata, os.environ if environ is None else environ)
            deliverer = Deliverer(
                runtime=runtime, settings=settings, secrets=secrets, client=client
            )
            app.state.deliverer = deliverer
            runtime.spawn(deliverer.run(), stop=deliverer.stop, name="deliverer")

            def after_commit() -> None:
                runtime.relay.wake()
                deliverer.wake()

            submitted = SubmittedCases(
                runtime=runtime,
                consumer="dispatch.submitted",
                on_commit=after_commit,
                duplicates=DuplicatePolicy(
                    distance_meters=settings.duplicate_distance_meters,
                    window=timedelta(hours=settings.duplicate_window_hours),
                ),
            )
            app.state.submitted = submitted
            app.state.consumer = runtime.consume(
                CASES_SUBMITTED,
                group_id=settings.consumer_group,
                handler=submitted,  # a batch handler: a fetch is one transaction
                check="consumer",
            )
            app.state.signals = runtime.consume(
                SLA_SIGNALS,
                group_id=f"{settings.consumer_group}-sla",
                handler=SlaSignals(
                    runtime=runtime, consumer="dispatch.sla", on_commit=after_commit
                ),
                check="sla_consumer",
                background=True,  # signals are already about deadlines: they may wait a fetch
            )
            reloader = RoutingReloader(
                runtime=runtime,
                path=settings.config_dir / "routing.yaml",
                interval=settings.routing_reload_seconds,
            )
            app.state.reloader = reloader
            runtime.spawn(reloader.run(), stop=reloader.stop, name="routing-reload")
            gauges = CaseGauges(runtime=runtime, interval=settings.gauges_seconds)
            app.state.gauges = gauges
            runtime.spawn(gauges.run(), stop=gauges.stop, name="case-gauges")
            yield
        finally:
            await runtime.stop()
            await client.close()

    app = service_app(
        title="gridflow dispatch",
        description="Routes every case to its department and follows it to closure.",
        runtime=runtime,
        lifespan=lifespan,
    )
    app.state.verifier = TokenVerifier(secret=settings.api_jwt_secret.get_secret_value())
    add_routes(app, departments.router, operators.router, delivery_api.router, partners.router)
    commands = departments.COMMAND_MODELS + operators.COMMAND_MODELS + partners.COMMAND_MODELS
    install_openapi(app, (), departments.command_schemas(commands))
    return app
