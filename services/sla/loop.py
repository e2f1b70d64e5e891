"""A loop that does what came due, sleeping until the next due moment (or the poll interval)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from datetime import datetime

from libs.common.runtime import Runtime

log = logging.getLogger(__name__)


class DueLoop(ABC):
    def __init__(
        self, *, runtime: Runtime, batch: int, poll_seconds: float, workers: int = 1
    ) -> None:
        self._runtime = runtime
        self._batch = batch
        self._poll = poll_seconds
        self._workers = workers
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    @abstractmethod
    async def fire_due(self) -> int:
        """Handle one batch of what is due; how much was handled."""

    @abstractmethod
    async def soonest(self) -> datetime | None:
        """When the next thing comes due, if anything is waiting."""

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """`workers` rounds at once (claims skip each other's locked rows, as two instances'
        do): one round's Python work overlaps the other's database round trips."""
        async with asyncio.TaskGroup() as workers:
            for number in range(self._workers):
                workers.create_task(self._work(), name=f"{type(self).__name__}-{number}")

    async def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                handled = await self.fire_due()
                idle = await self._idle() if handled < self._batch else 0.0
            except Exception as exc:  # database away: what is due is still there
                log.warning("%s round failed: %s", type(self).__name__, type(exc).__name__)
                handled, idle = 0, 1.0
            if handled < self._batch:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=idle)

    async def _idle(self) -> float:
        soonest = await self.soonest()
        if soonest is None:
            return self._poll
        wait = (soonest - self._runtime.clock.now()).total_seconds()
        return min(max(wait, 0.0), self._poll)
