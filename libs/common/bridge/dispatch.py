"""A partner's decision carried into its gridflow case through one of dispatch's APIs (the partner
API for a platform's own cases, the department API for cases a platform handles as a department).

A decision is planned against the case as it stands (pure: `Plan`), then each move is POSTed with
an Idempotency-Key made of the queued message's id and the move, so a retried message repeats
nothing that was done before."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from libs.common.bridge.client import outcome_of, result_of
from libs.common.bridge.queue import Outcome, Result

Call = tuple[str, dict[str, Any]]  # (the API's move path, its body)


@dataclass(frozen=True)
class Plan:
    calls: tuple[Call, ...] = ()
    refusal: str | None = None  # why the decision cannot apply to the case as it stands
    not_yet: str | None = None  # why it cannot apply yet (the case is still on its way): retried


async def carry_out(
    client: httpx.AsyncClient,
    *,
    case_url: str,
    token: str,
    message_id: str,
    plan: Callable[[dict[str, Any]], Plan],
    timeout: float,  # noqa: ASYNC109  # httpx applies it per request
) -> Result:
    """GET the case's standing at `case_url`, plan the moves on it, POST each to
    `case_url/<move>`; the queue outcome (a refusal is REJECTED with its reason)."""
    auth = {"Authorization": f"Bearer {token}"}
    try:
        response = await client.get(case_url, headers=auth, timeout=timeout)
        if response.status_code != 200:
            return result_of(response)
        steps = plan(response.json())
        if steps.refusal is not None:
            return Result(Outcome.REJECTED, steps.refusal)
        if steps.not_yet is not None:
            return Result(Outcome.RETRY, steps.not_yet)
        for move, body in steps.calls:
            headers = {**auth, "Idempotency-Key": f"{message_id}:{move}"}
            answer = await client.post(
                f"{case_url}/{move}", json=body, headers=headers, timeout=timeout
            )
            if outcome_of(answer.status_code) is not Outcome.SENT:
                return result_of(answer)
    except httpx.HTTPError as exc:
        return Result(Outcome.RETRY, type(exc).__name__)
    return Result(Outcome.SENT)
