"""Kafka plumbing on aiokafka: topic creation, a publisher, and the consumer loop every service uses.

The loop commits an offset only after the handler (and its database transaction) succeeded, retries a
failing record a bounded number of times, then dead-letters it with its coordinates and goes on; a
handler failing because its database or broker cannot be reached waits for them instead (the record
is not at fault: `dependency_unavailable`).
A handler that also takes whole batches (`BatchHandler`) gets everything one fetch returned in one
call, and the offsets are committed once after it; if the batch fails, its records are handled one
by one as above, so one poison record neither blocks nor loses the others.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import struct
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar, runtime_checkable

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from libs.common.clock import Clock
from libs.common.contract import Contract
from libs.common.envelope import Envelope, EnvelopeError, KafkaRecord, decode, encode
from libs.common.events import DeadLetter
from libs.common.logs import log_context
from libs.common.pacing import Pacer
from libs.common.settings import ServiceSettings
from libs.common.topics import DEADLETTER, PayloadError, Topic, build_envelope, parse_payload

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


class TopicNames:
    """Maps catalogue topics to the names on the broker (a prefix isolates stacks and tests)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __call__(self, topic: Topic) -> str:
        return self.prefix + topic.name


async def ensure_topics(
    *, bootstrap_servers: str, names: Iterable[str], partitions: int, replication_factor: int
) -> None:
    """Create topics explicitly (brokers may auto-create them with other settings)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        wanted = [
            NewTopic(n, num_partitions=partitions, replication_factor=replication_factor)
            for n in names
        ]
        response = await admin.create_topics(wanted)
        for topic_name, code, *rest in response.topic_errors:
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                message = rest[0] if rest else ""
                raise RuntimeError(f"creating topic {topic_name} failed: error {code} {message}")
    finally:
        await admin.close()


class _JoinListener(ConsumerRebalanceListener):  # type: ignore[misc]  # untyped base
    """Marks the loop ready once the group gave it its partitions (possibly none)."""

    def __init__(self, joined: asyncio.Event) -> None:
        self._joined = joined

    async def on_partitions_revoked(self, revoked: object) -> None:
        self._joined.clear()

    async def on_partitions_assigned(self, assigned: object) -> None:
        self._joined.set()


def murmur2(data: bytes) -> int:
    """The Java client's murmur2 (Utils.murmur2), which its default partitioner hashes keys with.

    The same values as aiokafka's pure-Python version, in a third of the time: the words are
    unpacked at once rather than assembled byte by byte (a test compares the two)."""
    length = len(data)
    m = 0x5BD1E995
    h = 0x9747B28C ^ length
    for word in struct.unpack_from(f"<{length >> 2}I", data):
        k = (word * m) & 0xFFFFFFFF
        k ^= k >> 24
        h = ((h * m) & 0xFFFFFFFF) ^ ((k * m) & 0xFFFFFFFF)
    tail = length & 3
    if tail:
        base = length - tail
        if tail == 3:
            h ^= data[base + 2] << 16
        if tail >= 2:
            h ^= data[base + 1] << 8
        h = ((h ^ data[base]) * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    return h ^ (h >> 15)


def partition_for(
    key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
) -> int:
    """The Java client's (and aiokafka's) default partitioner: a key always lands on the same
    partition, whichever producer sends it; a record without a key on any available one."""
    if key is None:
        return random.choice(available or all_partitions)  # noqa: S311  # spreading, not secrecy
    return all_partitions[(murmur2(key) & 0x7FFFFFFF) % len(all_partitions)]


def _producer(bootstrap_servers: str, request_timeout_ms: int) -> AIOKafkaProducer:
    # acks=all without the idempotent producer: the outbox and idempotent consumers give the
    # guarantees (DESIGN.md: InitProducerId fails on the embedded broker).
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        acks="all",
        linger_ms=2,
        # a send to a paused broker waits this long before it fails and the batch is sent
        # again (a duplicate the consumers drop by ce_id): longer than the outages we expect
        request_timeout_ms=request_timeout_ms,
        enable_idempotence=False,
        partitioner=partition_for,
    )


class Publisher:
    """Publishes catalogue events as binary-mode CloudEvents; every send waits for acks=all."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        names: TopicNames,
        source: str,
        request_timeout_ms: int = 120_000,
    ) -> None:
        self._producer = _producer(bootstrap_servers, request_timeout_ms)
        self._names = names
        self.source = source

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(
        self, topic: Topic, payload: Contract, *, key: str, now: datetime
    ) -> Envelope:
        envelope = build_envelope(topic, payload, source=self.source, key=key, now=now)
        await self.send(topic, envelope)
        return envelope

    async def send(self, topic: Topic, envelope: Envelope) -> None:
        await (await self.enqueue(topic, envelope))

    async def enqueue(self, topic: Topic, envelope: Envelope) -> asyncio.Future[Any]:
        """Hand a record to the producer's batch; the returned future resolves on acks=all."""
        record = encode(envelope)
        future: asyncio.Future[Any] = await self._producer.send(
            self._names(topic), value=record.value, key=record.key, headers=record.headers
        )
        return future

    async def send_records(self, records: Sequence[tuple[Topic, KafkaRecord]]) -> None:
        """Publish encoded records and wait until the broker acknowledged all (acks=all)."""
        await asyncio.gather(*await self.hand_over(records))

    async def hand_over(
        self, records: Sequence[tuple[Topic, KafkaRecord]]
    ) -> list[asyncio.Future[Any]]:
        """Give encoded records to the producer; the futures resolve on the broker's acks.

        Each partition's records go in the order given, filled into the producer's batches
        directly (`create_batch` / `send_batch`): per record this skips the producer's own
        per-send work (a future, partition lists, the accumulator's bookkeeping), which is most
        of a relay's CPU. Partitions are chosen as `send` chooses them (`partition_for`)."""
        producer = self._producer
        partitions: dict[str, list[int]] = {}
        filling: dict[tuple[str, int], Any] = {}
        sent: list[asyncio.Future[Any]] = []
        for topic, record in records:
            name = self._names(topic)
            known = partitions.get(name)
            if known is None:
                known = partitions[name] = sorted(await producer.partitions_for(name))
            partition = partition_for(record.key, known, known)
            batch = filling.get((name, partition))
            if batch is None:
                batch = filling[(name, partition)] = producer.create_batch()
            while (
                batch.append(
                    key=record.key, value=record.value, timestamp=None, headers=record.headers
                )
                is None
            ):
                if batch.record_count() == 0:
                    raise ValueError(f"a record of {len(record.value)} bytes fits no batch")
                sent.append(await producer.send_batch(batch, name, partition=partition))
                batch = filling[(name, partition)] = producer.create_batch()
        for (name, partition), batch in filling.items():
            sent.append(await producer.send_batch(batch, name, partition=partition))
        return sent

    async def ping(self) -> bool:
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), timeout=3)
        except Exception:  # readiness reports any failure as not ready
            return False
        return True


@dataclass(frozen=True)
class Delivery:
    """What a handler gets: the decoded envelope, its typed payload, and where it came from."""

    envelope: Envelope
    payload: Contract
    topic: str
    partition: int
    offset: int


Handler = Callable[[Delivery], Awaitable[None]]
P = TypeVar("P", bound=Contract)


def deliveries_of(deliveries: Sequence[Delivery], kind: type[P]) -> list[tuple[Delivery, P]]:
    """The deliveries whose payload is a `kind`, in their order, each with its payload typed."""
    return [(d, d.payload) for d in deliveries if isinstance(d.payload, kind)]


@runtime_checkable
class BatchHandler(Protocol):
    """A handler that can also handle a fetched batch at once (typically in one transaction).

    `handle_batch` gets the records in fetch order (per partition in offset order) and must have
    the same effects as calling the handler on each in turn; if it raises, none of its effects may
    remain (its transaction rolled back), since the records are then handled one by one."""

    async def __call__(self, delivery: Delivery) -> None: ...

    async def handle_batch(self, deliveries: Sequence[Delivery]) -> None: ...


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.handled = Counter(
            "gridflow_consumer_records_total",
            "Records consumed, by topic and outcome (ok, retried, dead_lettered)",
            ["topic", "outcome"],
            registry=registry,
        )
        self.seconds = Histogram(
            "gridflow_consumer_handler_seconds",
            "Time a handler took per record",
            ["topic"],
            registry=registry,
        )
        self.lag = Gauge(
            "gridflow_consumer_lag",
            "Records not yet consumed in the partitions this instance holds (high watermark - "
            "position), by topic and consumer group; sum over instances for the group's lag",
            ["topic", "group"],
            registry=registry,
        )
        self.batches = Counter(
            "gridflow_consumer_batches_total",
            "Fetched batches given to a batch handler, by outcome (ok; split: it failed and its "
            "records were handled one by one)",
            ["topic", "outcome"],
            registry=registry,
        )


class ConsumerLoop:
    """Consumes one catalogue topic in a consumer group and feeds a handler, one record at a time,
    or a fetched batch at a time when the handler is a `BatchHandler` (at most `max_batch`)."""

    def __init__(
        self,
        *,
        settings: ServiceSettings,
        topic: Topic,
        group_id: str,
        handler: Handler,
        publisher: Publisher,
        clock: Clock,
        metrics: ConsumerMetrics,
        names: TopicNames,
        max_batch: int = 500,
        background: bool = False,
    ) -> None:
        self._settings = settings
        self._topic = topic
        self._topic_name = names(topic)
        self._group_id = group_id
        self._handler = handler
        self._batch_handler = handler if isinstance(handler, BatchHandler) else None
        self._max_records = max_batch if self._batch_handler is not None else 200
        self._publisher = publisher
        self._clock = clock
        self._metrics = metrics
        self._stopping = asyncio.Event()
        # a batch handler's batches start at least this far apart (each is a transaction)
        self._pacer = Pacer(settings.kafka_batch_linger_ms / 1000 if self._batch_handler else 0.0)
        # a consumer in the background may wait longer: fewer fetches while idle (the
        # embedded broker answers a fetch only when its wait ends)
        self.fetch_max_wait_ms = (
            settings.kafka_background_fetch_max_wait_ms
            if background
            else settings.kafka_fetch_max_wait_ms
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
            max_poll_records=self._max_records,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
        )
        self.started = asyncio.Event()
        self.joined = asyncio.Event()
        self._consumer.subscribe([self._topic_name], listener=_JoinListener(self.joined))

    def stop(self) -> None:
        """Stop fetching; the record (or batch) in hand is finished and committed before the loop
        returns."""
        self._stopping.set()

    async def run(self) -> None:
        await self._consumer.start()
        self.started.set()
        measuring = asyncio.create_task(self._measure_lag(), name=f"{self._topic.name}-lag")
        try:
            while not self._stopping.is_set():
                # what arrives during the linger is fetched meanwhile and comes in this batch
                await self._pacer.wait()
                batches = await self._consumer.getmany(
                    timeout_ms=300, max_records=self._max_records
                )
                if self._batch_handler is not None:
                    if batches:
                        self._pacer.mark()
                        await self._process_batch(
                            self._batch_handler, [r for rs in batches.values() for r in rs]
                        )
                        # one commit per batch: the handler's transaction is already durable
                        await self._consumer.commit(
                            {tp: records[-1].offset + 1 for tp, records in batches.items()}
                        )
                    continue
                for tp, records in batches.items():
                    for record in records:
                        await self._process(record)
                        # commit per record: the handler's transaction is already durable
                        await self._consumer.commit({tp: record.offset + 1})
                        if self._stopping.is_set():
                            break
                    if self._stopping.is_set():
                        break
        finally:
            measuring.cancel()
            await asyncio.gather(measuring, return_exceptions=True)
            await self._consumer.stop()

    async def lag(self) -> int:
        """Records not yet handled (high watermark - committed offset) in the partitions held now;
        a partition is counted once a fetch has told its high watermark."""
        total = 0
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            if high is not None:
                committed = await self._consumer.committed(tp)
                total += max(0, high - (committed or 0))
        return total

    async def _measure_lag(self, every: float = 2.0) -> None:
        """The lag gauge, on its own beat: a handler that is stuck shows as a growing lag."""
        gauge = self._metrics.lag.labels(self._topic.name, self._group_id)
        while True:
            try:
                gauge.set(await self.lag())
            except Exception as exc:  # a rebalance or the broker away: measured next time
                log.debug("lag of %s not measured: %s", self._topic.name, type(exc).__name__)
            await asyncio.sleep(every)

    async def _decode(self, record: Any) -> Delivery | None:
        """The record as a delivery, or None when it is undecodable (then it is dead-lettered)."""
        try:
            envelope = decode(record.key, record.value, record.headers)
            payload = parse_payload(self._topic, envelope)
        except (EnvelopeError, PayloadError) as exc:
            await self._dead_letter(record, f"undecodable: {exc}", attempts=1, event_id=None)
            return None
        return Delivery(envelope, payload, record.topic, record.partition, record.offset)

    async def _process_batch(self, handler: BatchHandler, records: Sequence[Any]) -> None:
        decoded = [(record, await self._decode(record)) for record in records]
        good = [(record, delivery) for record, delivery in decoded if delivery is not None]
        if not good:
            return
        topic = self._topic.name
        try:
            await handler.handle_batch([delivery for _, delivery in good])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # one record may be the cause: each is handled on its own, retried, dead-lettered
            log.warning(
                "batch of %d records failed, handling them one by one: %s",
                len(good),
                type(exc).__name__,
            )
            self._metrics.batches.labels(topic, "split").inc()
            for record, delivery in good:
                await self._handle(record, delivery)
            return
        self._metrics.batches.labels(topic, "ok").inc()
        self._metrics.handled.labels(topic, "ok").inc(len(good))

    async def _process(self, record: Any) -> None:
        delivery = await self._decode(record)
        if delivery is not None:
            await self._handle(record, delivery)

    async def _handle(self, record: Any, delivery: Delivery) -> None:
        envelope = delivery.envelope
        attempts = self._settings.kafka_handler_attempts
        backoff = self._settings.kafka_retry_backoff_ms / 1000
        attempt = waited = 0
        while True:
            with log_context(event_id=envelope.id, case_id=envelope.key):
                try:
                    with self._metrics.seconds.labels(self._topic.name).time():
                        await self._handler(delivery)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if dependency_unavailable(exc):
                        # the database or the broker away is no fault of the record: wait for
                        # it, as many tries as it takes, rather than dead-letter a good record
                        waited += 1
                        log.warning(
                            "handler waits for its database or broker (try %d): %s",
                            waited,
                            type(exc).__name__,
                        )
                        pause = min(UNAVAILABLE_BACKOFF_CAP, backoff * waited)
                    else:
                        attempt += 1
                        log.warning(
                            "handler failed (attempt %d/%d): %s",
                            attempt,
                            attempts,
                            type(exc).__name__,
                            exc_info=attempt == attempts,
                        )
                        if attempt == attempts:
                            await self._dead_letter(
                                record, f"{type(exc).__name__}: {exc}", attempts, envelope.id
                            )
                            return
                        pause = backoff * attempt
                    self._metrics.handled.labels(self._topic.name, "retried").inc()
                    await asyncio.sleep(pause)
                    continue
            self._metrics.handled.labels(self._topic.name, "ok").inc()
            return

    async def _dead_letter(
        self, record: Any, error: str, attempts: int, event_id: str | None
    ) -> None:
        key = record.key.decode(errors="replace") if record.key is not None else None
        letter = DeadLetter(
            service=self._publisher.source,
            consumer_group=self._group_id,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            error=error[:4000],
            attempts=attempts,
            failed_at=self._clock.now(),
            original_key=key,
            # a header value may be null on the wire: a poison record must not stop the loop
            original_headers={
                k: "" if v is None else v.decode(errors="replace") for k, v in record.headers
            },
            original_value=base64.b64encode(record.value or b"").decode(),
            original_event_id=event_id,
        )
        log.error(
            "dead-lettering %s[%d]@%d: %s",
            record.topic,
            record.partition,
            record.offset,
            error.splitlines()[0][:200],
        )
        while True:  # never skip a record: if the broker is away, wait for it
            try:
                await self._publisher.publish(
                    DEADLETTER,
                    letter,
                    key=key or f"{record.topic}/{record.partition}",
                    now=self._clock.now(),
                )
                break
            except Exception as exc:
                log.warning("dead-letter publish failed, retrying: %s", type(exc).__name__)
                await asyncio.sleep(1)
        self._metrics.handled.labels(self._topic.name, "dead_lettered").inc()


UNAVAILABLE_BACKOFF_CAP = 5.0  # seconds between tries while the database or broker is away
# SQLSTATE classes of a server going or gone: 08 connection exception, 57 operator intervention
# (admin shutdown, cannot connect now: PostgreSQL stopping or starting)
_UNAVAILABLE_SQLSTATE = ("08", "57")


def dependency_unavailable(exc: BaseException) -> bool:
    """Whether `exc` (or what it was raised from) says the database or the broker cannot be
    reached — a socket refused or gone, a connection dropped or invalidated, a server shutting
    down or starting — rather than that the record cannot be handled."""
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError | KafkaConnectionError | KafkaTimeoutError):
            return True
        if getattr(error, "connection_invalidated", False):  # SQLAlchemy's DBAPIError
            return True
        if isinstance(error, asyncpg.InterfaceError) and "connection is closed" in str(error):
            return True  # a held connection whose server went away (asyncpg's own check)
        sqlstate = getattr(error, "sqlstate", None)  # asyncpg's errors
        if isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATE):
            return True
        error = error.__cause__ or error.__context__
    return False


def topic_partitions(topic: str, partitions: Iterable[int]) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in partitions]
