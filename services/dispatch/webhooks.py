"""dispatch's HTTP-out shell: signed webhook deliveries with retries, and the assignment they cause."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass

import httpx
import sqlalchemy as sa
from prometheus_client import Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.events import CaseState, RoutingSnapshot, Urgency
from libs.common.logs import log_context
from libs.common.runtime import Runtime
from libs.common.signing import signed_headers
from services.dispatch.consumer import record_transition
from services.dispatch.delivery import DeliveryStatus, Outcome, classify, next_attempt_at
from services.dispatch.lifecycle import TransitionRefusedError, assign
from services.dispatch.models import CaseRow, DeliveryRow
from services.dispatch.settings import DispatchSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attempt:
    status_code: int | None
    error: str | None
    seconds: float


class DeliveryMetrics:
    def __init__(self, runtime: Runtime) -> None:
        self.attempts = Counter(
            "gridflow_delivery_attempts_total",
            "Webhook delivery attempts by department and outcome",
            ["department", "outcome"],
            registry=runtime.registry,
        )
        self.seconds = Histogram(
            "gridflow_delivery_seconds",
            "Time a department's receiver took to answer",
            ["department"],
            registry=runtime.registry,
        )


class Deliverer:
    def __init__(
        self,
        *,
        runtime: Runtime,
        settings: DispatchSettings,
        secrets: Mapping[str, str],
        client: httpx.AsyncClient,
    ) -> None:
        self._runtime = runtime
        self._settings = settings
        self._secrets = secrets
        self._client = client
        self._metrics = DeliveryMetrics(runtime)
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._random = random.Random()  # noqa: S311  # jitter, not security

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                handled = await self.deliver_due()
            except Exception as exc:  # database away: keep going, the rows are still there
                log.warning("delivery round failed: %s", type(exc).__name__)
                handled = 0
                await asyncio.sleep(1)
            if handled == 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._wake.wait(), timeout=self._settings.delivery_poll_seconds
                    )

    async def deliver_due(self) -> int:
        runtime = self._runtime
        now = runtime.clock.now()
        async with runtime.sessions() as session, session.begin():
            rows = (
                await session.scalars(
                    sa.select(DeliveryRow)
                    .where(
                        DeliveryRow.status == DeliveryStatus.PENDING.value,  # type: ignore[arg-type]
                        DeliveryRow.next_attempt_at <= now,  # type: ignore[arg-type,operator]
                    )
                    .order_by(DeliveryRow.next_attempt_at)  # type: ignore[arg-type]
                    .limit(self._settings.delivery_concurrency)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return 0
            attempts = await asyncio.gather(*(self._attempt(row) for row in rows))
            for row, attempt in zip(rows, attempts, strict=True):
                await self._record(session, row, attempt)
        runtime.relay.wake()
        return len(rows)

    async def _attempt(self, row: DeliveryRow) -> Attempt:
        body = json.dumps(row.payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = signed_headers(
            secret=self._secrets[row.department],
            msg_id=row.delivery_id,
            now=self._runtime.clock.now(),
            body=body,
        )
        headers["content-type"] = "application/json"
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            response = await self._client.post(
                row.url,
                content=body,
                headers=headers,
                timeout=self._settings.delivery_timeout_seconds,
            )
        except httpx.HTTPError as exc:
            return Attempt(None, f"{type(exc).__name__}: {exc}"[:500], loop.time() - started)
        error = None if response.is_success else f"HTTP {response.status_code}"
        return Attempt(response.status_code, error, loop.time() - started)

    async def _record(self, session: AsyncSession, row: DeliveryRow, attempt: Attempt) -> None:
        now = self._runtime.clock.now()
        outcome = classify(attempt.status_code)
        row.attempts += 1
        row.last_status_code = attempt.status_code
        row.last_error = attempt.error
        self._metrics.seconds.labels(row.department).observe(attempt.seconds)
        with log_context(case_id=row.case_id):
            if outcome is Outcome.DELIVERED:
                row.status = DeliveryStatus.DELIVERED.value
                row.delivered_at = now
                row.next_attempt_at = None
                await self._assign(session, row)
            elif outcome is Outcome.GONE or row.attempts >= self._settings.delivery_max_attempts:
                row.status = DeliveryStatus.DEAD.value
                row.next_attempt_at = None
                log.error(
                    "delivery %s to %s dead after %d attempts: %s",
                    row.delivery_id,
                    row.department,
                    row.attempts,
                    attempt.error,
                )
            else:
                row.next_attempt_at = next_attempt_at(
                    attempts=row.attempts,
                    now=now,
                    base_seconds=self._settings.delivery_base_delay_seconds,
                    max_seconds=self._settings.delivery_max_delay_seconds,
                    jitter=self._random.random(),
                )
                log.warning(
                    "delivery %s to %s failed (attempt %d): %s",
                    row.delivery_id,
                    row.department,
                    row.attempts,
                    attempt.error,
                )
        label = "retry" if row.status == DeliveryStatus.PENDING.value else row.status
        self._metrics.attempts.labels(row.department, label).inc()

    async def _assign(self, session: AsyncSession, row: DeliveryRow) -> None:
        case = await session.get(CaseRow, row.case_id, with_for_update=True)
        if case is None:
            return
        try:
            event = assign(
                case_id=case.case_id,
                state=CaseState(case.state),
                version=case.version,
                category=case.category,
                unit_grid=case.unit_grid,
                department=row.department,
                routing=RoutingSnapshot.model_validate(case.routing) if case.routing else None,
                now=self._runtime.clock.now(),
                urgency=Urgency(case.urgency),
            )
        except TransitionRefusedError as exc:
            log.info("delivered, but the case moved on meanwhile: %s", exc)
            return
        case.state = event.to_state.value
        case.version = event.version
        case.department = row.department
        case.updated_at = event.at
        await record_transition(session, event=event, runtime=self._runtime)
