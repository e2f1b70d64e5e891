"""`make run` in embedded mode: no server configured, one report through, both bridges taking
their simulators' demo traffic, a clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from deploy.embedded import free_port

REPO = Path(__file__).resolve().parents[2]
START_SECONDS = 180.0
STOP_SECONDS = 60.0


async def _read_until(
    stream: asyncio.StreamReader, pattern: re.Pattern[str], lines: list[str]
) -> str:
    while True:
        raw = await stream.readline()
        if not raw:
            raise AssertionError("the stack's output ended before:\n" + "".join(lines[-40:]))
        line = raw.decode(errors="replace")
        lines.append(line)
        if pattern.search(line):
            return line


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.embedded
async def test_make_run_embedded_one_report_then_clean_stop() -> None:
    for port, what in ((8090, "the demo department"), (8005, "the citycare bridge")):
        if not _port_free(port):
            pytest.fail(f"port {port} ({what} of config/) is taken: stop the running stack")
    run_dir = REPO / ".run" / f"smoke-{os.getpid()}"
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")
    }
    intake_port = free_port()
    argv = [
        sys.executable,
        "-m",
        "deploy.local_stack",
        "--run-dir",
        str(run_dir),
        "--intake-port",
        str(intake_port),
        "--dispatch-port",
        str(free_port()),
        "--sla-port",
        str(free_port()),
        "--kafka-port",
        str(free_port()),
        "--hotline-port",
        str(free_port()),
        "--hotline-simulator-port",
        str(free_port()),
        "--citycare-simulator-port",
        str(free_port()),
        "--partner-demo-seconds",
        "1",
    ]
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(START_SECONDS):
            await _read_until(process.stdout, re.compile(r"^ready\."), lines)
        pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", "".join(lines))]
        # demo department, intake, dispatch, sla, and each bridge with its platform's simulator
        assert len(pids) == 8, "".join(lines)
        spawned = _descendants(process.pid)

        token = (run_dir / "worker-token").read_text().strip()
        started = time.perf_counter()
        async with httpx.AsyncClient() as client:
            response = await client.post(
                f"http://127.0.0.1:{intake_port}/v1/reports",
                content=(REPO / "docs" / "examples" / "report.json").read_bytes(),
                headers={"Authorization": f"Bearer {token}", "content-type": "application/json"},
            )
        assert response.status_code == 202, response.text
        case_id = response.json()["case_id"]
        async with asyncio.timeout(30):
            await _read_until(process.stdout, re.compile(rf"received case {case_id}"), lines)
        elapsed = time.perf_counter() - started
        print(f"report → demo department: {elapsed * 1000:.0f} ms")  # noqa: T201
        bridged = (  # the simulators' demo orders and cases become cases, in either order
            re.compile(r"order GD\d+ → case C\w+ \(accepted\)"),
            re.compile(r"case SZCG\d+ → C\w+ \(accepted\)"),
        )
        async with asyncio.timeout(60):
            for pattern in bridged:
                if not any(pattern.search(line) for line in lines):
                    await _read_until(process.stdout, pattern, lines)

        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(STOP_SECONDS):
            await _read_until(process.stdout, re.compile(r"^stopped\."), lines)
            assert await process.wait() == 0
        survivors = [p for p in spawned if _alive(p)]
        assert survivors == [], f"left behind: {survivors}"
    finally:
        if process.returncode is None:
            # a failed assertion must not leave the stack's own sessions running
            for pid in _descendants(process.pid):
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    psutil.Process(pid).kill()
            process.kill()
            await process.wait()
        shutil.rmtree(run_dir, ignore_errors=True)


def _descendants(pid: int) -> list[int]:
    """Every process the stack started, including the database server (which runs as its own user)."""
    children = [p.pid for p in psutil.Process(pid).children(recursive=True)]
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if f"smoke-{os.getpid()}" in cmdline:
            children.append(proc.pid)
    return sorted(set(children))


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
