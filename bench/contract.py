"""`make contract`: every service against its own OpenAPI document (issue 8: no 5xx, responses
match the schema).

Starts the stack as `make run` does — PostgreSQL and Kafka from DATABASE_URL /
KAFKA_BOOTSTRAP_SERVERS, else the embedded ones; intake, dispatch, sla, both bridges with their
platforms' simulators and the demo department, on free ports, with a topic prefix, schemas and
consumer groups of this run only — then, for each service, loads `/openapi.json` and sends
schemathesis's generated requests (valid data, then invalid data) to every operation, with valid
credentials for the caller the path is meant for:

- intake: a grid worker's bearer token; Open311 requests carry a registered client's `api_key`;
- dispatch: `/v1/department/…` a department's token, `/v1/operator/…` an operator of the whole
  city, `/v1/partner/…` the 12345 platform's partner token;
- sla: an operator's token;
- the bridges: requests signed as their platform signs its pushes (Standard Webhooks), and
  `/v1/citycare/deliveries` as dispatch signs its webhook to the 数字城管 department entry;
- `/metrics`: the metrics token.

Each response goes through the checks of CHECKS. Bounded: `--examples` per operation and mode,
`--seconds` in all (operations not reached by then are listed as skipped), a fixed `--seed`.
Prints a table per service, writes .run/contract.json and the table into docs/reliability.md
(`--no-doc` leaves the document alone); exits 1 on any failure or skipped operation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bench.dispatch import servers
from bench.docs import write_between
from bench.e2e import machine
from bench.intake import REPO, _drop_schema
from deploy.embedded import free_port
from deploy.local_stack import (
    ServiceSpec,
    bridge_specs,
    dev_secrets,
    interruptible,
    service_specs,
    wait_ready,
)
from libs.common.auth import mint_token
from libs.common.refdata import load_reference_data
from libs.common.signing import signed_headers

SERVICES = ("intake", "dispatch", "sla", "hotline_bridge", "citycare_bridge")
CHECKS = (
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
)
CHECK_NAMES = tuple(check.__name__ for check in CHECKS)
REQUEST_TIMEOUT = 15.0
DOC = REPO / "docs" / "reliability.md"
TABLE_START, TABLE_END = "<!-- contract:start -->", "<!-- contract:end -->"
CITY = "430281"  # the grid tree's root: an operator who serves it sees every case
WORKER_GRID = "430281001001001"
PARTNER = "hotline12345"
CITYCARE_DEPARTMENT = "shuzichengguan"


# --- credentials ----------------------------------------------------------------------------------


def _token(secret: str, subject: str, role: str, scopes: list[str], grids: list[str]) -> str:
    return mint_token(
        secret=secret,
        subject=subject,
        role=role,
        scopes=scopes,
        grids=grids,
        now=datetime.now(UTC),
        ttl=timedelta(hours=2),
    )


class SignedBody(requests.auth.AuthBase):
    """Signs the request's body as a Standard Webhooks sender does (the bridges' inbound routes)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.sent = itertools.count(1)  # message ids in order: a rerun sends the same ones

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        raw = body.encode() if isinstance(body, str) else body
        request.headers.update(
            signed_headers(
                secret=self.secret,
                msg_id=f"msg_contract_{next(self.sent)}",
                now=datetime.now(UTC),
                body=raw if isinstance(raw, bytes) else b"",
            )
        )
        return request


@dataclass(frozen=True)
class Credentials:
    """How one service's operations are called: a bearer token per path prefix, a request
    signer, an Open311 client key."""

    bearer: Mapping[str, str] = field(default_factory=dict)  # path prefix -> token
    metrics_token: str = ""
    signers: Mapping[str, SignedBody] = field(default_factory=dict)  # path prefix -> signer
    open311_key: str = ""

    def signer(self, path: str) -> SignedBody | None:
        return next((s for prefix, s in self.signers.items() if path.startswith(prefix)), None)

    def headers(self, path: str) -> dict[str, str]:
        if path == "/metrics":
            return {"Authorization": f"Bearer {self.metrics_token}"}
        for prefix, token in self.bearer.items():
            if path.startswith(prefix):
                return {"Authorization": f"Bearer {token}"}
        return {}


def credentials(
    env: Mapping[str, str], refdata_clients: Mapping[str, str]
) -> dict[str, Credentials]:
    """Each service's callers, from the stack's secrets (`env`) and the Open311 clients'
    key variables (client id -> variable)."""
    worker = env["GRIDFLOW_WORKER_JWT_SECRET"]
    api = env["GRIDFLOW_API_JWT_SECRET"]
    scopes = ["cases:read", "cases:manage", "deliveries:read", "deliveries:manage"]
    operator = _token(api, "OP01", "operator", scopes, [CITY])
    metrics = env["GRIDFLOW_METRICS_TOKEN"]
    hotline_push = env["GRIDFLOW_HOTLINE_PUSH_SECRET"]
    citycare_push = env["GRIDFLOW_CITYCARE_PUSH_SECRET"]
    department_webhook = env[f"GRIDFLOW_WEBHOOK_SECRET_{CITYCARE_DEPARTMENT.upper()}"]
    first_client = sorted(refdata_clients)[0]
    return {
        "intake": Credentials(
            bearer={
                "/v1/": _token(worker, "W0001", "grid_worker", ["reports:write"], [WORKER_GRID])
            },
            metrics_token=metrics,
            open311_key=env[refdata_clients[first_client]],
        ),
        "dispatch": Credentials(
            bearer={
                "/v1/department/": _token(
                    api, "chengguan", "department", ["cases:read", "cases:write"], []
                ),
                "/v1/operator/": operator,
                "/v1/partner/": _token(api, PARTNER, "partner", ["cases:read", "cases:decide"], []),
            },
            metrics_token=metrics,
        ),
        "sla": Credentials(bearer={"/v1/": operator}, metrics_token=metrics),
        "hotline_bridge": Credentials(
            metrics_token=metrics,
            signers={"/v1/": SignedBody(hotline_push)},
        ),
        "citycare_bridge": Credentials(
            metrics_token=metrics,
            signers={  # the first prefix that matches
                "/v1/citycare/deliveries": SignedBody(department_webhook),
                "/v1/": SignedBody(citycare_push),
            },
        ),
    }


# --- the stack ------------------------------------------------------------------------------------


@dataclass
class Stack:
    """The servers, every service and helper of `make run`, on free ports, isolated by `tag`."""

    tag: str
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    open311_clients: dict[str, str] = field(default_factory=dict)
    children: list[tuple[ServiceSpec, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, database_url: str, bootstrap: str) -> None:
        ports = {name: free_port() for name in (*SERVICES, "department", "hotline_sim", "cc_sim")}
        self.ports = ports
        config = self.workdir / "config"
        shutil.copytree(REPO / "config", config)
        departments = config / "departments.yaml"
        departments.write_text(
            departments.read_text(encoding="utf-8")
            .replace("http://127.0.0.1:8090", f"http://127.0.0.1:{ports['department']}")
            .replace("http://127.0.0.1:8005", f"http://127.0.0.1:{ports['citycare_bridge']}"),
            encoding="utf-8",
        )
        refdata = load_reference_data(config)
        self.open311_clients = {c.id: c.key_env for c in refdata.open311.clients.values()}
        secrets_ = dev_secrets(self.workdir / "dev.env", refdata, {})
        env = {
            **os.environ,
            **secrets_,
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "GRIDFLOW_CONFIG_DIR": str(config),
            "GRIDFLOW_TOPIC_PREFIX": f"{self.tag}.",
            "GRIDFLOW_ATTACHMENTS_DIR": str(self.workdir / "attachments"),
            "GRIDFLOW_KAFKA_SESSION_TIMEOUT_MS": "2000",
            "GRIDFLOW_KAFKA_HEARTBEAT_INTERVAL_MS": "200",
        }
        self.env = env
        specs = service_specs(
            intake_port=ports["intake"],
            dispatch_port=ports["dispatch"],
            sla_port=ports["sla"],
            department_port=ports["department"],
        )
        specs += bridge_specs(
            env,
            dispatch_port=ports["dispatch"],
            ports={
                "hotline": (ports["hotline_bridge"], ports["hotline_sim"]),
                "citycare": (ports["citycare_bridge"], ports["cc_sim"]),
            },
            demo_seconds=0,
            now=datetime.now(UTC),
        )
        logs = REPO / ".run"
        logs.mkdir(exist_ok=True)
        for spec in specs:
            isolated = {
                "GRIDFLOW_HTTP_PORT": str(spec.port),
                "GRIDFLOW_DB_SCHEMA": f"{self.tag}_{spec.name}",
                "GRIDFLOW_CONSUMER_GROUP": f"{self.tag}-{spec.name}",
                "GRIDFLOW_LIFECYCLE_CONSUMER_GROUP": f"{self.tag}-{spec.name}",
                "GRIDFLOW_STATUS_CONSUMER_GROUP": f"{self.tag}-{spec.name}-status",
            }
            argv = [sys.executable, "-m", spec.module]
            if not spec.api:
                argv += ["--port", str(spec.port), *(spec.argv or ("--config", str(config)))]
            with (logs / f"contract-{spec.name}.log").open("wb") as out:
                process = subprocess.Popen(  # noqa: S603  # our own modules
                    argv,
                    cwd=REPO,
                    env={**env, **dict(spec.env), **isolated},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            self.children.append((spec, process))
        for spec, process in self.children:
            path = "/readyz" if spec.api else "/healthz"
            wait_ready(f"http://127.0.0.1:{spec.port}{path}", within=120, process=process)

    def stop(self, database_url: str) -> None:
        for _, process in self.children:
            if process.poll() is None:
                process.terminate()
        for _, process in self.children:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for spec, _ in self.children:
            if spec.api:
                with contextlib.suppress(Exception):
                    asyncio.run(_drop_schema(database_url, f"{self.tag}_{spec.name}"))


@contextlib.contextmanager
def running_stack() -> Iterator[Stack]:
    with servers() as found, tempfile.TemporaryDirectory(prefix="bench-contract-") as folder:
        stack = Stack("contract" + secrets.token_hex(3), Path(folder))
        try:
            stack.start(found.database_url, found.bootstrap)
            yield stack
        finally:
            stack.stop(found.database_url)


# --- the contract check ---------------------------------------------------------------------------


@dataclass
class ServiceResult:
    service: str
    operations: int = 0
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    # "check: METHOD path [mode]" -> how often, and the first failure's message
    findings: dict[str, tuple[int, str]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # operations the time limit left out
    errors: list[str] = field(default_factory=list)  # requests that got no answer

    @property
    def ok(self) -> bool:
        return not self.failures and not self.skipped and not self.errors

    def record(self, check: str, label: str, failure: BaseException) -> None:
        self.failures[check] += 1
        key = f"{check}: {label}"
        count, message = self.findings.get(key, (0, ""))
        title = getattr(failure, "title", type(failure).__name__)
        self.findings[key] = (count + 1, message or f"{title}: {failure}"[:600])


def check_service(
    *,
    service: str,
    base_url: str,
    creds: Credentials,
    examples: int,
    seed_value: int,
    deadline: float,
) -> ServiceResult:
    result = ServiceResult(service)
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    session = requests.Session()
    operations = []
    for found in schema.get_all_operations():
        if isinstance(found, Ok):
            operations.append(found.ok())
        else:  # an operation schemathesis cannot read is a finding of the document
            result.record("schema", "the OpenAPI document", found.err())
    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"
        if time.monotonic() > deadline:
            result.skipped.append(label)
            continue
        result.operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _exercise(
                operation=operation,
                mode=mode,
                label=label,
                base_url=base_url,
                session=session,
                creds=creds,
                result=result,
                examples=examples,
                seed_value=seed_value,
                deadline=deadline,
            )
    return result


def _exercise(
    *,
    operation: Any,
    mode: GenerationMode,
    label: str,
    base_url: str,
    session: requests.Session,
    creds: Credentials,
    result: ServiceResult,
    examples: int,
    seed_value: int,
    deadline: float,
) -> None:
    path = operation.path

    @seed(seed_value)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        # no shrinking: every case is recorded, none raised
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def exercise(case: schemathesis.Case[Any]) -> None:
        if time.monotonic() > deadline:
            return
        if creds.open311_key and path.startswith("/open311/"):
            for container in (case.body, case.query):
                if isinstance(container, dict) and "api_key" in container:
                    container["api_key"] = creds.open311_key
            if isinstance(case.body, dict) and case.method.upper() == "POST":
                case.body["api_key"] = creds.open311_key
        headers = creds.headers(path)
        extra: dict[str, Any] = {"timeout": REQUEST_TIMEOUT}
        signer = creds.signer(path)
        if signer is not None:
            extra["auth"] = signer
        try:
            response = case.call(base_url=base_url, session=session, headers=headers, **extra)
        except requests.RequestException as exc:
            result.errors.append(f"{label}: {type(exc).__name__}: {exc}"[:300])
            return
        result.requests += 1
        result.statuses[response.status_code] += 1
        for check in CHECKS:
            try:
                case.validate_response(response, checks=[check], headers=headers)
            except FailureGroup as group:
                for failure in group.exceptions:
                    result.record(check.__name__, f"{label} [{mode.value}]", failure)
            except Failure as failure:
                result.record(check.__name__, f"{label} [{mode.value}]", failure)

    with contextlib.suppress(Unsatisfiable):  # no invalid data for an operation without input
        exercise()


# --- the report -----------------------------------------------------------------------------------


def markdown_table(report: Mapping[str, Any]) -> str:
    lines = [
        f"Run {report['started']} (schemathesis {report['schemathesis']}, seed {report['seed']}, "
        f"{report['examples']} valid and {report['examples']} invalid examples per operation), "
        f"{report['servers']}, {report['machine']['nproc']} CPUs, "
        f"{report['seconds_taken']:.0f} s with start and stop:",
        "",
        "| service | operations | requests | 2xx / 4xx / 5xx | "
        + " | ".join(CHECK_NAMES)
        + " | result |",
        "|---|--:|--:|--:|" + "--:|" * len(CHECK_NAMES) + "---|",
    ]
    for row in report["results"]:
        failures = " | ".join(str(row["failures"].get(name, 0)) for name in CHECK_NAMES)
        verdict = "ok" if row["ok"] else "FAILED"
        if row["skipped"]:
            verdict += f"; {len(row['skipped'])} operations not reached in time"
        if row["errors"]:
            verdict += f"; {len(row['errors'])} requests unanswered"
        classes: Counter[int] = Counter()
        for status, count in row["statuses"].items():
            classes[int(status) // 100] += count
        answered = " / ".join(f"{classes[c]:,}" for c in (2, 4, 5))
        lines.append(
            f"| {row['service']} | {row['operations']} | {row['requests']:,} | {answered} | "
            f"{failures} | {verdict} |"
        )
    return "\n".join(lines)


def write_doc(report: Mapping[str, Any], path: Path = DOC) -> None:
    """The table between the document's contract markers (the rest is written by hand)."""
    write_between(path, TABLE_START, TABLE_END, markdown_table(report))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.contract",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--services",
        type=lambda s: s.split(","),
        default=list(SERVICES),
        help=f"comma-separated, of {','.join(SERVICES)}",
    )
    parser.add_argument("--examples", type=int, default=25, help="per operation and mode")
    parser.add_argument("--seconds", type=float, default=600.0, help="time limit of all checks")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--out", type=Path, default=REPO / ".run" / "contract.json")
    parser.add_argument("--no-doc", action="store_true", help="leave docs/reliability.md alone")
    args = parser.parse_args(argv)
    unknown = set(args.services) - set(SERVICES)
    if unknown:
        parser.error(f"unknown services: {', '.join(sorted(unknown))}")
    started, clock = datetime.now(UTC), time.monotonic()
    results: list[ServiceResult] = []
    with interruptible(), running_stack() as stack:
        callers = credentials(stack.env, stack.open311_clients)
        deadline = time.monotonic() + args.seconds
        for service in args.services:
            print(f"{service}: checking …", flush=True)
            result = check_service(
                service=service,
                base_url=f"http://127.0.0.1:{stack.ports[service]}",
                creds=callers[service],
                examples=args.examples,
                seed_value=args.seed,
                deadline=deadline,
            )
            results.append(result)
            for key, (count, _) in result.findings.items():
                print(f"  {count:4} × {key}", flush=True)
    database = "configured" if os.environ.get("DATABASE_URL") else "embedded"
    broker = "configured Kafka" if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") else "embedded broker"
    report = {
        "started": started.isoformat(timespec="seconds"),
        "schemathesis": schemathesis.__version__,
        "seed": args.seed,
        "examples": args.examples,
        "seconds": args.seconds,
        "servers": f"{database} PostgreSQL, {broker}",
        "machine": machine(),
        "seconds_taken": round(time.monotonic() - clock, 1),
        "results": [
            {
                "service": r.service,
                "operations": r.operations,
                "requests": r.requests,
                "statuses": {str(k): v for k, v in sorted(r.statuses.items())},
                "failures": dict(r.failures),
                "findings": {k: {"count": c, "first": m} for k, (c, m) in r.findings.items()},
                "skipped": r.skipped,
                "errors": r.errors[:20],
                "ok": r.ok,
            }
            for r in results
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print()
    print(markdown_table(report))
    if not args.no_doc:
        write_doc(report)
    print(f"\nJSON: {args.out}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
