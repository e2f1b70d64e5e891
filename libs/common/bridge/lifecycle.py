"""`cases.lifecycle` → a partner's status updates, queued per case in event order.

Only cases the partner sent (a link row) concern it. The update is queued under the event's id in
the bridge's database, so a redelivered record queues nothing twice; the queue sends it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from libs.common.bridge.inbound import external_id_of
from libs.common.bridge.queue import enqueue
from libs.common.events import CaseLifecycleEvent
from libs.common.kafka import Delivery
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
        partner: str,
        channel: str,
        update_of: UpdateOf,
        on_commit: Callable[[], None],
    ) -> None:
        self._runtime = runtime
        self._partner = partner
        self._channel = channel
        self._update_of = update_of
        self._on_commit = on_commit
        self._names = {
            code: department.short_name for code, department in runtime.refdata.departments.items()
        }

    async def __call__(self, delivery: Delivery) -> None:
        event = delivery.payload
        if not isinstance(event, CaseLifecycleEvent):
            return
        runtime = self._runtime
        async with runtime.sessions() as session, session.begin():
            external_id = await external_id_of(
                session, partner=self._partner, case_id=event.case_id
            )
            if external_id is None:
                return  # not a case from this partner
            update = self._update_of(event, external_id, self._names)
            if update is None:
                return
            queued = await enqueue(
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
