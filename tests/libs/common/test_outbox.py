"""The transactional outbox against the real database and broker: staged events are published in
order and marked, rolled-back ones never leave, several relays publish each row once and never
overtake each other on a key, the gauges show an outbox that cannot drain, and a broker outage
(shorter than the producer's request timeout) loses nothing and duplicates nothing."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from deploy.embedded import EmbeddedBroker, start_broker
from libs.common.clock import FrozenClock
from libs.common.db import HeldConnection, create_engine, migrate, outbox, session_factory
from libs.common.envelope import Envelope, KafkaRecord, encode
from libs.common.kafka import Publisher, TopicNames, ensure_topics
from libs.common.outbox import (
    _DRAIN_LOCK_SPACE,
    _UNPUBLISHED,
    OutboxMetrics,
    OutboxRelay,
    _record,
    stage,
)
from libs.common.topics import CASES_SUBMITTED, Topic
from tests.factories import Isolation
from tests.harness import WAIT_SECONDS, TopicWatcher, until
from tests.libs.common.test_kafka import make_case_submitted

VERSIONS = Path(__file__).resolve().parents[3] / "services" / "intake" / "migrations"
SOURCE = "gridflow/test-outbox"
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


class WatchedPublisher(Publisher):
    """The real publisher, telling the test when the relay hands it a record (and optionally
    holding the relay at a gate just before it does)."""

    def __init__(
        self, *, bootstrap_servers: str, names: TopicNames, gate: asyncio.Event | None = None
    ) -> None:
        super().__init__(bootstrap_servers=bootstrap_servers, names=names, source=SOURCE)
        self.gate = gate
        self.at_gate = asyncio.Event()
        self.handed: list[str] = []
        self.drains: list[list[str]] = []  # the ids of each hand-over: one per drain
        self._changed = asyncio.Condition()

    async def hand_over(
        self, records: Sequence[tuple[Topic, KafkaRecord]]
    ) -> list[asyncio.Future[Any]]:
        if self.gate is not None:
            self.at_gate.set()
            await self.gate.wait()
        futures = await super().hand_over(records)
        async with self._changed:
            ids = [dict(record.headers)["ce_id"].decode() for _, record in records]
            self.handed.extend(ids)
            self.drains.append(ids)
            self._changed.notify_all()
        return futures

    async def wait_handed(self, ids: list[str]) -> None:
        async with asyncio.timeout(WAIT_SECONDS), self._changed:
            await self._changed.wait_for(lambda: set(ids) <= set(self.handed))


@dataclass
class Bench:
    isolation: Isolation
    schema: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    clock: FrozenClock
    names: TopicNames

    @property
    def topic(self) -> str:
        return self.names(CASES_SUBMITTED)

    async def create_topic(self, *, partitions: int, bootstrap: str | None = None) -> None:
        await ensure_topics(
            bootstrap_servers=bootstrap or self.isolation.kafka_bootstrap,
            names=[self.topic],
            partitions=partitions,
            replication_factor=1,
        )

    async def stage(self, *keys: str) -> list[Envelope]:
        """One committed transaction staging one event per key given (keys may repeat)."""
        async with self.sessions() as session, session.begin():
            return [await self.stage_in(session, key) for key in keys]

    async def stage_in(self, session: AsyncSession, key: str) -> Envelope:
        return await stage(
            session,
            topic=CASES_SUBMITTED,
            payload=make_case_submitted(case_id=key),
            key=key,
            source=SOURCE,
            now=self.clock.now(),
        )

    def relay(
        self,
        publisher: Publisher,
        *,
        metrics: OutboxMetrics | None = None,
        batch_size: int = 500,
        poll_interval: float = 0.02,
        linger: float = 0.0,
    ) -> OutboxRelay:
        return OutboxRelay(
            engine=self.engine,
            publisher=publisher,
            clock=self.clock,
            metrics=metrics or OutboxMetrics(CollectorRegistry()),
            batch_size=batch_size,
            poll_interval=poll_interval,
            linger=linger,
        )

    def publisher(self, *, bootstrap: str | None = None) -> WatchedPublisher:
        return WatchedPublisher(
            bootstrap_servers=bootstrap or self.isolation.kafka_bootstrap, names=self.names
        )

    def watcher(self, *, bootstrap: str | None = None, name: str = "watch") -> TopicWatcher:
        return TopicWatcher(
            bootstrap=bootstrap or self.isolation.kafka_bootstrap,
            topic=CASES_SUBMITTED,
            name=self.topic,
            group=f"{self.isolation.token}-{name}",
        )

    async def unpublished(self) -> int:
        async with self.sessions() as session:
            statement = sa.select(sa.func.count()).where(outbox.c.published_at.is_(None))
            return int((await session.execute(statement)).scalar_one())

    async def all_published(self) -> None:
        async def nothing_left() -> bool:
            return await self.unpublished() == 0

        await until(nothing_left)

    async def rows(self) -> list[tuple[str, datetime | None]]:
        """(event id, published at) of every row, in id order."""
        async with self.sessions() as session:
            statement = sa.select(outbox.c.event_id, outbox.c.published_at).order_by(outbox.c.id)
            return [(row.event_id, row.published_at) for row in await session.execute(statement)]


@pytest.fixture
async def bench(isolation: Isolation) -> AsyncIterator[Bench]:
    schema = isolation.schema("intake")
    await migrate(database_url=isolation.database_url, schema=schema, versions_dir=VERSIONS)
    engine = create_engine(isolation.database_url, schema=schema, pool_size=4)
    try:
        yield Bench(
            isolation=isolation,
            schema=schema,
            engine=engine,
            sessions=session_factory(engine),
            clock=FrozenClock(T0),
            names=TopicNames(isolation.topic_prefix),
        )
    finally:
        await engine.dispose()


@asynccontextmanager
async def started(publisher: Publisher) -> AsyncIterator[Publisher]:
    await publisher.start()
    try:
        yield publisher
    finally:
        await publisher.stop()


@asynccontextmanager
async def running(*relays: OutboxRelay) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(relay.run()) for relay in relays]
    try:
        yield
    finally:
        for relay in relays:
            relay.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), WAIT_SECONDS)


@contextmanager
def second_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of this test's own, so an outage hurts nobody else."""
    broker = start_broker(log_path=tmp_path / "outage-broker.log")
    try:
        yield broker
    finally:
        broker.stop()  # SIGKILL ends a stopped process too


def new_keys(count: int) -> list[str]:
    return [make_case_submitted().case_id for _ in range(count)]


async def seen_exactly_once(
    bench: Bench, watcher: TopicWatcher, staged: list[Envelope], keys: list[str]
) -> None:
    """Stage one last event per key and wait for them: every partition in use is then read past
    everything published before, so a duplicate could not hide behind the watcher's position."""
    last = await bench.stage(*keys)
    await bench.all_published()
    wanted = {e.id for e in last}
    await watcher.wait_for(lambda *_: wanted <= {e.id for e, _ in watcher.seen})
    seen = [e for e, _ in watcher.seen]
    counts = Counter(e.id for e in seen)
    assert [i for i, n in counts.items() if n > 1] == []  # no duplicates
    assert set(counts) == {e.id for e in staged + last}  # nothing lost, nothing foreign
    for key in keys:  # in staging order per key
        assert [e.id for e in seen if e.key == key] == [e.id for e in staged + last if e.key == key]


def sample(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name)
    assert value is not None, name
    return value


async def test_relay_publishes_staged_events_in_id_order_and_marks_them(bench: Bench) -> None:
    await bench.create_topic(partitions=1)  # one partition: the topic's order is the relay's order
    keys = new_keys(4)
    staged = await bench.stage(*keys) + await bench.stage(keys[0], keys[2], keys[0])
    bench.clock.advance(timedelta(seconds=2))
    registry = CollectorRegistry()
    async with (
        started(bench.publisher()) as publisher,
        bench.watcher() as watcher,
        running(bench.relay(publisher, metrics=OutboxMetrics(registry))),
    ):
        await watcher.wait_for(lambda e, _: e.id == staged[-1].id)
        await bench.all_published()

    # the very envelopes staged, in staging order, each once, with payloads that parse
    assert [e for e, _ in watcher.seen] == staged
    assert [p.model_dump(mode="json") for _, p in watcher.seen] == [e.data for e in staged]
    rows = await bench.rows()
    assert [event_id for event_id, _ in rows] == [e.id for e in staged]
    assert {published_at for _, published_at in rows} == {T0 + timedelta(seconds=2)}
    assert sample(registry, "gridflow_outbox_depth") == 0
    assert sample(registry, "gridflow_outbox_oldest_age_seconds") == 0
    assert sample(registry, "gridflow_outbox_publish_seconds_count") == len(staged)
    assert sample(registry, "gridflow_outbox_publish_seconds_sum") == 2.0 * len(staged)


async def test_a_commit_woken_during_a_drain_is_published_by_the_next_drain_at_once(
    bench: Bench,
) -> None:
    """After a drain that took all it saw, the relay waits for a wake or its poll; a commit that
    woke it while it was draining is published next, not a poll interval later."""
    await bench.create_topic(partitions=1)
    gate = asyncio.Event()
    publisher = WatchedPublisher(
        bootstrap_servers=bench.isolation.kafka_bootstrap, names=bench.names, gate=gate
    )
    relay = bench.relay(publisher, poll_interval=3600)  # only wakes move it in this test
    (key,) = new_keys(1)
    async with started(publisher), running(relay):
        first = await bench.stage(key)
        relay.wake()
        await asyncio.wait_for(publisher.at_gate.wait(), WAIT_SECONDS)  # it is draining `first`
        second = await bench.stage(key)
        relay.wake()
        gate.set()
        await publisher.wait_handed([e.id for e in first + second])
        await bench.all_published()


async def test_commits_made_while_the_relay_lingers_are_published_by_one_drain(
    bench: Bench,
) -> None:
    """With a linger, drains start at least that long apart: the commits that woke the relay
    meanwhile go out together in the next drain, not in one drain each (at 500 reports/s that
    was a drain of ~3 events per commit, most of intake's and PostgreSQL's CPU per report)."""
    await bench.create_topic(partitions=1)
    publisher = bench.publisher()
    # the linger is long enough for five small commits on a busy machine; only wakes move it
    relay = bench.relay(publisher, poll_interval=3600, linger=2.0)
    keys = new_keys(6)
    async with started(publisher), running(relay):
        first = await bench.stage(keys[0])
        relay.wake()
        await publisher.wait_handed([first[0].id])
        later = []
        for key in keys[1:]:
            later += await bench.stage(key)
            relay.wake()
        await publisher.wait_handed([e.id for e in later])
        await bench.all_published()
    assert publisher.drains == [[first[0].id], [e.id for e in later]]


async def test_a_rolled_back_transaction_publishes_nothing(bench: Bench) -> None:
    await bench.create_topic(partitions=1)
    (key,) = new_keys(1)
    with pytest.raises(RuntimeError, match="refused after staging"):
        async with bench.sessions() as session, session.begin():
            rolled_back = await bench.stage_in(session, key)
            raise RuntimeError("the case was refused after staging")
    (kept,) = await bench.stage(key)  # same key, same partition, after the rolled-back one
    async with (
        started(bench.publisher()) as publisher,
        bench.watcher() as watcher,
        running(bench.relay(publisher)),
    ):
        await watcher.wait_for(lambda e, _: e.id == kept.id)
        await bench.all_published()

    assert [e.id for e, _ in watcher.seen] == [kept.id]
    assert rolled_back.id != kept.id
    assert [event_id for event_id, _ in await bench.rows()] == [kept.id]


async def test_two_relays_publish_every_row_exactly_once_in_order_per_key(bench: Bench) -> None:
    await bench.create_topic(partitions=4)
    keys = new_keys(4)
    staged = [e for _ in range(5) for e in await bench.stage(*keys)]
    registries = [CollectorRegistry(), CollectorRegistry()]
    async with (
        started(bench.publisher()) as one,
        started(bench.publisher()) as two,
        bench.watcher() as watcher,
        running(
            bench.relay(one, metrics=OutboxMetrics(registries[0]), batch_size=3),
            bench.relay(two, metrics=OutboxMetrics(registries[1]), batch_size=3),
        ),
    ):
        for _ in range(5):  # more while both relays run
            staged += await bench.stage(*keys)
        await bench.all_published()
        await seen_exactly_once(bench, watcher, staged, keys)

    marked = [sample(r, "gridflow_outbox_publish_seconds_count") for r in registries]
    assert sum(marked) == len(staged) + len(keys)  # each row marked by exactly one relay


async def test_a_relay_never_overtakes_another_on_the_same_key(bench: Bench) -> None:
    await bench.create_topic(partitions=1)
    (key,) = new_keys(1)
    (first,) = await bench.stage(key)
    (second,) = await bench.stage(key)
    gate = asyncio.Event()
    slow = WatchedPublisher(
        bootstrap_servers=bench.isolation.kafka_bootstrap, names=bench.names, gate=gate
    )
    async with started(slow), started(bench.publisher()) as fast, bench.watcher() as watcher:
        async with running(bench.relay(slow, batch_size=1)):
            try:
                # relay A has claimed the first event and is about to hand it to the broker
                await asyncio.wait_for(slow.at_gate.wait(), WAIT_SECONDS)
                other = bench.relay(fast)
                assert await other.drain_once() == 0  # B must not publish the second
                await other.close()
            finally:
                gate.set()
            await bench.all_published()
        await watcher.wait_for(lambda e, _: e.id == second.id)

    assert [e.id for e, _ in watcher.seen] == [first.id, second.id]


async def test_gauges_show_an_outbox_that_cannot_drain_and_return_to_zero(bench: Bench) -> None:
    await bench.create_topic(partitions=1)
    (key,) = new_keys(1)
    async with bench.sessions() as session, session.begin():  # a row no relay can publish
        await session.execute(
            sa.insert(outbox).values(
                topic="retired.topic",
                key=key,
                event_id="E-left-by-an-older-version",
                event_type="gridflow.retired",
                source=SOURCE,
                event_time=T0,
                data={},
                created_at=T0,
            )
        )
    staged = await bench.stage(*new_keys(2))
    bench.clock.advance(timedelta(seconds=90))
    registry = CollectorRegistry()

    async def stuck() -> bool:
        return sample(registry, "gridflow_outbox_depth") == 3

    async with (
        started(bench.publisher()) as publisher,
        bench.watcher() as watcher,
        running(bench.relay(publisher, metrics=OutboxMetrics(registry))),
    ):
        await until(stuck, within=10)  # the relay fails on every try, and the gauges say so
        assert sample(registry, "gridflow_outbox_oldest_age_seconds") == 90
        assert await bench.unpublished() == 3
        async with bench.sessions() as session, session.begin():  # an operator removes it
            await session.execute(sa.delete(outbox).where(outbox.c.topic == "retired.topic"))
        await bench.all_published()
        await watcher.wait_for(lambda e, _: e.id == staged[-1].id)

    assert [e.id for e, _ in watcher.seen] == [e.id for e in staged]
    assert sample(registry, "gridflow_outbox_depth") == 0
    assert sample(registry, "gridflow_outbox_oldest_age_seconds") == 0


async def test_a_broker_outage_keeps_the_rows_and_publishes_each_once_after(
    bench: Bench, tmp_path: Path
) -> None:
    with second_broker(tmp_path) as broker:
        bootstrap = broker.bootstrap_servers
        await bench.create_topic(partitions=4, bootstrap=bootstrap)
        keys = new_keys(3)
        publisher = bench.publisher(bootstrap=bootstrap)
        async with started(publisher), running(bench.relay(publisher)):
            before = await bench.stage(*keys)
            await bench.all_published()
            # shorter than the producer's 15 s request timeout: a longer outage makes the relay
            # retry a batch the broker still appends on resume, i.e. duplicates (at-least-once)
            broker.process.send_signal(signal.SIGSTOP)
            try:
                during = await bench.stage(*keys, *keys)
                # the relay has handed them to the producer and waits for acks that cannot come
                await publisher.wait_handed([e.id for e in during])
                assert await bench.unpublished() == len(during)
                more = await bench.stage(*keys)  # staging goes on while the relay holds its rows
                assert await bench.unpublished() == len(during) + len(more)
            finally:
                broker.process.send_signal(signal.SIGCONT)
            await bench.all_published()
            async with bench.watcher(bootstrap=bootstrap) as watcher:
                await seen_exactly_once(bench, watcher, before + during + more, keys)


async def test_the_relay_sends_each_row_as_encode_would_send_its_envelope(bench: Bench) -> None:
    """The relay encodes rows without building envelopes, with the time formatted by PostgreSQL:
    key and headers byte for byte those `encode` makes of the staged envelope, whatever the zone
    and the microseconds of its time."""
    times = [
        datetime(2026, 3, 2, 17, 30, 0, 5, tzinfo=timezone(timedelta(hours=8))),
        datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2026, 7, 1, 0, 0, tzinfo=UTC),
    ]
    keys = new_keys(len(times))
    async with bench.sessions() as session, session.begin():
        staged = [
            await stage(
                session,
                topic=CASES_SUBMITTED,
                payload=make_case_submitted(case_id=key),
                key=key,
                source=SOURCE,
                now=moment,
            )
            for key, moment in zip(keys, times, strict=True)
        ]
    connection = HeldConnection(bench.engine)
    try:
        async with connection.transaction() as driver:
            rows = await driver.fetch(_UNPUBLISHED, 10, _DRAIN_LOCK_SPACE)
    finally:
        await connection.close()
    records, expected = [_record(row) for row in rows], [encode(e) for e in staged]
    assert [(r.key, r.headers) for r in records] == [(r.key, r.headers) for r in expected]
    # the data as PostgreSQL stores it (jsonb: its own key order), the same JSON
    assert [json.loads(r.value) for r in records] == [json.loads(r.value) for r in expected]
