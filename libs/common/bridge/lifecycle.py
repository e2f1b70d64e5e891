"""`cases.lifecycle` → a partner's status updates, queued per case in event order.

Only linked cases concern a bridge (a link row: the partner sent the case, or the bridge handed
it to the partner); each kind of link has its own update function. The update is queued under
the event's id in the bridge's database, so a redelivered record queues nothing twice; the queue
sends it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from libs.common.bridge.inbound import links_of
from libs.common.bridge.queue import enqueue
from libs.common.events import CaseLifecycleEvent
from libs.common.kafka import Delivery, deliveries_of
from libs.common.runtime import Runtime


class StatusUpdate(Protocol):
    """A partner's status update model: its `status` is the queued message's kind."""

    @property
    def status(self) -> str: ...

    def model_dump(self, *, mode: str, exclude_none: bool) -> dict[str, Any]: ...


# (the event, the partner's id of its case, department names by code) → the update, or None
UpdateOf = Callable[[CaseLifecycleEvent, str, Mapping[str, str]], StatusUpdate | None]


class LifecycleUpdates:
    def __init__(
        self,
        *,
        runtime: Runtime,
        channel: str,
        updates: Mapping[str, UpdateOf],  # link partner → its update function
        on_commit: Callable[[], None],
    ) -> None:
        self._runtime = runtime
        self._channel = channel
        self._updates = dict(updates)
        self._on_commit = on_commit
        self._names = {
            code: department.short_name for code, department in runtime.refdata.departments.items()
        }

    async def __call__(self, delivery: Delivery) -> None:
        await self.handle_batch([delivery])

    async def handle_batch(self, deliveries: Sequence[Delivery]) -> None:
        """A fetched batch in one transaction — the links of its cases in one query, then each
        linked case's update queued in fetch order — with the effects of handling the records
        one by one (an update is queued under its event id once). One transaction per record
        left a bridge minutes behind dispatch under load (docs/reliability.md)."""
        events = deliveries_of(deliveries, CaseLifecycleEvent)
        if not events:
            return
        runtime = self._runtime
        queued = False
        async with runtime.sessions() as session, session.begin():
            linked = await links_of(
                session, partners=list(self._updates), case_ids=[e.case_id for _, e in events]
            )
            for delivery, event in events:
                link = linked.get(event.case_id)
                if link is None:
                    continue  # not a case of this partner's
                partner, external_id = link
                update = self._updates[partner](event, external_id, self._names)
                if update is None:
                    continue
                queued |= await enqueue(
                    session,
                    channel=self._channel,
                    case_id=event.case_id,
                    message_id=delivery.envelope.id,
                    kind=update.status,
                    body=update.model_dump(mode="json", exclude_none=True),
                    now=runtime.clock.now(),
                )
        if queued:
            self._on_commit()
