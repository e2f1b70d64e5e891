"""The consumer loop against the real broker: commit after the handler, bounded retries, dead letters
with the original coordinates, poison records that never reach the handler, and graceful stop."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import json
import random
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from prometheus_client import CollectorRegistry

from libs.common.clock import FrozenClock
from libs.common.envelope import Envelope, encode
from libs.common.events import (
    CaseSubmitted,
    Category,
    DeadLetter,
    Location,
    Reporter,
    Source,
    Urgency,
)
from libs.common.ids import new_case_id
from libs.common.kafka import (
    ConsumerLoop,
    ConsumerMetrics,
    Delivery,
    Handler,
    Publisher,
    TopicNames,
    dependency_unavailable,
    ensure_topics,
    murmur2,
    partition_for,
)
from libs.common.topics import CASES_SUBMITTED, DEADLETTER
from services.intake.settings import IntakeSettings
from tests.factories import UNIT_GRID, Isolation, make_intake_settings
from tests.harness import WAIT_SECONDS, TopicWatcher, until

T = TypeVar("T")
SOURCE = "gridflow/test-kafka"
ATTEMPTS = 3


def make_case_submitted(**overrides: Any) -> CaseSubmitted:
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "case_id": new_case_id(now),
        "source": Source.GRID_WORKER,
        "category": Category(code="city.garbage"),
        "urgency": Urgency.ROUTINE,
        "title": "路边暴露垃圾",
        "description": "人民路与解放路交叉口东北角有一堆生活垃圾未清运。",
        "location": Location(unit_grid=UNIT_GRID, address="人民路 12 号旁"),
        "reporter": Reporter(kind="grid_worker", worker_id="W0001"),
        "occurred_at": now - timedelta(minutes=5),
        "reported_at": now,
    }
    values.update(overrides)
    return CaseSubmitted.model_validate(values)


class Calls:
    """What a handler was given, in order; tests wait on it instead of sleeping."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._changed = asyncio.Condition()

    async def add(self, delivery: Delivery) -> None:
        async with self._changed:
            self.deliveries.append(delivery)
            self._changed.notify_all()

    @property
    def ids(self) -> list[str]:
        return [d.envelope.id for d in self.deliveries]

    async def wait_for_id(self, event_id: str) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: event_id in self.ids)

    async def wait_for_count(self, count: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.deliveries) >= count)


async def unless_crashed(waiting: Awaitable[T], task: asyncio.Task[None]) -> T:
    """Wait for `waiting`, but fail at once (with its error) if the consumer loop ends first."""
    waiter = asyncio.ensure_future(waiting)
    done, _ = await asyncio.wait(
        {waiter, task}, timeout=WAIT_SECONDS, return_when=asyncio.FIRST_COMPLETED
    )
    if waiter in done:
        return waiter.result()
    waiter.cancel()
    if task in done:
        task.result()  # re-raises what stopped the loop
        raise AssertionError("the consumer loop returned while the test was waiting")
    raise TimeoutError(f"nothing happened within {WAIT_SECONDS} s")


@asynccontextmanager
async def running(loop: ConsumerLoop) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(loop.run())
    try:
        yield task
    finally:
        loop.stop()
        await asyncio.wait_for(task, WAIT_SECONDS)


@dataclass
class Bench:
    isolation: Isolation
    settings: IntakeSettings
    names: TopicNames
    publisher: Publisher
    admin: AIOKafkaAdminClient
    clock: FrozenClock
    registry: CollectorRegistry
    metrics: ConsumerMetrics
    group: str

    @property
    def topic(self) -> str:
        return self.names(CASES_SUBMITTED)

    def consumer(self, handler: Handler) -> ConsumerLoop:
        return ConsumerLoop(
            settings=self.settings,
            topic=CASES_SUBMITTED,
            group_id=self.group,
            handler=handler,
            publisher=self.publisher,
            clock=self.clock,
            metrics=self.metrics,
            names=self.names,
        )

    async def publish(self) -> Envelope:
        payload = make_case_submitted()
        return await self.publisher.publish(
            CASES_SUBMITTED, payload, key=payload.case_id, now=self.clock.now()
        )

    async def committed(self) -> int:
        """The group's committed offset on the topic's only partition (-1: none yet)."""
        tp = TopicPartition(self.topic, 0)
        offsets = await self.admin.list_consumer_group_offsets(self.group, partitions=[tp])
        return int(offsets[tp].offset)

    def count(self, outcome: str) -> float:
        value = self.registry.get_sample_value(
            "gridflow_consumer_records_total", {"topic": CASES_SUBMITTED.name, "outcome": outcome}
        )
        return value or 0.0

    def dead_letters(self) -> TopicWatcher:
        return TopicWatcher(
            bootstrap=self.isolation.kafka_bootstrap,
            topic=DEADLETTER,
            name=self.names(DEADLETTER),
            group=f"{self.isolation.token}-deadletter-watch",
        )


@pytest.fixture
async def bench(isolation: Isolation) -> AsyncIterator[Bench]:
    # Tansu makes a member rejoining a group it just left wait 2 x the session timeout (measured:
    # 4.1 s at 2000 ms, 1 s at 1000 ms); the restart tests rejoin, so take the shortest allowed
    settings = make_intake_settings(
        isolation,
        kafka_handler_attempts=ATTEMPTS,
        kafka_session_timeout_ms=1000,
        kafka_heartbeat_interval_ms=100,
    )
    names = TopicNames(settings.topic_prefix)
    # one partition: "the next record" and "seen again" have a single, deterministic order
    await ensure_topics(
        bootstrap_servers=isolation.kafka_bootstrap,
        names=[names(CASES_SUBMITTED), names(DEADLETTER)],
        partitions=1,
        replication_factor=1,
    )
    publisher = Publisher(bootstrap_servers=isolation.kafka_bootstrap, names=names, source=SOURCE)
    admin = AIOKafkaAdminClient(bootstrap_servers=isolation.kafka_bootstrap)
    await publisher.start()
    await admin.start()
    registry = CollectorRegistry()
    try:
        yield Bench(
            isolation=isolation,
            settings=settings,
            names=names,
            publisher=publisher,
            admin=admin,
            clock=FrozenClock(datetime(2026, 3, 2, 9, 30, tzinfo=UTC)),
            registry=registry,
            metrics=ConsumerMetrics(registry),
            group=f"{isolation.token}-consumer",
        )
    finally:
        await admin.close()
        await publisher.stop()


async def test_each_record_is_handled_once_and_committed_only_after_its_handler(
    bench: Bench,
) -> None:
    first = [await bench.publish() for _ in range(3)]
    calls = Calls()
    committed_while_handling: list[int] = []

    async def handler(delivery: Delivery) -> None:
        committed_while_handling.append(await bench.committed())
        await calls.add(delivery)

    async with running(bench.consumer(handler)) as task:
        await unless_crashed(calls.wait_for_count(3), task)

    assert calls.ids == [e.id for e in first]
    assert [d.offset for d in calls.deliveries] == [0, 1, 2]
    # while record k is in the handler, the group has committed exactly up to k (nothing for k=0)
    assert committed_while_handling == [-1, 1, 2]
    assert await bench.committed() == 3
    assert bench.count("ok") == 3

    later = await bench.publish()
    again = Calls()
    async with running(bench.consumer(again.add)) as task:
        await unless_crashed(again.wait_for_count(1), task)
    # the same group resumes after the committed records: the first thing it sees is the new one
    assert again.ids == [later.id]


async def test_a_record_that_fails_fewer_times_than_allowed_is_retried_then_handled(
    bench: Bench,
) -> None:
    flaky, steady = await bench.publish(), await bench.publish()
    tries: dict[str, int] = {}
    calls = Calls()

    async def handler(delivery: Delivery) -> None:
        tries[delivery.envelope.id] = tries.get(delivery.envelope.id, 0) + 1
        if delivery.envelope.id == flaky.id and tries[flaky.id] < ATTEMPTS:
            raise ConnectionError("the database went away for a moment")
        await calls.add(delivery)

    async with running(bench.consumer(handler)) as task:
        await unless_crashed(calls.wait_for_id(steady.id), task)

    assert calls.ids == [flaky.id, steady.id]
    assert tries == {flaky.id: ATTEMPTS, steady.id: 1}
    assert bench.count("retried") == ATTEMPTS - 1
    assert bench.count("ok") == 2
    assert bench.count("dead_lettered") == 0
    assert await bench.committed() == 2


async def test_a_record_that_always_fails_is_dead_lettered_after_the_last_attempt(
    bench: Bench,
) -> None:
    poison, steady = await bench.publish(), await bench.publish()
    tries: list[str] = []
    calls = Calls()

    async def handler(delivery: Delivery) -> None:
        tries.append(delivery.envelope.id)
        if delivery.envelope.id == poison.id:
            raise RuntimeError("department system said no")
        await calls.add(delivery)

    async with bench.dead_letters() as letters, running(bench.consumer(handler)) as task:
        await unless_crashed(calls.wait_for_id(steady.id), task)  # the loop went on
        envelope, letter = await letters.wait_for(lambda _, p: True)

    assert tries == [poison.id] * ATTEMPTS + [steady.id]
    record = encode(poison)
    assert isinstance(letter, DeadLetter)
    assert letter == DeadLetter(
        service=SOURCE,
        consumer_group=bench.group,
        topic=bench.topic,
        partition=0,
        offset=0,
        error="RuntimeError: department system said no",
        attempts=ATTEMPTS,
        failed_at=bench.clock.now(),
        original_key=poison.key,
        original_headers={name: value.decode() for name, value in record.headers},
        original_value=base64.b64encode(record.value).decode(),
        original_event_id=poison.id,
    )
    assert base64.b64decode(letter.original_value) == record.value
    assert envelope.key == poison.key  # dead letters keep the original record's key
    assert bench.count("retried") == ATTEMPTS - 1
    assert bench.count("dead_lettered") == 1
    assert bench.count("ok") == 1
    assert await bench.committed() == 2


async def test_a_record_whose_database_is_away_waits_for_it_past_every_attempt_and_is_handled(
    bench: Bench,
) -> None:
    """`make faults` (PostgreSQL restarted under load) found dispatch dead-lettering good cases:
    the database away for seconds outlasted the handler's attempts. Now it is waited for."""
    first, second = await bench.publish(), await bench.publish()
    tries: dict[str, int] = {}
    calls = Calls()

    async def handler(delivery: Delivery) -> None:
        tries[delivery.envelope.id] = tries.get(delivery.envelope.id, 0) + 1
        if delivery.envelope.id == first.id and tries[first.id] <= ATTEMPTS + 2:
            # what asyncpg raises while the server's Unix socket is gone
            raise FileNotFoundError(2, "No such file or directory")
        await calls.add(delivery)

    async with running(bench.consumer(handler)) as task:
        await unless_crashed(calls.wait_for_id(second.id), task)

    assert calls.ids == [first.id, second.id]
    assert tries == {first.id: ATTEMPTS + 3, second.id: 1}
    assert bench.count("dead_lettered") == 0
    assert await bench.committed() == 2


class _PostgresError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


class _InvalidatedError(Exception):
    connection_invalidated = True


def _raised_from(cause: BaseException) -> RuntimeError:
    try:
        raise RuntimeError("wrapped") from cause
    except RuntimeError as exc:
        return exc


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (FileNotFoundError(2, "No such file or directory"), True),  # the socket is gone
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (_PostgresError("57P01"), True),  # admin shutdown
        (_PostgresError("57P03"), True),  # cannot connect now (starting up)
        (_PostgresError("08006"), True),  # connection failure
        (_InvalidatedError(), True),
        (_raised_from(ConnectionResetError()), True),
        (asyncpg.InterfaceError("connection is closed"), True),  # its server went away
        (_PostgresError("23505"), False),  # unique violation: the record's own doing
        (
            asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
            False,
        ),
        (RuntimeError("department system said no"), False),
        (ValueError("bad payload"), False),
    ],
)
def test_dependency_unavailable_tells_an_absent_server_from_a_failing_record(
    error: BaseException, unavailable: bool
) -> None:
    assert dependency_unavailable(error) is unavailable


def _undecodable(valid: Envelope) -> Iterator[tuple[str, bytes, list[tuple[str, bytes | None]]]]:
    """(what the error names, value, headers) of records that never become a typed payload."""
    record = encode(valid)
    headers: list[tuple[str, bytes | None]] = list(record.headers)
    yield (
        "ce_id",
        record.value,
        [("content-type", b"application/json")],
    )
    yield "JSON", b"\x00\xff not json", headers
    foreign = encode(dataclasses.replace(valid, type="gridflow.case.lifecycle"))
    yield (
        "gridflow.case.lifecycle",
        foreign.value,
        list(foreign.headers),
    )
    broken = encode(dataclasses.replace(valid, data={**valid.data, "case_id": "not-a-case-id"}))
    yield "case_id", broken.value, list(broken.headers)
    yield "traceparent", record.value, [*headers, ("traceparent", None)]


async def test_undecodable_records_are_dead_lettered_at_once_and_never_reach_the_handler(
    bench: Bench,
) -> None:
    payload = make_case_submitted()
    template = Envelope(
        id="E01JDQ7Y8XW2N3K4M5P6Q7R8S9T",
        source="gridflow/somebody-else",
        type="gridflow.case.submitted",
        time=bench.clock.now(),
        data=payload.model_dump(mode="json"),
        subject=payload.case_id,
        key=payload.case_id,
    )
    bad = list(_undecodable(template))
    producer = AIOKafkaProducer(bootstrap_servers=bench.isolation.kafka_bootstrap)
    await producer.start()
    try:
        for _, value, headers in bad:
            await producer.send_and_wait(
                bench.topic, value=value, key=payload.case_id.encode(), headers=headers
            )
    finally:
        await producer.stop()
    valid = await bench.publish()
    calls = Calls()

    async with bench.dead_letters() as letters, running(bench.consumer(calls.add)) as task:
        await unless_crashed(calls.wait_for_id(valid.id), task)
        await letters.wait_for(lambda _, p: isinstance(p, DeadLetter) and p.offset == len(bad) - 1)

    assert calls.ids == [valid.id]  # the handler only ever saw the one good record
    found = sorted(
        (p for _, p in letters.seen if isinstance(p, DeadLetter)), key=lambda p: p.offset
    )
    assert [p.offset for p in found] == list(range(len(bad)))
    for letter, (error, value, headers) in zip(found, bad, strict=True):
        assert letter.error.startswith("undecodable: "), letter.error
        assert error in letter.error, letter.error
        assert letter.attempts == 1
        assert letter.original_event_id is None
        assert letter.original_key == payload.case_id
        assert base64.b64decode(letter.original_value) == value
        assert set(letter.original_headers) == {name for name, _ in headers}
    assert found[0].original_headers == {"content-type": "application/json"}
    assert found[-1].original_headers["traceparent"] == ""  # a null header value
    assert json.loads(base64.b64decode(found[0].original_value)) == payload.model_dump(mode="json")
    assert bench.count("dead_lettered") == len(bad)
    assert bench.count("ok") == 1
    assert await bench.committed() == len(bad) + 1


async def test_stop_lets_the_record_in_hand_finish_and_commit_before_run_returns(
    bench: Bench,
) -> None:
    in_hand, next_one = await bench.publish(), await bench.publish()
    entered, release = asyncio.Event(), asyncio.Event()
    finished: list[str] = []

    async def slow(delivery: Delivery) -> None:
        entered.set()
        await release.wait()
        finished.append(delivery.envelope.id)

    loop = bench.consumer(slow)
    task = asyncio.create_task(loop.run())
    try:
        await unless_crashed(entered.wait(), task)
        loop.stop()
        release.set()
        await asyncio.wait_for(task, WAIT_SECONDS)  # run() returns once the record is done
    finally:
        release.set()
        loop.stop()
        await asyncio.wait_for(task, WAIT_SECONDS)

    assert finished == [in_hand.id]  # finished, not cancelled, and nothing fetched after stop
    assert await bench.committed() == 1
    again = Calls()
    async with running(bench.consumer(again.add)) as task:
        await unless_crashed(again.wait_for_count(1), task)
    assert again.ids == [next_one.id]


class Batches:
    """A batch handler: what `handle_batch` and the per-record call were given; `failing` ids
    make a batch holding one of them fail, and the record itself fail on its own too."""

    def __init__(self, bench: Bench, failing: frozenset[str] = frozenset()) -> None:
        self.bench = bench
        self.failing = failing
        self.batches: list[list[str]] = []
        self.committed_at_batch: list[int] = []
        self.one_by_one: list[str] = []
        self.handled = Calls()

    async def handle_batch(self, deliveries: Sequence[Delivery]) -> None:
        self.batches.append([d.envelope.id for d in deliveries])
        self.committed_at_batch.append(await self.bench.committed())
        if any(d.envelope.id in self.failing for d in deliveries):
            raise RuntimeError("one of them is bad")
        for delivery in deliveries:
            await self.handled.add(delivery)

    async def __call__(self, delivery: Delivery) -> None:
        self.one_by_one.append(delivery.envelope.id)
        if delivery.envelope.id in self.failing:
            raise RuntimeError("this one is bad")
        await self.handled.add(delivery)


async def test_a_batch_handler_gets_whole_fetches_and_offsets_are_committed_after_each(
    bench: Bench,
) -> None:
    published = [await bench.publish() for _ in range(5)]
    handler = Batches(bench)

    async with running(bench.consumer(handler)) as task:
        await unless_crashed(handler.handled.wait_for_count(5), task)

    assert [i for batch in handler.batches for i in batch] == [e.id for e in published]
    # when a batch starts, nothing of it is committed yet: offsets follow the handler's success
    starts = list(itertools.accumulate([0] + [len(b) for b in handler.batches[:-1]]))
    assert handler.committed_at_batch == [start or -1 for start in starts]
    assert handler.one_by_one == []
    assert await bench.committed() == 5
    assert bench.count("ok") == 5


async def test_a_batch_handler_s_batches_start_a_linger_apart_and_take_what_came_meanwhile(
    bench: Bench,
) -> None:
    """Records published one after another while the first is handled: the next batch starts
    no sooner than the linger after it, with every record that came in between."""
    linger = 0.3
    bench.settings = bench.settings.model_copy(update={"kafka_batch_linger_ms": 300})
    loop = asyncio.get_running_loop()
    starts: list[float] = []
    first_started = asyncio.Event()
    go_on = asyncio.Event()

    class Timed(Batches):
        async def handle_batch(self, deliveries: Sequence[Delivery]) -> None:
            starts.append(loop.time())
            first_started.set()
            await go_on.wait()
            await super().handle_batch(deliveries)

    handler = Timed(bench)
    published = [await bench.publish()]
    async with running(bench.consumer(handler)) as task:
        await unless_crashed(first_started.wait(), task)
        published += [await bench.publish() for _ in range(4)]
        go_on.set()
        await unless_crashed(handler.handled.wait_for_count(5), task)

    assert [i for batch in handler.batches for i in batch] == [e.id for e in published]
    assert handler.batches[0] == [published[0].id]
    assert all(later - earlier >= linger for earlier, later in itertools.pairwise(starts))
    # the four published while the first was handled came in one batch, not one each
    assert len(handler.batches) == 2


async def test_a_failing_batch_is_handled_one_by_one_and_only_its_poison_is_dead_lettered(
    bench: Bench,
) -> None:
    before = await bench.publish()
    poison = await bench.publish()
    after = await bench.publish()
    handler = Batches(bench, failing=frozenset({poison.id}))

    async with bench.dead_letters() as letters, running(bench.consumer(handler)) as task:
        await unless_crashed(handler.handled.wait_for_id(after.id), task)
        _, letter = await letters.wait_for(lambda _, p: isinstance(p, DeadLetter))

    assert handler.handled.ids == [before.id, after.id]  # neither lost nor blocked
    assert handler.one_by_one.count(poison.id) == ATTEMPTS
    assert isinstance(letter, DeadLetter)
    assert (letter.original_event_id, letter.offset, letter.attempts) == (poison.id, 1, ATTEMPTS)
    assert bench.count("dead_lettered") == 1
    assert bench.count("ok") == 2
    assert await bench.committed() == 3


async def test_an_undecodable_record_in_a_batch_is_dead_lettered_and_the_rest_batched(
    bench: Bench,
) -> None:
    first = await bench.publish()
    producer = AIOKafkaProducer(bootstrap_servers=bench.isolation.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(bench.topic, value=b"{not json", key=b"poison")
    finally:
        await producer.stop()
    last = await bench.publish()
    handler = Batches(bench)

    async with bench.dead_letters() as letters, running(bench.consumer(handler)) as task:
        await unless_crashed(handler.handled.wait_for_id(last.id), task)
        _, letter = await letters.wait_for(lambda _, p: isinstance(p, DeadLetter))

    assert handler.handled.ids == [first.id, last.id]
    assert handler.one_by_one == []  # the good records went in batches
    assert isinstance(letter, DeadLetter)
    assert letter.offset == 1 and letter.error.startswith("undecodable: ")
    assert await bench.committed() == 3


async def test_the_lag_gauge_shows_a_stuck_handler_and_returns_to_zero(bench: Bench) -> None:
    for _ in range(5):
        await bench.publish()
    entered, release = asyncio.Event(), asyncio.Event()

    async def stuck(_: Delivery) -> None:
        entered.set()
        await release.wait()

    def lag() -> float | None:
        labels = {"topic": CASES_SUBMITTED.name, "group": bench.group}
        return bench.registry.get_sample_value("gridflow_consumer_lag", labels)

    async def stuck_shows() -> bool:
        return lag() == 5  # nothing handled (committed) while the first record is in hand

    async def caught_up() -> bool:
        return lag() == 0

    loop = bench.consumer(stuck)
    async with running(loop) as task:
        await unless_crashed(entered.wait(), task)
        await until(stuck_shows)
        release.set()
        await until(caught_up)
    assert await bench.committed() == 5


# Kafka's own test vectors for Utils.murmur2 (signed Java ints)
MURMUR2_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("data", "expected"), MURMUR2_VECTORS.items())
def test_murmur2_matches_the_java_client(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected & 0xFFFFFFFF


def test_murmur2_and_the_partitioner_agree_with_aiokafka_for_every_length() -> None:
    chooser = random.Random(7)
    partitions = list(range(12))
    for length in range(64):
        for _ in range(50):
            data = chooser.randbytes(length)
            assert murmur2(data) == aiokafka_murmur2(data)
            assert partition_for(data, partitions, partitions) == DefaultPartitioner()(
                data, partitions, partitions
            )


def test_a_record_without_key_goes_to_an_available_partition() -> None:
    assert partition_for(None, [0, 1, 2], [2]) == 2
    assert partition_for(None, [0, 1, 2], []) in {0, 1, 2}
