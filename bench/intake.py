"""`make bench-intake`: how many reports intake accepts per second, against the ceiling of a
trivial FastAPI endpoint measured in the same run on the same machine.

Phases (each `--seconds` long): the trivial endpoint at saturation; single reports at saturation;
the trivial endpoint again (the ratio's ceiling is the mean of the two); single reports at a fixed
500/s (latency percentiles); offline batches of 500 items at saturation, with one instance and two.
Each round starts with a CHECKPOINT, so no round pays for the WAL of the one before. Servers:
DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS when set, else embedded ones (as `make run`). Prints a
table and writes a JSON file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from bench.loadgen import Stats, closed_loop, http_request, open_loop
from deploy.embedded import free_port, start_broker, start_postgres
from libs.common.auth import mint_token

SECRET = "bench-worker-secret-0123456789abcdef0123"  # noqa: S105  # a throwaway bench key
GRID = "430281001001001"
REPO = Path(__file__).resolve().parents[1]


def _report_body(index: int, *, client_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "category": "city.garbage",
        "title": "路边暴露垃圾",
        "description": f"人民路与解放路交叉口东北角有一堆生活垃圾未清运（第 {index} 次）。",
        "location": {"unit_grid": GRID, "address": "人民路 12 号旁"},
        "occurred_at": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
    }
    if client_id:
        body["client_id"] = client_id
    return body


def _wait_ready(url: str, process: subprocess.Popen[bytes], within: float = 120) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: see .run/bench-*.log")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310  # loopback
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready")


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = REPO / ".run" / f"bench-{argv[1].replace('.', '-')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(  # noqa: S603  # our own modules
            [sys.executable, *argv], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _row(name: str, stats: Stats, status: int, unit: int = 1) -> dict[str, Any]:
    return {
        "phase": name,
        "per_second": round(stats.rate(status) * unit, 1),
        "requests": stats.completed,
        "unexpected": stats.completed - stats.ok(status) + stats.errors,
        "p50_ms": round(stats.percentile(0.50) * 1000, 2),
        "p95_ms": round(stats.percentile(0.95) * 1000, 2),
        "p99_ms": round(stats.percentile(0.99) * 1000, 2),
    }


@contextlib.contextmanager
def servers(tag: str) -> Iterator[tuple[str, str]]:
    """The configured PostgreSQL and Kafka, else embedded ones; the bench schema is dropped after."""
    database_url = os.environ.get("DATABASE_URL")
    postgres = broker = None
    if not database_url:
        postgres = start_postgres(REPO / ".run" / "bench-postgres" / "data")
        database_url = postgres.url
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        broker = start_broker(log_path=REPO / ".run" / "bench-broker.log")
        bootstrap = broker.bootstrap_servers
    try:
        yield database_url, bootstrap
    finally:
        asyncio.run(_drop_schema(database_url, f"{tag}_intake"))
        if broker:
            broker.stop()
        if postgres:
            postgres.stop()


async def _drop_schema(database_url: str, schema: str) -> None:
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    await engine.dispose()


async def checkpoint(database_url: str) -> bool:
    """Flush what earlier phases wrote (a round's batch phases write ~500 MB of WAL), so that
    PostgreSQL is not checkpointing it during the next round's phases; False when the role may
    not (PostgreSQL 15 wants a superuser or pg_checkpoint)."""
    engine = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("CHECKPOINT"))
    except DBAPIError as exc:
        print(f"no CHECKPOINT before the round: {type(exc.orig).__name__}", flush=True)
        return False
    finally:
        await engine.dispose()
    return True


@contextlib.contextmanager
def serving(argv: list[str], env: dict[str, str], ready_path: str, port: int) -> Iterator[None]:
    process = _spawn(argv, env)
    try:
        _wait_ready(f"http://127.0.0.1:{port}{ready_path}", process)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextlib.contextmanager
def trivial_server() -> Iterator[int]:
    """The trivial endpoint (bench/trivial.py) serving on a port of its own, as long as needed."""
    port = free_port()
    with serving(["-m", "bench.trivial", str(port)], dict(os.environ), "/docs", port):
        yield port


async def trivial_load(
    port: int, seconds: float, connections: int, *, name: str = "trivial FastAPI endpoint"
) -> dict[str, Any]:
    """The trivial endpoint at saturation, driven as intake's single reports are."""
    body = json.dumps(_report_body(0), ensure_ascii=False).encode()
    headers = {"content-type": "application/json"}
    print(f"{name}, {seconds:.0f} s …", flush=True)
    stats = await closed_loop(
        "127.0.0.1",
        port,
        lambda _: http_request("POST", "/v1/reports", body, headers),
        connections=connections,
        seconds=seconds,
    )
    return _row(name, stats, 202)


def worker_headers() -> dict[str, str]:
    """A JSON request's headers with the bench worker's bearer token (W0001, grid GRID, 2 hours)."""
    token = mint_token(
        secret=SECRET,
        subject="W0001",
        role="grid_worker",
        scopes=["reports:write"],
        grids=[GRID],
        now=datetime.now(UTC),
        ttl=timedelta(hours=2),
    )
    return {"content-type": "application/json", "authorization": f"Bearer {token}"}


async def intake_phases(
    seconds: float,
    connections: int,
    *,
    database_url: str,
    bootstrap: str,
    tag: str,
    trivial_port: int | None = None,
) -> list[dict[str, Any]]:
    """intake's phases; with `trivial_port`, the trivial endpoint is measured again right after
    the single reports at saturation (its row comes second)."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "GRIDFLOW_WORKER_JWT_SECRET": SECRET,
        "GRIDFLOW_OPEN311_KEY_RESIDENT_APP": SECRET,
        "GRIDFLOW_OPEN311_KEY_VIDEO_AI": SECRET[::-1],
        "GRIDFLOW_DB_SCHEMA": f"{tag}_intake",
        "GRIDFLOW_TOPIC_PREFIX": f"{tag}.",
        "GRIDFLOW_HTTP_PORT": str(port),
        "GRIDFLOW_LOG_LEVEL": "WARNING",
        "GRIDFLOW_ATTACHMENTS_DIR": str(REPO / ".run" / "bench-attachments"),
    }
    auth = worker_headers()
    body = json.dumps(_report_body(0), ensure_ascii=False).encode()
    template = [_report_body(i) for i in range(500)]

    def single(_: int) -> bytes:
        return http_request("POST", "/v1/reports", body, auth)

    def batch(index: int) -> bytes:
        items = [
            {"kind": "report", "client_id": f"{tag}-{index}-{j}", **item}
            for j, item in enumerate(template)
        ]
        payload = json.dumps({"items": items}, ensure_ascii=False).encode()
        return http_request("POST", "/v1/batch", payload, auth)

    rows = []
    with serving(["-m", "services.intake"], env, "/readyz", port):
        print(f"intake: single reports at saturation, {seconds:.0f} s …", flush=True)
        stats = await closed_loop(
            "127.0.0.1", port, single, connections=connections, seconds=seconds
        )
        rows.append(_row("intake: single reports (saturation)", stats, 202))
        if trivial_port is not None:
            rows.append(await trivial_load(trivial_port, seconds, connections, name=AFTER))
        print(f"intake: single reports at 500/s, {seconds:.0f} s …", flush=True)
        stats = await open_loop(
            "127.0.0.1", port, single, rate=500, seconds=seconds, max_connections=256
        )
        rows.append(_row("intake: single reports at 500/s", stats, 202))
        print(f"intake: batches of 500 at saturation, {seconds:.0f} s …", flush=True)
        stats = await closed_loop("127.0.0.1", port, batch, connections=4, seconds=seconds)
        rows.append(_row("intake: batch items (500 per request)", stats, 200, unit=500))
        rows.append(await _drain_row(database_url, f"{tag}_intake"))
        # one instance per core: the deployment's way to use this machine's second core
        second = free_port()
        with serving(
            ["-m", "services.intake"], {**env, "GRIDFLOW_HTTP_PORT": str(second)}, "/readyz", second
        ):
            print(
                f"intake ×2 instances: batches of 500 at saturation, {seconds:.0f} s …", flush=True
            )
            stats = await closed_loop(
                "127.0.0.1",
                [port, second],
                lambda index: batch(10**9 + index),
                connections=4,
                seconds=seconds,
            )
            rows.append(_row("intake ×2: batch items (500 per request)", stats, 200, unit=500))
            rows.append(await _drain_row(database_url, f"{tag}_intake", instances=2))
    return rows


async def _drain_row(database_url: str, schema: str, *, instances: int = 1) -> dict[str, Any]:
    """The relay after a batch phase: accepting outpaces it (requests come first on the event
    loop), so report what it left unpublished and how fast it then drains, which bounds what
    intake can sustain end to end."""
    engine = create_async_engine(database_url)
    query = sa.text(
        f'SELECT count(*) FILTER (WHERE published_at IS NULL), count(*) FROM "{schema}".outbox'  # noqa: S608  # the bench's own schema name
    )
    try:
        async with engine.connect() as conn:
            left, staged = (await conn.execute(query)).one()
            print(f"relay: {left} of {staged} events unpublished; draining …", flush=True)
            started, first = time.perf_counter(), left
            deadline = started + 600
            while left and time.perf_counter() < deadline:
                await asyncio.sleep(0.2)  # a bench measuring a drain, not a test waiting
                left = (await conn.execute(query)).one()[0]
            elapsed = time.perf_counter() - started
    finally:
        await engine.dispose()
    name = "relay: draining after the batch phase" + (f" (×{instances})" if instances > 1 else "")
    return {
        "phase": name,
        "per_second": round((first - left) / elapsed, 1) if first else 0.0,
        "requests": first,
        "unexpected": left,  # still unpublished after 10 minutes
        "p50_ms": None,
        "p95_ms": None,
        "p99_ms": None,
        "backlog_at_end_of_phase": first,
        "staged": staged,
    }


AFTER = "trivial FastAPI endpoint, again"


def run(seconds: float, connections: int, rounds: int) -> dict[str, Any]:
    """`rounds` rounds of every phase; each intake phase is compared with the trivial endpoint
    of its own round, and the medians reported. The trivial endpoint is measured just before and
    just after the single reports at saturation, and the ceiling is the mean of the two: this
    machine's speed drifts from minute to minute, and a drift during the round then weighs on
    both sides of the ratio alike."""
    measured: list[list[dict[str, Any]]] = []
    for number in range(1, rounds + 1):
        tag = f"bench{os.getpid()}r{number}"
        print(f"round {number}/{rounds}", flush=True)
        with servers(tag) as (database_url, bootstrap), trivial_server() as trivial_port:
            asyncio.run(checkpoint(database_url))
            trivial = asyncio.run(trivial_load(trivial_port, seconds, connections))
            rows = asyncio.run(
                intake_phases(
                    seconds,
                    connections,
                    database_url=database_url,
                    bootstrap=bootstrap,
                    tag=tag,
                    trivial_port=trivial_port,
                )
            )
        again = next(row for row in rows if row["phase"] == AFTER)
        ceiling = (trivial["per_second"] + again["per_second"]) / 2
        for row in rows:
            if row is not again and ceiling and row["p50_ms"] is not None:  # not the drains
                row["ratio_to_trivial"] = round(row["per_second"] / ceiling, 3)
        measured.append([trivial, *rows])
    results = []
    for phase in zip(*measured, strict=True):
        summary = {"phase": phase[0]["phase"]}
        for field in ("per_second", "p50_ms", "p95_ms", "p99_ms", "ratio_to_trivial"):
            values = [row[field] for row in phase if row.get(field) is not None]
            if values:
                summary[field] = round(statistics.median(values), 3)
                summary[f"{field}_range"] = [min(values), max(values)]
        summary["unexpected"] = sum(row["unexpected"] for row in phase)
        results.append(summary)
    return {
        "run_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "database": "configured" if "DATABASE_URL" in os.environ else "embedded PostgreSQL",
        },
        "seconds_per_phase": seconds,
        "rounds": rounds,
        "connections": connections,
        "results": results,
        "rounds_measured": measured,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.intake", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / ".run" / "bench-intake.json")
    args = parser.parse_args(argv)
    report = run(args.seconds, args.connections, args.rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"\nmedians of {args.rounds} rounds of {args.seconds:.0f} s (ranges in the JSON)")
    print(f"{'phase':<42}{'per s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'ratio':>8}  range")
    for row in report["results"]:
        ratio = row.get("ratio_to_trivial")
        spread = row.get("ratio_to_trivial_range") or row.get("per_second_range")
        p50, p95, p99 = (row.get(f"{q}_ms", "") for q in ("p50", "p95", "p99"))
        print(
            f"{row['phase']:<42}{row['per_second']:>10}{p50:>9}{p95:>9}"
            f"{p99:>9}{'' if ratio is None else ratio:>8}  {spread}"
            + (f"   ({row['unexpected']} unexpected)" if row["unexpected"] else "")
        )
    print(f"\nJSON: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
