"""Durable acceptance with group commit: concurrent submissions share one transaction.

A submission is a set of events to stage in the outbox plus, optionally, an idempotency claim (the
client's key and the answer to give for it). The committer takes everything queued, inserts the
claims (`ON CONFLICT DO NOTHING`), stages the events of the submissions whose claim was new, and
commits once; then each caller learns whether it was accepted or is a replay of an earlier
request. One commit per batch instead of one per request is what lets a single PostgreSQL keep up
with thousands of reports a second without giving up durability: nobody is answered before the
commit that holds their report. A batch without any claim is a single INSERT that commits on its
own: one round trip instead of three, and at moderate load most batches hold one or two reports.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from prometheus_client import Histogram

from libs.common.contract import Contract
from libs.common.db import HeldConnection
from libs.common.outbox import StagedRows, stage_events
from libs.common.runtime import Runtime
from libs.common.topics import Topic

log = logging.getLogger(__name__)

# run through asyncpg on each committer's own connection (libs.common.db.HeldConnection)
_CLAIM = """
    INSERT INTO idempotency (scope, key, fingerprint, status, response, created_at)
    SELECT s, k, f, st, r::jsonb, $1
    FROM unnest($2::text[], $3::text[], $4::text[], $5::int[], $6::text[]) AS t(s, k, f, st, r)
    ON CONFLICT DO NOTHING
    RETURNING scope, key
"""
_STORED = """
    SELECT i.scope, i.key, i.fingerprint, i.status, i.response::text AS response
    FROM idempotency i
    JOIN unnest($1::text[], $2::text[]) AS t(s, k) ON i.scope = t.s AND i.key = t.k
"""


@dataclass(frozen=True)
class Claim:
    """An idempotency key and the answer the first request with it gets."""

    scope: str
    key: str
    fingerprint: str
    status: int
    response: dict[str, Any]


@dataclass(frozen=True)
class Replay:
    """The key was used before: the stored answer, and whether the request was the same."""

    status: int
    response: dict[str, Any]
    same_request: bool


@dataclass(frozen=True)
class Staged:
    topic: Topic
    payload: Contract
    key: str


@dataclass
class _Submission:
    events: Sequence[Staged]
    claim: Claim | None
    future: asyncio.Future[Replay | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Acceptor:
    def __init__(self, *, runtime: Runtime, max_batch: int = 2000, committers: int = 2) -> None:
        self._runtime = runtime
        self._max_batch = max_batch
        self._committers = committers
        # a request's submissions travel as one group: committed together, in their order. A
        # deque and an event rather than an asyncio.Queue: a committer takes everything waiting
        # at once, with no getter future per group and no timer per wait
        self._waiting: collections.deque[list[_Submission]] = collections.deque()
        self._arrived = asyncio.Event()
        self._stopping = asyncio.Event()
        self.batch_sizes = Histogram(
            "gridflow_intake_commit_batch_size",
            "Submissions committed together in one transaction",
            buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000),
            registry=runtime.registry,
        )

    async def submit(self, events: Sequence[Staged], claim: Claim | None) -> Replay | None:
        """Durably accept `events` (None), or return the earlier answer for the claim's key."""
        if self._stopping.is_set():
            raise RuntimeError("intake is shutting down")
        submission = _Submission(events, claim)
        self._waiting.append([submission])
        self._arrived.set()
        return await submission.future

    async def submit_many(
        self, items: Sequence[tuple[Sequence[Staged], Claim | None]]
    ) -> list[Replay | None]:
        if self._stopping.is_set():
            raise RuntimeError("intake is shutting down")
        submissions = [_Submission(events, claim) for events, claim in items]
        self._waiting.append(submissions)
        self._arrived.set()
        return list(await asyncio.gather(*(s.future for s in submissions)))

    def stop(self) -> None:
        """Refuse new submissions; the committers commit what is waiting, then return."""
        self._stopping.set()
        self._arrived.set()

    async def run(self) -> None:
        await asyncio.gather(*(self._commit_loop() for _ in range(self._committers)))

    async def _commit_loop(self) -> None:
        # each committer keeps a connection: no pool round trip per commit
        connection = HeldConnection(self._runtime.engine)
        try:
            await self._commit_rounds(connection)
        finally:
            await connection.close()

    async def _commit_rounds(self, connection: HeldConnection) -> None:
        waiting = self._waiting
        while waiting or not self._stopping.is_set():
            if not waiting:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            batch = list(waiting.popleft())
            while waiting and len(batch) < self._max_batch:
                batch.extend(waiting.popleft())
            try:
                results = await self._commit(connection, batch)
            except Exception as exc:  # the callers answer 503; nothing of this batch was kept
                log.warning("commit of %d submissions failed: %s", len(batch), type(exc).__name__)
                for submission in batch:
                    if not submission.future.done():
                        submission.future.set_exception(exc)
                continue
            for submission, result in zip(batch, results, strict=True):
                if not submission.future.done():
                    submission.future.set_result(result)
            self.batch_sizes.observe(len(batch))
            self._runtime.relay.wake()

    async def _commit(
        self, connection: HeldConnection, batch: list[_Submission]
    ) -> list[Replay | None]:
        now = self._runtime.clock.now()
        if all(submission.claim is None for submission in batch):
            # no idempotency key to claim: the batch is one INSERT, which commits on its own.
            # Run twice (a stale connection), it inserts the same event ids, which the outbox
            # keeps once: no report is ever staged twice
            rows = StagedRows(
                [(s.topic, s.payload, s.key, now) for sub in batch for s in sub.events],
                source=self._runtime.source,
            )
            await connection.autocommit(rows.insert)
            return [None] * len(batch)
        async with connection.transaction() as conn:
            fresh = await self._claim(conn, batch, now)
            staged = [
                staged
                for index, submission in enumerate(batch)
                if index in fresh
                for staged in submission.events
            ]
            await stage_events(
                conn,
                events=[(s.topic, s.payload, s.key, now) for s in staged],
                source=self._runtime.source,
            )
            replays = await self._replays(conn, batch, fresh)
        return [None if index in fresh else replays[index] for index in range(len(batch))]

    async def _claim(
        self, conn: asyncpg.Connection, batch: list[_Submission], now: Any
    ) -> set[int]:
        """Indexes of the submissions that may stage their events (new key, or no key)."""
        fresh = {i for i, s in enumerate(batch) if s.claim is None}
        first_of: dict[tuple[str, str], int] = {}
        for index, submission in enumerate(batch):
            if submission.claim is not None:
                first_of.setdefault((submission.claim.scope, submission.claim.key), index)
        if not first_of:
            return fresh
        claims = [batch[i].claim for i in first_of.values()]
        rows = await conn.fetch(
            _CLAIM,
            now,
            [c.scope for c in claims if c],
            [c.key for c in claims if c],
            [c.fingerprint for c in claims if c],
            [c.status for c in claims if c],
            [json.dumps(c.response, ensure_ascii=False) for c in claims if c],
        )
        fresh.update(first_of[(row["scope"], row["key"])] for row in rows)
        return fresh

    async def _replays(
        self, conn: asyncpg.Connection, batch: list[_Submission], fresh: set[int]
    ) -> dict[int, Replay]:
        wanted = {i: s.claim for i, s in enumerate(batch) if i not in fresh and s.claim is not None}
        if not wanted:
            return {}
        rows = await conn.fetch(
            _STORED, [c.scope for c in wanted.values()], [c.key for c in wanted.values()]
        )
        stored = {(row["scope"], row["key"]): row for row in rows}
        replays = {}
        for index, claim in wanted.items():
            row = stored[(claim.scope, claim.key)]
            replays[index] = Replay(
                status=row["status"],
                response=json.loads(row["response"]),
                same_request=row["fingerprint"] == claim.fingerprint,
            )
        return replays
