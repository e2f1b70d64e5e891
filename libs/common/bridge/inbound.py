"""Inbound from a partner: signature check, parsing with a reason, and acceptance exactly once.

A push is signed like gridflow's own webhooks (Standard Webhooks: HMAC-SHA256 over
"{webhook-id}.{webhook-timestamp}.{body}"), with the secret the partner and the bridge share.
A bad signature is 401 and a payload that does not fit the partner's model is 400 with the field
and the reason; neither writes anything. A new order is accepted once per external id: the link
row (partner, external id) → case id and the `cases.submitted` event are written in one
transaction, so a repeated push or an overlapping poll finds the link and stages nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import sqlalchemy as sa
from pydantic import BaseModel, ValidationError
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.bridge.metrics import BridgeMetrics
from libs.common.bridge.queue import enqueue
from libs.common.bridge.tables import cursors, links
from libs.common.db import claim_event
from libs.common.events import CaseSubmitted
from libs.common.outbox import stage_many
from libs.common.signing import SignatureError, verify
from libs.common.topics import CASES_SUBMITTED
from libs.common.web import NUL_REASON, ApiError, json_nul_path

M = TypeVar("M", bound=BaseModel)
E = TypeVar("E")
log = logging.getLogger(__name__)


def verify_push(
    *, secrets: Iterable[str], headers: Mapping[str, str], body: bytes, now: datetime
) -> None:
    """Raise ApiError 401 unless the push is signed with one of `secrets`."""
    try:
        verify(secrets=secrets, headers=headers, body=body, now=now)
    except SignatureError as exc:
        raise ApiError(401, "bad_signature", str(exc)) from exc


def parse_partner(model: type[M], body: bytes) -> M:
    """The body as `model`, or ApiError 400 naming the first field that does not fit."""
    found = json_nul_path(body)
    if found is not None:  # else the case would fail in dispatch's database, dead-lettered
        raise ApiError(400, "malformed", NUL_REASON, ".".join(map(str, ("body", *found))))
    try:
        return model.model_validate_json(body or b"null")
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        path = ".".join(str(part) for part in ("body", *_as_sent(first["loc"], data)))
        raise ApiError(400, "malformed", first["msg"], path) from exc


def _as_sent(loc: Iterable[str | int], data: object, tag: str = "type") -> list[str | int]:
    """The path as the partner spells it: pydantic puts the tag of a union discriminated by
    `type` into the path (`order.created.order.title`); the partner knows `order.title`."""
    kept: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part not in node and part == node.get(tag):
            continue
        kept.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return kept


def read_push(
    model: type[M],
    *,
    body: bytes,
    headers: Mapping[str, str],
    secrets: Iterable[str],
    now: datetime,
    metrics: BridgeMetrics,
    partner: str,
    kind: str = "push",
) -> M:
    """A signed push read as `model`: ApiError 401 or 400 (counted as refused) otherwise."""
    try:
        verify_push(secrets=secrets, headers=headers, body=body, now=now)
        return parse_partner(model, body)
    except ApiError:
        metrics.inbound.labels(partner, kind, "refused").inc()
        raise


async def take_page(
    session: AsyncSession,
    events: Sequence[E],
    next_cursor: str,
    *,
    partner: str,
    now: datetime,
    take: Callable[[AsyncSession, E], Awaitable[object]],
    unknown: type[Exception],
) -> None:
    """Pull mode: each event of a page taken in a savepoint, then the cursor, in the caller's
    transaction; an event `take` raises `unknown` for (about something from before the bridge
    was connected) is skipped, with a log line."""
    for event in events:
        try:
            async with session.begin_nested():
                await take(session, event)
        except unknown:
            log.warning(
                "skipped %s %s: %s unknown",
                getattr(event, "type", "event"),
                getattr(event, "event_id", "?"),
                unknown.__name__,
            )
    await write_cursor(session, partner=partner, cursor=next_cursor, now=now)


@dataclass(frozen=True)
class Accepted:
    external_id: str
    case_id: str
    new: bool  # False: the order was accepted before (a repeated push, an overlapping poll)


async def accept_cases(
    session: AsyncSession,
    *,
    partner: str,
    cases: Sequence[tuple[str, CaseSubmitted]],
    source: str,
    now: datetime,
) -> list[Accepted]:
    """Link each (external id, case) and stage `cases.submitted` for those not linked before;
    in the caller's transaction. The case id of an order seen before is the first one's."""
    if not cases:
        return []
    fresh = set(
        (
            await session.scalars(
                insert(links)
                .values(
                    [
                        {
                            "partner": partner,
                            "external_id": external_id,
                            "case_id": case.case_id,
                            "created_at": now,
                        }
                        for external_id, case in dict(cases).items()
                    ]
                )
                .on_conflict_do_nothing(index_elements=["partner", "external_id"])
                .returning(links.c.external_id)
            )
        ).all()
    )
    staged = [case for external_id, case in dict(cases).items() if external_id in fresh]
    await stage_many(
        session,
        topic=CASES_SUBMITTED,
        events=[(case, case.case_id, now) for case in staged],
        source=source,
    )
    known = await cases_of(session, partner=partner, external_ids=[e for e, _ in cases])
    return [Accepted(e, known[e], e in fresh) for e, _ in cases]


async def link_case(
    session: AsyncSession, *, partner: str, external_id: str, case_id: str, now: datetime
) -> bool:
    """Link a gridflow case the bridge hands to the partner (no event staged); False when it was
    linked before (a redelivered webhook)."""
    statement = (
        insert(links)
        .values(partner=partner, external_id=external_id, case_id=case_id, created_at=now)
        .on_conflict_do_nothing()
        .returning(links.c.case_id)
    )
    return (await session.execute(statement)).first() is not None


async def cases_of(
    session: AsyncSession, *, partner: str, external_ids: Sequence[str]
) -> dict[str, str]:
    rows = await session.execute(
        sa.select(links.c.external_id, links.c.case_id).where(
            links.c.partner == partner, links.c.external_id.in_(external_ids)
        )
    )
    return {row.external_id: row.case_id for row in rows}


async def links_of(
    session: AsyncSession, *, partners: Sequence[str], case_ids: Iterable[str]
) -> dict[str, tuple[str, str]]:
    """Case id → (partner, external id) of those of `case_ids` linked under one of `partners`
    (the others are not theirs), in one query."""
    rows = await session.execute(
        sa.select(links.c.case_id, links.c.partner, links.c.external_id).where(
            links.c.partner.in_(partners), links.c.case_id.in_(sorted(set(case_ids)))
        )
    )
    found: dict[str, tuple[str, str]] = {}
    for row in rows:
        found.setdefault(row.case_id, (row.partner, row.external_id))
    return found


async def claim_partner_event(
    session: AsyncSession, *, partner: str, event_id: str, now: datetime
) -> bool:
    """False when this partner event was handled before (a repeated push or poll)."""
    return await claim_event(session, consumer=f"{partner}.inbound", event_id=event_id, now=now)


async def queue_partner_event(
    session: AsyncSession,
    *,
    partner: str,
    channel: str,
    case_id: str,
    event_id: str,
    kind: str,
    body: dict[str, object],
    now: datetime,
) -> bool:
    """Queue a partner's event about a case once per event id (a repeated push or poll queues
    nothing); False when it was taken before. In the caller's transaction."""
    fresh = await claim_partner_event(session, partner=partner, event_id=event_id, now=now)
    if fresh:
        await enqueue(
            session,
            channel=channel,
            case_id=case_id,
            message_id=f"{partner}:{event_id}",
            kind=kind,
            body=body,
            now=now,
        )
    return fresh


async def read_cursor(session: AsyncSession, *, partner: str) -> str | None:
    return (
        await session.scalars(sa.select(cursors.c.cursor).where(cursors.c.partner == partner))
    ).first()


async def write_cursor(session: AsyncSession, *, partner: str, cursor: str, now: datetime) -> None:
    statement = insert(cursors).values(partner=partner, cursor=cursor, updated_at=now)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["partner"], set_={"cursor": cursor, "updated_at": now}
        )
    )
