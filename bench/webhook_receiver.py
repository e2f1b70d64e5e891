"""Department receivers for the dispatch benchmark: one raw asyncio HTTP/1.1 server (keep-alive)
that checks every Standard Webhooks signature, counts what arrives, and answers 200.

While `released` is not set it holds every request unanswered, so dispatch's deliveries can be
held back while cases pile up and then let go all at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from libs.common.signing import SignatureError, verify

PATH_PREFIX = "/departments/"
_ANSWERS = {
    200: b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
    401: b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n",
    404: b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
    503: b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
}


@dataclass
class WebhookReceiver:
    secrets: Mapping[str, str]  # department short code -> its whsec_ secret
    released: asyncio.Event = field(default_factory=asyncio.Event)
    accepted: int = 0  # answered 200 (signature valid)
    refused: int = 0  # bad signature or unknown department
    by_department: Counter[str] = field(default_factory=Counter)
    webhook_ids: set[str] = field(default_factory=set)
    last_at: float | None = None  # time.time() of the last 200

    @property
    def duplicates(self) -> int:
        return self.accepted - len(self.webhook_ids)

    async def start(self, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._connection, "127.0.0.1", port, backlog=1024)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ", 2)[1]
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name:
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                await self.released.wait()
                writer.write(_ANSWERS[self._answer(path, headers, body)])
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> int:
        department = path.removeprefix(PATH_PREFIX)
        secret = self.secrets.get(department)
        if secret is None:
            self.refused += 1
            return 404
        try:
            verify(secrets=[secret], headers=headers, body=body, now=datetime.now(UTC))
        except SignatureError:
            self.refused += 1
            return 401
        self.accepted += 1
        self.by_department[department] += 1
        self.webhook_ids.add(headers["webhook-id"])
        self.last_at = time.time()
        return 200
