"""sla's app: consumes `cases.lifecycle` into timers, fires due timers onto `sla.signals`, and
answers deadline and calendar questions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from libs.common.auth import TokenVerifier
from libs.common.clock import Clock, SystemClock
from libs.common.runtime import Runtime
from libs.common.topics import CASES_LIFECYCLE, VISITS_RECORDED
from libs.common.web import add_routes, install_openapi, service_app
from services.sla import api
from services.sla.assessing import Assessor
from services.sla.config import ConfigWatcher, SlaConfig, recompute_provisional
from services.sla.consumer import LifecycleClocks
from services.sla.firing import Firer
from services.sla.obligations import RecordedVisits, VisitWatch, sync_register
from services.sla.settings import SlaSettings
from services.sla.visits import VISITS_FILE, Register, load_register

VERSIONS = Path(__file__).parent / "migrations"


def create_app(settings: SlaSettings, *, clock: Clock | None = None) -> FastAPI:
    runtime = Runtime(settings=settings, clock=clock or SystemClock(), versions_dir=VERSIONS)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            config = SlaConfig.load(runtime)
            app.state.config = config
            # deadlines counted Monday to Friday while a year's dates were missing are
            # recounted on every start (the dates may have been added while sla was down)
            await recompute_provisional(runtime, config.clocks)
            watcher = ConfigWatcher(
                runtime=runtime, config=config, interval=settings.config_reload_seconds
            )
            app.state.watcher = watcher
            runtime.spawn(watcher.run(), stop=watcher.stop, name="sla-config")
            firer = Firer(
                runtime=runtime,
                clocks=lambda: config.clocks,
                batch=settings.fire_batch,
                poll_seconds=settings.fire_poll_seconds,
            )
            app.state.firer = firer
            runtime.spawn(firer.run(), stop=firer.stop, name="sla-firing")
            app.state.lifecycle = LifecycleClocks(
                runtime=runtime,
                consumer="sla.lifecycle",
                policies=lambda: config.policies,
                clocks=lambda: config.clocks,
                on_commit=firer.wake,
            )
            app.state.consumer = runtime.consume(
                CASES_LIFECYCLE,
                group_id=settings.consumer_group,
                handler=app.state.lifecycle,
                check="consumer",
            )
            visits_file = settings.config_dir / VISITS_FILE
            register = (
                load_register(visits_file, against=runtime.refdata)
                if visits_file.exists()
                else Register("Asia/Shanghai", {})
            )
            await sync_register(runtime, register)
            watch = VisitWatch(
                runtime=runtime,
                timezone=lambda: register.timezone,
                batch=settings.fire_batch,
                poll_seconds=settings.fire_poll_seconds,
            )
            app.state.visit_watch = watch
            runtime.spawn(watch.run(), stop=watch.stop, name="visit-watch")
            app.state.visits = runtime.consume(
                VISITS_RECORDED,
                group_id=f"{settings.consumer_group}-visits",
                handler=RecordedVisits(
                    runtime=runtime, consumer="sla.visits", on_commit=watch.wake
                ),
                check="visits_consumer",
                background=True,  # patrol visits are watched over days
            )
            assessor = Assessor(
                runtime=runtime, clocks=lambda: config.clocks, interval=settings.assessment_seconds
            )
            app.state.assessor = assessor
            runtime.spawn(assessor.run(), stop=assessor.stop, name="assessments")
            yield
        finally:
            await runtime.stop()

    app = service_app(
        title="gridflow sla",
        description="Deadlines in working time, warnings, escalation up the grid, assessments.",
        runtime=runtime,
        lifespan=lifespan,
    )
    app.state.verifier = TokenVerifier(secret=settings.api_jwt_secret.get_secret_value())
    add_routes(app, api.router)
    install_openapi(app, (), {})
    return app
