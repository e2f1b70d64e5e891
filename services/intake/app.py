"""intake's HTTP app: the grid-worker API. A report is answered 202 only once it is committed to
intake's own database (the outbox); the relay publishes it to `cases.submitted`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from prometheus_client import Counter

from libs.common.auth import Principal, TokenVerifier
from libs.common.clock import Clock, SystemClock
from libs.common.ids import new_case_id
from libs.common.outbox import stage
from libs.common.runtime import Runtime
from libs.common.topics import CASES_SUBMITTED
from libs.common.web import ApiError, bearer_token, install_error_handlers, install_platform_routes
from services.intake.reports import Accepted, WorkerReport, accept_report
from services.intake.settings import IntakeSettings

VERSIONS = Path(__file__).parent / "migrations"


class IntakeState:
    def __init__(self, settings: IntakeSettings, clock: Clock) -> None:
        self.settings = settings
        self.runtime = Runtime(settings=settings, clock=clock, versions_dir=VERSIONS)
        self.verifier = TokenVerifier(secret=settings.worker_jwt_secret.get_secret_value())
        self.outcomes = Counter(
            "gridflow_intake_submissions_total",
            "Submissions by source and outcome (accepted, or the refusal reason)",
            ["source", "outcome"],
            registry=self.runtime.registry,
        )


def _state(request: Request) -> IntakeState:
    state: IntakeState = request.app.state.intake
    return state


StateDep = Annotated[IntakeState, Depends(_state)]


def _worker(request: Request, state: StateDep) -> Principal:
    principal = state.verifier.verify(bearer_token(request), now=state.runtime.clock.now())
    principal.require("reports:write")
    return principal


WorkerDep = Annotated[Principal, Depends(_worker)]


def create_app(settings: IntakeSettings, *, clock: Clock | None = None) -> FastAPI:
    state = IntakeState(settings, clock or SystemClock())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await state.runtime.start()
        try:
            yield
        finally:
            await state.runtime.stop()

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
        registry=state.runtime.registry,
        metrics_token=settings.metrics_token,
        readiness=state.runtime.ready,
    )

    @app.post(
        "/v1/reports",
        status_code=202,
        tags=["grid workers"],
        summary="report an incident found on patrol",
        responses={401: {}, 403: {}, 422: {}},
    )
    async def submit_report(report: WorkerReport, worker: WorkerDep, st: StateDep) -> Accepted:
        runtime = st.runtime
        now = runtime.clock.now()
        try:
            case = accept_report(
                report,
                principal=worker,
                refdata=runtime.refdata,
                now=now,
                case_id=new_case_id(now),
                clock_skew=timedelta(seconds=st.settings.clock_skew_seconds),
            )
        except ApiError as exc:
            st.outcomes.labels("grid_worker", exc.code).inc()
            raise
        async with runtime.sessions() as session, session.begin():
            await stage(
                session,
                topic=CASES_SUBMITTED,
                payload=case,
                key=case.case_id,
                source=runtime.source,
                now=now,
            )
        runtime.relay.wake()
        st.outcomes.labels("grid_worker", "accepted").inc()
        return Accepted(case_id=case.case_id)

    return app
