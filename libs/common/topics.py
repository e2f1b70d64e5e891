"""The topic catalogue: the one place that names topics, their keys and the events they carry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError

from libs.common.contract import Contract
from libs.common.envelope import Envelope, EnvelopeError, RawJson
from libs.common.events import (
    AssessmentPublished,
    CaseLifecycleEvent,
    CaseSubmitted,
    DeadLetter,
    SlaSignal,
    VisitOverdue,
    VisitRecorded,
)
from libs.common.ids import new_event_id


@dataclass(frozen=True)
class Topic:
    name: str
    key: str
    description: str
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    events: Mapping[str, type[Contract]]

    def event_type(self, payload: Contract) -> str:
        for ce_type, model in self.events.items():
            if type(payload) is model:
                return ce_type
        raise TypeError(f"{type(payload).__name__} is not carried by topic {self.name}")


CASES_SUBMITTED = Topic(
    name="cases.submitted",
    key="case_id",
    description="New cases from every source, accepted durably by their producer.",
    producers=("intake", "hotline_bridge", "citycare_bridge"),
    consumers=("dispatch",),
    events={"gridflow.case.submitted": CaseSubmitted},
)
CASES_LIFECYCLE = Topic(
    name="cases.lifecycle",
    key="case_id",
    description="Every transition of every case, in order per case, with the case's new version.",
    producers=("dispatch",),
    consumers=("sla", "hotline_bridge", "citycare_bridge", "intake", "operators"),
    events={"gridflow.case.lifecycle": CaseLifecycleEvent},
)
VISITS_RECORDED = Topic(
    name="visits.recorded",
    key="resident_id",
    description="Grid workers' visits to key residents; the sla service tracks visit obligations.",
    producers=("intake",),
    consumers=("sla",),
    events={"gridflow.visit.recorded": VisitRecorded},
)
SLA_SIGNALS = Topic(
    name="sla.signals",
    key="case_id",
    description="Deadline warnings, breaches and escalation instructions for cases.",
    producers=("sla",),
    consumers=("dispatch",),
    events={"gridflow.sla.signal": SlaSignal},
)
VISITS_OVERDUE = Topic(
    name="visits.overdue",
    key="resident_id",
    description="Key residents not visited in a visit period (四必访), for the worker's town centre.",
    producers=("sla",),
    consumers=("operators",),
    events={"gridflow.visit.overdue": VisitOverdue},
)
ASSESSMENTS = Topic(
    name="assessments.published",
    key="<level>:<node>",
    description="The KPIs of every department, grid node and worker, per month and quarter.",
    producers=("sla",),
    consumers=("operators",),
    events={"gridflow.assessment.published": AssessmentPublished},
)
DEADLETTER = Topic(
    name="deadletter",
    key="original record key, else <topic>/<partition>",
    description="Records a consumer could not decode or handle after bounded retries.",
    producers=("every consumer",),
    consumers=("operators",),
    events={"gridflow.deadletter": DeadLetter},
)

CATALOGUE: tuple[Topic, ...] = (
    CASES_SUBMITTED,
    CASES_LIFECYCLE,
    VISITS_RECORDED,
    SLA_SIGNALS,
    VISITS_OVERDUE,
    ASSESSMENTS,
    DEADLETTER,
)


class PayloadError(ValueError):
    """An envelope whose type or data does not fit the topic's contract."""


def build_envelope(
    topic: Topic,
    payload: Contract,
    *,
    source: str,
    key: str,
    now: datetime,
    as_text: bool = False,
) -> Envelope:
    """`payload` as a new event of `topic` keyed by `key`; with `as_text`, its data is the JSON
    text already (`RawJson`, as an outbox row stores it) instead of a dict."""
    return Envelope(
        id=new_event_id(now),
        source=source,
        type=topic.event_type(payload),
        time=now,
        subject=key,
        key=key,
        data=RawJson(payload.model_dump_json()) if as_text else payload.model_dump(mode="json"),
    )


def parse_payload(topic: Topic, envelope: Envelope) -> Contract:
    model = topic.events.get(envelope.type)
    if model is None:
        raise PayloadError(f"event type {envelope.type!r} is not carried by topic {topic.name}")
    try:
        return model.model_validate(envelope.data)
    except ValidationError as exc:
        raise PayloadError(f"{envelope.type}: {exc}") from exc


__all__ = ["EnvelopeError"]
