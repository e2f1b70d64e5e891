"""The 12345 platform's interface as the bridge sees it (docs/hotline-openapi.yaml writes it down).

The platform sends events — a new work order (工单) or one of its decisions on an order — pushed
one at a time to the bridge, or read page by page from its feed. The bridge sends status updates
back. Field names are the interface's; values are the platform's own (Chinese classification
names, order types, urgencies). Unknown extra fields are ignored (a newer platform version may add
some); a missing or ill-typed field is refused with its path.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, RootModel

OrderId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{4,64}$", examples=["GD20261127000123"])]
EventId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{4,128}$")]
Text200 = Annotated[str, Field(min_length=1, max_length=200)]
Opinion = Annotated[str, Field(min_length=1, max_length=1000)]


class PartnerModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)


class Classification(PartnerModel):
    code: Annotated[str, Field(min_length=1, max_length=32)]
    name: Text200 | None = None


class Position(PartnerModel):
    """WGS-84 (the platform's map sends longitude first)."""

    lng: Annotated[float, Field(ge=-180, le=180)]
    lat: Annotated[float, Field(ge=-90, le=90)]


class Caller(PartnerModel):
    """来电人: personal information, kept out of logs; `confidential` (保密) withholds it."""

    name: Annotated[str, Field(min_length=1, max_length=40)] | None = None
    phone: Annotated[str, Field(pattern=r"^\+?[0-9-]{5,20}$")] | None = None
    confidential: bool = False


class HotlineOrder(PartnerModel):
    order_id: OrderId
    title: Text200
    content: Annotated[str, Field(min_length=1, max_length=4000)]
    classification: Classification
    order_type: Annotated[str, Field(min_length=1, max_length=16, examples=["投诉", "求助"])]
    urgency: Annotated[str, Field(min_length=1, max_length=16, examples=["一般", "紧急"])]
    accepted_at: AwareDatetime
    deadline: AwareDatetime | None = None
    address: Text200 | None = None
    grid_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    position: Position | None = None
    caller: Caller = Caller()


class OrderCreated(PartnerModel):
    event_id: EventId
    type: Literal["order.created"]
    occurred_at: AwareDatetime
    order: HotlineOrder


class _Decision(PartnerModel):
    event_id: EventId
    occurred_at: AwareDatetime
    order_id: OrderId


class Reviewed(_Decision):
    """审核: the hotline centre reviewed the department's reply."""

    type: Literal["order.reviewed"]
    passed: bool
    opinion: Opinion | None = None


class ReturnVisit(_Decision):
    """回访: the caller was asked whether they are satisfied."""

    type: Literal["order.return_visit"]
    satisfaction: Literal["满意", "基本满意", "不满意"]
    department_responsible: bool = Field(
        default=True, description="unsatisfied for reasons the department controls (可归责)"
    )
    opinion: Opinion | None = None


class Supervised(_Decision):
    type: Literal["order.supervised"]
    level: Literal["催办", "督办"]
    opinion: Opinion


class ExtensionDecided(_Decision):
    type: Literal["order.extension_decided"]
    approved: bool
    until: AwareDatetime | None = None
    opinion: Opinion | None = None


class Cancelled(_Decision):
    type: Literal["order.cancelled"]
    reason: Text200


Decision = Reviewed | ReturnVisit | Supervised | ExtensionDecided | Cancelled
HotlineEvent = Annotated[OrderCreated | Decision, Field(discriminator="type")]


class PushedEvent(RootModel[HotlineEvent]):
    """The body of one push."""


class FeedPage(PartnerModel):
    """One page of the platform's event feed (pull mode)."""

    events: list[HotlineEvent]
    next_cursor: Annotated[str, Field(min_length=1, max_length=200)]


class StatusUpdate(BaseModel):
    """What the bridge reports back on an order (办理情况反馈); never personal information."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    order_id: OrderId
    status: Annotated[str, Field(pattern=r"^[a-z][a-z_]{1,39}$")]
    at: AwareDatetime
    case_id: str
    version: int
    department: str | None = None
    department_name: str | None = None
    reason_code: str | None = None
    reason: str | None = None
    note: str | None = None
    result: str | None = None
    until: AwareDatetime | None = None
