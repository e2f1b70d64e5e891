"""Transactional outbox: an event is staged in the same transaction as the state it describes, and
a relay publishes staged events in id order, marking them only after the broker acknowledged.

Several relays may run (one per instance), but one at a time drains an outbox (a transaction-level
advisory lock on it): two draining together would publish one key's events out of order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime

import asyncpg
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Gauge, Histogram
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from libs.common.clock import Clock
from libs.common.contract import Contract
from libs.common.db import HeldConnection, Write, driver_of, execute_writes, outbox
from libs.common.envelope import Envelope, KafkaRecord, encode_stored
from libs.common.kafka import Publisher
from libs.common.pacing import Pacer
from libs.common.topics import CATALOGUE, Topic, build_envelope

log = logging.getLogger(__name__)
_TOPICS = {topic.name: topic for topic in CATALOGUE}
# The next rows to publish, if this transaction gets the drain lock (none if another relay
# holds it): one round trip for both. The lock's key is this schema's outbox table
# (search_path), so services sharing a database never wait on each other. The data as text:
# published as it is, never decoded and encoded again; no row locks: the advisory lock makes
# this the only drainer.
_UNPUBLISHED = """
    WITH drainer AS MATERIALIZED (
        SELECT pg_try_advisory_xact_lock($2, 'outbox'::regclass::oid::int) AS held
    )
    SELECT id, topic, key, event_id, event_type, source, created_at, data::text AS data_text,
        to_char(event_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS time_text
    FROM outbox, drainer WHERE drainer.held AND published_at IS NULL ORDER BY id LIMIT $1
"""
_PUBLISHED = "UPDATE outbox SET published_at = $1 WHERE id = ANY($2::bigint[])"
_DEPTH = "SELECT count(*), min(created_at) FROM outbox WHERE published_at IS NULL"
_DRAIN_LOCK_SPACE = 0x6F757462  # "outb"


async def stage(
    session: AsyncSession,
    *,
    topic: Topic,
    payload: Contract,
    key: str,
    source: str,
    now: datetime,
) -> Envelope:
    envelope = build_envelope(topic, payload, source=source, key=key, now=now)
    await session.execute(
        sa.insert(outbox).values(
            topic=topic.name,
            key=key,
            event_id=envelope.id,
            event_type=envelope.type,
            source=envelope.source,
            event_time=envelope.time,
            data=envelope.data,
            created_at=now,
        )
    )
    return envelope


# many events in one statement of arrays, the data as JSON text (pydantic's serializer, cast by
# PostgreSQL): no per-row parameter processing on the way
_STAGE_MANY_SQL = """
    INSERT INTO outbox (topic, key, event_id, event_type, source, event_time, data, created_at)
    SELECT tp, k, i, ty, $1, ti, d::jsonb, ti
    FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::text[])
         WITH ORDINALITY AS t(tp, k, i, ty, ti, d, n)
    ORDER BY n
"""


async def stage_many(
    session: AsyncSession | asyncpg.Connection,
    *,
    topic: Topic,
    events: Sequence[tuple[Contract, str, datetime]],
    source: str,
) -> list[Envelope]:
    """`stage` for many events (payload, key, time) in one statement; they are published in the
    order given (the outbox ids follow it), so give each key's events in their order."""
    return await stage_events(
        session, events=[(topic, payload, key, at) for payload, key, at in events], source=source
    )


async def stage_events(
    session: AsyncSession | asyncpg.Connection,
    *,
    events: Sequence[tuple[Topic, Contract, str, datetime]],
    source: str,
) -> list[Envelope]:
    """`stage_many` for events of several topics (topic, payload, key, time), in the order given
    (in the session's transaction, or straight through an asyncpg connection in a transaction)."""
    staged = StagedRows(events, source=source)
    if staged.envelopes:
        await staged.insert(await driver_of(session))
    return staged.envelopes


class StagedRows:
    """Events made into outbox rows once (their envelopes, with their event ids), to be inserted
    in one statement: inserted twice, the second insert fails on the event ids instead of
    staging the events again."""

    def __init__(
        self, events: Sequence[tuple[Topic, Contract, str, datetime]], *, source: str
    ) -> None:
        self.source = source
        self.envelopes = [
            build_envelope(topic, payload, source=source, key=key, now=at, as_text=True)
            for topic, payload, key, at in events
        ]
        self._columns = (
            [topic.name for topic, _, _, _ in events],
            [e.key for e in self.envelopes],
            [e.id for e in self.envelopes],
            [e.type for e in self.envelopes],
            [e.time for e in self.envelopes],
            [e.data.text for e in self.envelopes],
        )

    @property
    def write(self) -> Write:
        """The insert, to be sent on its own (`insert`) or with other writes (`execute_writes`)."""
        return _STAGE_MANY_SQL, [self.source, *self._columns]

    async def insert(self, driver: asyncpg.Connection) -> None:
        await execute_writes(driver, [self.write])


class OutboxMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.depth = Gauge(
            "gridflow_outbox_depth", "Events staged but not yet published", registry=registry
        )
        self.age = Gauge(
            "gridflow_outbox_oldest_age_seconds",
            "Age of the oldest unpublished event (0 when empty)",
            registry=registry,
        )
        self.publish_seconds = Histogram(
            "gridflow_outbox_publish_seconds",
            "Time from staging an event to the broker's acknowledgement",
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )


class OutboxRelay:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        publisher: Publisher,
        clock: Clock,
        metrics: OutboxMetrics,
        batch_size: int = 500,
        poll_interval: float = 0.5,
        linger: float = 0.0,
    ) -> None:
        # the relay keeps a connection: no pool round trip per round, statements through asyncpg
        self._connection = HeldConnection(engine)
        self._engine = engine
        self._publisher = publisher
        self._clock = clock
        self._metrics = metrics
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._pacer = Pacer(linger)
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        failures = 0
        # the gauges on their own beat and connection: a drain waiting for a broker that does not
        # answer (paused, partitioned) must not keep them at their last value
        measuring = asyncio.create_task(self._measure_every(1.0), name="outbox-gauges")
        try:
            while not self._stopping.is_set():
                # drains start at least `linger` apart: under load, one drain publishes what
                # several commits staged, instead of one drain (four round trips to PostgreSQL
                # and one to the broker) per commit; a lone commit is published at once
                await self._pacer.next_round()
                # cleared before the drain: a commit during it (or the linger) wakes the next
                self._wake.clear()
                try:
                    published = await self.drain_once()
                    failures = 0
                except Exception as exc:  # broker or database away: keep the rows, retry later
                    failures += 1
                    log.warning(
                        "outbox relay failed (%d in a row): %s", failures, type(exc).__name__
                    )
                    published = 0
                if failures:
                    await asyncio.sleep(min(5.0, 0.2 * 2**failures))
                if published < self._batch_size:
                    # it took all there was: no second drain to find nothing (at a few reports
                    # a second, that empty round was as many round trips as the drain itself)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=self._poll_interval)
        finally:
            measuring.cancel()
            await asyncio.gather(measuring, return_exceptions=True)
            await self._measure()  # the gauges say how the relay left the outbox
            await self.close()

    async def _measure_every(self, seconds: float) -> None:
        while True:
            await self._measure()
            await asyncio.sleep(seconds)

    async def close(self) -> None:
        """Give back the relay's connection (`run` does when it stops)."""
        await self._connection.close()

    async def drain_once(self) -> int:
        async with self._connection.transaction() as driver:
            rows = await driver.fetch(_UNPUBLISHED, self._batch_size, _DRAIN_LOCK_SPACE)
            if not rows:
                return 0  # nothing to publish, or another relay is draining this outbox
            records = []
            for index, row in enumerate(rows):
                records.append((_TOPICS[row["topic"]], _record(row)))
                if index % 100 == 99:
                    await asyncio.sleep(0)  # let requests in between: a batch is CPU work
            await self._publisher.send_records(records)
            now = self._clock.now()
            await driver.execute(_PUBLISHED, now, [row["id"] for row in rows])
            for row in rows:
                self._metrics.publish_seconds.observe((now - row["created_at"]).total_seconds())
            return len(rows)

    async def _measure(self) -> None:
        try:
            async with self._engine.connect() as conn:
                depth, oldest = (await conn.execute(sa.text(_DEPTH))).one()
        except Exception as exc:  # the database is away: the gauges keep their last values
            log.warning("outbox gauges not updated: %s", type(exc).__name__)
            return
        self._metrics.depth.set(depth)
        age = (self._clock.now() - oldest).total_seconds() if oldest is not None else 0.0
        self._metrics.age.set(max(0.0, age))


def _record(row: asyncpg.Record) -> KafkaRecord:
    """The Kafka record of a staged event (the envelope `stage` built, as `encode` writes it)."""
    return encode_stored(
        id=row["event_id"],
        source=row["source"],
        type=row["event_type"],
        time=row["time_text"],
        key=row["key"],
        data=row["data_text"],
    )
