"""Rounds that start at least a linger apart: a loop woken by each commit or each message does one
round per event when events come slowly and one round for many when they come fast.

A drain of the outbox relay, or a batch of a consumer that handles a fetch in one transaction,
costs a handful of round trips to PostgreSQL whether it carries one event or a hundred. Woken per
event, the relay spent most of its CPU on drains of one event each at 500 reports/s
(docs/configuration.md, GRIDFLOW_OUTBOX_LINGER_MS). With a linger, the first event after a quiet
spell is handled at once; under load, each round waits until `linger` after the start of the one
before and takes everything that came meanwhile: at most `linger` more latency, and at most
1 / `linger` rounds a second.
"""

from __future__ import annotations

import asyncio


class Pacer:
    """Keeps the starts of a loop's rounds at least `linger` seconds apart."""

    def __init__(self, linger: float) -> None:
        if linger < 0:
            raise ValueError("linger must not be negative")
        self.linger = linger
        self._started: float | None = None

    async def wait(self) -> None:
        """Until `linger` after the start of the last round (at once if that is past)."""
        if self._started is None:
            return
        remaining = self._started + self.linger - asyncio.get_running_loop().time()
        if remaining > 0:
            await asyncio.sleep(remaining)

    def mark(self) -> None:
        """A round starts now."""
        self._started = asyncio.get_running_loop().time()

    async def next_round(self) -> None:
        """Wait for the linger, then start a round."""
        await self.wait()
        self.mark()
