"""The 数字城管 platform's interface as the bridge sees it (docs/citycare-openapi.yaml writes it down).

Two kinds of cases meet here. A **filed case** (立案) is the platform's own: an inspector (监督员) or
a camera found it, the platform filed it and hands it to gridflow, whose departments handle it;
the platform verifies the handling on site (核查) and gridflow reports back what it did. A **task**
is gridflow's: a grid worker's case routed to the platform as its department; the platform runs
its own seven steps on it and reports them (派遣, 处置, 反馈, 核查).

Every code travels with the name of the standard it belongs to (GB/T 30428.2-2013: 2-digit major +
2-digit minor, 16-digit component ids; GB/T 47678.5-2026: 2 + 3 digits, 17-digit component ids,
15-character unit-grid ids), and with its kind (部件 component / 事件 event): in the 2013 tables
the same four digits name a component and an event. Unknown extra fields are ignored; a missing or
ill-typed field, or a code that does not fit its standard's layout, is refused with its path.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, RootModel, model_validator

CaseNumber = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{4,64}$", examples=["SZCG202611270001"])]
EventId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{4,128}$")]
GridflowCaseId = Annotated[str, Field(pattern=r"^C[0-9A-HJKMNP-TV-Z]{26}$")]
Text200 = Annotated[str, Field(min_length=1, max_length=200)]
Opinion = Annotated[str, Field(min_length=1, max_length=1000)]
Kind = Literal["部件", "事件"]

# The layouts the national standards fix: digits of a code, digits of a component id.
LAYOUTS: dict[str, tuple[int, int]] = {
    "GB/T 30428.2-2013": (4, 16),
    "GB/T 47678.5-2026": (5, 17),
}


class PartnerModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)


class Classification(PartnerModel):
    """案件类别: the standard, the kind, the full code (major + minor) and its name."""

    standard: Annotated[str, Field(min_length=1, max_length=64)]
    kind: Kind
    code: Annotated[str, Field(pattern=r"^[0-9]{4,6}$")]
    name: Text200 | None = None
    major_name: Text200 | None = None  # 大类名称


class Position(PartnerModel):
    """WGS-84, longitude first as the platform's map sends it."""

    lng: Annotated[float, Field(ge=-180, le=180)]
    lat: Annotated[float, Field(ge=-90, le=90)]


class Inspector(PartnerModel):
    """上报人: an inspector (监督员) by id; a public reporter's identity never leaves the platform."""

    role: Annotated[str, Field(min_length=1, max_length=16, examples=["监督员", "视频监控"])]
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] | None = None


class FiledCase(PartnerModel):
    """A case the platform filed (立案) and hands to gridflow."""

    case_id: CaseNumber
    classification: Classification
    component_id: Annotated[str, Field(pattern=r"^[0-9]{16,17}$")] | None = None
    title: Text200 | None = None
    description: Annotated[str, Field(min_length=1, max_length=4000)]
    level: Annotated[str, Field(min_length=1, max_length=16, examples=["一般", "紧急"])]
    filed_at: AwareDatetime
    deadline: AwareDatetime | None = None  # 处置时限
    address: Text200 | None = None
    grid_id: Annotated[str, Field(pattern=r"^[0-9A-Za-z_-]{4,32}$")] | None = None  # 单元网格
    position: Position | None = None
    reporter: Inspector | None = None

    @model_validator(mode="after")
    def _fits_its_standard(self) -> FiledCase:
        layout = LAYOUTS.get(self.classification.standard)
        if layout is None:
            return self  # a standard the bridge does not know: triage shows it
        digits, component_digits = layout
        standard = self.classification.standard
        if len(self.classification.code) != digits:
            raise ValueError(f"a {standard} code has {digits} digits")
        if self.component_id is not None and len(self.component_id) != component_digits:
            raise ValueError(f"a {standard} component id has {component_digits} digits")
        if self.component_id is not None and self.classification.kind != "部件":
            raise ValueError("only a component (部件) case carries a component id")
        return self


class CaseFiled(PartnerModel):
    event_id: EventId
    type: Literal["case.filed"]
    occurred_at: AwareDatetime
    case: FiledCase


class CaseVerified(PartnerModel):
    """核查: the platform's inspector checked on site what gridflow's department reported."""

    event_id: EventId
    type: Literal["case.verified"]
    occurred_at: AwareDatetime
    case_id: CaseNumber
    passed: bool
    opinion: Opinion | None = None

    @model_validator(mode="after")
    def _failure_says_why(self) -> CaseVerified:
        if not self.passed and self.opinion is None:
            raise ValueError("a failed verification needs an opinion saying what to rework")
        return self


class _TaskStep(PartnerModel):
    """A step of the platform on a task: its case id and gridflow's (`external_id`)."""

    event_id: EventId
    occurred_at: AwareDatetime
    case_id: CaseNumber
    external_id: GridflowCaseId


class TaskProgressed(_TaskStep):
    """A step of the platform's own loop on a task gridflow gave it: 派遣 (to one of its units),
    处置 (handled), 反馈 (the unit reported back)."""

    type: Literal["task.progressed"]
    stage: Literal["派遣", "处置", "反馈"]
    unit: Text200 | None = None  # 处置单位
    opinion: Opinion | None = None


class TaskVerified(_TaskStep):
    """核查 of a task: passed (结案: the result goes back to gridflow) or failed (the platform
    sends it back to its unit; gridflow only hears of it)."""

    type: Literal["task.verified"]
    passed: bool
    result: Opinion | None = None  # 处置结果 as the unit reported it
    opinion: Opinion | None = None

    @model_validator(mode="after")
    def _pass_says_what_was_done(self) -> TaskVerified:
        if self.passed and self.result is None:
            raise ValueError("a passed verification carries the handling result")
        return self


CitycareEvent = Annotated[
    CaseFiled | CaseVerified | TaskProgressed | TaskVerified, Field(discriminator="type")
]
TaskEvent = TaskProgressed | TaskVerified


class PushedEvent(RootModel[CitycareEvent]):
    """The body of one push."""


class FeedPage(PartnerModel):
    """One page of the platform's event feed (pull mode)."""

    events: list[CitycareEvent]
    next_cursor: Annotated[str, Field(min_length=1, max_length=200)]


class _Outgoing(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StatusUpdate(_Outgoing):
    """What the bridge reports on a filed case (派遣, 处置, 反馈 …); never personal information."""

    case_id: CaseNumber
    status: Annotated[str, Field(pattern=r"^[a-z][a-z_]{1,39}$")]
    at: AwareDatetime
    gridflow_case_id: str
    version: int
    department: str | None = None
    department_name: str | None = None
    reason: str | None = None
    note: str | None = None
    result: str | None = None


class NewTask(_Outgoing):
    """A gridflow case given to the platform to handle (POST /api/v1/tasks). `external_id` is
    gridflow's case id: the platform files one case per external id, however often it is sent."""

    external_id: str
    classification: Classification
    title: str
    description: str
    level: str
    address: str | None = None
    grid_id: str | None = None
    position: Position | None = None
    deadline: AwareDatetime | None = None


class TaskReturn(_Outgoing):
    """A task gridflow takes back to the platform (POST /api/v1/tasks/{external_id}/return):
    the grid centre's verification failed (rework) or it reopened the case; the platform handles
    it again and reports its steps as before."""

    external_id: str
    action: Literal["rework", "reopened"]
    at: AwareDatetime
    version: int
    reason: str | None = None
    note: str | None = None

    @property
    def status(self) -> str:
        """The queued message's kind (never one of the filed cases' statuses)."""
        return f"task.{self.action}"
