"""A durable queue per channel: messages to a partner (or to dispatch), sent in order per case,
retried with exponential backoff and jitter while the other side is down, kept across restarts.

Only the oldest unfinished message of a case (its head) is ever attempted, so a case's messages
arrive in the order they were queued; other cases go on meanwhile. A message is leased while it is
attempted (a second instance skips it) and finished when the sender says it was taken (`SENT`) or
can never be (`REJECTED`: recorded with the reason, counted, and the case's next message goes on).
A message id is unique: queueing the same message twice (a redelivered Kafka record) keeps one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common.bridge.metrics import BridgeMetrics
from libs.common.bridge.tables import queue
from libs.common.clock import Clock

log = logging.getLogger(__name__)

_CLAIM = sa.text(
    """
    UPDATE queue AS q
    SET leased_until = :lease, attempts = q.attempts + 1
    FROM (
        SELECT id FROM (
            SELECT DISTINCT ON (case_id) id, next_attempt_at, leased_until
            FROM queue
            WHERE channel = :channel AND finished_at IS NULL
            ORDER BY case_id, id
        ) AS heads
        WHERE next_attempt_at <= :now AND (leased_until IS NULL OR leased_until < :now)
        ORDER BY id
        LIMIT :limit
    ) AS due
    WHERE q.id = due.id AND (q.leased_until IS NULL OR q.leased_until < :now)
      AND q.finished_at IS NULL
    RETURNING q.id, q.case_id, q.message_id, q.kind, q.body, q.attempts, q.created_at
    """
)


class Outcome(StrEnum):
    SENT = "sent"
    RETRY = "retry"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    error: str | None = None


@dataclass(frozen=True)
class Message:
    id: int
    case_id: str
    message_id: str
    kind: str
    body: dict[str, Any]
    attempts: int  # including this one
    created_at: datetime


Send = Callable[[Message], Awaitable[Result]]


async def enqueue(
    session: AsyncSession,
    *,
    channel: str,
    case_id: str,
    message_id: str,
    kind: str,
    body: dict[str, Any],
    now: datetime,
) -> bool:
    """Queue a message in the caller's transaction; False when its id was queued before."""
    statement = (
        insert(queue)
        .values(
            channel=channel,
            case_id=case_id,
            message_id=message_id,
            kind=kind,
            body=body,
            created_at=now,
            next_attempt_at=now,
        )
        .on_conflict_do_nothing(index_elements=["message_id"])
        .returning(queue.c.id)
    )
    return (await session.execute(statement)).first() is not None


def backoff(attempts: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Seconds before the next attempt after `attempts` failed ones: doubling, capped, with up
    to a quarter of jitter either way (so a recovering partner is not hit by every case at once)."""
    delay = min(cap, base * 2 ** max(0, attempts - 1))
    return float(delay * (0.75 + rng.random() * 0.5))


class QueueWorker:
    """Sends one channel's due heads with `send`, a batch at a time, and records each result."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        partner: str,
        channel: str,
        send: Send,
        metrics: BridgeMetrics,
        base_delay: float,
        max_delay: float,
        lease_seconds: float,
        batch_size: int = 32,
        poll_interval: float = 1.0,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._partner = partner
        self._channel = channel
        self._send = send
        self._metrics = metrics
        self._base = base_delay
        self._cap = max_delay
        self._lease = timedelta(seconds=lease_seconds)
        self._batch = batch_size
        self._poll = poll_interval
        self._rng = random.Random()  # noqa: S311  # jitter, not a secret
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                handled = await self.send_due()
            except Exception as exc:  # the database is away: try again after a pause
                log.warning("%s queue: %s", self._channel, type(exc).__name__)
                handled = 0
            await self._measure()
            if handled == 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._poll)

    async def send_due(self) -> int:
        """Attempt the due heads once; the number attempted."""
        now = self._clock.now()
        async with self._sessions() as session, session.begin():
            rows = (
                await session.execute(
                    _CLAIM,
                    {
                        "channel": self._channel,
                        "now": now,
                        "lease": now + self._lease,
                        "limit": self._batch,
                    },
                )
            ).all()
        messages = [
            Message(r.id, r.case_id, r.message_id, r.kind, dict(r.body), r.attempts, r.created_at)
            for r in rows
        ]
        if not messages:
            return 0
        results = await asyncio.gather(*(self._attempt(m) for m in messages))
        await self._record(list(zip(messages, results, strict=True)))
        return len(messages)

    async def _attempt(self, message: Message) -> Result:
        try:
            return await self._send(message)
        except Exception as exc:  # a bug or an unexpected answer: retried, never lost
            return Result(Outcome.RETRY, f"{type(exc).__name__}: {exc}"[:500])

    async def _record(self, results: list[tuple[Message, Result]]) -> None:
        now = self._clock.now()
        async with self._sessions() as session, session.begin():
            for message, result in results:
                if result.outcome is Outcome.RETRY:
                    delay = backoff(message.attempts, base=self._base, cap=self._cap, rng=self._rng)
                    values: dict[str, Any] = {
                        "leased_until": None,
                        "next_attempt_at": now + timedelta(seconds=delay),
                        "last_error": result.error,
                    }
                    log.warning(
                        "%s queue: %s for case %s failed (attempt %d), next in %.1f s: %s",
                        self._channel,
                        message.kind,
                        message.case_id,
                        message.attempts,
                        delay,
                        result.error,
                    )
                else:
                    values = {
                        "leased_until": None,
                        "finished_at": now,
                        "outcome": result.outcome.value,
                        "last_error": result.error,
                    }
                    if result.outcome is Outcome.REJECTED:
                        log.error(
                            "%s queue: %s for case %s rejected: %s",
                            self._channel,
                            message.kind,
                            message.case_id,
                            result.error,
                        )
                await session.execute(
                    sa.update(queue).where(queue.c.id == message.id).values(values)
                )
                label = {Outcome.RETRY: "retried"}.get(result.outcome, result.outcome.value)
                self._metrics.outbound.labels(self._partner, self._channel, label).inc()

    async def _measure(self) -> None:
        try:
            async with self._sessions() as session:
                depth, oldest = (
                    await session.execute(
                        sa.select(sa.func.count(), sa.func.min(queue.c.created_at)).where(
                            queue.c.channel == self._channel, queue.c.finished_at.is_(None)
                        )
                    )
                ).one()
        except Exception as exc:  # the database is away: the gauges keep their last values
            log.warning("%s queue gauges not updated: %s", self._channel, type(exc).__name__)
            return
        age = (self._clock.now() - oldest).total_seconds() if oldest is not None else 0.0
        self._metrics.queue_depth.labels(self._partner, self._channel).set(depth)
        self._metrics.sync_lag.labels(self._partner, self._channel).set(max(0.0, age))
