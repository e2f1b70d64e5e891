"""intake's HTTP app: the front door for grid workers (and, with Open311, civic clients).

Anything is answered 202 only once it is committed to intake's own database (the outbox, with its
idempotency key); the relay publishes it to `cases.submitted` / `visits.recorded`. intake keeps
accepting while the broker is away: readiness depends on the database only. It also follows
`cases.lifecycle` for the status of the requests Open311 clients submitted (consumer.py).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from libs.common.clock import Clock, SystemClock
from libs.common.runtime import Runtime
from libs.common.topics import CASES_LIFECYCLE
from libs.common.web import add_routes, install_openapi, service_app
from services.intake import api, open311
from services.intake.consumer import RequestStatuses
from services.intake.deps import IntakeState
from services.intake.settings import IntakeSettings

VERSIONS = Path(__file__).parent / "migrations"


def create_app(settings: IntakeSettings, *, clock: Clock | None = None) -> FastAPI:
    runtime = Runtime(settings=settings, clock=clock or SystemClock(), versions_dir=VERSIONS)
    state = IntakeState(settings, runtime.clock, runtime)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            # a client whose key variable is missing stops intake, naming the variable
            app.state.open311_keys = open311.client_keys(runtime.refdata, os.environ)
            settings.attachments_dir.mkdir(parents=True, exist_ok=True)
            runtime.spawn(state.acceptor.run(), stop=state.acceptor.stop, name="acceptor")
            runtime.consume(
                CASES_LIFECYCLE,
                group_id=settings.status_consumer_group,
                handler=RequestStatuses(runtime=runtime),
                check="status_consumer",
                background=True,  # a read model: Open311 statuses may lag a fetch
            )
            yield
        finally:
            await runtime.stop()

    app = service_app(
        title="gridflow intake",
        description="Front door for grid workers' reports. Every endpoint needs a bearer token.",
        runtime=runtime,
        lifespan=lifespan,
        # Open311 statuses lag while the broker is away; accepting must not stop for that
        optional=frozenset({"broker", "status_consumer"}),
    )
    app.state.intake = state
    open311.install_error_format(app)
    add_routes(app, api.router, open311.router)
    install_openapi(app, api.BODY_MODELS, own_format=[open311.PREFIX])
    return app
