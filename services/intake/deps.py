"""intake's resources as FastAPI dependencies; born in the app's lifespan (see app.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Depends, Request
from prometheus_client import Counter
from pydantic import SecretStr

from libs.common.auth import Principal, TokenVerifier
from libs.common.clock import Clock
from libs.common.runtime import Runtime
from libs.common.web import bearer_token
from services.intake.acceptance import Acceptor
from services.intake.attachments import AttachmentStore
from services.intake.settings import IntakeSettings


class IntakeState:
    def __init__(self, settings: IntakeSettings, clock: Clock, runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime
        self.verifier = TokenVerifier(secret=settings.worker_jwt_secret.get_secret_value())
        self.store = AttachmentStore(
            settings.attachments_dir,
            max_bytes=settings.attachment_max_bytes,
            allowed=settings.attachment_types,
        )
        self.acceptor = Acceptor(
            runtime=runtime, max_batch=settings.commit_batch_max, committers=settings.committers
        )
        self.outcomes = Counter(
            "gridflow_intake_submissions_total",
            "Submissions by source and outcome: accepted, replayed, or the refusal as "
            "<code>:<field> (e.g. invalid_request:location.unit_grid, forbidden:location.unit_grid)",
            ["source", "outcome"],
            registry=runtime.registry,
        )
        self._counted: dict[tuple[str, str], Any] = {}

    def count(self, source: str, outcome: str, amount: int = 1) -> None:
        child = self._counted.get((source, outcome))
        if child is None:
            child = self._counted[(source, outcome)] = self.outcomes.labels(source, outcome)
        child.inc(amount)


def refusal(code: str, path: str | None) -> str:
    """A refusal's metric label: its code and the field, without list indexes (few values)."""
    fields = [part for part in (path or "").split(".")[1:] if not part.isdigit()]
    return f"{code}:{'.'.join(fields)}" if fields else code


async def _state(request: Request) -> IntakeState:
    state: IntakeState = request.app.state.intake
    return state


StateDep = Annotated[IntakeState, Depends(_state)]


async def _worker(request: Request, state: StateDep) -> Principal:
    principal = state.verifier.verify(bearer_token(request), now=state.runtime.clock.now())
    principal.require("reports:write")
    return principal


WorkerDep = Annotated[Principal, Depends(_worker)]


async def _open311_keys(request: Request) -> Mapping[str, SecretStr]:
    """Each Open311 client's API key by client id, read from the environment at start (app.py)."""
    keys: Mapping[str, SecretStr] = request.app.state.open311_keys
    return keys


Open311KeysDep = Annotated[Mapping[str, SecretStr], Depends(_open311_keys)]
