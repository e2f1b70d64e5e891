"""`make bench-sla`: the sla service's memory with many open timers, and how fast and how late it
fires timers that come due.

sla runs as a process (`python -m services.sla`), configured through environment variables only;
the bench writes timers straight into its `sla_timers` table (COPY) after the service migrated
its schema, as the consumer would have left them: clock `wall`, warnings at 50 % and 80 % of the
limit, breach, two escalation rungs.

1. **memory** (once): open timers are added in steps up to `--levels` (default 10k, 100k, 1M
   in total), each started in the last 3 days (as open timers are) with its next point weeks
   ahead (so it stays open). Per step: RSS of a running sla for `--memory-window` seconds (its
   assessor's interval set past the run, so this is the firing loop, consumers, relay and
   HTTP), and of a freshly started sla on the same table until it is idle (its start-up: the
   provisional recount and the assessor's first round over the month's timers).
2. **paced firing** (per round, fresh schema and process): `--rate` (default 5,000/s, the
   target) × `--seconds` timers whose next point comes due evenly spread over `--seconds`, from
   a moment after the insert is committed. Lag of each signal: the outbox row's `created_at` (the
   `now` sla stages it with) minus the point's due time (the signal's `at`); and, stricter, the
   moment the bench first saw the committed row (polling every 20 ms) minus the due time. Plus
   the service's own histogram `gridflow_sla_firing_lag_seconds` (from /metrics, this phase's
   share), and the broker's acknowledgement (`published_at`) minus the due time.
3. **backlog** (per round): `--backlog` timers already due at once (as after downtime); fired per
   second = timers / (last − first staged signal), and published per second (the relay, until the
   broker acknowledged the last one).

Checks: every timer fired exactly once (`fired` = 1, one outbox row per timer), every signal
published. Servers: DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS when set, else embedded ones.
`--profile` runs sla under bench/sampler.py (phases: paced, backlog). The benchmark asserts no
timings; it prints a table and writes a JSON file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import sqlalchemy as sa

from bench.dispatch import CpuMeter, Servers, print_profile, servers
from deploy.embedded import free_port
from libs.common.ids import new_case_id

REPO = Path(__file__).resolve().parents[1]
API_SECRET = "bench-sla-api-secret-0123456789abcdef0123"  # noqa: S105  # a throwaway bench key
METRICS_TOKEN = "bench-sla-metrics-token"  # noqa: S105  # a throwaway bench token
DEPARTMENTS = ("chengguan", "gongan")
UNIT_GRID = "430281001001001"
LIMIT = timedelta(hours=2)  # paced and backlog timers: the first warning is at 1 h
OPEN_LIMIT = timedelta(days=60)  # memory timers: the first warning is 30 days after the start
COLUMNS = (
    "case_id",
    "stage",
    "name",
    "department",
    "policy",
    "clock",
    "limit_seconds",
    "warnings",
    "escalation",
    "started_at",
    "anchor",
    "used_seconds",
    "due_at",
    "provisional",
    "status",
    "fired",
    "next_fire_at",
    "stopped_at",
    "outcome",
    "unit_grid",
    "case_version",
    "extended",
)
WARNINGS = json.dumps([0.5, 0.8])
ESCALATION = json.dumps([[7200.0, "town"], [28800.0, "city"]])
STALL_SECONDS = 60.0
# Bench defaults for sla; GRIDFLOW_* variables in the environment override them.
TUNABLE_DEFAULTS = {
    "GRIDFLOW_LOG_LEVEL": "WARNING",
    "GRIDFLOW_KAFKA_SESSION_TIMEOUT_MS": "6000",
    "GRIDFLOW_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
}
REPORTED_SETTINGS = (
    "GRIDFLOW_FIRE_BATCH",
    "GRIDFLOW_FIRE_POLL_SECONDS",
    "GRIDFLOW_ASSESSMENT_SECONDS",
    "GRIDFLOW_KAFKA_PARTITIONS",
    "GRIDFLOW_LOG_LEVEL",
)


class PhaseError(RuntimeError):
    pass


# --- timers ---------------------------------------------------------------------------------------


def timer_record(*, point: datetime, limit: timedelta, started: datetime) -> tuple[Any, ...]:
    """A running wall-clock timer whose next point (its first warning, at 50 %) is `point`."""
    anchor = point - limit / 2
    return (
        new_case_id(started),
        "handle",
        None,
        random.choice(DEPARTMENTS),  # noqa: S311  # test data
        "default@v1-bench",
        "wall",
        limit.total_seconds(),
        WARNINGS,
        ESCALATION,
        started,
        anchor,
        0.0,
        anchor + limit,
        False,
        "running",
        0,
        point,
        None,
        None,
        UNIT_GRID,
        3,
        False,
    )


async def connect(database_url: str, schema: str) -> asyncpg.Connection:
    """A plain asyncpg connection to sla's schema (it may not exist yet: sla migrates it)."""
    url = sa.engine.make_url(database_url).set(drivername="postgresql")
    return await asyncpg.connect(
        url.render_as_string(hide_password=False), server_settings={"search_path": schema}
    )


async def copy_timers(
    conn: asyncpg.Connection, schema: str, records: list[tuple[Any, ...]], *, chunk: int = 100_000
) -> float:
    """COPY the timers into sla's table, each chunk in its own transaction; seconds taken."""
    began = time.perf_counter()
    for start in range(0, len(records), chunk):
        await conn.copy_records_to_table(
            "sla_timers",
            records=records[start : start + chunk],
            columns=COLUMNS,
            schema_name=schema,
        )
    return time.perf_counter() - began


# --- the sla process ------------------------------------------------------------------------------


def sla_environment(
    servers: Servers, *, tag: str, port: int, extra: dict[str, str]
) -> dict[str, str]:
    fixed = {
        "DATABASE_URL": servers.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": servers.bootstrap,
        "GRIDFLOW_API_JWT_SECRET": API_SECRET,
        "GRIDFLOW_DB_SCHEMA": f"{tag}_sla",
        "GRIDFLOW_TOPIC_PREFIX": f"{tag}.",
        "GRIDFLOW_CONSUMER_GROUP": f"{tag}-sla",
        "GRIDFLOW_HTTP_PORT": str(port),
        "GRIDFLOW_CONFIG_DIR": str(REPO / "config"),
        "GRIDFLOW_METRICS_TOKEN": METRICS_TOKEN,
    }
    return {**TUNABLE_DEFAULTS, **extra, **os.environ, **fixed}


def _get(url: str, *, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)  # noqa: S310  # loopback
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310  # loopback
            return response.status, response.read().decode()
    except OSError:
        return 0, ""


@contextlib.asynccontextmanager
async def sla_process(
    env: dict[str, str], *, profile: Path | None, name: str
) -> AsyncIterator[psutil.Process]:
    log = REPO / ".run" / f"bench-sla-{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    runner = ["-m", "bench.sampler", str(profile)] if profile else []
    with log.open("wb") as out:  # the child keeps its own descriptor
        process = subprocess.Popen(  # noqa: S603, ASYNC220  # our own module; started once
            [sys.executable, *runner, "-m", "services.sla"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        ready = f"http://127.0.0.1:{env['GRIDFLOW_HTTP_PORT']}/readyz"
        deadline = time.monotonic() + 120
        while (await asyncio.to_thread(_get, ready))[0] != 200:
            if process.poll() is not None:
                raise PhaseError(f"sla exited with {process.returncode}: see {log}")
            if time.monotonic() > deadline:
                raise PhaseError(f"sla not ready after 120 s: see {log}")
            await asyncio.sleep(0.2)
        yield psutil.Process(process.pid)
    finally:
        # SIGINT: uvicorn shuts down gracefully, and the sampler still writes its file
        process.send_signal(signal.SIGINT)
        await asyncio.to_thread(process.wait, 60)


async def scrape_lag(port: int) -> dict[str, float]:
    """The firing-lag histogram's cumulative buckets (and `count`) from sla's /metrics."""
    status, text = await asyncio.to_thread(
        _get, f"http://127.0.0.1:{port}/metrics", token=METRICS_TOKEN
    )
    if status != 200:
        raise PhaseError(f"/metrics answered {status}")
    buckets: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("gridflow_sla_firing_lag_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[le] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("gridflow_sla_firing_lag_seconds_count"):
            buckets["count"] = float(line.rsplit(" ", 1)[1])
    return buckets


def histogram_share(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """This phase's observations: how many, and the share at or under each bucket bound."""
    count = after.get("count", 0.0) - before.get("count", 0.0)
    shares = {
        le: round((after[le] - before.get(le, 0.0)) / count, 4)
        for le in after
        if le not in ("count", "+Inf") and count
    }
    return {"observations": int(count), "share_within": shares}


# --- memory ---------------------------------------------------------------------------------------


def high_water_mib(process: psutil.Process) -> float | None:
    """The peak RSS since the process started (Linux VmHWM), so no sampling can miss it."""
    try:
        status = Path(f"/proc/{process.pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


async def sample_rss(process: psutil.Process, *, seconds: float) -> dict[str, Any]:
    """RSS of the process every 0.25 s for `seconds`: the last and the peak, and its CPU."""
    began = time.monotonic()
    cpu = process.cpu_times()
    peak = rss = 0
    while time.monotonic() - began < seconds:
        rss = process.memory_info().rss
        peak = max(peak, rss)
        await asyncio.sleep(0.25)
    after = process.cpu_times()
    used = after.user + after.system - cpu.user - cpu.system
    return {
        "rss_mib": round(rss / 2**20, 1),
        "peak_rss_mib": round(peak / 2**20, 1),
        "high_water_mib": high_water_mib(process),
        "cpu_percent": round(100 * used / (time.monotonic() - began), 1),
    }


async def settle(process: psutil.Process, *, quiet: float, within: float) -> dict[str, Any]:
    """RSS every 0.25 s until the process used < 2 % of a core for `quiet` seconds (its start-up
    work done) or `within` seconds passed: the peak and the last sample."""
    began = time.monotonic()
    peak = rss = 0
    window: list[tuple[float, float]] = []
    while True:
        rss = process.memory_info().rss
        peak = max(peak, rss)
        times = process.cpu_times()
        now = time.monotonic()
        window = [(t, c) for t, c in window if now - t <= quiet] + [
            (now, times.user + times.system)
        ]
        idle = now - began >= quiet and window[-1][1] - window[0][1] < 0.02 * quiet
        if idle or now - began > within:
            return {
                "rss_mib": round(rss / 2**20, 1),
                "peak_rss_mib": round(peak / 2**20, 1),
                "high_water_mib": high_water_mib(process),
                "cpu_seconds": round(times.user + times.system, 1),
                "settled_after_s": round(now - began, 1) if idle else None,
            }
        await asyncio.sleep(0.25)


async def restarted(servers: Servers, *, tag: str, schema_tag: str) -> dict[str, Any]:
    """A fresh sla on the same schema: its start-up (provisional recount, the assessor's first
    round over the month's timers) until it is idle."""
    env = sla_environment(servers, tag=schema_tag, port=free_port(), extra={})
    env["GRIDFLOW_CONSUMER_GROUP"] = f"{tag}-restart"
    began = time.monotonic()
    async with sla_process(env, profile=None, name="memory-restart") as process:
        ready = time.monotonic() - began
        sample = await settle(process, quiet=3.0, within=600.0)
    return {"ready_after_s": round(ready, 1), **sample}


async def memory_phase(
    servers: Servers, *, levels: list[int], tag: str, window: float
) -> dict[str, Any]:
    """Open timers added in steps; per step the RSS of a running sla (its firing loop, consumers,
    relay; the assessor's interval set past the run) and of a freshly started one."""
    port = free_port()
    # the assessor of the running process works once, at its start, on the empty table
    env = sla_environment(
        servers, tag=tag, port=port, extra={"GRIDFLOW_ASSESSMENT_SECONDS": "86400"}
    )
    schema = env["GRIDFLOW_DB_SCHEMA"]
    conn = await connect(servers.database_url, schema)
    steps: list[dict[str, Any]] = []
    try:
        async with sla_process(env, profile=None, name="memory") as process:
            print("  no timers …", flush=True)
            first = await sample_rss(process, seconds=window)
            steps.append({"open_timers": 0, "running": first})
            total = 0
            for level in levels:
                now = datetime.now(UTC)
                records = []
                for _ in range(level - total):
                    started = now - timedelta(seconds=random.uniform(0, 3 * 86400))  # noqa: S311
                    records.append(
                        timer_record(
                            point=started + OPEN_LIMIT / 2, limit=OPEN_LIMIT, started=started
                        )
                    )
                print(f"  inserting {level - total:,} open timers (to {level:,}) …", flush=True)
                took = await copy_timers(conn, schema, records)
                del records
                await conn.execute("ANALYZE sla_timers")
                added, total = level - total, level
                print(f"  {level:,} open timers: RSS of the running sla …", flush=True)
                running = await sample_rss(process, seconds=window)
                print("  … and of a freshly started one", flush=True)
                fresh = await restarted(servers, tag=tag, schema_tag=tag)
                open_now = await conn.fetchval(
                    "SELECT count(*) FROM sla_timers WHERE next_fire_at IS NOT NULL"
                )
                steps.append(
                    {
                        "open_timers": int(open_now),
                        "insert_seconds": round(took, 1),
                        "insert_per_second": round(added / took),
                        "running": running,
                        "restarted": fresh,
                    }
                )
                print(f"    {steps[-1]}", flush=True)
            status, body = await asyncio.to_thread(
                _get, f"http://127.0.0.1:{port}/metrics", token=METRICS_TOKEN
            )
            signals = sum(
                float(line.rsplit(" ", 1)[1])
                for line in body.splitlines()
                if line.startswith("gridflow_sla_signals_total{")
            )
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
    return {"steps": steps, "signals_sent": int(signals), "metrics_status": status}


# --- firing ---------------------------------------------------------------------------------------


class OutboxWatch:
    """Polls sla's outbox and notes when each staged signal first became visible (committed).

    Ids are taken at INSERT and transactions commit in any order (two firing transactions, or
    instances, at once): an id skipped by one poll is asked for again until it shows (an id of
    a rolled-back transaction never does; it costs nothing)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.last_id = 0
        self.missing: set[int] = set()
        self.seen: list[tuple[float, float, float]] = []  # (seen, created_at, due), epoch s
        self._stop = asyncio.Event()

    async def run(self) -> None:
        query = (
            "SELECT id, extract(epoch FROM created_at)::float8 AS created,"
            " extract(epoch FROM (data->>'at')::timestamptz)::float8 AS due"
            " FROM outbox WHERE id > $1 OR id = ANY($2::bigint[]) ORDER BY id"
        )
        while not self._stop.is_set():
            rows = await self._conn.fetch(query, self.last_id, list(self.missing))
            seen = time.time()
            for row in rows:
                if row["id"] in self.missing:
                    self.missing.discard(row["id"])
                else:
                    self.missing.update(range(self.last_id + 1, row["id"]))
                    self.last_id = row["id"]
                self.seen.append((seen, row["created"], row["due"]))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=0.02)

    def stop(self) -> None:
        self._stop.set()


def _percentiles(values: list[float]) -> dict[str, float]:
    values = sorted(values)

    def at(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 3)

    return {
        "p50_s": at(0.50),
        "p99_s": at(0.99),
        "p999_s": at(0.999),
        "max_s": round(values[-1], 3),
    }


async def _wait_count(
    what: str, count: Callable[[], Any], target: int, *, interval: float = 0.1
) -> None:
    best, moved = -1, time.monotonic()
    while True:
        value = count()
        value = int(await value if inspect.isawaitable(value) else value)
        if value >= target:
            return
        if value > best:
            best, moved = value, time.monotonic()
        if time.monotonic() - moved > STALL_SECONDS:
            raise PhaseError(f"{what}: stalled at {best}/{target}")
        await asyncio.sleep(interval)


async def fired_check(conn: asyncpg.Connection, ids: tuple[int, int]) -> dict[str, int]:
    """Exactly once: each timer of the phase fired its one due point, one outbox row each."""
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE fired = 1) AS once,"
        " count(*) FILTER (WHERE fired <> 1) AS other"
        " FROM sla_timers WHERE id BETWEEN $1 AND $2",
        *ids,
    )
    return {"fired_once": row["once"], "fired_otherwise": row["other"]}


async def paced_phase(
    conn: asyncpg.Connection,
    *,
    database_url: str,
    schema: str,
    port: int,
    rate: float,
    seconds: float,
) -> dict[str, Any]:
    """`rate` × `seconds` timers coming due evenly over `seconds`, starting after the insert."""
    count = int(rate * seconds)
    lead = 3.0 + count / 40_000  # the COPY must be committed before the first point is due
    start = datetime.now(UTC) + timedelta(seconds=lead)
    records = [
        timer_record(
            point=start + timedelta(seconds=i / rate), limit=LIMIT, started=start - LIMIT / 2
        )
        for i in range(count)
    ]
    before_id = await conn.fetchval("SELECT coalesce(max(id), 0) FROM sla_timers")
    outbox_before = await conn.fetchval("SELECT coalesce(max(id), 0) FROM outbox")
    histogram_before = await scrape_lag(port)
    took = await copy_timers(conn, schema, records, chunk=count)
    committed = datetime.now(UTC)
    if committed >= start:
        raise PhaseError(f"the insert took {took:.1f} s, past the first due point")
    del records
    watch_conn = await connect(database_url, schema)
    watch = OutboxWatch(watch_conn)
    watch.last_id = outbox_before
    task = asyncio.create_task(watch.run())
    try:
        await _wait_count("paced signals staged", lambda: len(watch.seen), count, interval=0.2)
    finally:
        watch.stop()
        await task
        await watch_conn.close()
    after_id = await conn.fetchval("SELECT max(id) FROM sla_timers")
    histogram_after = await scrape_lag(port)
    staged_lag = [created - due for _, created, due in watch.seen]
    seen_lag = [seen - due for seen, _, due in watch.seen]
    first_due = min(due for _, _, due in watch.seen)
    last_staged = max(created for _, created, _ in watch.seen)
    return {
        "timers": count,
        "offered_per_second": rate,
        "insert_seconds": round(took, 2),
        "lead_seconds": round((start - committed).total_seconds(), 2),
        "staged_per_second": round(count / (last_staged - first_due), 1),
        "lag_staged": _percentiles(staged_lag),
        "lag_seen": _percentiles(seen_lag),
        "histogram": histogram_share(histogram_before, histogram_after),
        "outbox_from_id": outbox_before + 1,
        **await fired_check(conn, (before_id + 1, after_id)),
    }


async def published_lag(conn: asyncpg.Connection, from_id: int) -> dict[str, float]:
    """The relay's side: the broker's acknowledgement (`published_at`) minus the due time."""
    row = await conn.fetchrow(
        "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY lag),"
        " max(lag) FROM (SELECT extract(epoch FROM published_at - (data->>'at')::timestamptz)"
        " AS lag FROM outbox WHERE id >= $1) AS lags",
        from_id,
    )
    p50, p99 = row[0]
    return {"p50_s": round(p50, 3), "p99_s": round(p99, 3), "max_s": round(float(row[1]), 3)}


async def backlog_phase(conn: asyncpg.Connection, schema: str, *, count: int) -> dict[str, Any]:
    """`count` timers all due already: how fast sla stages their signals, and the relay
    publishes them."""
    now = datetime.now(UTC)
    due = now - timedelta(seconds=1)
    records = [timer_record(point=due, limit=LIMIT, started=due - LIMIT / 2) for _ in range(count)]
    before_id = await conn.fetchval("SELECT coalesce(max(id), 0) FROM sla_timers")
    outbox_before = await conn.fetchval("SELECT coalesce(max(id), 0) FROM outbox")
    took = await copy_timers(conn, schema, records, chunk=count)
    committed = time.time()
    del records
    await _wait_count(
        "backlog signals staged",
        lambda: conn.fetchval("SELECT count(*) FROM outbox WHERE id > $1", outbox_before),
        count,
    )
    await _wait_count(
        "backlog signals published",
        lambda: conn.fetchval(
            "SELECT count(*) FROM outbox WHERE id > $1 AND published_at IS NOT NULL",
            outbox_before,
        ),
        count,
    )
    first, last, published, batches = await conn.fetchrow(
        "SELECT extract(epoch FROM min(created_at))::float8,"
        " extract(epoch FROM max(created_at))::float8,"
        " extract(epoch FROM max(published_at))::float8, count(DISTINCT created_at)"
        " FROM outbox WHERE id > $1",
        outbox_before,
    )
    after_id = await conn.fetchval("SELECT max(id) FROM sla_timers")
    return {
        "timers": count,
        "insert_seconds": round(took, 2),
        "first_staged_after_commit_s": round(first - committed, 3),
        "staged_per_second": round(count / (last - first), 1) if last > first else None,
        "published_per_second": round(count / (published - first), 1),
        "firing_transactions": batches,
        **await fired_check(conn, (before_id + 1, after_id)),
    }


async def firing_round(
    servers: Servers,
    *,
    tag: str,
    rate: float,
    seconds: float,
    backlog: int,
    profile: Path | None,
) -> dict[str, Any]:
    port = free_port()
    env = sla_environment(servers, tag=tag, port=port, extra={})
    schema = env["GRIDFLOW_DB_SCHEMA"]
    conn = await connect(servers.database_url, schema)
    try:
        async with sla_process(env, profile=profile, name="firing") as process:
            pids = {"sla": process.pid}
            if servers.broker:
                pids["broker"] = servers.broker.process.pid
            meter = CpuMeter(pids)

            def mark() -> None:  # the sampler's next phase
                if profile:
                    os.kill(process.pid, signal.SIGUSR1)

            print(f"  paced: {rate:,.0f} timers/s due over {seconds:.0f} s …", flush=True)
            mark()
            meter.start()
            paced = await paced_phase(
                conn,
                database_url=servers.database_url,
                schema=schema,
                port=port,
                rate=rate,
                seconds=seconds,
            )
            paced["cpu_percent"] = meter.stop()
            await _wait_count(
                "paced signals published",
                lambda: conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL"),
                paced["timers"],
            )
            paced["lag_published"] = await published_lag(conn, paced["outbox_from_id"])
            print(f"  backlog: {backlog:,} timers due at once …", flush=True)
            mark()
            meter.start()
            drained = await backlog_phase(conn, schema, count=backlog)
            drained["cpu_percent"] = meter.stop()
            mark()
            drained["rss_mib"] = round(process.memory_info().rss / 2**20, 1)
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
    return {
        "paced": paced,
        "backlog": drained,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "settings": {name: env[name] for name in REPORTED_SETTINGS if name in env},
    }


# --- rounds, summary, output ----------------------------------------------------------------------

SUMMARY_FIELDS = (
    ("paced: staged per second", "paced", ("staged_per_second",)),
    ("paced: lag p50, created_at − due (s)", "paced", ("lag_staged", "p50_s")),
    ("paced: lag p99, created_at − due (s)", "paced", ("lag_staged", "p99_s")),
    ("paced: lag max, created_at − due (s)", "paced", ("lag_staged", "max_s")),
    ("paced: lag p99, seen committed − due (s)", "paced", ("lag_seen", "p99_s")),
    ("paced: lag max, seen committed − due (s)", "paced", ("lag_seen", "max_s")),
    ("paced: lag p99, published − due (s)", "paced", ("lag_published", "p99_s")),
    ("backlog: fired (staged) per second", "backlog", ("staged_per_second",)),
    ("backlog: published per second", "backlog", ("published_per_second",)),
)


def _dig(value: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def summarise(measured: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for label, phase, path in SUMMARY_FIELDS:
        values = [v for r in measured if (v := _dig(r[phase], path)) is not None]
        if values:
            rows.append(
                {
                    "measure": label,
                    "median": round(statistics.median(values), 3),
                    "range": [min(values), max(values)],
                }
            )
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "run_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "database": "configured" if "DATABASE_URL" in os.environ else "embedded PostgreSQL",
            "broker": "configured" if "KAFKA_BOOTSTRAP_SERVERS" in os.environ else "embedded Tansu",
        },
        "arguments": {k: str(v) for k, v in vars(args).items()},
    }
    with servers() as found:
        tag = f"bench{os.getpid()}"
        if args.levels:
            print("memory", flush=True)
            report["memory"] = asyncio.run(
                memory_phase(
                    found,
                    levels=args.levels,
                    tag=f"{tag}m",
                    window=args.memory_window,
                )
            )
        measured = []
        for number in range(1, args.rounds + 1):
            print(f"firing round {number}/{args.rounds}", flush=True)
            prof = REPO / ".run" / f"bench-sla-profile-r{number}.json" if args.profile else None
            result = asyncio.run(
                firing_round(
                    found,
                    tag=f"{tag}r{number}",
                    rate=args.rate,
                    seconds=args.seconds,
                    backlog=args.backlog,
                    profile=prof,
                )
            )
            paced, drained = result["paced"], result["backlog"]
            print(
                f"  paced {paced['staged_per_second']:,.0f}/s, lag p99"
                f" {paced['lag_staged']['p99_s']} s (seen {paced['lag_seen']['p99_s']} s);"
                f" backlog {drained['staged_per_second']:,.0f}/s fired,"
                f" {drained['published_per_second']:,.0f}/s published",
                flush=True,
            )
            measured.append(result)
    report["results"] = summarise(measured) if measured else []
    report["rounds_measured"] = measured
    return report


def print_report(report: dict[str, Any], args: argparse.Namespace) -> None:
    if "memory" in report:
        print("\nRSS of the sla process (MiB) by open timers")
        print("(running: the last sample, VmHWM = peak since its start; fresh: after start-up)")
        print(
            f"{'open timers':>12}{'running':>10}{'VmHWM':>10}{'CPU %':>8}"
            f"{'fresh':>10}{'VmHWM':>10}{'CPU s':>8}{'insert/s':>10}"
        )
        for step in report["memory"]["steps"]:
            run_, fresh = step["running"], step.get("restarted", {})
            print(
                f"{step['open_timers']:>12,}{run_['rss_mib']:>10}{run_.get('high_water_mib')!s:>10}"
                f"{run_['cpu_percent']:>8}{fresh.get('rss_mib', ''):>10}"
                f"{fresh.get('high_water_mib', '')!s:>10}{fresh.get('cpu_seconds', ''):>8}"
                f"{step.get('insert_per_second', ''):>10}"
            )
    if report["results"]:
        print(f"\nfiring: medians of {args.rounds} rounds")
        for row in report["results"]:
            low, high = row["range"]
            print(f"{row['measure']:<44}{row['median']:>12,}  {low:,} – {high:,}")
        for number, result in enumerate(report["rounds_measured"], 1):
            paced, drained = result["paced"], result["backlog"]
            print(
                f"round {number}: paced fired once {paced['fired_once']:,}"
                f" (otherwise {paced['fired_otherwise']}), histogram {paced['histogram']};"
                f" backlog fired once {drained['fired_once']:,}"
                f" (otherwise {drained['fired_otherwise']}), {drained['firing_transactions']}"
                f" transactions; CPU % paced {paced['cpu_percent']} backlog"
                f" {drained['cpu_percent']}"
            )
    if args.profile:
        for number in range(1, args.rounds + 1):
            path = REPO / ".run" / f"bench-sla-profile-r{number}.json"
            if path.exists():
                print_profile(path, names=("paced", "backlog"), service="sla")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sla",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--levels",
        type=lambda text: [int(x) for x in text.split(",") if x],
        default=[10_000, 100_000, 1_000_000],
        help="open timers in total after each memory step (comma-separated; empty: skip)",
    )
    parser.add_argument(
        "--memory-window", type=float, default=30.0, help="seconds of RSS samples per step"
    )
    parser.add_argument("--rate", type=float, default=5_000.0, help="paced: timers due per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="paced: seconds of due points")
    parser.add_argument("--backlog", type=int, default=60_000, help="timers due at once")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--profile", action="store_true", help="sample the stacks of sla (bench/sampler.py)"
    )
    parser.add_argument("--out", type=Path, default=REPO / ".run" / "bench-sla.json")
    args = parser.parse_args(argv)
    report = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n")
    print_report(report, args)
    print(f"\nJSON: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
