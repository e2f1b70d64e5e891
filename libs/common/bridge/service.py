"""A bridge's background work, started in its app's lifespan: one queue worker per channel and,
in pull mode, the poll loop; each stops with the runtime."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.bridge.inbound import take_page
from libs.common.bridge.lifecycle import LifecycleUpdates, UpdateOf
from libs.common.bridge.metrics import BridgeMetrics
from libs.common.bridge.poll import PollLoop
from libs.common.bridge.queue import QueueWorker, Send
from libs.common.bridge.settings import BridgeSettings
from libs.common.runtime import Runtime
from libs.common.topics import CASES_LIFECYCLE

Item = TypeVar("Item")


def start_queues(
    runtime: Runtime,
    *,
    settings: BridgeSettings,
    metrics: BridgeMetrics,
    partner: str,
    senders: Mapping[str, Send],
) -> dict[str, QueueWorker]:
    """A running queue worker per channel, sending with the channel's sender."""
    workers = {}
    for channel, send in senders.items():
        worker = QueueWorker(
            sessions=runtime.sessions,
            clock=runtime.clock,
            partner=partner,
            channel=channel,
            send=send,
            metrics=metrics,
            base_delay=settings.outbound_base_delay_seconds,
            max_delay=settings.outbound_max_delay_seconds,
            lease_seconds=settings.outbound_lease_seconds,
            poll_interval=settings.outbound_poll_seconds,
        )
        runtime.spawn(worker.run(), stop=worker.stop, name=f"queue-{channel}")
        workers[channel] = worker
    return workers


def start_poller(
    runtime: Runtime,
    *,
    settings: BridgeSettings,
    metrics: BridgeMetrics,
    partner: str,
    fetch: Callable[[str | None], Awaitable[tuple[Sequence[Item], str]]],
    take: Callable[[AsyncSession, Sequence[Item]], Awaitable[object]],
    unknown: type[Exception],
    wake: Sequence[QueueWorker],
) -> PollLoop[Item]:
    """The running poll loop: each page taken event by event (`take`; an event it raises
    `unknown` for is skipped) with its cursor in one transaction; after each page the outbox
    relay and the `wake` queues go on."""

    async def handle(session: AsyncSession, items: Sequence[Item], cursor: str) -> None:
        async def one(inner: AsyncSession, item: Item) -> object:
            return await take(inner, [item])

        now = runtime.clock.now()
        await take_page(session, items, cursor, partner=partner, now=now, take=one, unknown=unknown)

    def after_page() -> None:
        runtime.relay.wake()
        for worker in wake:
            worker.wake()

    poller: PollLoop[Item] = PollLoop(
        sessions=runtime.sessions,
        partner=partner,
        fetch=fetch,
        handle=handle,
        metrics=metrics,
        interval=settings.partner_poll_seconds,
        after_commit=after_page,
    )
    runtime.spawn(poller.run(), stop=poller.stop, name="poll")
    return poller


def follow_lifecycle(
    runtime: Runtime,
    *,
    settings: BridgeSettings,
    channel: str,
    updates: Mapping[str, UpdateOf],
    on_commit: Callable[[], None],
) -> None:
    """Consume `cases.lifecycle` in the bridge's group: the updates of the cases linked under
    each partner name of `updates` (by its function) queued on `channel`."""
    runtime.consume(
        CASES_LIFECYCLE,
        group_id=settings.consumer_group,
        handler=LifecycleUpdates(
            runtime=runtime, channel=channel, updates=updates, on_commit=on_commit
        ),
        check="lifecycle_consumer",
        background=True,  # feedback to the partner platform, whose limits are in hours
    )
