"""dispatch's app: consumes `cases.submitted`, routes, delivers to departments, publishes
`cases.lifecycle`; the department, operator and delivery-admin APIs."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import httpx
from fastapi import FastAPI

from libs.common.auth import TokenVerifier
from libs.common.clock import Clock, SystemClock
from libs.common.kafka import ConsumerLoop
from libs.common.runtime import Runtime
from libs.common.topics import CASES_SUBMITTED, SLA_SIGNALS
from libs.common.web import install_error_handlers, install_openapi, install_platform_routes
from services.dispatch import delivery_api, departments, operators
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
        client = httpx.AsyncClient(follow_redirects=False)
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
            consumer = ConsumerLoop(
                settings=settings,
                topic=CASES_SUBMITTED,
                group_id=settings.consumer_group,
                handler=submitted,  # a batch handler: a fetch is one transaction
                publisher=runtime.publisher,
                clock=runtime.clock,
                metrics=runtime.consumer_metrics,
                names=runtime.names,
            )
            app.state.consumer = consumer
            runtime.spawn(consumer.run(), stop=consumer.stop, name="cases-submitted")
            signals = ConsumerLoop(
                settings=settings,
                topic=SLA_SIGNALS,
                group_id=f"{settings.consumer_group}-sla",
                handler=SlaSignals(
                    runtime=runtime, consumer="dispatch.sla", on_commit=after_commit
                ),
                publisher=runtime.publisher,
                clock=runtime.clock,
                metrics=runtime.consumer_metrics,
                names=runtime.names,
            )
            app.state.signals = signals
            runtime.spawn(signals.run(), stop=signals.stop, name="sla-signals")
            runtime.add_check("sla_consumer", signals.joined.is_set)
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
            runtime.add_check("consumer", consumer.joined.is_set)
            yield
        finally:
            await runtime.stop()
            await client.aclose()

    app = FastAPI(
        title="gridflow dispatch",
        version="0.1.0",
        lifespan=lifespan,
        description="Routes every case to its department and follows it to closure.",
    )
    app.state.runtime = runtime
    app.state.verifier = TokenVerifier(secret=settings.api_jwt_secret.get_secret_value())
    install_error_handlers(app)
    install_platform_routes(
        app,
        registry=runtime.registry,
        metrics_token=settings.metrics_token,
        readiness=runtime.ready,
    )
    app.include_router(departments.router)
    app.include_router(operators.router)
    app.include_router(delivery_api.router)
    commands = departments.COMMAND_MODELS + operators.COMMAND_MODELS
    install_openapi(app, (), departments.command_schemas(commands))
    return app
