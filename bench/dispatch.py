"""`make bench-dispatch`: dispatch's throughput from `cases.submitted` to `cases.lifecycle`, against
a plain aiokafka consume+produce loop on the same broker in the same run; its signed webhook
deliveries per second; and the latency of one routing decision on a tree of 527 routes.

Each round (`--rounds`, default 3) runs these phases, dispatch as a process (`python -m
services.dispatch`) configured through environment variables only:

1. **routing** (in this process, before any server runs): `route()` timed call by call with
   `time.perf_counter_ns` for `--seconds`, over 5,000 varied cases (every category, 820 unit
   grids, urgencies, sources, keyword texts) at moments spread over a week, on the shipped tree
   plus generated town / town × category prefix / village / keyword routes (bench/routing_tree.py).
2. **pre-fill**: `--cases` CaseSubmitted events (categories that route to all 8 departments,
   random unit grids) published with `libs.common.kafka.Publisher` to `cases.submitted`, and the
   same records, 5 copies each, to a raw input topic.
3. **raw broker**: a plain aiokafka consumer reads the raw topic and, for each record, produces
   one record (acks=all, the settings of dispatch's producer), committing after each batch.
4. **dispatch consumes** the backlog: it starts with every department's receiver pointed at a
   local receiver (bench/webhook_receiver.py) that holds requests unanswered, so deliveries wait.
   Measured from the database: first case stored → last `received` event acknowledged by the
   broker (`outbox.published_at`). The held requests time out after 120 s (the settings' cap),
   so `--cases` must be consumed within that (6,000 at ~100/s here; the run warns otherwise).
5. **webhooks**: the receiver starts answering 200 (after checking each signature); measured:
   deliveries reaching status `delivered` in the database per second, and requests answered per
   second at the receiver. Then every `cases.lifecycle` record is counted (received + assigned).

Servers: DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS when set, else embedded ones (as `make run`).
GRIDFLOW_* variables in the environment override the bench's dispatch settings (printed).
Prints a table and writes a JSON file; `--profile` runs dispatch under bench/sampler.py (a
sampling profiler: phases 1 and 2 of its JSON are the consume and the webhook phase).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.routing_tree import write_config
from bench.webhook_receiver import WebhookReceiver
from deploy.embedded import (
    EmbeddedBroker,
    free_port,
    start_broker,
    start_postgres,
)
from libs.common.envelope import Envelope, encode
from libs.common.events import CaseSubmitted, Category, Location, Reporter, Source, Urgency
from libs.common.ids import new_case_id
from libs.common.kafka import Publisher, TopicNames, ensure_topics
from libs.common.refdata import (
    GridTree,
    ReferenceData,
    WeekdayCalendar,
    load_reference_data,
)
from libs.common.refdata import (
    WebhookReceiver as WebhookConfig,
)
from libs.common.topics import CASES_LIFECYCLE, CASES_SUBMITTED, CATALOGUE, build_envelope
from services.dispatch.routing import route

REPO = Path(__file__).resolve().parents[1]
API_SECRET = "bench-dispatch-api-secret-0123456789abcdef"  # noqa: S105  # a throwaway bench key
PARTITIONS = 4
STALL_SECONDS = 60.0  # no progress for this long: the phase failed
ROUTING_CASES = 5_000
RAW_COPIES = 5  # the raw loop reads each pre-filled record this many times over
# Categories whose cases the shipped tree routes to a department, between them all 8 of them.
DELIVERED_CATEGORIES = (
    "city.garbage",
    "city.illegal_parking",
    "safety.hazard",
    "safety.fire",
    "dispute.neighbour",
    "civil.elderly_care",
    "health.epidemic",
    "public_order.disturbance",
    "power.outage",
    "service.household",
)
TEXTS = (
    ("路边暴露垃圾", "人民路与解放路交叉口东北角有一堆生活垃圾未清运。"),
    ("占道经营", "菜市场门口流动摊贩占道经营，影响通行。"),
    ("井盖缺失", "小区东门外人行道井盖缺失，附近有燃气管道标志。"),
    ("邻里噪音纠纷", "楼上住户夜间装修噪音大，双方多次争执。"),
    ("独居老人求助", "独居老人行动不便，需要上门探访和生活帮扶。"),
    ("线路老化", "老旧小区电线私拉乱接，存在触电和火灾隐患。"),
)
# Bench defaults for dispatch; GRIDFLOW_* variables in the environment override them.
TUNABLE_DEFAULTS = {
    "GRIDFLOW_LOG_LEVEL": "WARNING",
    # the broker's group join waits about half the session timeout (DESIGN.md)
    "GRIDFLOW_KAFKA_SESSION_TIMEOUT_MS": "6000",
    "GRIDFLOW_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
    # the embedded broker answers a fetch only when its wait ends, so the wait is each hop's
    # latency: the benches measure latency, and pay ~6 % of a core per idle consumer for 20 ms
    # instead of make run's 50 (docs/configuration.md)
    "GRIDFLOW_KAFKA_FETCH_MAX_WAIT_MS": "20",
    # a delivery held by the closed receiver must not time out while the backlog is consumed
    "GRIDFLOW_DELIVERY_TIMEOUT_SECONDS": "120",
}
REPORTED_SETTINGS = (
    "GRIDFLOW_DELIVERY_CONCURRENCY",
    "GRIDFLOW_DELIVERY_CONCURRENCY_PER_DEPARTMENT",
    "GRIDFLOW_DELIVERY_TIMEOUT_SECONDS",
    "GRIDFLOW_DELIVERY_MAX_ATTEMPTS",
    "GRIDFLOW_DELIVERY_BASE_DELAY_SECONDS",
    "GRIDFLOW_DELIVERY_POLL_SECONDS",
    "GRIDFLOW_KAFKA_SESSION_TIMEOUT_MS",
    "GRIDFLOW_KAFKA_HEARTBEAT_INTERVAL_MS",
    "GRIDFLOW_KAFKA_FETCH_MAX_WAIT_MS",
    "GRIDFLOW_KAFKA_PARTITIONS",
    "GRIDFLOW_LOG_LEVEL",
)


class PhaseError(RuntimeError):
    pass


# --- test data ------------------------------------------------------------------------------------


def _case(
    rng: random.Random, *, category: str, unit_grid: str | None, now: datetime
) -> CaseSubmitted:
    title, description = rng.choice(TEXTS)
    location = (
        Location(unit_grid=unit_grid) if unit_grid else Location(address="示范市人民路 12 号")
    )
    return CaseSubmitted(
        case_id=new_case_id(now),
        source=rng.choice(list(Source)),
        category=Category(code=category),
        urgency=rng.choices(list(Urgency), weights=(85, 12, 3))[0],
        title=title,
        description=description,
        location=location,
        reporter=Reporter(kind="grid_worker", worker_id=f"W{rng.randrange(10_000):04d}"),
        occurred_at=now - timedelta(minutes=rng.randrange(1, 600)),
        reported_at=now,
    )


def submitted_cases(count: int, grid: GridTree, seed: int) -> list[CaseSubmitted]:
    """Cases that route to a department, cycling through categories that reach all 8."""
    rng = random.Random(seed)  # noqa: S311  # test data
    units = [node.code for node in grid.unit_grids]
    now = datetime.now(UTC)
    return [
        _case(
            rng,
            category=DELIVERED_CATEGORIES[i % len(DELIVERED_CATEGORIES)],
            unit_grid=rng.choice(units),
            now=now,
        )
        for i in range(count)
    ]


def department_secret(short_code: str) -> str:
    """A Standard Webhooks secret per department for this bench (32 bytes)."""
    return (
        "whsec_" + base64.b64encode(f"bench-secret-{short_code}".ljust(32, "!").encode()).decode()
    )


# --- servers and the dispatch process -------------------------------------------------------------


@dataclass(frozen=True)
class Servers:
    database_url: str
    bootstrap: str
    broker: EmbeddedBroker | None
    database: str


@contextlib.contextmanager
def servers() -> Iterator[Servers]:
    """The configured PostgreSQL and Kafka, else embedded ones."""
    (REPO / ".run").mkdir(exist_ok=True)
    database_url = os.environ.get("DATABASE_URL")
    postgres = broker = None
    if not database_url:
        postgres = start_postgres(REPO / ".run" / "bench-postgres" / "data")
        database_url = postgres.url
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        broker = start_broker(log_path=REPO / ".run" / "bench-broker.log")
        bootstrap = broker.bootstrap_servers
    kind = "configured PostgreSQL" if postgres is None else "embedded PostgreSQL"
    try:
        yield Servers(database_url, bootstrap, broker, kind)
    finally:
        if broker:
            broker.stop()
        if postgres:
            postgres.stop()


def dispatch_environment(
    *, servers: Servers, tag: str, port: int, config_dir: Path, refdata: ReferenceData
) -> dict[str, str]:
    fixed = {
        "DATABASE_URL": servers.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": servers.bootstrap,
        "GRIDFLOW_API_JWT_SECRET": API_SECRET,
        "GRIDFLOW_DB_SCHEMA": f"{tag}_dispatch",
        "GRIDFLOW_TOPIC_PREFIX": f"{tag}.",
        "GRIDFLOW_CONSUMER_GROUP": f"{tag}-dispatch",
        "GRIDFLOW_HTTP_PORT": str(port),
        "GRIDFLOW_CONFIG_DIR": str(config_dir),
        "GRIDFLOW_KAFKA_PARTITIONS": str(PARTITIONS),
    }
    secrets = {
        d.receiver.secret_env: department_secret(c)
        for c, d in refdata.departments.items()
        if isinstance(d.receiver, WebhookConfig)
    }
    return {**TUNABLE_DEFAULTS, **os.environ, **fixed, **secrets}


def receiver_config(target: Path, receiver_base: str) -> ReferenceData:
    """config/ with every webhook department's receiver at `receiver_base`/departments/<code>
    (also the 数字城管 platform's entry, whose receiver is its bridge in the shipped file)."""
    shutil.copytree(REPO / "config", target)
    departments = target / "departments.yaml"
    lines, code = [], None
    for line in departments.read_text(encoding="utf-8").splitlines(keepends=True):
        found = re.match(r"\s+short_code:\s*(\S+)", line)
        if found:
            code = found.group(1)
        url = re.match(r"(\s+url:\s*)\S+", line)
        lines.append(
            f"{url.group(1)}{receiver_base}/departments/{code}\n" if url and code else line
        )
    departments.write_text("".join(lines), encoding="utf-8")
    return load_reference_data(target)


@contextlib.asynccontextmanager
async def dispatch_process(
    env: dict[str, str], *, profile: Path | None, instances: int = 1
) -> AsyncIterator[list[int]]:
    """`instances` dispatch processes (one consumer group; the first on the environment's port,
    and the only one profiled); yields their pids."""
    processes = []
    try:
        for number in range(1, instances + 1):
            port = env["GRIDFLOW_HTTP_PORT"] if number == 1 else str(free_port())
            suffix = "" if number == 1 else f"-{number}"
            log = REPO / ".run" / f"bench-services-dispatch{suffix}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            runner = ["-m", "bench.sampler", str(profile)] if profile and number == 1 else []
            with log.open("wb") as out:  # the child keeps its own descriptor
                processes.append(
                    subprocess.Popen(  # noqa: S603, ASYNC220  # our own module; started once
                        [sys.executable, *runner, "-m", "services.dispatch"],
                        cwd=REPO,
                        env={**env, "GRIDFLOW_HTTP_PORT": port},
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        yield [process.pid for process in processes]
    finally:
        # SIGINT, not SIGTERM: uvicorn re-raises the signal after its graceful shutdown, and
        # an interrupt (KeyboardInterrupt) still lets the sampler write its file
        for process in processes:
            process.send_signal(signal.SIGINT)
        for process in processes:
            await asyncio.to_thread(process.wait, 60)
    for process in processes:
        if process.returncode not in (0, -signal.SIGINT) and not profile:
            raise PhaseError(f"dispatch exited with {process.returncode}: see .run/bench-*.log")


def machine_busy() -> float:
    """CPU seconds the whole machine has spent since boot, every process and core together."""
    busy = psutil.cpu_times()
    return float(busy.user + busy.nice + busy.system + busy.irq + busy.softirq)


def postgres_cpu() -> float:
    """CPU seconds of every PostgreSQL process on the machine, those that have exited included: a
    backend's time moves to its postmaster's children's times when it is reaped, so a connection
    closed during a measurement takes none of its time away from it."""
    total = 0.0
    for process in psutil.process_iter(["name", "cpu_times"]):
        times = process.info["cpu_times"]
        if process.info["name"] in ("postgres", "postmaster") and times:
            total += times.user + times.system + times.children_user + times.children_system
    return float(total)


class CpuMeter:
    """CPU used per process (and by all PostgreSQL processes) between start() and stop()."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self._before: dict[str, float] = {}
        self._started = 0.0

    def _sample(self) -> dict[str, float]:
        sample = {}
        for name, pid in self._pids.items():
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(pid).cpu_times()
                sample[name] = times.user + times.system
        sample["postgres (all)"] = postgres_cpu()
        # everything on the machine, ours and other users' (a shared VM): up to 100 per core
        sample["machine (all processes)"] = machine_busy()
        return sample

    def start(self) -> None:
        self._before = self._sample()
        self._started = time.perf_counter()

    def stop(self) -> dict[str, float]:
        """Percent of one core per process over the interval."""
        after = self._sample()
        wall = time.perf_counter() - self._started
        return {
            name: round(100 * (after[name] - self._before.get(name, 0.0)) / wall, 1)
            for name in after
            if name in self._before
        }


# --- phases ---------------------------------------------------------------------------------------


async def prefill(
    cases: list[CaseSubmitted], *, bootstrap: str, names: TopicNames, raw: str, raw_copies: int
) -> None:
    """The backlog: each case on `cases.submitted` (Publisher) and `raw_copies` times the same
    record on `raw` (the raw loop is so much faster that it needs more records to time)."""
    now = datetime.now(UTC)
    envelopes = [
        build_envelope(CASES_SUBMITTED, c, source="gridflow/bench", key=c.case_id, now=now)
        for c in cases
    ]
    publisher = Publisher(bootstrap_servers=bootstrap, names=names, source="gridflow/bench")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await publisher.start()
    await producer.start()
    try:
        for start in range(0, len(envelopes), 2000):
            chunk = envelopes[start : start + 2000]
            futures = [await publisher.enqueue(CASES_SUBMITTED, e) for e in chunk]
            futures += [await _send_raw(producer, raw, e) for e in chunk * raw_copies]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
        await publisher.stop()


async def _send_raw(producer: Any, topic: str, envelope: Envelope) -> Any:
    record = encode(envelope)
    return await producer.send(topic, value=record.value, key=record.key, headers=record.headers)


async def raw_phase(
    *, bootstrap: str, source: str, sink: str, group: str, count: int
) -> dict[str, Any]:
    """The broker's ceiling for dispatch's pattern: consume, produce one record each (acks=all,
    dispatch's producer settings), commit after each batch; timed from the first record."""
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        max_poll_records=200,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=2, enable_idempotence=False
    )
    await producer.start()
    await consumer.start()
    meter = CpuMeter({"bench (raw loop)": os.getpid()})
    seen = 0
    first: float | None = None
    last_progress = time.monotonic()
    try:
        while seen < count:
            batches = await consumer.getmany(timeout_ms=300, max_records=200)
            if not batches:
                if time.monotonic() - last_progress > STALL_SECONDS:
                    raise PhaseError(f"raw loop stalled at {seen}/{count} records")
                continue
            if first is None:
                first = time.perf_counter()
                meter.start()
            futures = []
            for records in batches.values():
                for record in records:
                    futures.append(
                        await producer.send(
                            sink, value=record.value, key=record.key, headers=list(record.headers)
                        )
                    )
            await asyncio.gather(*futures)
            await consumer.commit()
            seen += len(futures)
            last_progress = time.monotonic()
        assert first is not None  # noqa: S101  # the loop ran at least once
        seconds = time.perf_counter() - first
    finally:
        await consumer.stop()
        await producer.stop()
    return {
        "records": seen,
        "seconds": round(seconds, 3),
        "per_second": round(seen / seconds, 1),
        "cpu_percent": meter.stop(),
    }


class Observed:
    """dispatch's tables as the bench reads them from outside (schema-qualified table clauses)."""

    def __init__(self, engine: AsyncEngine, schema: str) -> None:
        self.engine = engine
        self.cases = sa.table("cases", sa.column("created_at"), schema=schema)
        self.outbox = sa.table("outbox", sa.column("published_at"), schema=schema)
        self.deliveries = sa.table(
            "deliveries", sa.column("status"), sa.column("delivered_at"), schema=schema
        )

    async def value(self, query: sa.Select[Any]) -> Any:
        try:
            async with self.engine.connect() as conn:
                return (await conn.execute(query)).scalar()
        except sa.exc.ProgrammingError:  # the schema is not migrated yet
            return None

    async def count(self, query: sa.Select[Any]) -> int | None:
        value = await self.value(query)
        return None if value is None else int(value)

    async def stored(self) -> int | None:
        return await self.count(sa.select(sa.func.count()).select_from(self.cases))

    async def published(self) -> int | None:
        query = sa.select(sa.func.count()).where(self.outbox.c.published_at.is_not(None))
        return await self.count(query)

    async def with_status(self, status: str) -> int | None:
        query = sa.select(sa.func.count()).where(self.deliveries.c.status == status)
        return await self.count(query)

    async def answered(self, made: int) -> int | None:
        """Of `made` deliveries, those no longer pending. Counted on the partial index of the
        pending ones (deliveries_due: the condition written out, so that a generic plan still
        matches it), not by reading the whole table as a count by status does: polled 4 times
        a second while dispatch delivers, that took ~3 % of a core from the phase measured."""
        pending = await self.count(self.pending_count)
        return None if pending is None else made - pending

    @property
    def pending_count(self) -> sa.Select[Any]:
        condition = sa.text("status = 'pending'")
        return sa.select(sa.func.count()).select_from(self.deliveries).where(condition)

    async def all_delivered(self, made: int) -> None:
        """Wait until none of `made` deliveries is pending; fail unless all were delivered."""
        await _wait_until("deliveries answered", lambda: self.answered(made), made)
        delivered = await self.with_status("delivered")
        if delivered != made:
            raise PhaseError(f"deliveries delivered: {delivered} of {made}, the rest dead")


async def _wait_until(
    what: str, progress: Callable[[], Awaitable[int | None]], target: int, *, interval: float = 0.25
) -> None:
    """Poll `progress` until it reaches `target`; fail when it stops moving for STALL_SECONDS."""
    best, moved = -1, time.monotonic()
    while True:
        value = await progress()
        if value is not None and value >= target:
            return
        if value is not None and value > best:
            best, moved = value, time.monotonic()
        if time.monotonic() - moved > STALL_SECONDS:
            raise PhaseError(f"{what}: stalled at {best}/{target}")
        await asyncio.sleep(interval)


async def consume_phase(observed: Observed, count: int) -> dict[str, Any]:
    """Cases stored and their `received` events acknowledged by the broker (outbox drained)."""
    await _wait_until("cases stored", observed.stored, count)
    await _wait_until("received events published", observed.published, count)
    cases, outbox = observed.cases, observed.outbox
    first = await observed.value(sa.select(sa.func.min(cases.c.created_at)))
    stored = await observed.value(sa.select(sa.func.max(cases.c.created_at)))
    published = await observed.value(sa.select(sa.func.max(outbox.c.published_at)))
    # the relay marks one batch with one published_at: distinct values = relay transactions
    batches = await observed.count(sa.select(sa.func.count(sa.distinct(outbox.c.published_at))))
    seconds = (published - first).total_seconds()
    return {
        "cases": count,
        "seconds": round(seconds, 3),
        "per_second": round(count / seconds, 1),
        "stored_per_second": round(count / (stored - first).total_seconds(), 1),
        "relay_batches": batches,
        "events_per_relay_batch": round(count / batches, 2) if batches else None,
    }


async def delivery_phase(
    observed: Observed, count: int, receiver: WebhookReceiver
) -> dict[str, Any]:
    """Open the receiver; deliveries reaching `delivered` per second (database and receiver)."""
    opened = time.time()
    receiver.released.set()
    await observed.all_delivered(count)
    last = await observed.value(sa.select(sa.func.max(observed.deliveries.c.delivered_at)))
    seconds = last.timestamp() - opened
    at_receiver = (receiver.last_at or opened) - opened
    return {
        "deliveries": count,
        "seconds": round(seconds, 3),
        "per_second": round(count / seconds, 1),
        "receiver_per_second": round(receiver.accepted / at_receiver, 1)
        if at_receiver > 0
        else None,
        "receiver_accepted": receiver.accepted,
        "receiver_refused": receiver.refused,
        "duplicates": receiver.duplicates,
        "dead": await observed.with_status("dead"),
        "by_department": dict(sorted(receiver.by_department.items())),
    }


async def count_lifecycle(*, bootstrap: str, topic: str, group: str, expected: int) -> int:
    """Records on `cases.lifecycle` (untimed check that the events reached the broker)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    await consumer.start()
    seen, moved = 0, time.monotonic()
    try:
        while seen < expected and time.monotonic() - moved < 15:
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            if batches:
                seen += sum(len(records) for records in batches.values())
                moved = time.monotonic()
    finally:
        await consumer.stop()
    return seen


def _measured_processes(dispatch: list[int], servers: Servers) -> dict[str, int]:
    pids = {
        ("dispatch" if len(dispatch) == 1 else f"dispatch {number}"): pid
        for number, pid in enumerate(dispatch, start=1)
    }
    pids["bench (receiver)"] = os.getpid()
    if servers.broker:
        pids["broker"] = servers.broker.process.pid
    return pids


async def dispatch_round(
    servers: Servers,
    *,
    tag: str,
    cases: int,
    seed: int,
    profile: Path | None,
    workdir: Path,
    instances: int = 1,
) -> dict[str, Any]:
    names = TopicNames(f"{tag}.")
    raw_in, raw_out = f"{tag}.bench.raw-in", f"{tag}.bench.raw-out"
    await ensure_topics(
        bootstrap_servers=servers.bootstrap,
        names=[names(t) for t in CATALOGUE] + [raw_in, raw_out],
        partitions=PARTITIONS,
        replication_factor=1,
    )
    receiver_port, dispatch_port = free_port(), free_port()
    refdata = receiver_config(workdir / "config", f"http://127.0.0.1:{receiver_port}")
    backlog = submitted_cases(cases, refdata.grid, seed)
    print(f"  pre-filling {cases:,} cases …", flush=True)
    await prefill(
        backlog, bootstrap=servers.bootstrap, names=names, raw=raw_in, raw_copies=RAW_COPIES
    )
    del backlog
    print("  raw broker consume+produce …", flush=True)
    raw = await raw_phase(
        bootstrap=servers.bootstrap,
        source=raw_in,
        sink=raw_out,
        group=f"{tag}-raw",
        count=cases * RAW_COPIES,
    )
    receiver = WebhookReceiver(secrets={c: department_secret(c) for c in refdata.departments})
    server = await receiver.start(receiver_port)
    env = dispatch_environment(
        servers=servers, tag=tag, port=dispatch_port, config_dir=workdir / "config", refdata=refdata
    )
    schema = env["GRIDFLOW_DB_SCHEMA"]
    engine = create_async_engine(servers.database_url, pool_size=2)
    observed = Observed(engine, schema)
    try:
        async with dispatch_process(env, profile=profile, instances=instances) as started:
            pid = started[0]
            meter = CpuMeter(_measured_processes(started, servers))

            def mark() -> None:  # the sampler's next phase
                if profile:
                    os.kill(pid, signal.SIGUSR1)

            print("  dispatch consumes the backlog (deliveries held) …", flush=True)
            await _wait_until("dispatch started", observed.stored, 1, interval=0.05)
            mark()
            meter.start()
            consumed = await consume_phase(observed, cases)
            consumed["cpu_percent"] = meter.stop()
            if consumed["seconds"] > float(env["GRIDFLOW_DELIVERY_TIMEOUT_SECONDS"]) - 10:
                print("  warning: held deliveries may have timed out; use fewer --cases")
            mark()
            print("  deliveries released …", flush=True)
            meter.start()
            # merged cases (并案: same category, same unit-grid centre) are not delivered
            queued = await observed.count(
                sa.select(sa.func.count()).select_from(observed.deliveries)
            )
            delivered = await delivery_phase(observed, queued or 0, receiver)
            delivered["merged_cases"] = cases - (queued or 0)
            delivered["cpu_percent"] = meter.stop()
            mark()
            await _wait_until("assigned events published", observed.published, 2 * cases)
        lifecycle = await count_lifecycle(
            bootstrap=servers.bootstrap,
            topic=names(CASES_LIFECYCLE),
            group=f"{tag}-check",
            expected=2 * cases,
        )
    finally:
        server.close()
        async with engine.begin() as conn:
            await conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await engine.dispose()
    return {
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "raw": raw,
        "dispatch": {
            **consumed,
            "ratio_to_raw": round(consumed["per_second"] / raw["per_second"], 3),
        },
        "webhooks": delivered,
        "lifecycle_records": lifecycle,
        "lifecycle_expected": 2 * cases,
        "settings": {name: env[name] for name in REPORTED_SETTINGS if name in env},
        "instances": instances,
    }


def routing_phase(seconds: float, seed: int, workdir: Path) -> dict[str, Any]:
    """`route()` per call, on the generated tree, for `seconds` (after 2,000 warm-up calls)."""
    refdata = write_config(workdir / "routing-config")
    tree, grid, calendar = refdata.routing, refdata.grid, WeekdayCalendar()
    rng = random.Random(seed)  # noqa: S311  # test data
    units = [node.code for node in grid.unit_grids]
    categories = list(refdata.categories)
    start = datetime(2026, 11, 23, tzinfo=UTC)  # a Monday; moments over the week, day and night
    moments = [start + timedelta(minutes=rng.randrange(7 * 24 * 60)) for _ in range(97)]
    cases = [
        _case(
            rng,
            category=rng.choice(categories),
            unit_grid=rng.choice(units) if rng.random() > 0.02 else None,
            now=start,
        )
        for _ in range(ROUTING_CASES)
    ]
    # the conditions of the service process (libs/common/runtime.py after start-up)
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 20)
    timings: list[int] = []
    departments: dict[str | None, int] = {}
    clock = time.perf_counter_ns
    deadline = time.monotonic() + seconds
    i = 0
    while i < 2000 or time.monotonic() < deadline:
        for _ in range(1000):
            case, now = cases[i % ROUTING_CASES], moments[i % len(moments)]
            began = clock()
            decision = route(case, tree, now=now, calendar=calendar, grid=grid)
            took = clock() - began
            if i >= 2000:
                timings.append(took)
                departments[decision.department] = departments.get(decision.department, 0) + 1
            i += 1
    gc.unfreeze()
    timings.sort()

    def at(q: float) -> float:
        return round(timings[min(len(timings) - 1, int(q * len(timings)))] / 1000, 1)

    return {
        "routes": len(tree),
        "ruleset_version": tree.version,
        "calls": len(timings),
        "p50_us": at(0.50),
        "p99_us": at(0.99),
        "p999_us": at(0.999),
        "max_us": round(timings[-1] / 1000, 1),
        "mean_us": round(statistics.fmean(timings) / 1000, 2),
        "triaged_share": round(departments.get(None, 0) / len(timings), 3),
    }


# --- rounds, summary, output ----------------------------------------------------------------------

SUMMARY_FIELDS = (
    ("raw broker consume+produce (records/s)", "raw", "per_second"),
    ("dispatch consumed→published (cases/s)", "dispatch", "per_second"),
    ("dispatch / raw", "dispatch", "ratio_to_raw"),
    ("dispatch cases stored (cases/s)", "dispatch", "stored_per_second"),
    ("webhooks delivered, database (/s)", "webhooks", "per_second"),
    ("webhooks answered at receiver (/s)", "webhooks", "receiver_per_second"),
    ("routing p50 (µs)", "routing", "p50_us"),
    ("routing p99 (µs)", "routing", "p99_us"),
    ("routing p99.9 (µs)", "routing", "p999_us"),
    ("routing max (µs)", "routing", "max_us"),
)
TARGETS: dict[tuple[str, str], tuple[str, Callable[[float], bool]]] = {
    ("dispatch", "per_second"): ("≥ 3,000", lambda v: v >= 3000),
    ("webhooks", "per_second"): ("≥ 1,000", lambda v: v >= 1000),
    ("routing", "p99_us"): ("< 1,000", lambda v: v < 1000),
}


def summarise(measured: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for label, phase, field in SUMMARY_FIELDS:
        values = [r[phase][field] for r in measured if r[phase].get(field) is not None]
        if not values:
            continue
        median = round(statistics.median(values), 3)
        row: dict[str, Any] = {
            "measure": label,
            "median": median,
            "range": [min(values), max(values)],
        }
        target = TARGETS.get((phase, field))
        if target:
            row["target"] = target[0]
            row["met"] = target[1](median)
        rows.append(row)
    return rows


def run(
    *, seconds: float, cases: int, rounds: int, profile: bool, instances: int = 1
) -> dict[str, Any]:
    measured: list[dict[str, Any]] = []
    for number in range(1, rounds + 1):
        tag = f"bench{os.getpid()}r{number}"
        print(f"round {number}/{rounds}", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-dispatch-") as folder:
            workdir = Path(folder)
            print(f"  routing decisions, {seconds:.0f} s …", flush=True)
            routing = routing_phase(seconds, seed=number, workdir=workdir)
            prof = REPO / ".run" / f"bench-dispatch-profile-r{number}.json" if profile else None
            with servers() as found:
                result = asyncio.run(
                    dispatch_round(
                        found,
                        tag=tag,
                        cases=cases,
                        seed=number,
                        profile=prof,
                        workdir=workdir,
                        instances=instances,
                    )
                )
        result["routing"] = routing
        result["database"] = found.database
        measured.append(result)
        print(
            f"  raw {result['raw']['per_second']:,.0f}/s, dispatch {result['dispatch']['per_second']:,.0f}/s,"
            f" webhooks {result['webhooks']['per_second']:,.0f}/s,"
            f" routing p99 {routing['p99_us']} µs",
            flush=True,
        )
    return {
        "run_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "database": measured[0]["database"],
            "broker": "configured" if "KAFKA_BOOTSTRAP_SERVERS" in os.environ else "embedded Tansu",
        },
        "cases_per_round": cases,
        "dispatch_instances": instances,
        "routing_seconds_per_round": seconds,
        "rounds": rounds,
        "profiled": profile,
        "settings": measured[0]["settings"],
        "results": summarise(measured),
        "rounds_measured": measured,
    }


def print_profile(
    path: Path, *, names: tuple[str, ...] = ("consume", "webhooks"), service: str = "dispatch"
) -> None:
    phases = json.loads(path.read_text())
    for name, phase in zip(names, phases[1 : 1 + len(names)], strict=False):
        print(
            f"\nprofile of {service}, {name} phase ({phase['seconds']} s, {phase['samples']} samples):"
        )
        for key in ("percent_by_task", "self_percent_by_package"):
            print(f"  {key}: " + ", ".join(f"{n} {p} %" for n, p in phase[key][:10]))
        print("  self_percent_by_function:")
        for where, percent in phase["self_percent_by_function"][:15]:
            print(f"    {percent:5.1f} %  {where}")
    print(f"profile: {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.dispatch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="routing timing per round")
    parser.add_argument("--cases", type=int, default=6_000, help="backlog per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--profile", action="store_true", help="sample the stacks of dispatch (bench/sampler.py)"
    )
    parser.add_argument(
        "--instances",
        type=int,
        default=1,
        help="dispatch processes sharing the work (one consumer group; 2 = one per core here)",
    )
    parser.add_argument("--out", type=Path, default=REPO / ".run" / "bench-dispatch.json")
    args = parser.parse_args(argv)
    report = run(
        seconds=args.seconds,
        cases=args.cases,
        rounds=args.rounds,
        profile=args.profile,
        instances=args.instances,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n")
    print("\ndispatch settings: " + ", ".join(f"{k}={v}" for k, v in report["settings"].items()))
    print(
        f"medians of {args.rounds} rounds, {args.cases:,} cases per round,"
        f" {args.instances} dispatch instance{'s' if args.instances > 1 else ''}"
    )
    print(f"{'measure':<42}{'median':>12}  {'range':<22}{'target':<12}")
    for row in report["results"]:
        low, high = row["range"]
        met = "" if "met" not in row else ("met" if row["met"] else "NOT met")
        print(
            f"{row['measure']:<42}{row['median']:>12,}  {f'{low:,} – {high:,}':<22}"
            f"{row.get('target', ''):<12}{met}"
        )
    for number, result in enumerate(report["rounds_measured"], 1):
        check = result["lifecycle_records"], result["lifecycle_expected"]
        hooks = result["webhooks"]
        print(
            f"round {number}: cases.lifecycle {check[0]:,}/{check[1]:,} records;"
            f" receiver refused {hooks['receiver_refused']}, duplicates {hooks['duplicates']},"
            f" dead {hooks['dead']}; relay: {result['dispatch']['events_per_relay_batch']}"
            f" events per transaction; CPU % (a) {result['dispatch']['cpu_percent']}"
            f" (c) {hooks['cpu_percent']}"
        )
    if args.profile:
        for number in range(1, args.rounds + 1):
            path = REPO / ".run" / f"bench-dispatch-profile-r{number}.json"
            if path.exists():
                print_profile(path)
    print(f"\nJSON: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
