"""`make bench`: the whole stack end to end on one machine — grid workers' reports POSTed to intake,
published by its outbox relay, consumed and routed by dispatch, delivered as signed webhooks to a
local department receiver — against the ceilings it is compared with, measured in the same run.

Each round (`--rounds`) runs, with PostgreSQL and the broker (DATABASE_URL /
KAFKA_BOOTSTRAP_SERVERS when set, else embedded ones, as `make run`):

1. **ceilings**: a trivial FastAPI endpoint at saturation (bench/trivial.py, bench.intake's phase);
   raw broker produce (aiokafka, dispatch's producer settings) and consume+produce (bench.dispatch's
   loop); raw signed POSTs to the local receiver with httpx and with aiohttp (dispatch's client).
2. **each stage alone**: intake at saturation with dispatch not yet running (reports accepted/s);
   its relay publishing that backlog; dispatch started on it with the receiver holding every
   request (cases consumed, stored and `received` published per second, as bench.dispatch); then
   the receiver released (webhooks delivered per second).
3. **end to end** with everything running: fixed offered loads (`--rates`, open loop) and
   saturation (closed loop, `--connections`). Latency of a case = its first signed webhook
   received − the moment its report was due to be sent (open loop) or was sent (closed loop).
   Each of these phases starts with a CHECKPOINT, so none pays for what the one before wrote.

Processes: intake, dispatch (`python -m services.intake`, `python -m services.dispatch`, configured
by environment variables only) and the receiver (`python -m bench.e2e_receiver`, which checks every
signature) are processes of their own; the load generator (bench/loadgen.py) runs in this one.
Prints progress, a table (each stage with its ratio to its ceiling) and writes a JSON file.
`--profile intake|dispatch` runs that service under bench/sampler.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import create_async_engine

from bench.dispatch import (
    PARTITIONS,
    CpuMeter,
    Observed,
    Servers,
    _send_raw,
    _wait_until,
    consume_phase,
    department_secret,
    dispatch_environment,
    machine_busy,
    print_profile,
    raw_phase,
    receiver_config,
    servers,
    submitted_cases,
)
from bench.intake import (
    REPO,
    SECRET,
    _drain_row,
    _drop_schema,
    _report_body,
    _spawn,
    _wait_ready,
    checkpoint,
    trivial_load,
    trivial_server,
    worker_headers,
)
from bench.loadgen import Stats, closed_loop, http_request, open_loop
from deploy.embedded import free_port
from deploy.local_stack import interruptible
from libs.common.kafka import TopicNames, ensure_topics
from libs.common.refdata import ReferenceData
from libs.common.signing import signed_headers
from libs.common.topics import CASES_SUBMITTED, CATALOGUE, build_envelope

# Report categories a grid worker files with /v1/reports, routed (grid 430281001001001) to five
# departments: chengguan, minzheng, weijian, gongan, gongdian.
REPORT_CATEGORIES = (
    "city.garbage",
    "civil.elderly_care",
    "health.epidemic",
    "public_order.disturbance",
    "power.outage",
)
PHASE_STRIDE = 10_000_000  # case numbers of phase k are k × this + the request's index
_NUMBER_MARK = 918_273_645_546_372_819  # stands for the case number in the report templates
DRAIN_SECONDS = 30.0  # after a phase's load, wait at most this for its webhooks
STALL_SECONDS = 10.0  # … and stop waiting when none arrived for this long
# raw POSTs in flight: dispatch's limit per department endpoint (the ceiling posts to one); httpx
# with 64 in flight collapses to ~100/s here (httpcore's pool), aiohttp does not
HTTP_IN_FLIGHT = 8
RAW_RECORDS = 20_000
STAGE_PHASE = 1  # the stage-alone phases' case numbers; end-to-end phases follow


# --- the processes --------------------------------------------------------------------------------


@contextlib.contextmanager
def process(argv: list[str], env: dict[str, str], ready_url: str) -> Iterator[int]:
    """A child started with bench.intake's `_spawn`, ready once `ready_url` answers 200; stopped
    with SIGINT (uvicorn shuts down gracefully, bench/sampler.py writes its file), killed if it
    does not stop within 30 s."""
    child = _spawn(argv, env)
    try:
        _wait_ready(ready_url, child)
        yield child.pid
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=10)


def intake_environment(
    *, found: Servers, tag: str, port: int, config_dir: Path, refdata: ReferenceData
) -> dict[str, str]:
    """intake configured as dispatch is (bench.dispatch.dispatch_environment's defaults, then the
    environment's GRIDFLOW_* overrides), with the bench's worker key and Open311 keys."""
    dispatch = dispatch_environment(
        servers=found, tag=tag, port=port, config_dir=config_dir, refdata=refdata
    )
    keys = {c.key_env: f"{SECRET}-{c.id}" for c in refdata.open311.clients.values()}
    return {
        **dispatch,
        **keys,
        "GRIDFLOW_WORKER_JWT_SECRET": SECRET,
        "GRIDFLOW_DB_SCHEMA": f"{tag}_intake",
        "GRIDFLOW_STATUS_CONSUMER_GROUP": f"{tag}-intake-status",
        "GRIDFLOW_ATTACHMENTS_DIR": str(REPO / ".run" / "bench-attachments"),
    }


class Reports:
    """The load generator's request factory: report number `base + index` (in its description,
    where the receiver finds it), cycling through REPORT_CATEGORIES; notes when each was made,
    i.e. handed to its connection."""

    def __init__(self, base: int, headers: dict[str, str]) -> None:
        self.base = base
        self.sent: dict[int, float] = {}
        self._headers = headers
        self._templates = []
        for category in REPORT_CATEGORIES:
            body = {**_report_body(_NUMBER_MARK), "category": category}
            encoded = json.dumps(body, ensure_ascii=False).encode()
            prefix, suffix = encoded.split(str(_NUMBER_MARK).encode())
            self._templates.append((prefix, suffix))

    def __call__(self, index: int) -> bytes:
        number = self.base + index
        prefix, suffix = self._templates[number % len(self._templates)]
        self.sent[number] = time.perf_counter()
        return http_request(
            "POST", "/v1/reports", prefix + str(number).encode() + suffix, self._headers
        )


@dataclass
class Deliveries:
    """What the receiver process noted: the first webhook of each case (number -> when)."""

    url: str
    first: dict[int, float] = field(default_factory=dict)
    per_phase: Counter[int] = field(default_factory=Counter)
    counters: dict[str, int] = field(default_factory=dict)

    _client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:  # one client: each new one loads the CA bundle again
            self._client = httpx.AsyncClient(base_url=self.url, timeout=30, verify=False)  # noqa: S501  # loopback, plain HTTP
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def poll(self) -> None:
        answer = (await self._http().get("/_poll")).json()
        for number, received in answer.pop("fresh"):
            self.first[number] = received
            self.per_phase[number // PHASE_STRIDE] += 1
        self.counters = answer

    async def control(self, action: str) -> None:
        (await self._http().post(f"/_{action}")).raise_for_status()


@contextlib.asynccontextmanager
async def progress(
    label: str, deliveries: Deliveries, phase: int, reports: Reports | None
) -> AsyncIterator[None]:
    """A line per second while the phase runs: requests sent, webhooks received."""
    started = time.perf_counter()

    async def report() -> None:
        before = deliveries.per_phase[phase]
        while True:
            await asyncio.sleep(1.0)
            await deliveries.poll()
            now = deliveries.per_phase[phase]
            sent = f"sent {len(reports.sent):>7,}  " if reports else ""
            print(
                f"    {label} {time.perf_counter() - started:5.1f} s  {sent}"
                f"delivered {now:>7,} (+{now - before:,})",
                flush=True,
            )
            before = now

    task = asyncio.create_task(report())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def drain(deliveries: Deliveries, phase: int, expected: int) -> float:
    """Wait for the phase's webhooks: all `expected`, else DRAIN_SECONDS, else none for
    STALL_SECONDS. Returns how long it waited."""
    started = moved = time.perf_counter()
    seen = deliveries.per_phase[phase]
    while deliveries.per_phase[phase] < expected:
        now = time.perf_counter()
        if now - started > DRAIN_SECONDS or now - moved > STALL_SECONDS:
            break
        await asyncio.sleep(0.25)
        await deliveries.poll()
        if deliveries.per_phase[phase] > seen:
            seen, moved = deliveries.per_phase[phase], time.perf_counter()
    return time.perf_counter() - started


# --- CPU per operation ----------------------------------------------------------------------------


class MachineCpu:
    """The CPU the whole machine spends from this object's making on (every process: the
    services, PostgreSQL, the broker, the receiver, the load generator, what else runs), per
    operation done meanwhile: what one request, record or case costs in all."""

    def __init__(self) -> None:
        self._before = machine_busy()

    def ms_per(self, operations: int) -> float | None:
        spent = machine_busy() - self._before
        return round(1000 * spent / operations, 3) if operations > 0 else None


# A case's path through the ceilings' operations: its report POSTed to an HTTP endpoint, its
# signed webhook POSTed to the receiver, and three records each produced once and consumed once
# (cases.submitted, consumed by dispatch; `received` and `assigned` on cases.lifecycle, consumed
# by intake's status consumer). No database work and none of the platform's own.
CASE_PATH = (
    ("ceiling: trivial FastAPI endpoint (requests/s)", 1),
    ("ceiling: raw aiohttp POSTs to the receiver (/s)", 1),
    ("ceiling: raw broker consume+produce (records/s)", 3),
)
STAGES = (
    "intake alone: reports accepted (saturation)",
    "dispatch alone: consumed, stored, received published (cases/s)",
    "dispatch alone: webhooks delivered (/s)",
)
SATURATION = "e2e saturation: delivered/s (sustained)"


def cpu_budget(results: list[dict[str, Any]], cores: int) -> list[dict[str, Any]]:
    """CPU per case from the rows' `cpu_ms` (their medians), summed three ways, each with the
    rate this machine's cores could carry at that cost: the ceilings on a case's path (a floor
    for any design with these parts), the stages measured alone, and the whole stack at
    saturation (its load and the drain after it)."""
    by_phase = {row["phase"]: row for row in results}
    budget = []
    for name, parts in (
        ("ceilings on a case's path: 1 request, 1 webhook, 3 records", CASE_PATH),
        ("stages alone: intake, dispatch consuming, dispatch delivering", [(s, 1) for s in STAGES]),
        ("end to end at saturation, load and drain", [(SATURATION, 1)]),
    ):
        costs = [(by_phase.get(phase, {}).get("cpu_ms"), times) for phase, times in parts]
        if any(ms is None for ms, _ in costs):
            continue
        ms = sum(float(ms) * times for ms, times in costs if ms is not None)
        if ms <= 0:  # no CPU counted: the meter did not run
            continue
        budget.append(
            {
                "measure": name,
                "cpu_ms_per_case": round(ms, 3),
                "cases_per_second_at_most": round(cores * 1000 / ms),
            }
        )
    return budget


# --- ceilings -------------------------------------------------------------------------------------


async def broker_ceilings(
    *, bootstrap: str, tag: str, refdata: ReferenceData
) -> list[dict[str, Any]]:
    """Raw produce of RAW_RECORDS CaseSubmitted CloudEvents (acks=all, linger 2 ms: dispatch's
    producer), then bench.dispatch's consume+produce loop over them."""
    raw_in, raw_out = f"{tag}.bench.raw-in", f"{tag}.bench.raw-out"
    await ensure_topics(
        bootstrap_servers=bootstrap,
        names=[raw_in, raw_out],
        partitions=PARTITIONS,
        replication_factor=1,
    )
    now = datetime.now(UTC)
    envelopes = [
        build_envelope(CASES_SUBMITTED, case, source="gridflow/bench", key=case.case_id, now=now)
        for case in submitted_cases(RAW_RECORDS, refdata.grid, seed=1)
    ]
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=2, enable_idempotence=False
    )
    await producer.start()
    try:
        cpu = MachineCpu()
        started = time.perf_counter()
        for start in range(0, len(envelopes), 2000):
            chunk = envelopes[start : start + 2000]
            await asyncio.gather(*[await _send_raw(producer, raw_in, e) for e in chunk])
        produced = time.perf_counter() - started
        produce_ms = cpu.ms_per(RAW_RECORDS)
    finally:
        await producer.stop()
    cpu = MachineCpu()  # from the consumer's start: its group join is part of the cost
    consumed = await raw_phase(
        bootstrap=bootstrap, source=raw_in, sink=raw_out, group=f"{tag}-raw", count=RAW_RECORDS
    )
    return [
        _rate_row(
            "ceiling: raw broker produce (records/s)", RAW_RECORDS / produced, cpu_ms=produce_ms
        ),
        _rate_row(
            "ceiling: raw broker consume+produce (records/s)",
            consumed["per_second"],
            cpu_ms=cpu.ms_per(RAW_RECORDS),
        ),
    ]


async def http_ceilings(receiver: str, seconds: float, concurrency: int) -> list[dict[str, Any]]:
    """Signed webhook POSTs to the receiver as fast as `concurrency` tasks go, each with a fresh
    webhook-id and signature (as dispatch sends them), with httpx and with aiohttp."""
    body = json.dumps(
        {"delivery_id": "bench", "department": "chengguan", "case": {"description": "ceiling"}}
    ).encode()
    secret = department_secret("chengguan")
    url = f"{receiver}/departments/chengguan"
    counter = iter(range(10**12))

    def headers() -> dict[str, str]:
        msg_id = f"msg_ceiling{next(counter)}"
        signed = signed_headers(secret=secret, msg_id=msg_id, now=datetime.now(UTC), body=body)
        return {**signed, "content-type": "application/json"}

    async def run(post: Callable[[], Any]) -> tuple[float, float | None]:
        """Requests per second, and CPU ms per request."""
        done = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await post()
                done += 1

        cpu = MachineCpu()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - started), cpu.ms_per(done)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def with_httpx() -> None:
            (await client.post(url, content=body, headers=headers())).raise_for_status()

        print(f"  ceiling: raw httpx POSTs to the receiver, {seconds:.0f} s …", flush=True)
        httpx_rate, httpx_ms = await run(with_httpx)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def with_aiohttp() -> None:
            async with session.post(url, data=body, headers=headers()) as response:
                await response.read()
                response.raise_for_status()

        print(f"  ceiling: raw aiohttp POSTs to the receiver, {seconds:.0f} s …", flush=True)
        aiohttp_rate, aiohttp_ms = await run(with_aiohttp)
    return [
        _rate_row("ceiling: raw httpx POSTs to the receiver (/s)", httpx_rate, cpu_ms=httpx_ms),
        _rate_row(
            "ceiling: raw aiohttp POSTs to the receiver (/s)", aiohttp_rate, cpu_ms=aiohttp_ms
        ),
    ]


# --- where the time goes -------------------------------------------------------------------------

# Per case, from the services' own tables (timestamps of their clocks, one machine): intake's commit
# → its relay's broker acknowledgement → dispatch's commit of the case → the webhook answered.
_SEGMENTS = (
    ("intake commit → relay published", "o.published_at - o.created_at"),
    ("relay published → dispatch stored", "c.created_at - o.published_at"),
    ("dispatch stored → webhook answered", "d.delivered_at - c.created_at"),
)


async def breakdown(database_url: str, tag: str, since: datetime) -> dict[str, list[float]]:
    """p50 and p99 (ms) of each segment of _SEGMENTS over the cases intake committed since
    `since` (one phase: the next has not started)."""
    columns = ", ".join(
        f"percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM {sql}))"
        for _, sql in _SEGMENTS
    )
    query = sa.text(
        f'SELECT {columns} FROM "{tag}_intake".outbox o'  # noqa: S608  # the bench's own schemas
        f' JOIN "{tag}_dispatch".cases c ON c.case_id = o.key'
        f' JOIN "{tag}_dispatch".deliveries d ON d.case_id = c.case_id'
        " WHERE o.topic = :topic AND o.created_at >= :since AND d.delivered_at IS NOT NULL"
    )
    engine = create_async_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(query, {"topic": CASES_SUBMITTED.name, "since": since})).one()
    finally:
        await engine.dispose()
    return {
        name: [round(1000 * q, 1) for q in values]
        for (name, _), values in zip(_SEGMENTS, row, strict=True)
        if values is not None
    }


# --- rows -----------------------------------------------------------------------------------------


def _rate_row(phase: str, per_second: float, **extra: Any) -> dict[str, Any]:
    return {"phase": phase, "per_second": round(per_second, 1), **extra}


def _percentiles(latencies: list[float], missing: int) -> dict[str, float | None]:
    """p50/p95/p99 in ms over every accepted case; a case never delivered counts as infinitely
    late, so a percentile that falls among them is None ("not delivered")."""
    ordered = sorted(latencies) + [float("inf")] * missing
    result: dict[str, float | None] = {}
    for name, q in (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99)):
        value = ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")
        result[name] = None if value == float("inf") else round(value * 1000, 1)
    return result


def e2e_row(
    phase: str,
    *,
    stats: Stats,
    sent_at: dict[int, float],
    deliveries: Deliveries,
    ended: float,
    drained_in: float,
) -> dict[str, Any]:
    """End-to-end figures of one load phase. `delivered_per_second`: first webhooks received
    between the phase's first delivery and the end of its load, per second (the rate the whole
    pipeline sustained while loaded)."""
    received = [(deliveries.first[n], n) for n in sent_at if n in deliveries.first]
    latencies = [at - sent_at[n] for at, n in received]
    accepted = stats.ok(202)
    first = min((at for at, _ in received), default=ended)
    window = max(1e-9, ended - first)
    within = sum(1 for at, _ in received if at <= ended)
    return {
        "phase": phase,
        "per_second": round(within / window, 1),
        "intake_accepted_per_second": round(stats.rate(202), 1),
        "intake_p99_ms": round(stats.percentile(0.99) * 1000, 1),
        **_percentiles(latencies, max(0, accepted - len(received))),
        "accepted": accepted,
        "delivered": len(received),
        "undelivered": max(0, accepted - len(received)),
        "unexpected": stats.completed - accepted + stats.errors,
        "drain_seconds": round(drained_in, 1),
    }


# --- a round --------------------------------------------------------------------------------------


@dataclass
class Round:
    found: Servers
    tag: str
    seconds: float
    stage_seconds: float
    rates: list[int]
    connections: int
    profile: str | None
    headers: dict[str, str] = field(default_factory=worker_headers)
    marks: list[str] = field(default_factory=list)
    profiled_pid: int | None = None

    def mark(self, name: str) -> None:
        """The profiled service's sampler starts its next phase."""
        if self.profiled_pid is not None:
            self.marks.append(name)
            os.kill(self.profiled_pid, signal.SIGUSR1)

    def profile_path(self, service: str) -> Path | None:
        if self.profile != service:
            return None
        return REPO / ".run" / f"bench-e2e-profile-{service}-{self.tag}.json"


async def measure(run: Round, workdir: Path) -> dict[str, Any]:
    found, tag = run.found, run.tag
    rows: list[dict[str, Any]] = []
    print("  ceiling: trivial FastAPI endpoint …", flush=True)
    with trivial_server() as trivial_port:
        cpu = MachineCpu()
        trivial = await trivial_load(trivial_port, run.seconds, run.connections)
        trivial["cpu_ms"] = cpu.ms_per(trivial["requests"])
    rows.append({**trivial, "phase": "ceiling: trivial FastAPI endpoint (requests/s)"})
    receiver_port, intake_port, dispatch_port = free_port(), free_port(), free_port()
    receiver = f"http://127.0.0.1:{receiver_port}"
    refdata = receiver_config(workdir / "config", receiver)
    names = TopicNames(f"{tag}.")
    await ensure_topics(
        bootstrap_servers=found.bootstrap,
        names=[names(t) for t in CATALOGUE],
        partitions=PARTITIONS,
        replication_factor=1,
    )
    print(f"  ceiling: raw broker produce, then consume+produce, {RAW_RECORDS:,} records …")
    rows += await broker_ceilings(bootstrap=found.bootstrap, tag=tag, refdata=refdata)
    config = workdir / "config"
    dispatch_env = dispatch_environment(
        servers=found, tag=tag, port=dispatch_port, config_dir=config, refdata=refdata
    )
    intake_env = intake_environment(
        found=found, tag=tag, port=intake_port, config_dir=config, refdata=refdata
    )
    intake_env["GRIDFLOW_HTTP_PORT"] = str(intake_port)
    receiver_argv = ["-m", "bench.e2e_receiver", str(receiver_port), ",".join(refdata.departments)]
    intake_argv = ["-m", "services.intake"]
    intake_profile = run.profile_path("intake")
    if intake_profile:
        intake_argv = ["-m", "bench.sampler", str(intake_profile), *intake_argv]
    deliveries = Deliveries(receiver)
    async with contextlib.aclosing(deliveries):
        with (
            process(receiver_argv, dict(os.environ), f"{receiver}/healthz") as receiver_pid,
            process(
                intake_argv, intake_env, f"http://127.0.0.1:{intake_port}/readyz"
            ) as intake_pid,
        ):
            rows += await http_ceilings(receiver, run.seconds / 2, concurrency=HTTP_IN_FLIGHT)
            if intake_profile:
                run.profiled_pid = intake_pid
            rows += await intake_alone(run, deliveries, intake_port)
            accepted = rows[-1]["accepted"]
            dispatch_argv = ["-m", "services.dispatch"]
            dispatch_profile = run.profile_path("dispatch")
            if dispatch_profile:
                dispatch_argv = ["-m", "bench.sampler", str(dispatch_profile), *dispatch_argv]
            dispatch_ready = f"http://127.0.0.1:{dispatch_port}/readyz"
            with process(dispatch_argv, dispatch_env, dispatch_ready) as dispatch_pid:
                if dispatch_profile:
                    run.profiled_pid = dispatch_pid
                pids = {"intake": intake_pid, "dispatch": dispatch_pid, "receiver": receiver_pid}
                pids["bench (load generator)"] = os.getpid()
                if found.broker:
                    pids["broker"] = found.broker.process.pid
                meter = CpuMeter(pids)
                rows += await dispatch_alone(
                    run, deliveries, accepted, meter, schema=dispatch_env["GRIDFLOW_DB_SCHEMA"]
                )
                rows += await end_to_end(run, deliveries, intake_port, meter)
    return {
        "rows": rows,
        "receiver": deliveries.counters,
        "settings": {k: v for k, v in dispatch_env.items() if k.startswith("GRIDFLOW_DELIVERY")},
    }


async def intake_alone(
    run: Round, deliveries: Deliveries, intake_port: int
) -> list[dict[str, Any]]:
    """intake at saturation with dispatch not running yet (the receiver set to hold), then its
    relay publishing what it accepted: the backlog dispatch starts on."""
    reports = Reports(STAGE_PHASE * PHASE_STRIDE, run.headers)
    await deliveries.control("hold")
    print(f"  intake alone: reports at saturation, {run.stage_seconds:.0f} s …", flush=True)
    run.mark("intake alone")
    cpu = MachineCpu()  # accepting, and publishing what was accepted
    stats = await closed_loop(
        "127.0.0.1", intake_port, reports, connections=run.connections, seconds=run.stage_seconds
    )
    accepted = stats.ok(202)
    relay = await _drain_row(run.found.database_url, f"{run.tag}_intake")
    cpu_ms = cpu.ms_per(accepted)
    return [
        {
            "phase": "intake alone: reports accepted (saturation)",
            "per_second": round(stats.rate(202), 1),
            **_percentiles(stats.latencies, 0),
            "accepted": accepted,
            "unexpected": stats.completed - accepted + stats.errors,
            # the relay's backlog when the load stopped (0: it kept up), and its drain rate
            "relay_left": relay["requests"],
            "relay_drain_per_second": relay["per_second"],
            "cpu_ms": cpu_ms,
        }
    ]


async def dispatch_alone(
    run: Round, deliveries: Deliveries, accepted: int, meter: CpuMeter, *, schema: str
) -> list[dict[str, Any]]:
    """dispatch, just started, consumes intake's backlog with every delivery held (measured from
    its tables as bench.dispatch does), then the receiver answers: webhooks delivered per second.
    `meter` gives each phase's CPU per process."""
    engine = create_async_engine(run.found.database_url, pool_size=2)
    observed = Observed(engine, schema)
    try:
        print(f"  dispatch alone: consuming {accepted:,} cases (deliveries held) …", flush=True)
        await _wait_until("dispatch started", observed.stored, 1, interval=0.05)
        run.mark("dispatch consumes")
        cpu = MachineCpu()
        meter.start()
        consumed = await consume_phase(observed, accepted)
        consuming_percent = meter.stop()
        consuming_ms = cpu.ms_per(accepted)
        print("  dispatch alone: deliveries released …", flush=True)
        run.mark("dispatch delivers")
        released = time.time()
        cpu = MachineCpu()
        meter.start()
        async with progress("webhooks", deliveries, STAGE_PHASE, None):
            await deliveries.control("release")
            await observed.all_delivered(accepted)
        delivering_percent = meter.stop()
        delivering_ms = cpu.ms_per(accepted)
        last = await observed.value(sa.select(sa.func.max(observed.deliveries.c.delivered_at)))
    finally:
        await engine.dispose()
    return [
        _rate_row(
            "dispatch alone: consumed, stored, received published (cases/s)",
            consumed["per_second"],
            stored_per_second=consumed["stored_per_second"],
            cpu_ms=consuming_ms,
            cpu_percent=consuming_percent,
        ),
        _rate_row(
            "dispatch alone: webhooks delivered (/s)",
            accepted / max(1e-9, last.timestamp() - released),
            cpu_ms=delivering_ms,
            cpu_percent=delivering_percent,
        ),
    ]


async def end_to_end(
    run: Round, deliveries: Deliveries, intake_port: int, meter: CpuMeter
) -> list[dict[str, Any]]:
    rows = []
    for phase, rate in enumerate(run.rates, start=2):
        reports = Reports(phase * PHASE_STRIDE, run.headers)
        label = f"e2e at {rate:,}/s"
        # what the phases before wrote (a backlog of tens of thousands of cases) is flushed
        # now, not checkpointed by PostgreSQL while this phase's latency is measured
        await checkpoint(run.found.database_url)
        since = datetime.now(UTC)
        print(f"  {label}: {run.seconds:.0f} s …", flush=True)
        run.mark(label)
        async with progress(label, deliveries, phase, reports):
            meter.start()
            spent = MachineCpu()  # the load and the drain after it, per case delivered
            stats = await open_loop(
                "127.0.0.1",
                intake_port,
                reports,
                rate=rate,
                seconds=run.seconds,
                max_connections=256,
            )
            ended = time.perf_counter()
            cpu = meter.stop()
            drained = await drain(deliveries, phase, stats.ok(202))
            cpu_ms = spent.ms_per(deliveries.per_phase[phase])
        # latency from each request's due moment (no coordinated omission), as the loadgen's own
        due = {reports.base + i: stats.started + i / rate for i in range(int(rate * run.seconds))}
        sent_at = {n: due[n] for n in reports.sent}
        rows.append(
            e2e_row(
                f"{label}: delivered/s",
                stats=stats,
                sent_at=sent_at,
                deliveries=deliveries,
                ended=ended,
                drained_in=drained,
            )
            | {
                "offered_per_second": rate,
                "cpu_percent": cpu,
                "cpu_ms": cpu_ms,
                "stages_ms": await breakdown(run.found.database_url, run.tag, since),
            }
        )
    phase = 2 + len(run.rates)
    reports = Reports(phase * PHASE_STRIDE, run.headers)
    label = "e2e saturation"
    await checkpoint(run.found.database_url)
    since = datetime.now(UTC)
    print(f"  {label} ({run.connections} connections): {run.seconds:.0f} s …", flush=True)
    run.mark(label)
    async with progress(label, deliveries, phase, reports):
        meter.start()
        spent = MachineCpu()
        stats = await closed_loop(
            "127.0.0.1", intake_port, reports, connections=run.connections, seconds=run.seconds
        )
        ended = time.perf_counter()
        cpu = meter.stop()
        drained = await drain(deliveries, phase, stats.ok(202))
        cpu_ms = spent.ms_per(deliveries.per_phase[phase])
    row = e2e_row(
        f"{label}: delivered/s (sustained)",
        stats=stats,
        sent_at=reports.sent,
        deliveries=deliveries,
        ended=ended,
        drained_in=drained,
    )
    stages = await breakdown(run.found.database_url, run.tag, since)
    rows.append(row | {"cpu_percent": cpu, "cpu_ms": cpu_ms, "stages_ms": stages})
    return rows


# --- rounds, ratios, output -----------------------------------------------------------------------

CEILINGS = {  # stage -> the ceiling it is divided by
    "intake alone: reports accepted (saturation)": "ceiling: trivial FastAPI endpoint (requests/s)",
    "dispatch alone: consumed, stored, received published (cases/s)": (
        "ceiling: raw broker consume+produce (records/s)"
    ),
    "dispatch alone: webhooks delivered (/s)": "ceiling: raw aiohttp POSTs to the receiver (/s)",
    SATURATION: "ceiling: trivial FastAPI endpoint (requests/s)",
}
TARGETS: dict[str, tuple[str, str, Callable[[float], bool]]] = {
    SATURATION: ("per_second", "≥ 2,000/s", lambda v: v >= 2000),
    "e2e at 500/s: delivered/s": ("p99_ms", "p99 < 250 ms", lambda v: v < 250),
}


def add_ratios(rows: list[dict[str, Any]]) -> None:
    by_phase = {row["phase"]: row for row in rows}
    for row in rows:
        ceiling = by_phase.get(CEILINGS.get(row["phase"], ""))
        if ceiling and ceiling["per_second"]:
            row["ceiling"] = ceiling["phase"]
            row["ratio_to_ceiling"] = round(row["per_second"] / ceiling["per_second"], 3)


def summarise(measured: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    results = []
    for phase in zip(*measured, strict=True):
        summary: dict[str, Any] = {"phase": phase[0]["phase"]}
        if "ceiling" in phase[0]:
            summary["ceiling"] = phase[0]["ceiling"]
        for name in ("per_second", "p50_ms", "p95_ms", "p99_ms", "ratio_to_ceiling", "cpu_ms"):
            values = [row[name] for row in phase if row.get(name) is not None]
            if values:
                summary[name] = round(
                    statistics.median(values), 3 if name in ("ratio_to_ceiling", "cpu_ms") else 1
                )
                summary[f"{name}_range"] = [min(values), max(values)]
            elif any(name in row for row in phase):
                summary[name] = None  # not delivered (see `undelivered`)
        for name in ("undelivered", "unexpected"):
            if any(name in row for row in phase):
                summary[name] = sum(row.get(name, 0) for row in phase)
        target = TARGETS.get(summary["phase"])
        if target and summary.get(target[0]) is not None:
            summary["target"] = target[1]
            summary["met"] = target[2](summary[target[0]])
        elif target:
            summary["target"], summary["met"] = target[1], False
        results.append(summary)
    return results


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }


def run_bench(
    *,
    seconds: float,
    stage_seconds: float,
    rounds: int,
    rates: list[int],
    connections: int,
    profile: str | None,
) -> dict[str, Any]:
    started = time.perf_counter()
    about = machine()
    measured: list[list[dict[str, Any]]] = []
    details: list[dict[str, Any]] = []
    profiles: list[tuple[Path, list[str]]] = []
    for number in range(1, rounds + 1):
        tag = f"bench{os.getpid()}e{number}"
        print(f"round {number}/{rounds}", flush=True)
        with (
            tempfile.TemporaryDirectory(prefix="bench-e2e-") as folder,
            servers() as found,
        ):
            about["database"] = found.database
            about["broker"] = "configured" if found.broker is None else "embedded Tansu"
            run = Round(found, tag, seconds, stage_seconds, rates, connections, profile)
            try:
                result = asyncio.run(measure(run, Path(folder)))
            finally:
                for schema in (f"{tag}_intake", f"{tag}_dispatch"):
                    asyncio.run(_drop_schema(found.database_url, schema))
        add_ratios(result["rows"])
        measured.append(result["rows"])
        details.append({k: v for k, v in result.items() if k != "rows"})
        path = run.profile_path(profile) if profile else None
        if path and path.exists():
            profiles.append((path, run.marks))
    for path, marks in profiles:
        print_profile(path, names=tuple(marks), service=str(profile))
    return {
        "run_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": about,
        "seconds_per_phase": seconds,
        "stage_seconds": stage_seconds,
        "rounds": rounds,
        "rates": rates,
        "connections": connections,
        "total_seconds": round(time.perf_counter() - started, 1),
        "results": (results := summarise(measured)),
        "cpu_budget": cpu_budget(results, about["nproc"] or 1),
        "rounds_measured": measured,
        "rounds_details": details,
    }


def print_table(report: dict[str, Any]) -> None:
    about = report["machine"]
    print(
        f"\n{about['nproc']} CPUs ({about['cpu_model']}), Python {about['python']},"
        f" {about['database']}, {about['broker']}; medians of {report['rounds']} round(s)"
        f" of {report['seconds_per_phase']:.0f} s per phase, in {report['total_seconds']:.0f} s"
    )
    print(
        f"{'phase':<64}{'per s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'ratio':>8}"
        f"{'CPU ms':>8}  target"
    )
    for row in report["results"]:
        cells = [
            ""
            if row.get(name) is None and name not in row
            else ("–" if row[name] is None else row[name])
            for name in ("p50_ms", "p95_ms", "p99_ms")
        ]
        ratio = row.get("ratio_to_ceiling", "")
        cpu_ms = "" if row.get("cpu_ms") is None else row["cpu_ms"]
        met = ""
        if "target" in row:
            met = f"{row['target']}: {'met' if row['met'] else 'NOT met'}"
        extra = f" ({row['undelivered']} undelivered)" if row.get("undelivered") else ""
        print(
            f"{row['phase']:<64}{row['per_second']:>10,}{cells[0]:>9}{cells[1]:>9}{cells[2]:>9}"
            f"{ratio:>8}{cpu_ms:>8}  {met}{extra}"
        )
    print(
        "CPU ms: what the whole machine (every process) spent per request, record or case."
        f" Per case, at {about['nproc']} cores:"
    )
    for line in report["cpu_budget"]:
        print(
            f"  {line['measure']:<66}{line['cpu_ms_per_case']:>7.3f} ms"
            f"  → at most {line['cases_per_second_at_most']:,} cases/s"
        )


def print_details(report: dict[str, Any]) -> None:
    """Per round and end-to-end phase: intake's own answers, CPU per process, where the time went."""
    for number, (rows, details) in enumerate(
        zip(report["rounds_measured"], report["rounds_details"], strict=True), 1
    ):
        print(f"\nround {number}: receiver {details['receiver']}")
        for row in rows:
            if "cpu_percent" not in row:
                continue
            if "stages_ms" in row:  # an end-to-end phase
                print(
                    f"  {row['phase']}: intake accepted {row['intake_accepted_per_second']:,}/s"
                    f" (p99 {row['intake_p99_ms']} ms), {row['delivered']:,} of"
                    f" {row['accepted']:,} delivered, drained in {row['drain_seconds']} s"
                )
            else:
                print(f"  {row['phase']}:")
            cpu = dict(row["cpu_percent"])
            machine_wide = cpu.pop("machine (all processes)", 0.0)
            # what the machine spent besides the processes named (a shared VM: other users)
            cpu["rest of the machine"] = round(machine_wide - sum(cpu.values()), 1)
            print("    CPU % of a core: " + ", ".join(f"{k} {v}" for k, v in cpu.items()))
            if "stages_ms" in row:
                print(
                    "    p50/p99 ms: "
                    + "; ".join(f"{k} {p50}/{p99}" for k, (p50, p99) in row["stages_ms"].items())
                )


def _interruptible_run(args: argparse.Namespace) -> dict[str, Any]:
    """Ctrl-C and SIGTERM stop every process it started (also when run in the background)."""
    with interruptible():
        return run_bench(
            seconds=args.seconds,
            stage_seconds=args.stage_seconds,
            rounds=args.rounds,
            rates=args.rates,
            connections=args.connections,
            profile=args.profile,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.e2e",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="load per phase")
    parser.add_argument(
        "--stage-seconds", type=float, default=5.0, help="intake alone (its backlog feeds dispatch)"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--rates", type=lambda s: [int(r) for r in s.split(",")], default=[500, 1000]
    )
    parser.add_argument("--connections", type=int, default=64, help="closed-loop clients")
    parser.add_argument("--profile", choices=("intake", "dispatch"), default=None)
    parser.add_argument("--out", type=Path, default=REPO / ".run" / "bench-e2e.json")
    args = parser.parse_args(argv)
    try:
        report = _interruptible_run(args)
    except KeyboardInterrupt:
        print("\ninterrupted: every process it started is stopped, its schemas dropped")
        return 130
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n")
    print_table(report)
    print_details(report)
    print(f"\nJSON: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
