"""Pull mode: read the partner's feed after a persisted cursor, page after page.

`fetch(cursor)` asks the partner for what came after `cursor` (None: from the start) and answers
the items and the next cursor; `handle(session, items, next_cursor)` writes what they mean and
the new cursor in one transaction (`inbound.write_cursor`), so a crash between the two loses and
repeats nothing (an overlapping page is deduplicated by the external ids anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common.bridge.inbound import read_cursor
from libs.common.bridge.metrics import BridgeMetrics

log = logging.getLogger(__name__)
Item = TypeVar("Item")


class PollLoop(Generic[Item]):
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        partner: str,
        fetch: Callable[[str | None], Awaitable[tuple[Sequence[Item], str]]],
        handle: Callable[[AsyncSession, Sequence[Item], str], Awaitable[None]],
        metrics: BridgeMetrics,
        interval: float,
        after_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self._sessions = sessions
        self._partner = partner
        self._fetch = fetch
        self._handle = handle
        self._metrics = metrics
        self._interval = interval
        self._after_commit = after_commit
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                more = await self.poll_once()
                failures = 0
            except Exception as exc:  # the partner or the database is away: keep the cursor
                failures += 1
                self._metrics.partner_errors.labels(self._partner, "poll").inc()
                log.warning("polling %s failed (%d in a row): %s", self._partner, failures, exc)
                more = False
            if more:
                continue
            pause = self._interval * min(2**failures, 32)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=pause)

    async def poll_once(self) -> bool:
        """Read one page and commit it with its cursor; True when the page was not empty."""
        async with self._sessions() as session:
            cursor = await read_cursor(session, partner=self._partner)
        items, next_cursor = await self._fetch(cursor)
        if not items and next_cursor == cursor:
            return False
        async with self._sessions() as session, session.begin():
            await self._handle(session, items, next_cursor)
        self._after_commit()
        return bool(items)
