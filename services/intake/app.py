"""intake's HTTP app: the front door for grid workers (and, with Open311, civic clients).

Anything is answered 202 only once it is committed to intake's own database (the outbox, with its
idempotency key); the relay publishes it to `cases.submitted` / `visits.recorded`. intake keeps
accepting while the broker is away: readiness depends on the database only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from libs.common.clock import Clock, SystemClock
from libs.common.runtime import Runtime
from libs.common.web import install_error_handlers, install_platform_routes
from services.intake import api
from services.intake.deps import IntakeState
from services.intake.settings import IntakeSettings

VERSIONS = Path(__file__).parent / "migrations"


def create_app(settings: IntakeSettings, *, clock: Clock | None = None) -> FastAPI:
    runtime = Runtime(settings=settings, clock=clock or SystemClock(), versions_dir=VERSIONS)
    state = IntakeState(settings, runtime.clock, runtime)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        settings.attachments_dir.mkdir(parents=True, exist_ok=True)
        runtime.spawn(state.acceptor.run(), stop=state.acceptor.stop, name="acceptor")
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title="gridflow intake",
        version="0.1.0",
        lifespan=lifespan,
        description="Front door for grid workers' reports. Every endpoint needs a bearer token.",
    )
    app.state.intake = state
    install_error_handlers(app)
    install_platform_routes(
        app,
        registry=runtime.registry,
        metrics_token=settings.metrics_token,
        readiness=runtime.ready,
        optional=frozenset({"broker"}),
    )
    app.include_router(api.router)
    return app
