"""dispatch's answer to `sla.signals`: a warning or a breach marks the case for supervision (督办),
an escalation instruction hands it up the grid — each as a lifecycle move by the system, so it is
validated, versioned, audited and published like any other."""

from __future__ import annotations

import logging
from collections.abc import Callable

from libs.common.events import Actor, SlaSignal, SlaSignalKind
from libs.common.kafka import Delivery
from libs.common.runtime import Runtime
from services.dispatch.commands import CaseNotFoundError, execute
from services.dispatch.departments import summary
from services.dispatch.lifecycle import (
    Command,
    Escalate,
    NotAllowedError,
    Supervise,
    TransitionRefusedError,
)

log = logging.getLogger(__name__)
SLA = Actor(kind="system", id="sla")
_STAGE = {"sign": "签收", "handle": "办理", "verify": "核查"}
_KIND = {SlaSignalKind.WARNING: "即将超时", SlaSignalKind.BREACH: "已超时"}


def command_for(signal: SlaSignal) -> Command:
    """The lifecycle move a deadline signal asks for (pure)."""
    stage = _STAGE[signal.stage.value]
    due = signal.due_at.isoformat(timespec="minutes")
    if signal.kind is SlaSignalKind.ESCALATION:
        return Escalate(actor=SLA, reason=f"{stage}超时升级（时限 {due}）")
    return Supervise(actor=SLA, note=f"{stage}{_KIND[signal.kind]}（时限 {due}，{signal.policy}）")


class SlaSignals:
    """Handler of `sla.signals`; idempotent on the event id (claimed with the move)."""

    def __init__(self, *, runtime: Runtime, consumer: str, on_commit: Callable[[], None]) -> None:
        self._runtime = runtime
        self._consumer = consumer
        self._on_commit = on_commit

    async def __call__(self, delivery: Delivery) -> None:
        signal = delivery.payload
        assert isinstance(signal, SlaSignal)  # noqa: S101  # the topic carries only this type
        try:
            await execute(
                runtime=self._runtime,
                case_id=signal.case_id,
                command=command_for(signal),
                key=None,
                visible=lambda _: True,
                answer=summary,
                cause=(self._consumer, delivery.envelope.id),
            )
        except (CaseNotFoundError, TransitionRefusedError, NotAllowedError) as exc:
            # the case moved on (closed, cancelled, already at the city): nothing to do, and
            # retrying would not change that — so the record is done, not dead-lettered
            log.info("deadline signal %s not applied: %s", signal.kind.value, exc)
            return
        self._on_commit()
