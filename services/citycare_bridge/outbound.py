"""The bridge's calls out: status updates and new tasks to the 数字城管 platform, the platform's
verifications to dispatch's partner API, its steps on tasks to dispatch's department API (a
passed 核查 of a task also verifies and closes its case through the partner API), and
(pull mode) reading the platform's event feed. Each sender answers a queue `Result`; the queue
(libs.common.bridge.queue) retries, keeps order per case, survives restarts."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter

from libs.common.bridge.client import read_feed, result_of, signed_request
from libs.common.bridge.dispatch import Plan, carry_out
from libs.common.bridge.queue import Message, Outcome, Result, enqueue
from libs.common.events import CaseState
from services.citycare_bridge.inbound import DEPARTMENT_CHANNEL, CitycareContext
from services.citycare_bridge.mapping import (
    TASK_FILED,
    TASK_RETURNS,
    plan_task,
    plan_task_close,
    plan_verification,
)
from services.citycare_bridge.partner import (
    CaseVerified,
    CitycareEvent,
    FeedPage,
    TaskProgressed,
    TaskVerified,
)

_TASK_STEP: TypeAdapter[TaskProgressed | TaskVerified] = TypeAdapter(TaskProgressed | TaskVerified)


class Outbound:
    def __init__(self, *, context: CitycareContext, client: httpx.AsyncClient) -> None:
        self._context = context
        self._client = client
        self.on_task_filed: Callable[[], None] = lambda: None  # wakes the department queue
        settings = context.settings
        self._partner = settings.partner_url.rstrip("/")
        self._dispatch = settings.dispatch_url.rstrip("/")
        self._secret = settings.partner_outbound_secret.get_secret_value()
        self._timeout = settings.partner_timeout_seconds
        self._partner_token = settings.dispatch_token.get_secret_value()
        self._department_token = settings.department_token.get_secret_value()

    def _failed(self, operation: str, result: Result) -> Result:
        if result.outcome is not Outcome.SENT:
            self._context.metrics.partner_errors.labels(self._context.system, operation).inc()
        return result

    async def _call(self, operation: str, method: str, path: str, message: Message) -> Result:
        """A signed call to the platform; it deduplicates by webhook-id (the message id)."""
        try:
            response = await signed_request(
                self._client,
                method,
                f"{self._partner}{path}",
                secret=self._secret,
                msg_id=message.message_id,
                body=json.dumps(message.body, ensure_ascii=False).encode(),
                now=self._context.runtime.clock.now(),
                timeout=self._timeout,
            )
        except httpx.HTTPError as exc:
            return self._failed(operation, Result(Outcome.RETRY, type(exc).__name__))
        return self._failed(operation, result_of(response))

    async def to_partner(self, message: Message) -> Result:
        """A status update (POST /api/v1/cases/{case_id}/status), a new task (POST
        /api/v1/tasks; the platform files one case per external id; once filed, the department
        channel signs for it) or a task taken back (POST /api/v1/tasks/{external_id}/return)."""
        if message.kind in TASK_RETURNS:
            case_id = quote(str(message.body["external_id"]), safe="")
            return await self._call("task", "POST", f"/api/v1/tasks/{case_id}/return", message)
        if message.kind != "task":
            case_number = quote(str(message.body["case_id"]), safe="")
            return await self._call(
                "status", "POST", f"/api/v1/cases/{case_number}/status", message
            )
        result = await self._call("task", "POST", "/api/v1/tasks", message)
        if result.outcome is Outcome.SENT:
            runtime = self._context.runtime
            async with runtime.sessions() as session, session.begin():
                await enqueue(
                    session,
                    channel=DEPARTMENT_CHANNEL,
                    case_id=message.case_id,
                    message_id=f"{message.message_id}:filed",
                    kind=TASK_FILED,
                    body={},
                    now=runtime.clock.now(),
                )
            self.on_task_filed()
        return result

    async def to_dispatch(self, message: Message) -> Result:
        """The platform's verification of a filed case, through the partner API."""
        verdict = CaseVerified.model_validate(message.body)

        def steps(standing: dict[str, Any]) -> Plan:
            state = CaseState(standing["state"])
            return plan_verification(verdict, state=state, verified=bool(standing["verified"]))

        result = await carry_out(
            self._client,
            case_url=f"{self._dispatch}/v1/partner/cases/{message.case_id}",
            token=self._partner_token,
            message_id=message.message_id,
            plan=steps,
            timeout=self._timeout,
        )
        return self._failed("dispatch", result)

    async def to_department(self, message: Message) -> Result:
        """The platform's steps on a task, as its department entry (sign, progress, resolve);
        once its 核查 passed and the case is resolved, the platform's verification and close
        through the partner API (dispatch lets the platform decide the cases its department
        entry holds). A retried message repeats neither: the moves are planned on the case as it
        stands and keyed by the message id."""
        step = None if message.kind == TASK_FILED else _TASK_STEP.validate_python(message.body)

        def steps(standing: dict[str, Any]) -> Plan:
            return plan_task(step, state=CaseState(standing["state"]))

        result = self._failed(
            "department",
            await carry_out(
                self._client,
                case_url=f"{self._dispatch}/v1/department/cases/{message.case_id}",
                token=self._department_token,
                message_id=message.message_id,
                plan=steps,
                timeout=self._timeout,
            ),
        )
        if result.outcome is not Outcome.SENT or not isinstance(step, TaskVerified):
            return result
        if not step.passed:
            return result  # failed 核查: the platform's unit works on; gridflow only heard of it
        verdict = step

        def closing(standing: dict[str, Any]) -> Plan:
            state = CaseState(standing["state"])
            return plan_task_close(verdict, state=state, verified=bool(standing["verified"]))

        return self._failed(
            "dispatch",
            await carry_out(
                self._client,
                case_url=f"{self._dispatch}/v1/partner/cases/{message.case_id}",
                token=self._partner_token,
                message_id=message.message_id,
                plan=closing,
                timeout=self._timeout,
            ),
        )

    async def feed(self, cursor: str | None) -> tuple[Sequence[CitycareEvent], str]:
        """Pull mode: GET /api/v1/events?after=<cursor>, signed; the page and its next cursor."""
        context = self._context
        page = await read_feed(
            self._client,
            f"{self._partner}/api/v1/events",
            cursor,
            model=FeedPage,
            secret=self._secret,
            now=context.runtime.clock.now(),
            timeout=self._timeout,
            on_refused=context.metrics.mapping_failures.labels(context.system, "feed").inc,
        )
        return page.events, page.next_cursor
