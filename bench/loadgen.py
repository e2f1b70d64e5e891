"""A small HTTP/1.1 load generator on raw asyncio streams (keep-alive, one request in flight per
connection). The same generator drives every target of a run, so ratios between targets are fair;
absolute numbers include its own cost on the same machine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

RequestFactory = Callable[[int], bytes]


@dataclass
class Stats:
    started: float = 0.0
    finished: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0

    @property
    def seconds(self) -> float:
        return max(1e-9, self.finished - self.started)

    @property
    def completed(self) -> int:
        return len(self.latencies)

    def ok(self, status: int) -> int:
        return self.statuses.get(status, 0)

    def rate(self, status: int) -> float:
        return self.ok(status) / self.seconds

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def http_request(method: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: bench", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> int:
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def closed_loop(
    host: str,
    port: int | Sequence[int],
    make: RequestFactory,
    *,
    connections: int,
    seconds: float,
) -> Stats:
    """As fast as `connections` clients can go, each waiting for its answer (with several ports,
    the clients are spread over them in turn: one server's instances)."""
    stats = Stats()
    counter = iter(range(10**12))
    deadline = time.perf_counter() + seconds
    ports = [port] if isinstance(port, int) else list(port)

    async def client(number: int) -> None:
        reader, writer = await asyncio.open_connection(host, ports[number % len(ports)])
        try:
            while time.perf_counter() < deadline:
                raw = make(next(counter))
                sent = time.perf_counter()
                try:
                    status = await _exchange(reader, writer, raw)
                except (asyncio.IncompleteReadError, ConnectionError):
                    stats.errors += 1
                    return
                stats.latencies.append(time.perf_counter() - sent)
                stats.statuses[status] = stats.statuses.get(status, 0) + 1
        finally:
            writer.close()

    stats.started = time.perf_counter()
    await asyncio.gather(*(client(number) for number in range(connections)))
    stats.finished = time.perf_counter()
    return stats


async def open_loop(
    host: str, port: int, make: RequestFactory, *, rate: float, seconds: float, max_connections: int
) -> Stats:
    """A fixed offered load: request i is due at start + i/rate; latency counts from that moment,
    so a slow server is not excused by the generator waiting (no coordinated omission)."""
    stats = Stats()
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    opened = 0
    total = int(rate * seconds)
    start = time.perf_counter() + 0.05

    async def one(index: int) -> None:
        nonlocal opened
        due = start + index / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        if idle.empty() and opened < max_connections:
            opened += 1
            idle.put_nowait(await asyncio.open_connection(host, port))
        reader, writer = await idle.get()
        try:
            status = await _exchange(reader, writer, make(index))
        except (asyncio.IncompleteReadError, ConnectionError):
            stats.errors += 1
            return
        stats.latencies.append(time.perf_counter() - due)
        stats.statuses[status] = stats.statuses.get(status, 0) + 1
        idle.put_nowait((reader, writer))

    stats.started = start
    await asyncio.gather(*(one(i) for i in range(total)))
    stats.finished = time.perf_counter()
    while not idle.empty():
        _, writer = idle.get_nowait()
        writer.close()
    return stats
