"""What a department receives and when a failed delivery is tried again (pure decisions)."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from libs.common.events import CaseSubmitted


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    GONE = "gone"


def classify(status_code: int | None) -> Outcome:
    """2xx delivered; 410 Gone disables the delivery; anything else (or no answer) is retried."""
    if status_code is not None and 200 <= status_code < 300:
        return Outcome.DELIVERED
    if status_code == 410:
        return Outcome.GONE
    return Outcome.RETRY


def next_attempt_at(
    *, attempts: int, now: datetime, base_seconds: float, max_seconds: float, jitter: float
) -> datetime:
    """Exponential backoff with jitter: base·2^(attempts-1), capped, scaled into [50 %, 100 %]."""
    if not 0.0 <= jitter <= 1.0:
        raise ValueError("jitter must lie in [0, 1]")
    delay = min(max_seconds, base_seconds * 2 ** max(0, attempts - 1))
    return now + timedelta(seconds=delay * (0.5 + jitter / 2))


def webhook_body(case: CaseSubmitted, *, delivery_id: str, department: str) -> dict[str, Any]:
    """The JSON a department's webhook receives; the reporter is masked (DOMAIN.md §6)."""
    shared = case.model_copy(update={"reporter": case.reporter.masked()})
    return {
        "type": "case.assigned",
        "delivery_id": delivery_id,
        "department": department,
        "case": shared.model_dump(mode="json", exclude_none=True),
    }
