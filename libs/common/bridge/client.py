"""Calls from a bridge to the other side (the partner platform, dispatch's partner API): signed
requests, and the answer read as a queue outcome."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from libs.common.bridge.inbound import parse_partner
from libs.common.bridge.queue import Outcome, Result
from libs.common.signing import signed_headers
from libs.common.web import ApiError

M = TypeVar("M", bound=BaseModel)

_RETRYABLE_CLIENT_ERRORS = frozenset({401, 403, 408, 425, 429})  # 401/403: fixed by config


def outcome_of(status: int) -> Outcome:
    """2xx taken; 5xx, throttling, timeouts and credentials (an operator can fix them) retried;
    any other 4xx can never be taken as it is: rejected."""
    if 200 <= status < 300:
        return Outcome.SENT
    if status >= 500 or status in _RETRYABLE_CLIENT_ERRORS:
        return Outcome.RETRY
    return Outcome.REJECTED


def result_of(response: httpx.Response) -> Result:
    outcome = outcome_of(response.status_code)
    error = None if outcome is Outcome.SENT else f"{response.status_code}: {response.text[:300]}"
    return Result(outcome, error)


async def signed_request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    secret: str,
    msg_id: str,
    body: bytes,
    now: datetime,
    timeout: float,  # noqa: ASYNC109  # httpx applies it per request
) -> httpx.Response:
    """A request signed as a Standard Webhook (the partner verifies it like a push)."""
    headers = signed_headers(secret=secret, msg_id=msg_id, now=now, body=body)
    if body:
        headers["content-type"] = "application/json"
    return await client.request(method, url, content=body, headers=headers, timeout=timeout)


class PartnerError(RuntimeError):
    """The partner answered something the bridge cannot use."""


async def read_feed(
    client: httpx.AsyncClient,
    url: str,
    cursor: str | None,
    *,
    model: type[M],
    secret: str,
    now: datetime,
    timeout: float,  # noqa: ASYNC109  # httpx applies it per request
    on_refused: Callable[[], None],
) -> M:
    """Pull mode: GET `url`?after=<cursor>, signed, read as `model`; PartnerError for any other
    answer than 200 or a page that does not fit (`on_refused` counts it)."""
    if cursor is not None:
        url += f"?after={quote(cursor, safe='')}"
    response = await signed_request(
        client,
        "GET",
        url,
        secret=secret,
        msg_id=f"poll-{int(now.timestamp() * 1000)}",
        body=b"",
        now=now,
        timeout=timeout,
    )
    if response.status_code != 200:
        raise PartnerError(f"feed answered {response.status_code}")
    try:
        return parse_partner(model, response.content)
    except ApiError as exc:
        on_refused()
        raise PartnerError(f"feed page refused: {exc.path}: {exc.reason}") from exc
