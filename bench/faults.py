"""`make faults`: the fault-injection suite (issue 8, part 2). Each scenario starts the stack on
loopback — embedded PostgreSQL on a data folder under .run/ (so it can be restarted), the embedded
Tansu broker, intake, dispatch and sla as processes configured by environment variables (as `make
bench` runs them), and bench.e2e_receiver as every department's webhook receiver — drives a steady
open-loop load of grid workers' reports (`--rate`, `--seconds`), injects its fault (a third of the
way in), stops the load, waits (bounded) until every accepted report has had its first webhook,
and checks:

- deliveries, per transition: every report intake accepted (202) delivered to its department,
  exactly once per transition — a webhook is a (case, department) assignment, so the same
  `webhook-id` again is a retry, another `webhook-id` for the same pair a duplicate, and a case at
  a further department (reassigned: none here) a further transition (bench/e2e_receiver.py);
- deadline signals: sla runs on a bench sla.yaml (bench_policies: one report category in five
  gets a 24 s sign-for limit on the wall clock, warning at 12 s, breach at 24 s, escalation at
  30 s; the others 30 days). After the deliveries it waits (bounded) until sla has applied the
  assignment of every counted case (its sla_cases table) and the last point owed came due,
  reads sla.signals and cases.lifecycle from the start, and checks that every point owed to an
  accepted case whose clock ran from one assignment undisturbed came due (FIRE_GRACE before the
  check) and fired, once (another event id for the same case, stage, kind and due time is a
  duplicate; the same event id again a republication); how late each fired is reported beside.

The servers are always the embedded ones (DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS are not used):
the suite stops and pauses them.

Scenarios (`--scenarios`, in this order by default):

- `kill-intake`, `kill-dispatch`, `kill-sla`: SIGKILL the service mid-stream, start it again at
  once (sla once its first warnings and breaches are firing);
- `broker-pause`: the broker unreachable for `--pause-seconds` (SIGSTOP of its process, then
  SIGCONT: the embedded broker is in memory, a real restart loses its topics); intake must keep
  answering 202 meanwhile (its outbox holds the cases);
- `postgres-restart`: the embedded PostgreSQL stopped, `--outage-seconds` later started again on
  the same data folder; intake answers 503 meanwhile (counted as refused, not accepted);
- `poison`: garbage records (not JSON, JSON but no CloudEvent, a CloudEvent of an unknown type) on
  every topic a service of the stack consumes (cases.submitted, cases.lifecycle, sla.signals,
  visits.recorded) mid-stream; each consumer must dead-letter them and go on;
- `receiver-down`: every department receiver answers 503 for `--receiver-down-minutes` of
  simulated time (default 10): `--time-scale` (default 10) simulated seconds per real second,
  i.e. 60 s real, with this scenario's dispatch running its retry delays and breaker cooldowns
  that many times faster; sla's clock and every other timing stay real;
- `kill-hotline-bridge`, `kill-citycare-bridge`: the stack also runs that bridge (push mode) and
  its platform's simulator (deploy/<name>_simulator.py); besides the reports, the bench files
  `--bridge-rate` matters a second on the simulator (12345 orders, 数字城管 cases), which pushes
  each to the bridge until taken; the bridge is SIGKILLed mid-stream and started again. Checked
  too: every matter the platform filed was taken by the bridge (its links table), reached its
  department once per transition, and the platform got its assignment status back once
  (12345 `assigned`, 数字城管 `dispatched`).
- `kill-hotline-bridge-poll`, `kill-citycare-bridge-poll`: the same with the bridge in pull mode
  (`GRIDFLOW_PARTNER_MODE=poll`): the simulator pushes nothing and serves its matters as a feed,
  which the bridge reads after a cursor it commits with what each page means; killed mid-stream,
  it must go on from that cursor, taking nothing twice and missing nothing.
  Not exercised: the 数字城管 platform as a department's receiver (tasks gridflow files on it;
  every department's webhook goes to the bench receiver).

schemathesis against the OpenAPI documents is `make contract` (bench/contract.py).
Prints a row per scenario, writes .run/faults.json and the table into docs/reliability.md
(`--no-doc` leaves the document alone).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import aiohttp
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.dispatch import (
    API_SECRET,
    PARTITIONS,
    Servers,
    department_secret,
    dispatch_environment,
    receiver_config,
)
from bench.docs import write_between
from bench.e2e import REPORT_CATEGORIES, Deliveries, intake_environment, machine
from bench.intake import REPO, _drop_schema, _report_body, _wait_ready, worker_headers
from bench.sla import sla_environment
from deploy.embedded import (
    EmbeddedBroker,
    EmbeddedPostgres,
    free_port,
    start_broker,
    start_postgres,
)
from deploy.local_stack import interruptible
from libs.common.auth import mint_token
from libs.common.bridge.tables import links
from libs.common.envelope import Envelope, EnvelopeError, decode
from libs.common.events import CaseLifecycleEvent, SlaSignal, SlaSignalKind, Transition
from libs.common.kafka import TopicNames, ensure_topics, topic_partitions
from libs.common.topics import (
    CASES_LIFECYCLE,
    CASES_SUBMITTED,
    CATALOGUE,
    DEADLETTER,
    SLA_SIGNALS,
    VISITS_RECORDED,
    Topic,
)
from services.dispatch.settings import DispatchSettings

SCENARIOS = (
    "kill-intake",
    "kill-dispatch",
    "kill-sla",
    "broker-pause",
    "postgres-restart",
    "poison",
    "receiver-down",
    "kill-hotline-bridge",
    "kill-citycare-bridge",
    "kill-hotline-bridge-poll",
    "kill-citycare-bridge-poll",
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


# --- deadline signals (pure) ---------------------------------------------------------------------

# The bench's sla.yaml (written into each scenario's config dir): reports of FAST_CATEGORY (one in
# five of the load) run on the wall clock with a sign-for limit of SIGN_LIMIT, a warning at half
# of it, the breach at it and one escalation rung ESCALATION_AFTER later, so all three fire within
# half a minute of the assignment; every other report on limits of 30 days, which never fire here.
FAST_CATEGORY = "city.garbage"
SIGN_LIMIT = timedelta(seconds=24)
WARNING_FRACTIONS = (0.5,)
ESCALATION_AFTER = timedelta(seconds=6)
SIGNAL_POINTS: tuple[tuple[SlaSignalKind, timedelta], ...] = (
    *((SlaSignalKind.WARNING, SIGN_LIMIT * f) for f in WARNING_FRACTIONS),
    (SlaSignalKind.BREACH, SIGN_LIMIT),
    (SlaSignalKind.ESCALATION, SIGN_LIMIT + ESCALATION_AFTER),
)
FIRE_GRACE = timedelta(seconds=5)  # a point due this long before the check must have fired
# the transitions a counted case may have: nothing that stops, pauses or restarts its sign clock
_CLOCK_KEEPS = frozenset(
    {Transition.RECEIVED, Transition.ASSIGNED, Transition.SUPERVISED, Transition.ESCALATED}
)


def _minutes(amount: timedelta) -> str:
    return f"{amount.total_seconds() / 60:g}m"


def bench_policies() -> str:
    """sla.yaml for the suite (checked by services.sla.policies at sla's start)."""
    warnings = ", ".join(f"{f:g}" for f in WARNING_FRACTIONS)
    fast, calm = _minutes(SIGN_LIMIT), "30d"
    return f"""# written by bench/faults.py: limits short enough to fire during a scenario
version: 1
office_hours:
  hours: ["08:30-12:00", "14:00-17:30"]
  timezone: Asia/Shanghai
defaults:
  warnings: [{warnings}]
  escalation:
    - {{after: {_minutes(ESCALATION_AFTER)}, to: town}}
policies:
  - id: faults-fast
    match: {{category: {FAST_CATEGORY}}}
    clock: wall
    stages: {{sign: {fast}, handle: {fast}, verify: {fast}}}
  - id: faults-calm
    clock: wall
    stages: {{sign: {calm}, handle: {calm}, verify: {calm}}}
"""


SignalKey = tuple[str, str, str, datetime]  # case id, stage, kind, the point's due time


def signal_key(signal: SlaSignal) -> SignalKey:
    """What makes a signal the same signal: sla sends each point of a timer once, and a point is
    its case, stage, kind and due time (the two warnings of one timer differ by their time)."""
    return (signal.case_id, signal.stage.value, signal.kind.value, signal.at)


def clocked_cases(
    events: Iterable[CaseLifecycleEvent], accepted: set[str]
) -> tuple[dict[str, datetime], int]:
    """The accepted FAST_CATEGORY cases whose sign-for clock ran undisturbed from one assignment
    (case id -> the assignment's time), and how many accepted fast cases were left out (another
    transition touched their clock: reassigned, merged, signed …; none is expected here)."""
    transitions: dict[str, dict[int, CaseLifecycleEvent]] = {}
    for event in events:  # a version read twice is one event published again (at least once)
        if event.case_id in accepted and event.category == FAST_CATEGORY:
            transitions.setdefault(event.case_id, {})[event.version] = event
    counted, skipped = {}, 0
    for case_id, by_version in transitions.items():
        seen = list(by_version.values())
        assigned = [e for e in seen if e.transition is Transition.ASSIGNED]
        if len(assigned) == 1 and all(e.transition in _CLOCK_KEEPS for e in seen):
            counted[case_id] = assigned[0].at
        elif assigned:
            skipped += 1
    return counted, skipped


def signal_points(assigned: Mapping[str, datetime]) -> dict[SignalKey, datetime]:
    """Every signal the bench policy owes each case (-> when it comes due)."""
    return {
        (case_id, "sign", kind.value, at + offset): at + offset
        for case_id, at in assigned.items()
        for kind, offset in SIGNAL_POINTS
    }


def account_signals(
    *,
    points: Mapping[SignalKey, datetime],
    fired: Sequence[tuple[SignalKey, str]],
    checked_at: datetime,
    skipped: int = 0,
) -> dict[str, Any]:
    """The signal columns. `points`: what the counted cases are owed (-> due time); `fired`:
    each record read from sla.signals, (its identity, its event id). A point due by
    `checked_at` - FIRE_GRACE must have fired; a signal fired twice with two event ids is a
    duplicate (the same event id again is a republication, which consumers skip: allowed); a
    signal no counted case is owed, for a counted case, is unexpected."""
    owed = {key for key, due in points.items() if due <= checked_at - FIRE_GRACE}
    cases = {key[0] for key in points}
    ids: dict[SignalKey, set[str]] = {}
    for key, event_id in fired:
        if key[0] in cases:
            ids.setdefault(key, set()).add(event_id)
    distinct = sum(len(found) for found in ids.values())
    return {
        "signal_cases": len(cases),
        "signal_cases_skipped": skipped,
        "signals_owed": len(owed),
        "signals": len(ids.keys() & points.keys()),
        "signals_missing": len(owed - ids.keys()),
        "signals_duplicated": distinct - len(ids),
        "signals_republished": sum(1 for key, _ in fired if key[0] in cases) - distinct,
        "signals_unexpected": len(ids.keys() - points.keys()),
    }


def signals_ok(row: Mapping[str, Any]) -> bool:
    return not (
        row["signals_missing"]
        or row["signals_duplicated"]
        or row["signals_unexpected"]
        or row["signal_cases_skipped"]
    )


# --- the partner platforms (bridge scenarios) -----------------------------------------------------


@dataclass(frozen=True)
class Partner:
    """A partner platform, its bridge and its simulator as the bridge scenarios drive them: the
    bench files the platform's own matters on the simulator (`POST /sim/…`), which pushes each to
    the bridge (signed, in order, again until taken); the bridge's status updates come back to
    the simulator, which shows them per matter (`GET /sim/…/{id}`)."""

    name: str  # hotline | citycare: services.<name>_bridge, deploy.<name>_simulator
    system: str  # the platform's system name (the bridge's partner token's subject)
    sim_path: str  # the simulator's /sim/ collection of the platform's matters
    id_key: str  # the matter's id in the simulator's answer
    assigned_status: str  # the status update the platform gets when a department holds the case
    samples: int  # matters cycle through this many kinds (file_body's `kind`)
    # push: the simulator pushes each matter to the bridge until taken; poll: the bridge reads
    # the simulator's feed after its persisted cursor (GRIDFLOW_PARTNER_MODE)
    mode: Literal["push", "poll"] = "push"

    def file_body(self, number: int) -> dict[str, Any]:
        """A matter of kind `number % samples`, its number in its text (the receiver finds it)."""
        text = f"振兴路小区南门反映的问题仍未处理（第 {number} 次）。"
        kind = number % self.samples
        if self.name == "hotline":
            code, name = HOTLINE_CLASSES[kind]
            return {
                "content": text,
                "classification": {"code": code, "name": name},
                "grid_id": "LQ-ZX-01",
                "urgency": "一般",
                "order_type": "投诉",
            }
        return {"sample": kind, "description": text}  # deploy/citycare_simulator.py SAMPLES

    @property
    def schema_suffix(self) -> str:
        return f"{self.name}_bridge"


# 12345 classifications whose categories route to a department (0101: the fast sla policy's)
HOTLINE_CLASSES = (
    ("0101", "城市管理-暴露垃圾"),
    ("0502", "民政服务-孤寡老人关爱"),
    ("0401", "社会治安-噪音扰民"),
    ("0601", "供电服务-停电"),
)
HOTLINE = Partner("hotline", "hotline12345", "/sim/orders", "order_id", "assigned", 4)
# the simulator's five samples: 暴露垃圾 (city.garbage, the fast policy's), 上水井盖, 非法小广告,
# 占道经营, 机动车乱停放 — all city.* filed by the platform, so all routed to 城管 (chengguan)
CITYCARE = Partner("citycare", "citycare", "/sim/cases", "case_id", "dispatched", 5)
CITYCARE_DEPARTMENT = "shuzichengguan"  # the platform's own department entry (its bridge's)
HOTLINE_POLL = dataclasses.replace(HOTLINE, mode="poll")
CITYCARE_POLL = dataclasses.replace(CITYCARE, mode="poll")
# the bridges' pause between two reads of a feed that had nothing new (5 s by default): a
# matter filed meanwhile waits at most this long to be read
BRIDGE_POLL_SECONDS = 1.0


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
    """PostgreSQL, the broker, the receiver, intake, dispatch and sla of one scenario;
    `dispatch_extra`: environment variables of this scenario's dispatch (receiver-down's
    compressed delivery timings)."""

    tag: str
    workdir: Path
    dispatch_extra: dict[str, str] = field(default_factory=dict)
    partner: Partner | None = None  # a bridge and its platform's simulator too
    simulator_port: int = 0
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
        sla_port = free_port()
        self.receiver_url = f"http://127.0.0.1:{receiver_port}"
        config = self.workdir / "config"
        refdata = receiver_config(config, self.receiver_url)
        (config / "sla.yaml").write_text(bench_policies(), encoding="utf-8")
        dispatch_env = (
            dispatch_environment(
                servers=found, tag=self.tag, port=dispatch_port, config_dir=config, refdata=refdata
            )
            | self.dispatch_extra
        )
        sla_env = sla_environment(found, tag=self.tag, port=sla_port, extra={})
        sla_env["GRIDFLOW_CONFIG_DIR"] = str(config)
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
            "sla": Service(
                ["-m", "services.sla"],
                sla_env,
                f"http://127.0.0.1:{sla_port}/readyz",
                logs / f"faults-sla-{self.tag}.log",
            ),
        }
        if self.partner is not None:
            self.services |= self._bridge(self.partner, found, config, dispatch_port)
        for service in self.services.values():
            await asyncio.to_thread(service.start)

    def _bridge(
        self, partner: Partner, found: Servers, config: Path, dispatch_port: int
    ) -> dict[str, Service]:
        """The partner's bridge and the platform's simulator, as `make run` starts them
        (deploy/local_stack.py), with the bench's throwaway secrets: the simulator pushes to the
        bridge (push mode), or serves its feed and the bridge reads it (poll mode)."""
        bridge_port, self.simulator_port = free_port(), free_port()
        shared = {
            "GRIDFLOW_PARTNER_INBOUND_SECRET": department_secret(f"{partner.name}-push"),
            "GRIDFLOW_PARTNER_OUTBOUND_SECRET": department_secret(f"{partner.name}-call"),
        }

        def token(subject: str, role: str, scopes: list[str]) -> str:
            return mint_token(
                secret=API_SECRET,
                subject=subject,
                role=role,
                scopes=scopes,
                grids=[],
                now=datetime.now(UTC),
                ttl=timedelta(days=1),
            )

        bridge_env = sla_environment(found, tag=self.tag, port=bridge_port, extra={}) | {
            **shared,
            "GRIDFLOW_CONFIG_DIR": str(config),
            "GRIDFLOW_DB_SCHEMA": f"{self.tag}_{partner.schema_suffix}",
            "GRIDFLOW_LIFECYCLE_CONSUMER_GROUP": f"{self.tag}-{partner.name}",
            "GRIDFLOW_PARTNER_URL": f"http://127.0.0.1:{self.simulator_port}",
            "GRIDFLOW_DISPATCH_URL": f"http://127.0.0.1:{dispatch_port}",
            "GRIDFLOW_DISPATCH_TOKEN": token(
                partner.system, "partner", ["cases:read", "cases:decide"]
            ),
        }
        if partner.name == CITYCARE.name:  # also the receiver of the platform's department entry
            bridge_env["GRIDFLOW_DEPARTMENT_WEBHOOK_SECRET"] = department_secret(
                CITYCARE_DEPARTMENT
            )
            bridge_env["GRIDFLOW_DEPARTMENT_TOKEN"] = token(
                CITYCARE_DEPARTMENT, "department", ["cases:read", "cases:write"]
            )
        logs = REPO / ".run"
        bridge_url = f"http://127.0.0.1:{bridge_port}"
        simulator = ["--port", str(self.simulator_port)]
        if partner.mode == "poll":  # the simulator serves its feed; the bridge reads it
            bridge_env["GRIDFLOW_PARTNER_MODE"] = "poll"
            bridge_env["GRIDFLOW_PARTNER_POLL_SECONDS"] = str(BRIDGE_POLL_SECONDS)
        else:
            simulator += ["--bridge", bridge_url]
        return {
            f"{partner.name}_bridge": Service(
                ["-m", f"services.{partner.name}_bridge"],
                bridge_env,
                f"{bridge_url}/readyz",
                logs / f"faults-{partner.name}_bridge-{self.tag}.log",
            ),
            f"{partner.name}-simulator": Service(
                ["-m", f"deploy.{partner.name}_simulator", *simulator],
                {**os.environ, **shared},
                f"http://127.0.0.1:{self.simulator_port}/healthz",
                logs / f"faults-{partner.name}-simulator-{self.tag}.log",
            ),
        }

    def stop(self) -> None:
        for service in reversed(self.services.values()):
            service.stop()
        if self.broker is not None:
            with contextlib.suppress(ProcessLookupError):
                self.broker.process.send_signal(signal.SIGCONT)  # if stopped by a fault
            self.broker.stop()
        if self.postgres is not None:
            schemas = ["intake", "dispatch", "sla"]
            schemas += [self.partner.schema_suffix] if self.partner else []
            for schema in (f"{self.tag}_{name}" for name in schemas):
                with contextlib.suppress(Exception):
                    asyncio.run(_drop_schema(self.postgres.url, schema))
            self.postgres.stop()


@contextlib.contextmanager
def running_stack(
    tag: str, dispatch_extra: dict[str, str], *, partner: Partner | None
) -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as folder:
        stack = Stack(tag, Path(folder), dispatch_extra, partner)
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
    receiver_down_minutes: float  # simulated
    time_scale: float  # simulated seconds per real second (receiver-down)
    bridge_rate: float  # the partner platform's matters/s through its bridge (kill-*-bridge)

    @property
    def receiver_down_seconds(self) -> float:
        """The receiver's outage in real time."""
        return self.receiver_down_minutes * 60 / self.time_scale


# dispatch's time-based delivery settings: receiver-down runs them `time_scale` times faster
COMPRESSED_SETTINGS = (
    "delivery_base_delay_seconds",
    "delivery_max_delay_seconds",
    "delivery_breaker_cooldown_seconds",
    "delivery_breaker_max_cooldown_seconds",
)


def compressed_delivery(time_scale: float) -> dict[str, str]:
    """GRIDFLOW_* variables giving dispatch's defaults for COMPRESSED_SETTINGS divided by
    `time_scale` (2 s first retry -> 0.2 s, 60 s breaker cooldown -> 6 s at 10)."""
    fields = DispatchSettings.model_fields
    return {
        f"GRIDFLOW_{name.upper()}": f"{float(fields[name].default) / time_scale:g}"
        for name in COMPRESSED_SETTINGS
    }


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
# every topic a service of the stack consumes, and how many of its consumers are in the stack
# (each dead-letters a record it cannot decode on its own): dispatch; intake's status consumer
# and sla; dispatch; sla
POISONED_TOPICS: tuple[tuple[Topic, int], ...] = (
    (CASES_SUBMITTED, 1),
    (CASES_LIFECYCLE, 2),
    (SLA_SIGNALS, 1),
    (VISITS_RECORDED, 1),
)
DEAD_LETTERS_EXPECTED = len(POISON) * sum(consumers for _, consumers in POISONED_TOPICS)


async def poison(stack: Stack, options: Options, notes: list[str]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    await producer.start()
    try:
        for topic, _ in POISONED_TOPICS:
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
    try:
        while count < DEAD_LETTERS_EXPECTED and time.perf_counter() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            count += sum(len(records) for records in batches.values())
    finally:
        await consumer.stop()
    return count


async def receiver_down(stack: Stack, options: Options, notes: list[str]) -> None:
    """Every department answers 503 for `--receiver-down-minutes` of simulated time: the real
    outage is that divided by `--time-scale`, and this scenario's dispatch runs its retry delays
    and breaker cooldowns as many times faster (compressed_delivery); the receiver's bookkeeping
    sees the outage whole, as a restart of it would not."""
    deliveries = Deliveries(stack.receiver_url)
    async with contextlib.aclosing(deliveries):
        await deliveries.control("down")
        notes.append(
            f"receiver answering 503 for {options.receiver_down_seconds:.0f} s"
            f" ({options.receiver_down_minutes:g} simulated minutes at {options.time_scale:g}×)"
        )
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
    "kill-sla": _restart("sla"),
    "kill-hotline-bridge": _restart("hotline_bridge"),
    "kill-citycare-bridge": _restart("citycare_bridge"),
    "kill-hotline-bridge-poll": _restart("hotline_bridge"),
    "kill-citycare-bridge-poll": _restart("citycare_bridge"),
}
BRIDGE_SCENARIOS = {
    "kill-hotline-bridge": HOTLINE,
    "kill-citycare-bridge": CITYCARE,
    "kill-hotline-bridge-poll": HOTLINE_POLL,
    "kill-citycare-bridge-poll": CITYCARE_POLL,
}


# --- load and delivery ----------------------------------------------------------------------------


async def steady_load(
    port: int, *, rate: float, seconds: float, base: int
) -> tuple[dict[int, int | None], dict[int, str]]:
    """Open loop: report `base + i` due at start + i/rate; its answer noted (None: none), and
    the case id of each accepted one."""
    headers = worker_headers()
    answers: dict[int, int | None] = {}
    case_ids: dict[int, str] = {}
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
                    answer = await response.read()
                    answers[number] = response.status
                    if response.status == 202:
                        case_ids[number] = json.loads(answer)["case_id"]
            except (aiohttp.ClientError, TimeoutError):
                answers[number] = None

        start = time.perf_counter() + 0.05
        total = int(rate * seconds)
        await asyncio.gather(*(one(base + i, start + i / rate) for i in range(total)))
    return answers, case_ids


ORDER_BASE = 2 * 10**9  # the platform's matters' numbers, apart from the reports' (10**9 + i)


async def order_load(
    partner: Partner, port: int, *, rate: float, seconds: float, base: int
) -> dict[int, str | None]:
    """Open loop on the platform's simulator: matter `base + i` filed at start + i/rate (its
    number in its text, where the receiver finds it once it is a case); number -> the platform's
    id of it (None: the simulator did not file it). The simulator pushes each to the bridge, in
    order, again until the bridge takes it (push mode), or keeps it in its feed (poll mode)."""
    orders: dict[int, str | None] = {}
    url = f"http://127.0.0.1:{port}{partner.sim_path}"
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(number: int, due: float) -> None:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            try:
                async with session.post(url, json=partner.file_body(number)) as response:
                    answer = await response.read()
                    created = response.status == 201
                    orders[number] = json.loads(answer)[partner.id_key] if created else None
            except (aiohttp.ClientError, TimeoutError):
                orders[number] = None

        start = time.perf_counter() + 0.05
        total = int(rate * seconds)
        await asyncio.gather(*(one(base + i, start + i / rate) for i in range(total)))
    return orders


async def bridge_links(stack: Stack) -> dict[str, str]:
    """The matters the bridge took: its links table (the platform's id -> case id)."""
    assert stack.postgres is not None and stack.partner is not None  # noqa: S101
    engine = create_async_engine(stack.postgres.url)
    try:
        async with engine.connect() as conn:
            schema = await conn.execution_options(
                schema_translate_map={None: f"{stack.tag}_{stack.partner.schema_suffix}"}
            )
            rows = await schema.execute(sa.select(links.c.external_id, links.c.case_id))
            return {row.external_id: row.case_id for row in rows}
    finally:
        await engine.dispose()


def account_updates(
    updates: Mapping[str, Sequence[str]], owed: Iterable[str], *, status: str
) -> dict[str, int]:
    """The status updates the platform got back: each matter whose case reached its department
    is owed one `status` (12345: assigned, 数字城管: dispatched — told on assignment and on
    reassignment, and no case is reassigned here); another one under another webhook-id is a
    duplicate (the simulator drops a webhook-id it took already, so a retry never shows)."""
    owed = set(owed)
    counts = {order: list(updates.get(order, ())).count(status) for order in owed}
    return {
        "updates_owed": len(owed),
        "updates_missing": sum(1 for n in counts.values() if n == 0),
        "updates_duplicated": sum(n - 1 for n in counts.values() if n > 1),
    }


async def platform_updates(
    partner: Partner, port: int, orders: Iterable[str], *, within: float
) -> dict[str, list[str]]:
    """The statuses the simulator took for each matter, read until every one has its
    `assigned_status` (at most `within` seconds, one round a second)."""
    found: dict[str, list[str]] = {}
    pending = set(orders)
    limit = asyncio.Semaphore(16)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def read(order: str) -> None:
            address = f"http://127.0.0.1:{port}{partner.sim_path}/{order}"
            async with limit, session.get(address) as r:
                found[order] = [u["status"] for u in (await r.json())["updates"]]

        deadline = time.perf_counter() + within
        for _ in range(int(within) + 1):
            await asyncio.gather(*(read(order) for order in pending))
            pending = {o for o in pending if partner.assigned_status not in found[o]}
            if not pending or time.perf_counter() > deadline:
                break
            await asyncio.sleep(1.0)
        await asyncio.sleep(SETTLE_SECONDS)  # late duplicates
        await asyncio.gather(*(read(order) for order in found))
    return found


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


def fault_moment(name: str, options: Options) -> float:
    """Seconds into the load: a third of `--seconds`; sla is killed once the first reports'
    warnings and breaches are firing (SIGN_LIMIT in), so it dies in the middle of that."""
    if name == "kill-sla":
        return min(max(options.seconds / 3, SIGN_LIMIT.total_seconds()), options.seconds)
    return options.seconds / 3


async def run_scenario(stack: Stack, name: str, options: Options) -> dict[str, Any]:
    fault = FAULTS[name]
    notes: list[str] = []
    seconds = options.seconds + (options.pause_seconds if name == "broker-pause" else 0)
    seconds += options.outage_seconds if name == "postgres-restart" else 0
    seconds += options.receiver_down_seconds if name == "receiver-down" else 0
    partner = BRIDGE_SCENARIOS.get(name)
    deliveries = Deliveries(stack.receiver_url)
    async with contextlib.aclosing(deliveries):
        load = asyncio.create_task(
            steady_load(stack.intake_port, rate=options.rate, seconds=seconds, base=10**9)
        )
        orders_load = asyncio.create_task(
            order_load(
                partner,
                stack.simulator_port,
                rate=options.bridge_rate,
                seconds=seconds,
                base=ORDER_BASE,
            )
            if partner
            else _no_orders()
        )
        fault_at = fault_moment(name, options)
        await asyncio.sleep(fault_at)
        print(f"  {name}: fault at {fault_at:.0f} s", flush=True)
        await fault(stack, options, notes)
        answers, case_ids = await load
        orders = await orders_load
        accepted = {n for n, status in answers.items() if status == 202}
        # an order the platform created is owed: the simulator pushes it until the bridge takes
        # it, or keeps it in its feed, which the bridge reads after its persisted cursor
        owed = accepted | {n for n, order in orders.items() if order is not None}
        print(f"  {name}: load done, {len(owed):,} accepted; waiting for deliveries", flush=True)
        waited = await await_deliveries(
            deliveries,
            owed,
            within=options.drain_seconds + options.pause_seconds + options.receiver_down_seconds,
        )
        taken = await bridge_links(stack) if partner else {}
        for number, order in orders.items():  # taken by the bridge = accepted, else unanswered
            answers[number] = 202 if order in taken else None
            if order in taken:
                case_ids[number] = taken[order]
        counters = deliveries.counters
        load_text = f"{options.rate:g}/s for {seconds:g} s"
        row = account(
            scenario=name,
            load=load_text + (f" + {options.bridge_rate:g} {partner.name}/s" if partner else ""),
            answers=answers,
            delivered=set(deliveries.first),
            repeats=counters.get("repeats", 0),
            retries=counters.get("retries", 0),
        )
    row["drain_seconds"] = round(waited, 1)
    row["transitions"] = counters.get("transitions", 0)
    if partner:
        created = {n: order for n, order in orders.items() if order is not None}
        row["bridge_orders"] = len(created)
        row["bridge_taken"] = sum(1 for order in created.values() if order in taken)
        delivered = {order for n, order in created.items() if n in deliveries.first}
        print(f"  {name}: waiting for the platform's status updates", flush=True)
        started = time.perf_counter()
        updates = await platform_updates(
            partner, stack.simulator_port, delivered, within=UPDATES_WAIT_SECONDS
        )
        notes.append(f"waited {time.perf_counter() - started:.0f} s for the status updates")
        row |= account_updates(updates, delivered, status=partner.assigned_status)
        row["ok"] = (
            row["ok"]
            and row["bridge_taken"] == row["bridge_orders"]
            and not (row["updates_missing"] or row["updates_duplicated"])
        )
    print(f"  {name}: deliveries checked; waiting for the deadline signals", flush=True)
    fast = {case_id for n, case_id in case_ids.items() if on_fast_policy(n, partner)}
    row |= await check_signals(stack, set(case_ids.values()), fast, notes)
    row["ok"] = row["ok"] and signals_ok(row)
    if name == "poison":
        row["dead_lettered"] = await dead_letters(stack, within=30)
        row["dead_letters_expected"] = DEAD_LETTERS_EXPECTED
        row["ok"] = row["ok"] and row["dead_lettered"] >= row["dead_letters_expected"]
    row["notes"] = notes
    return row


async def _no_orders() -> dict[int, str | None]:
    return {}


class TopicTail:
    """Reads one topic of the stack from its start, every partition (no consumer group)."""

    def __init__(self, stack: Stack, topic: Topic) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=stack.bootstrap, enable_auto_commit=False
        )
        self._partitions = topic_partitions(stack.names(topic), range(PARTITIONS))
        self.unreadable = 0  # records that are no event of the topic (the poison scenario's)

    async def __aenter__(self) -> TopicTail:
        await self._consumer.start()
        self._consumer.assign(self._partitions)
        await self._consumer.seek_to_beginning(*self._partitions)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._consumer.stop()

    async def _caught_up(self) -> bool:
        for tp in self._partitions:
            highwater = self._consumer.highwater(tp)
            if highwater is None or await self._consumer.position(tp) < highwater:
                return False
        return True

    async def read(self, model: type[Any], *, within: float) -> list[tuple[Any, Envelope]]:
        """What was published since the previous read (payload, envelope), until caught up with
        every partition's high watermark (at most `within` seconds)."""
        found: list[tuple[Any, Envelope]] = []
        deadline = time.perf_counter() + within
        for _ in range(int(within / 0.2) + 1):  # bounded in count as in time
            batches = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            for records in batches.values():
                for record in records:
                    try:
                        envelope = decode(record.key, record.value, record.headers)
                        found.append((model.model_validate(envelope.data), envelope))
                    except (EnvelopeError, ValidationError):
                        self.unreadable += 1
            if (not batches and await self._caught_up()) or time.perf_counter() > deadline:
                break
        return found


UPDATES_WAIT_SECONDS = 300.0  # at most this long for the platform's status updates
SIGNAL_WAIT_SECONDS = 300.0  # at most this long for sla to catch up and the last point to be due


async def sla_applied(engine: AsyncEngine, schema: str, versions: Mapping[str, int]) -> int:
    """How many of the cases sla has applied at least up to the given version (its sla_cases
    table: the clock state of every case it consumed an event of)."""
    cases = sa.table("sla_cases", sa.column("case_id"), sa.column("version"), schema=schema)
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(cases.c.case_id, cases.c.version).where(cases.c.case_id.in_(list(versions)))
        )
        return sum(1 for row in rows if row.version >= versions[row.case_id])


def on_fast_policy(number: int, partner: Partner | None) -> bool:
    """Whether report or matter `number` is of FAST_CATEGORY, as the load generators made it (a
    partner's matter of kind 0 is 暴露垃圾 on both platforms)."""
    if partner is not None and number >= ORDER_BASE:
        return number % partner.samples == 0
    return REPORT_CATEGORIES[number % len(REPORT_CATEGORIES)] == FAST_CATEGORY


async def check_signals(
    stack: Stack, accepted: set[str], fast: set[str], notes: list[str]
) -> dict[str, Any]:
    """Wait (bounded) until sla has applied the assignment of every counted case and the last
    point owed to them came due, read every signal sla published, and account for them
    (account_signals); how late each fired (its event's time - its due time) goes beside."""
    assert stack.postgres is not None  # noqa: S101
    engine = create_async_engine(stack.postgres.url)
    try:
        async with (
            TopicTail(stack, CASES_LIFECYCLE) as lifecycle,
            TopicTail(stack, SLA_SIGNALS) as tail,
        ):
            events = [event for event, _ in await lifecycle.read(CaseLifecycleEvent, within=60)]
            assigned, _ = clocked_cases(events, accepted)
            versions = {
                e.case_id: e.version
                for e in events
                if e.case_id in assigned and e.transition is Transition.ASSIGNED
            }
            last = max(assigned.values(), default=datetime.now(UTC))
            last_point = last + SIGNAL_POINTS[-1][1] + FIRE_GRACE
            fired: list[tuple[SlaSignal, Envelope]] = []
            started, applied = time.perf_counter(), 0
            for _ in range(int(SIGNAL_WAIT_SECONDS) + 1):  # bounded in count as in time
                fired += await tail.read(SlaSignal, within=10)
                applied = await sla_applied(engine, f"{stack.tag}_sla", versions)
                if applied >= len(versions) and datetime.now(UTC) >= last_point:
                    break
                if time.perf_counter() - started > SIGNAL_WAIT_SECONDS:
                    break
                await asyncio.sleep(1.0)
            caught_up = time.perf_counter() - started
            await asyncio.sleep(SETTLE_SECONDS)  # overdue points of the last applied, duplicates
            checked_at = datetime.now(UTC)
            fired += await tail.read(SlaSignal, within=30)
            events += [e for e, _ in await lifecycle.read(CaseLifecycleEvent, within=60)]
    finally:
        await engine.dispose()
    assigned, skipped = clocked_cases(events, accepted)  # with every later transition
    seen = {e.case_id for e in events if e.transition is Transition.ASSIGNED}
    unassigned = len(fast - seen)  # no assignment yet: its sign-for clock has not started
    if unassigned:
        notes.append(f"{unassigned} accepted fast cases not assigned by the check: no clock yet")
    if tail.unreadable:
        notes.append(f"{tail.unreadable} records on sla.signals that are no signal")
    if applied < len(versions):
        notes.append(f"sla had not applied {len(versions) - applied:,} assignments by the check")
    notes.append(f"waited {caught_up:.0f} s for sla and the last point")
    late = sorted(
        (envelope.time - signal.at).total_seconds()
        for signal, envelope in fired
        if signal.case_id in assigned
    )
    return account_signals(
        points=signal_points(assigned),
        fired=[(signal_key(signal), envelope.id) for signal, envelope in fired],
        checked_at=checked_at,
        skipped=skipped,
    ) | {
        "signals_unapplied": len(versions) - applied,
        "signal_cases_unassigned": unassigned,
        "signals_late_p50_seconds": round(late[len(late) // 2], 1) if late else None,
        "signals_late_max_seconds": round(late[-1], 1) if late else None,
    }


# --- the suite, output ----------------------------------------------------------------------------


def run_suite(scenarios: list[str], options: Options) -> dict[str, Any]:
    about = machine()
    rows = []
    for number, name in enumerate(scenarios, 1):
        print(f"scenario {number}/{len(scenarios)}: {name}", flush=True)
        extra = compressed_delivery(options.time_scale) if name == "receiver-down" else {}
        partner = BRIDGE_SCENARIOS.get(name)
        with running_stack(f"faults{os.getpid()}s{number}", extra, partner=partner) as stack:
            row = asyncio.run(run_scenario(stack, name, options))
        print("  " + table_line(row), flush=True)
        rows.append(row)
    return {
        "run_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": about,
        "options": vars(options) | {"receiver_down_seconds": options.receiver_down_seconds},
        "results": rows,
    }


COLUMNS = (
    "scenario",
    "load",
    "accepted",
    "delivered",
    "lost",
    "duplicated",
    "signals",
    "signals_missing",
    "signals_duplicated",
)


def table_line(row: Mapping[str, Any]) -> str:
    return "  ".join(f"{row[c]}" for c in COLUMNS) + ("  ok" if row["ok"] else "  FAILED")


def markdown_table(report: Mapping[str, Any]) -> str:
    about = report["machine"]
    lines = [
        f"Run {report['run_at']} on {about['nproc']} CPUs ({about['cpu_model']}),"
        f" Python {about['python']}, embedded PostgreSQL and Tansu broker:",
        "",
        "| scenario | load | accepted | delivered | lost | duplicated | retries | refused"
        " | unanswered (of which delivered) | signals (of owed) | signals missing"
        " | signals duplicated | signals late, p50 / max (s) | result |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for row in report["results"]:
        extra = ""
        if "dead_lettered" in row:
            extra = f"; {row['dead_lettered']}/{row['dead_letters_expected']} dead-lettered"
        if "bridge_orders" in row:
            extra += (
                f"; {row['bridge_taken']:,}/{row['bridge_orders']:,} taken by the bridge,"
                f" status back: {row['updates_missing']} missing,"
                f" {row['updates_duplicated']} duplicated"
            )
        if row.get("signals_unexpected"):
            extra += f"; {row['signals_unexpected']} unexpected signals"
        if row.get("signal_cases_skipped"):
            extra += f"; {row['signal_cases_skipped']} cases' clocks disturbed"
        lines.append(
            f"| {row['scenario']} | {row['load']} | {row['accepted']:,} | {row['delivered']:,}"
            f" | {row['lost']} | {row['duplicated']} | {row['retries']} | {row['refused']}"
            f" | {row['unanswered']} ({row['unanswered_delivered']})"
            f" | {row['signals']:,} ({row['signals_owed']:,}) | {row['signals_missing']}"
            f" | {row['signals_duplicated']}"
            f" | {row.get('signals_late_p50_seconds')} / {row.get('signals_late_max_seconds')}"
            f" | {'ok' if row['ok'] else 'FAILED'}{extra} |"
        )
    return "\n".join(lines)


def write_doc(report: Mapping[str, Any], path: Path = DOC) -> None:
    """The table between the document's markers (the rest of it is written by hand)."""
    write_between(path, TABLE_START, TABLE_END, markdown_table(report))


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
        "--receiver-down-minutes",
        type=float,
        default=10.0,
        help="receiver answering 503, in simulated minutes",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=10.0,
        help="receiver-down: simulated seconds per real second (dispatch's retry delays and"
        " breaker cooldowns divided by it)",
    )
    parser.add_argument(
        "--bridge-rate",
        type=float,
        default=20.0,
        help="kill-*-bridge: the platform's matters (12345 orders, 数字城管 cases) filed per"
        " second on its simulator",
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
        args.receiver_down_minutes,
        args.time_scale,
        args.bridge_rate,
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
