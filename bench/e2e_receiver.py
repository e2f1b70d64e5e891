"""The end-to-end benchmark's department receivers, as a process of their own (so the load
generator's work does not delay the receive times, nor the other way round).

`python -m bench.e2e_receiver PORT CODE[,CODE…]`: bench/webhook_receiver.py's server (every
Standard Webhooks signature checked with the bench's secret of the department in the path,
`bench.dispatch.department_secret`), which also notes, per case, the moment its first webhook
arrived (`time.perf_counter()`: CLOCK_MONOTONIC, the same clock in every process on Linux). The
case is found by the number the bench writes into each report's description ("第 N 次").

Its bookkeeping is per transition: a webhook is a department getting a case (`case.assigned`, the
only webhook dispatch sends: on assignment, reassignment and reopening), so one transition is one
(case, department) pair. The same `webhook-id` again is a retry; another `webhook-id` for a pair
already delivered is a repeat (a duplicate); a first webhook of a case at another department is a
further transition (`transitions`, not a duplicate). A reopened case sent back to the same
department would count as a repeat: the body says nothing of the transition (the suites that use
this receiver reopen no case).

`GET /_poll` answers the counters and the first deliveries noted since the previous poll, as JSON;
`POST /_hold` and `POST /_release` make the server hold requests unanswered, or answer them again;
`POST /_down` and `POST /_up` make it answer every webhook 503 (a department system that is down),
or as before again (bench/faults.py);
`GET /healthz` answers 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
import time
from dataclasses import dataclass, field

from bench.dispatch import department_secret
from bench.webhook_receiver import PATH_PREFIX, WebhookReceiver

CASE_NUMBER = re.compile(r"第 (\d+) 次")
_CONTROL = "/_"


def _reply(status: int, body: bytes = b"") -> bytes:
    head = f"HTTP/1.1 {status} OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
    return f"{head}content-length: {len(body)}\r\n\r\n".encode() + body


@dataclass
class TimedReceiver(WebhookReceiver):
    """Counts each case once: its first webhook; the same webhook-id again is a retry, another
    webhook-id for a (case, department) already seen a repeat (a second delivery of the same
    transition), the first webhook of a case at a further department one more transition."""

    first: dict[int, float] = field(default_factory=dict)  # case number -> first received
    pairs: set[tuple[int, str]] = field(default_factory=set)  # (case number, department) seen
    transitions: int = 0  # first webhooks of (case, department) pairs, the case's first included
    fresh: list[tuple[int, float]] = field(default_factory=list)  # not yet polled
    retries: int = 0
    repeats: int = 0
    unnumbered: int = 0  # valid webhooks without a case number (the raw HTTP ceiling's)
    down: bool = False  # answering 503 to every webhook
    unavailable: int = 0  # webhooks answered 503 while down

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> int:
        received = time.perf_counter()
        if self.down:
            self.unavailable += 1
            return 503
        again = headers.get("webhook-id") in self.webhook_ids
        status = super()._answer(path, headers, body)
        if status != 200:
            return status
        if again:
            self.retries += 1
            return status
        description = json.loads(body).get("case", {}).get("description", "")
        found = CASE_NUMBER.search(description)
        if found is None:
            self.unnumbered += 1
            return status
        number, department = int(found.group(1)), path.removeprefix(PATH_PREFIX)
        if (number, department) in self.pairs:
            self.repeats += 1
            return status
        self.pairs.add((number, department))
        self.transitions += 1
        if number not in self.first:
            self.first[number] = received
            self.fresh.append((number, received))
        return status

    def poll(self) -> bytes:
        fresh, self.fresh = self.fresh, []
        return json.dumps(
            {
                "accepted": self.accepted,
                "refused": self.refused,
                "cases": len(self.first),
                "retries": self.retries,
                "repeats": self.repeats,
                "transitions": self.transitions,
                "unnumbered": self.unnumbered,
                "unavailable": self.unavailable,
                "fresh": fresh,
            }
        ).encode()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The bench's own requests (`/_…`, `/healthz`) on a connection of their own; anything
        else is a webhook, for the parent class."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        method, path = request_line.split(" ", 2)[:2]
        if path == "/healthz" or path.startswith(_CONTROL):
            writer.write(self._control(method, path))
            await writer.drain()
            writer.close()
            return
        await super()._connection(_Rejoined(head, reader), writer)  # type: ignore[arg-type]

    def _control(self, method: str, path: str) -> bytes:
        if path == "/_poll":
            return _reply(200, self.poll())
        if method == "POST" and path == "/_hold":
            self.released.clear()
        elif method == "POST" and path == "/_release":
            self.released.set()
        elif method == "POST" and path in ("/_down", "/_up"):
            self.down = path == "/_down"
        elif path != "/healthz":
            return _reply(404)
        return _reply(200, b"{}")


class _Rejoined:
    """A stream reader that first gives back the head already read, then the connection."""

    def __init__(self, head: bytes, rest: asyncio.StreamReader) -> None:
        self._head: bytes | None = head
        self._rest = rest

    async def readuntil(self, separator: bytes) -> bytes:
        if self._head is not None:
            head, self._head = self._head, None
            return head
        return await self._rest.readuntil(separator)

    async def readexactly(self, count: int) -> bytes:
        return await self._rest.readexactly(count)


async def serve(port: int, departments: list[str]) -> None:
    receiver = TimedReceiver(secrets={code: department_secret(code) for code in departments})
    receiver.released.set()
    server = await receiver.start(port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    # the bench stops it with SIGINT, which a shell leaves ignored in a background job
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(int(sys.argv[1]), sys.argv[2].split(",")))
