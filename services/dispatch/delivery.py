"""What a department receives and when a delivery is tried again (pure decisions).

`python -m services.dispatch.delivery --write-schema` writes the JSON Schema of the webhook body
to docs/schemas/webhooks/case.assigned.json (`--check` fails when the file is stale).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from libs.common.contract import Contract
from libs.common.events import CaseSubmitted, Reporter
from libs.common.refdata.models import ReporterSharing

SCHEMA_PATH = Path("docs/schemas/webhooks/case.assigned.json")
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
RETRY_AFTER_STATUSES = frozenset({429, 503})


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    GONE = "gone"


def classify(status_code: int | None) -> Outcome:
    """2xx delivered; 410 Gone disables the receiver; anything else (or no answer) is retried."""
    if status_code is not None and 200 <= status_code < 300:
        return Outcome.DELIVERED
    if status_code == 410:
        return Outcome.GONE
    return Outcome.RETRY


# --- when to try again --------------------------------------------------------------------------


def retry_after_seconds(
    status_code: int | None, value: str | None, *, now: datetime
) -> float | None:
    """The delay a 429 or 503 asks for in its Retry-After header (RFC 9110 §10.2.3: seconds or an
    HTTP-date), or None: another status, no header, or one that cannot be read."""
    if status_code not in RETRY_AFTER_STATUSES or value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def next_attempt_at(
    *,
    attempts: int,
    now: datetime,
    base_seconds: float,
    max_seconds: float,
    jitter: float,
    retry_after: float | None = None,
) -> datetime:
    """When to try again after `attempts` failed attempts.

    The receiver's Retry-After, clamped into [base, max], wins. Otherwise exponential backoff:
    base·2^(attempts-1), capped at max, scaled by the jitter into [50 %, 100 %] so that the
    retries of many deliveries do not arrive together."""
    if not 0.0 <= jitter <= 1.0:
        raise ValueError("jitter must lie in [0, 1]")
    if retry_after is not None:
        return now + timedelta(seconds=min(max_seconds, max(base_seconds, retry_after)))
    exponent = min(max(0, attempts - 1), 64)  # 2^64 · base exceeds any cap
    delay = min(max_seconds, base_seconds * 2**exponent)
    return now + timedelta(seconds=delay * (0.5 + jitter / 2))


# --- circuit breaker per department endpoint ----------------------------------------------------


class BreakerPhase(StrEnum):
    CLOSED = "closed"  # deliveries flow
    OPEN = "open"  # cooling down: nothing is attempted
    HALF_OPEN = "half_open"  # cooled down: one probe may go


@dataclass(frozen=True)
class Breaker:
    failures: int = 0  # consecutive failed attempts
    open_until: datetime | None = None
    cooldown_seconds: float = 0.0  # the last cooldown; it doubles each time a probe fails
    probing: bool = False  # a half-open probe is in flight (until `open_until`, its lease)


def breaker_phase(breaker: Breaker, *, now: datetime) -> BreakerPhase:
    if breaker.open_until is None:
        return BreakerPhase.CLOSED
    if now < breaker.open_until:
        return BreakerPhase.OPEN
    return BreakerPhase.HALF_OPEN


def breaker_probing(breaker: Breaker, *, now: datetime, lease_seconds: float) -> Breaker:
    """A half-open breaker lets one probe go: it stays shut for others while the probe runs."""
    return replace(breaker, probing=True, open_until=now + timedelta(seconds=lease_seconds))


def breaker_after(
    breaker: Breaker,
    *,
    succeeded: bool,
    now: datetime,
    threshold: int,
    cooldown_seconds: float,
    max_cooldown_seconds: float,
) -> Breaker:
    """The breaker after one attempt's answer.

    A success closes it. `threshold` consecutive failures open it for `cooldown_seconds`; a failed
    probe opens it again for twice the last cooldown, at most `max_cooldown_seconds`. A failure
    of an attempt that was already in flight when the breaker opened only counts."""
    if succeeded:
        return Breaker()
    failures = breaker.failures + 1
    phase = breaker_phase(breaker, now=now)
    if breaker.probing or phase is BreakerPhase.HALF_OPEN:
        cooldown = min(max_cooldown_seconds, max(cooldown_seconds, breaker.cooldown_seconds * 2))
        return Breaker(failures, now + timedelta(seconds=cooldown), cooldown)
    if phase is BreakerPhase.OPEN:
        return replace(breaker, failures=failures)
    if failures >= threshold:
        cooldown = min(max_cooldown_seconds, cooldown_seconds)
        return Breaker(failures, now + timedelta(seconds=cooldown), cooldown)
    return Breaker(failures)


# --- what the department receives ---------------------------------------------------------------


class SharedPerson(Contract):
    """A reporter or beneficiary as a department sees it: in full or masked (`138****8000`)."""

    kind: Literal["grid_worker", "resident", "inspector", "system"]
    worker_id: str | None = None
    name: Annotated[str, Field(min_length=1, max_length=40)] | None = None
    phone: Annotated[str, Field(pattern=r"^\+?[0-9*-]{5,20}$")] | None = None
    id_number: Annotated[str, Field(pattern=r"^[0-9*]{17}[0-9Xx*]$")] | None = None
    anonymous: bool = False


class SharedCase(CaseSubmitted):
    """The case as a department gets it: the reporter and a proxy service's beneficiary in full,
    masked, or left out, as the department's receiver says (DOMAIN.md §6)."""

    PEOPLE: ClassVar[frozenset[str]] = frozenset({"reporter", "beneficiary"})

    # the shared copy's people may be masked, and are absent when the receiver says `none`
    reporter: SharedPerson | None = None  # type: ignore[assignment]
    beneficiary: SharedPerson | None = None  # type: ignore[assignment]


class WebhookPayload(Contract):
    """The body of the `case.assigned` webhook a department's receiver is POSTed."""

    type: Literal["case.assigned"] = "case.assigned"
    delivery_id: str = Field(description="the webhook-id: the same on every attempt")
    department: str = Field(description="the department's short code")
    case: SharedCase


def _person(person: Reporter | None, sharing: ReporterSharing) -> SharedPerson | None:
    if person is None or sharing == "none":
        return None
    # every field of the reporter (SharedPerson refuses one it does not know), masked or not
    values: dict[str, Any] = {name: getattr(person, name) for name in _PERSON_FIELDS}
    if sharing == "masked":
        values.update(person.masked_values())
    return SharedPerson(**values)


_PERSON_FIELDS = tuple(Reporter.model_fields)


def shared_case(case: CaseSubmitted, sharing: ReporterSharing) -> SharedCase:
    """The case with its personal information as a department may see it: the submitted case's
    (validated) values as they are, its people shown in full, masked or not at all."""
    values = {name: getattr(case, name) for name in _CASE_FIELDS}
    return SharedCase.model_construct(
        case.model_fields_set | {"reporter", "beneficiary"},
        **values,
        reporter=_person(case.reporter, sharing),
        beneficiary=_person(case.beneficiary, sharing),
    )


_CASE_FIELDS = tuple(name for name in CaseSubmitted.model_fields if name not in SharedCase.PEOPLE)


def webhook_payload(
    case: CaseSubmitted, *, delivery_id: str, department: str, sharing: ReporterSharing = "masked"
) -> WebhookPayload:
    """The `case.assigned` webhook a department's receiver gets."""
    return WebhookPayload(
        delivery_id=delivery_id, department=department, case=shared_case(case, sharing)
    )


def webhook_json(
    case: CaseSubmitted, *, delivery_id: str, department: str, sharing: ReporterSharing = "masked"
) -> str:
    """`webhook_body` as JSON text (what is stored, signed and sent)."""
    payload = webhook_payload(case, delivery_id=delivery_id, department=department, sharing=sharing)
    return payload.model_dump_json(exclude_none=True)


def webhook_body(
    case: CaseSubmitted, *, delivery_id: str, department: str, sharing: ReporterSharing = "masked"
) -> dict[str, Any]:
    """The JSON a department's webhook receives."""
    payload = webhook_payload(case, delivery_id=delivery_id, department=department, sharing=sharing)
    return payload.model_dump(mode="json", exclude_none=True)


def webhook_schema() -> str:
    generated = WebhookPayload.model_json_schema(mode="validation")
    schema = {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": "urn:gridflow:schema:webhook:case.assigned",
        **generated,
    }
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.dispatch.delivery")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write-schema", action="store_true", help=f"write {SCHEMA_PATH}")
    action.add_argument(
        "--check-schema", action="store_true", help=f"fail if {SCHEMA_PATH} is stale"
    )
    args = parser.parse_args(argv)
    text = webhook_schema()
    if args.write_schema:
        SCHEMA_PATH.parent.mkdir(parents=True, exist_ok=True)
        SCHEMA_PATH.write_text(text)
        return 0
    if not SCHEMA_PATH.exists() or SCHEMA_PATH.read_text() != text:
        sys.stderr.write(f"{SCHEMA_PATH} is stale: run this with --write-schema\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
