"""`make faults`: the fault-injection suite (issue 8, part 2). Each scenario starts the stack on
loopback — embedded PostgreSQL on a data folder under .run/ (so it can be restarted), the embedded
Tansu broker, intake and dispatch as processes configured by environment variables (as `make
bench` runs them), and bench.e2e_receiver as every department's webhook receiver — drives a steady
open-loop load of grid workers' reports (`--rate`, `--seconds`), injects its fault a third of the
way in, stops the load, waits (bounded) until every accepted report has had its first webhook, and
checks: every report intake accepted (202) delivered to its department, exactly once (the same
`webhook-id` again is a retry, not a duplicate). The servers are always the embedded ones
(DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS are not used): the suite stops and pauses them.

Scenarios (`--scenarios`, in this order by default):

- `kill-intake`, `kill-dispatch`: SIGKILL the service mid-stream, start it again at once;
- `broker-pause`: the broker unreachable for `--pause-seconds` (SIGSTOP of its process, then
  SIGCONT: the embedded broker is in memory, a real restart loses its topics); intake must keep
  answering 202 meanwhile (its outbox holds the cases);
- `postgres-restart`: the embedded PostgreSQL stopped, `--outage-seconds` later started again on
  the same data folder; intake answers 503 meanwhile (counted as refused, not accepted);
- `poison`: garbage records (not JSON, JSON but no CloudEvent, a CloudEvent of an unknown type) on
  cases.submitted and cases.lifecycle mid-stream; they must reach the dead-letter topic and the
  delivery go on;
- `receiver-down`: every department receiver answers 503 for `--receiver-down-seconds` (real
  time, not simulated: dispatch's own retry schedule), then 200 again.

Not yet here (docs/reliability.md): schemathesis against the OpenAPI documents, sla's deadline
signals. Prints a row per scenario, writes .run/faults.json and
the table into docs/reliability.md (`--no-doc` leaves the document alone).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.dispatch import PARTITIONS, Servers, dispatch_environment, receiver_config
from bench.e2e import REPORT_CATEGORIES, Deliveries, intake_environment, machine
from bench.intake import REPO, _drop_schema, _report_body, _wait_ready, worker_headers
from deploy.embedded import (
    EmbeddedBroker,
    EmbeddedPostgres,
    free_port,
    start_broker,
    start_postgres,
)
from deploy.local_stack import interruptible
from libs.common.kafka import TopicNames, ensure_topics
from libs.common.topics import CASES_LIFECYCLE, CASES_SUBMITTED, CATALOGUE, DEADLETTER

SCENARIOS = (
    "kill-intake",
    "kill-dispatch",
    "broker-pause",
    "postgres-restart",
    "poison",
    "receiver-down",
)
REQUEST_TIMEOUT = 15.0  # a report's POST without an answer by then counts as unanswered
SETTLE_SECONDS = 5.0  # after the last first delivery, listen this long for late duplicates
POSTGRES_DIR = REPO / ".run" / "faults-postgres" / "data"
DOC = REPO / "docs" / "reliability.md"
TABLE_START, TABLE_END = "<!-- faults:start -->", "<!-- faults:end -->"


# --- the accounting (pure) ------------------------------------------------------------------------


def account(
    *,
    scenario: str,
    load: str,
    answers: Mapping[int, int | None],
    delivered: set[int],
    repeats: int,
    retries: int,
) -> dict[str, Any]:
    """One scenario's row. `answers`: report number -> intake's HTTP status (None: no answer, the
    connection broke or timed out); `delivered`: the numbers whose first webhook arrived;
    `repeats`: webhooks with another webhook-id for a case already delivered (duplicates);
    `retries`: the same webhook-id again (allowed)."""
    accepted = {n for n, status in answers.items() if status == 202}
    unanswered = {n for n, status in answers.items() if status is None}
    return {
        "scenario": scenario,
        "load": load,
        "sent": len(answers),
        "accepted": len(accepted),
        "delivered": len(accepted & delivered),
        "lost": len(accepted - delivered),
        "duplicated": repeats,
        "retries": retries,
        "refused": len(answers) - len(accepted) - len(unanswered),  # answered, not 202 (503 …)
        "unanswered": len(unanswered),
        # no answer, yet the case went through: committed before the connection broke
        "unanswered_delivered": len(unanswered & delivered),
        "unknown_delivered": len(delivered - answers.keys()),  # never sent by this scenario
        "ok": not (accepted - delivered) and repeats == 0 and not (delivered - answers.keys()),
    }


# --- the stack ------------------------------------------------------------------------------------


@dataclass
class Service:
    argv: list[str]
    env: dict[str, str]
    ready_url: str
    log: Path
    child: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:  # appended: a restart keeps what came before the fault
            self.child = subprocess.Popen(  # noqa: S603  # our own modules
                [sys.executable, *self.argv],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        _wait_ready(self.ready_url, self.child, within=60)

    def kill(self) -> None:
        if self.child is not None and self.child.poll() is None:
            self.child.kill()
            self.child.wait(timeout=10)

    def stop(self) -> None:
        if self.child is None or self.child.poll() is not None:
            return
        self.child.send_signal(signal.SIGINT)
        try:
            self.child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()


@dataclass
class Stack:
    """PostgreSQL, the broker, the receiver, intake and dispatch of one scenario."""

    tag: str
    workdir: Path
    postgres: EmbeddedPostgres | None = None
    broker: EmbeddedBroker | None = None
    services: dict[str, Service] = field(default_factory=dict)
    intake_port: int = 0
    receiver_url: str = ""

    @property
    def names(self) -> TopicNames:
        return TopicNames(f"{self.tag}.")

    @property
    def bootstrap(self) -> str:
        assert self.broker is not None  # noqa: S101  # started first
        return self.broker.bootstrap_servers

    async def start(self) -> None:
        self.postgres = start_postgres(POSTGRES_DIR)
        self.broker = start_broker(log_path=REPO / ".run" / "faults-broker.log")
        found = Servers(self.postgres.url, self.bootstrap, self.broker, "embedded PostgreSQL")
        await ensure_topics(
            bootstrap_servers=self.bootstrap,
            names=[self.names(t) for t in CATALOGUE],
            partitions=PARTITIONS,
            replication_factor=1,
        )
        receiver_port, self.intake_port, dispatch_port = free_port(), free_port(), free_port()
        self.receiver_url = f"http://127.0.0.1:{receiver_port}"
        config = self.workdir / "config"
        refdata = receiver_config(config, self.receiver_url)
        dispatch_env = dispatch_environment(
            servers=found, tag=self.tag, port=dispatch_port, config_dir=config, refdata=refdata
        )
        intake_env = intake_environment(
            found=found, tag=self.tag, port=self.intake_port, config_dir=config, refdata=refdata
        )
        intake_env["GRIDFLOW_HTTP_PORT"] = str(self.intake_port)
        logs = REPO / ".run"
        self.services = {
            "receiver": Service(
                ["-m", "bench.e2e_receiver", str(receiver_port), ",".join(refdata.departments)],
                dict(os.environ),
                f"{self.receiver_url}/healthz",
                logs / f"faults-receiver-{self.tag}.log",
            ),
            "intake": Service(
                ["-m", "services.intake"],
                intake_env,
                f"http://127.0.0.1:{self.intake_port}/readyz",
                logs / f"faults-intake-{self.tag}.log",
            ),
            "dispatch": Service(
                ["-m", "services.dispatch"],
                dispatch_env,
                f"http://127.0.0.1:{dispatch_port}/readyz",
                logs / f"faults-dispatch-{self.tag}.log",
            ),
        }
        for service in self.services.values():
            await asyncio.to_thread(service.start)

    def stop(self) -> None:
        for service in reversed(self.services.values()):
            service.stop()
        if self.broker is not None:
            with contextlib.suppress(ProcessLookupError):
                self.broker.process.send_signal(signal.SIGCONT)  # if stopped by a fault
            self.broker.stop()
        if self.postgres is not None:
            for schema in (f"{self.tag}_intake", f"{self.tag}_dispatch"):
                with contextlib.suppress(Exception):
                    asyncio.run(_drop_schema(self.postgres.url, schema))
            self.postgres.stop()


@contextlib.contextmanager
def running_stack(tag: str) -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as folder:
        stack = Stack(tag, Path(folder))
        try:
            asyncio.run(stack.start())
            yield stack
        finally:
            stack.stop()


# --- the faults -----------------------------------------------------------------------------------


@dataclass
class Options:
    rate: float
    seconds: float
    pause_seconds: float
    outage_seconds: float
    drain_seconds: float
    receiver_down_seconds: float


Fault = Callable[[Stack, Options, list[str]], Awaitable[None]]


def _restart(name: str) -> Fault:
    async def fault(stack: Stack, options: Options, notes: list[str]) -> None:
        service = stack.services[name]
        service.kill()
        notes.append(f"{name} killed (SIGKILL)")
        started = time.perf_counter()
        await asyncio.to_thread(service.start)
        notes.append(f"{name} ready again after {time.perf_counter() - started:.1f} s")

    return fault


async def broker_pause(stack: Stack, options: Options, notes: list[str]) -> None:
    assert stack.broker is not None  # noqa: S101
    stack.broker.process.send_signal(signal.SIGSTOP)
    notes.append(f"broker stopped (SIGSTOP) for {options.pause_seconds:.0f} s")
    try:
        await asyncio.sleep(options.pause_seconds)
    finally:
        stack.broker.process.send_signal(signal.SIGCONT)
    notes.append("broker continued (SIGCONT)")


async def postgres_restart(stack: Stack, options: Options, notes: list[str]) -> None:
    assert stack.postgres is not None  # noqa: S101
    url = stack.postgres.url
    await asyncio.to_thread(stack.postgres.stop)
    notes.append(f"PostgreSQL stopped for {options.outage_seconds:.0f} s")
    await asyncio.sleep(options.outage_seconds)
    stack.postgres = await asyncio.to_thread(start_postgres, POSTGRES_DIR)
    if stack.postgres.url != url:
        notes.append(f"PostgreSQL came back on another address: {stack.postgres.url}")
    notes.append("PostgreSQL started again")


POISON: tuple[bytes, ...] = (
    b"\xff\xfenot json at all",
    b'{"hello": "not a CloudEvent"}',
    json.dumps(
        {
            "specversion": "1.0",
            "id": "poison-1",
            "source": "gridflow/faults",
            "type": "gridflow.no.such.type",
            "time": "2026-01-01T00:00:00Z",
            "datacontenttype": "application/json",
            "data": {"x": 1},
        }
    ).encode(),
)
POISONED_TOPICS = (CASES_SUBMITTED, CASES_LIFECYCLE)


async def poison(stack: Stack, options: Options, notes: list[str]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    await producer.start()
    try:
        for topic in POISONED_TOPICS:
            for value in POISON:
                await producer.send_and_wait(stack.names(topic), value=value, key=b"poison")
    finally:
        await producer.stop()
    notes.append(f"{len(POISON)} garbage records on each of {len(POISONED_TOPICS)} topics")


async def dead_letters(stack: Stack, within: float) -> int:
    """Records on the dead-letter topic (read from the start, for at most `within` seconds)."""
    consumer = AIOKafkaConsumer(
        stack.names(DEADLETTER),
        bootstrap_servers=stack.bootstrap,
        group_id=f"{stack.tag}-faults-deadletter",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    count, deadline = 0, time.perf_counter() + within
    expected = len(POISON) * len(POISONED_TOPICS)
    try:
        while count < expected and time.perf_counter() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            count += sum(len(records) for records in batches.values())
    finally:
        await consumer.stop()
    return count


async def receiver_down(stack: Stack, options: Options, notes: list[str]) -> None:
    """Every department answers 503 for a while (real time: dispatch's retries with their real
    backoff, which the receiver's first-delivery bookkeeping sees whole, as a restart would not)."""
    deliveries = Deliveries(stack.receiver_url)
    async with contextlib.aclosing(deliveries):
        await deliveries.control("down")
        notes.append(f"receiver answering 503 for {options.receiver_down_seconds:.0f} s")
        try:
            await asyncio.sleep(options.receiver_down_seconds)
        finally:
            await deliveries.control("up")
    notes.append("receiver answering again")


FAULTS: dict[str, Fault] = {
    "kill-intake": _restart("intake"),
    "kill-dispatch": _restart("dispatch"),
    "broker-pause": broker_pause,
    "postgres-restart": postgres_restart,
    "poison": poison,
    "receiver-down": receiver_down,
}


# --- load and delivery ----------------------------------------------------------------------------


async def steady_load(
    port: int, *, rate: float, seconds: float, base: int
) -> dict[int, int | None]:
    """Open loop: report `base + i` due at start + i/rate; its answer noted (None: none)."""
    headers = worker_headers()
    answers: dict[int, int | None] = {}
    url = f"http://127.0.0.1:{port}/v1/reports"
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(number: int, due: float) -> None:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            category = REPORT_CATEGORIES[number % len(REPORT_CATEGORIES)]
            body = {**_report_body(number), "category": category}
            try:
                async with session.post(url, json=body, headers=headers) as response:
                    await response.read()
                    answers[number] = response.status
            except (aiohttp.ClientError, TimeoutError):
                answers[number] = None

        start = time.perf_counter() + 0.05
        total = int(rate * seconds)
        await asyncio.gather(*(one(base + i, start + i / rate) for i in range(total)))
    return answers


async def await_deliveries(deliveries: Deliveries, accepted: set[int], *, within: float) -> float:
    """Until every accepted report's first webhook arrived (at most `within` s), then
    SETTLE_SECONDS more for late duplicates. Returns the seconds waited for the first part."""
    started = time.perf_counter()
    while time.perf_counter() - started < within:
        await deliveries.poll()
        if accepted <= deliveries.first.keys():
            break
        await asyncio.sleep(0.5)
    waited = time.perf_counter() - started
    await asyncio.sleep(SETTLE_SECONDS)
    await deliveries.poll()
    return waited


async def run_scenario(stack: Stack, name: str, options: Options) -> dict[str, Any]:
    fault = FAULTS[name]
    notes: list[str] = []
    seconds = options.seconds + (options.pause_seconds if name == "broker-pause" else 0)
    seconds += options.outage_seconds if name == "postgres-restart" else 0
    seconds += options.receiver_down_seconds if name == "receiver-down" else 0
    deliveries = Deliveries(stack.receiver_url)
    async with contextlib.aclosing(deliveries):
        load = asyncio.create_task(
            steady_load(stack.intake_port, rate=options.rate, seconds=seconds, base=10**9)
        )
        await asyncio.sleep(options.seconds / 3)
        print(f"  {name}: fault at {options.seconds / 3:.0f} s", flush=True)
        await fault(stack, options, notes)
        answers = await load
        accepted = {n for n, status in answers.items() if status == 202}
        print(
            f"  {name}: load done, {len(accepted):,} accepted; waiting for deliveries", flush=True
        )
        waited = await await_deliveries(
            deliveries,
            accepted,
            within=options.drain_seconds + options.pause_seconds + options.receiver_down_seconds,
        )
        counters = deliveries.counters
        row = account(
            scenario=name,
            load=f"{options.rate:g}/s for {seconds:g} s",
            answers=answers,
            delivered=set(deliveries.first),
            repeats=counters.get("repeats", 0),
            retries=counters.get("retries", 0),
        )
    row["drain_seconds"] = round(waited, 1)
    if name == "poison":
        row["dead_lettered"] = await dead_letters(stack, within=30)
        row["dead_letters_expected"] = len(POISON) * len(POISONED_TOPICS)
        row["ok"] = row["ok"] and row["dead_lettered"] >= row["dead_letters_expected"]
    row["notes"] = notes
    return row


# --- the suite, output ----------------------------------------------------------------------------


def run_suite(scenarios: list[str], options: Options) -> dict[str, Any]:
    about = machine()
    rows = []
    for number, name in enumerate(scenarios, 1):
        print(f"scenario {number}/{len(scenarios)}: {name}", flush=True)
        with running_stack(f"faults{os.getpid()}s{number}") as stack:
            row = asyncio.run(run_scenario(stack, name, options))
        print("  " + table_line(row), flush=True)
        rows.append(row)
    return {
        "run_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": about,
        "options": vars(options),
        "results": rows,
    }


COLUMNS = ("scenario", "load", "accepted", "delivered", "lost", "duplicated")


def table_line(row: Mapping[str, Any]) -> str:
    return "  ".join(f"{row[c]}" for c in COLUMNS) + ("  ok" if row["ok"] else "  FAILED")


def markdown_table(report: Mapping[str, Any]) -> str:
    about = report["machine"]
    lines = [
        f"Run {report['run_at']} on {about['nproc']} CPUs ({about['cpu_model']}),"
        f" Python {about['python']}, embedded PostgreSQL and Tansu broker:",
        "",
        "| scenario | load | accepted | delivered | lost | duplicated | retries | refused"
        " | unanswered (of which delivered) | result |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for row in report["results"]:
        extra = ""
        if "dead_lettered" in row:
            extra = f"; {row['dead_lettered']}/{row['dead_letters_expected']} dead-lettered"
        lines.append(
            f"| {row['scenario']} | {row['load']} | {row['accepted']:,} | {row['delivered']:,}"
            f" | {row['lost']} | {row['duplicated']} | {row['retries']} | {row['refused']}"
            f" | {row['unanswered']} ({row['unanswered_delivered']})"
            f" | {'ok' if row['ok'] else 'FAILED'}{extra} |"
        )
    return "\n".join(lines)


def write_doc(report: Mapping[str, Any], path: Path = DOC) -> None:
    """The table between the document's markers (the rest of it is written by hand)."""
    text = path.read_text(encoding="utf-8")
    before, rest = text.split(TABLE_START, 1)
    after = rest.split(TABLE_END, 1)[1]
    path.write_text(
        f"{before}{TABLE_START}\n{markdown_table(report)}\n{TABLE_END}{after}", encoding="utf-8"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.faults",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--scenarios",
        type=lambda s: s.split(","),
        default=list(SCENARIOS),
        help=f"comma-separated, of {','.join(SCENARIOS)}",
    )
    parser.add_argument("--rate", type=float, default=150.0, help="reports/s, open loop")
    parser.add_argument("--seconds", type=float, default=30.0, help="load around each fault")
    parser.add_argument("--pause-seconds", type=float, default=60.0, help="broker SIGSTOP")
    parser.add_argument("--outage-seconds", type=float, default=10.0, help="PostgreSQL down")
    parser.add_argument(
        "--receiver-down-seconds", type=float, default=60.0, help="receiver answering 503"
    )
    parser.add_argument(
        "--drain-seconds", type=float, default=180.0, help="wait at most this for deliveries"
    )
    parser.add_argument("--out", type=Path, default=REPO / ".run" / "faults.json")
    parser.add_argument("--no-doc", action="store_true", help="leave docs/reliability.md alone")
    args = parser.parse_args(argv)
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    options = Options(
        args.rate,
        args.seconds,
        args.pause_seconds,
        args.outage_seconds,
        args.drain_seconds,
        args.receiver_down_seconds,
    )
    try:
        with interruptible():
            report = run_suite(args.scenarios, options)
    except KeyboardInterrupt:
        print("\ninterrupted: every process it started is stopped")
        return 130
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print("\n" + markdown_table(report))
    if not args.no_doc:
        write_doc(report)
    print(f"\nJSON: {args.out}")
    return 0 if all(row["ok"] for row in report["results"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
