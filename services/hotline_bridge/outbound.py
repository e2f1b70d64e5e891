"""The bridge's calls out: status updates to the 12345 platform, the platform's decisions to
dispatch's partner API, and (pull mode) reading the platform's event feed. Each sender answers a
queue `Result`; the queue (libs.common.bridge.queue) retries, keeps order per case, survives
restarts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter

from libs.common.bridge.client import read_feed, result_of, signed_request
from libs.common.bridge.dispatch import Plan, carry_out
from libs.common.bridge.queue import Message, Outcome, Result
from libs.common.events import CaseState
from services.hotline_bridge.inbound import HotlineContext
from services.hotline_bridge.mapping import plan
from services.hotline_bridge.partner import Decision, FeedPage, HotlineEvent

_DECISION: TypeAdapter[Decision] = TypeAdapter(Decision)


class Outbound:
    def __init__(self, *, context: HotlineContext, client: httpx.AsyncClient) -> None:
        self._context = context
        self._client = client
        settings = context.settings
        self._partner = settings.partner_url.rstrip("/")
        self._dispatch = settings.dispatch_url.rstrip("/")
        self._secret = settings.partner_outbound_secret.get_secret_value()
        self._timeout = settings.partner_timeout_seconds
        self._token = settings.dispatch_token.get_secret_value()

    def _failed(self, operation: str, result: Result) -> Result:
        if result.outcome is not Outcome.SENT:
            self._context.metrics.partner_errors.labels(self._context.system, operation).inc()
        return result

    async def to_partner(self, message: Message) -> Result:
        """POST the status update to /open/v1/orders/{order_id}/status, signed; the platform
        deduplicates by webhook-id (the message id), so a resent update counts once."""
        order_id = str(message.body["order_id"])
        try:
            response = await signed_request(
                self._client,
                "POST",
                f"{self._partner}/open/v1/orders/{quote(order_id, safe='')}/status",
                secret=self._secret,
                msg_id=message.message_id,
                body=json.dumps(message.body, ensure_ascii=False).encode(),
                now=self._context.runtime.clock.now(),
                timeout=self._timeout,
            )
        except httpx.HTTPError as exc:
            return self._failed("status", Result(Outcome.RETRY, type(exc).__name__))
        return self._failed("status", result_of(response))

    async def to_dispatch(self, message: Message) -> Result:
        """Carry a platform decision into its case: read the case's standing, plan the moves,
        make each with an Idempotency-Key of this message and move (a retry repeats nothing)."""
        decision = _DECISION.validate_python(message.body)

        def steps(standing: dict[str, Any]) -> Plan:
            return plan(
                decision,
                state=CaseState(standing["state"]),
                verified=bool(standing["verified"]),
                pending=bool(standing["extension_pending"]),
            )

        result = await carry_out(
            self._client,
            case_url=f"{self._dispatch}/v1/partner/cases/{message.case_id}",
            token=self._token,
            message_id=message.message_id,
            plan=steps,
            timeout=self._timeout,
        )
        return self._failed("dispatch", result)

    async def feed(self, cursor: str | None) -> tuple[Sequence[HotlineEvent], str]:
        """Pull mode: GET /open/v1/events?after=<cursor>, signed; the page and its next cursor."""
        context = self._context
        page = await read_feed(
            self._client,
            f"{self._partner}/open/v1/events",
            cursor,
            model=FeedPage,
            secret=self._secret,
            now=context.runtime.clock.now(),
            timeout=self._timeout,
            on_refused=context.metrics.mapping_failures.labels(context.system, "feed").inc,
        )
        return page.events, page.next_cursor
