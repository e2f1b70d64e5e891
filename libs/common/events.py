"""Payload models of every topic: the contract between services.

docs/events.md, docs/schemas/*.json and docs/asyncapi.yaml are generated from these models
(`python -m libs.common.catalogue --write`); CI fails when they are stale.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, model_validator

from libs.common.contract import (
    CaseId,
    CategoryCode,
    Contract,
    DepartmentCode,
    GridNodeCode,
    LongText,
    ShortText,
    Timestamp,
    UnitGridCode,
)


class Source(StrEnum):
    GRID_WORKER = "grid_worker"
    HOTLINE = "hotline"
    CITYCARE = "citycare"
    OPEN311 = "open311"
    VIDEO = "video"
    OPERATOR = "operator"


class Urgency(StrEnum):
    ROUTINE = "routine"
    URGENT = "urgent"
    EMERGENCY = "emergency"


class ExternalRef(Contract):
    """The case's identity in the system it came from (the dedup key of a bridge)."""

    system: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{1,63}$", examples=["hotline12345"])]
    id: Annotated[str, Field(min_length=1, max_length=128)]
    due_at: Timestamp | None = Field(
        default=None,
        description="the deadline the origin system imposes on its order (e.g. a 12345 order's "
        "办结时限), carried for reference; gridflow's own SLA policies still set the clocks",
    )


class OriginCategory(Contract):
    """The origin system's own classification; a code never travels without its standard."""

    code: Annotated[str, Field(min_length=1, max_length=32)]
    standard: Annotated[
        str, Field(min_length=1, max_length=64, examples=["GB/T 30428.2-2013", "GB/T 47678.5-2026"])
    ]
    name: ShortText | None = None


class Category(Contract):
    code: CategoryCode
    origin: OriginCategory | None = None


class Coordinates(Contract):
    """WGS-84 position."""

    lat: Annotated[float, Field(ge=-90, le=90)]
    lon: Annotated[float, Field(ge=-180, le=180)]


class Location(Contract):
    unit_grid: UnitGridCode | None = None
    address: ShortText | None = None
    coordinates: Coordinates | None = None

    @model_validator(mode="after")
    def _somewhere(self) -> Location:
        if self.unit_grid is None and self.coordinates is None and self.address is None:
            raise ValueError("a location needs a unit_grid, coordinates or an address")
        return self


class Reporter(Contract):
    """Who reported: personal information lives only here, so it can be masked or withheld centrally."""

    kind: Literal["grid_worker", "resident", "inspector", "system"]
    worker_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] | None = None
    name: Annotated[str, Field(min_length=1, max_length=40)] | None = None
    phone: Annotated[str, Field(pattern=r"^\+?[0-9-]{5,20}$")] | None = None
    id_number: Annotated[str, Field(pattern=r"^[0-9]{17}[0-9Xx]$")] | None = None
    anonymous: bool = False

    def masked(self) -> Reporter:
        """The same reporter with name, phone and ID number masked (DOMAIN.md §6)."""
        return self.model_copy(update=self.masked_values())

    def masked_values(self) -> dict[str, str | None]:
        """What `masked` replaces: name, phone and ID number, masked."""
        return {
            "name": mask_name(self.name),
            "phone": mask_phone(self.phone),
            "id_number": mask_id_number(self.id_number),
        }

    def withheld(self) -> Reporter:
        return Reporter(kind=self.kind, anonymous=True)


def mask_name(name: str | None) -> str | None:
    if not name:
        return name
    return name[0] + "*" * max(1, len(name) - 1)


def mask_phone(phone: str | None) -> str | None:
    if not phone or len(phone) < 7:
        return phone and "*" * len(phone)
    return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]


def mask_id_number(id_number: str | None) -> str | None:
    if not id_number:
        return id_number
    return id_number[:6] + "*" * (len(id_number) - 10) + id_number[-4:]


class AttachmentRef(Contract):
    """A file stored content-addressed by the service that accepted it."""

    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    media_type: Annotated[str, Field(pattern=r"^[a-z]+/[a-z0-9.+-]+$", examples=["image/jpeg"])]
    size: Annotated[int, Field(ge=0)]
    name: ShortText | None = None


class HazardDetails(Contract):
    """What a safety-hazard report (安全隐患) must say besides the description."""

    level: Literal["general", "major"] = Field(description="一般隐患 or 重大隐患")
    hazard_type: Annotated[
        str, Field(pattern=r"^[a-z][a-z_]{1,40}$", examples=["building", "gas", "electrical"])
    ]
    people_at_risk: Annotated[int, Field(ge=0, le=100_000)] = 0
    rectified_on_site: bool = Field(
        default=False, description="fixed on the spot by the worker (自行处置), counted apart"
    )


class DisputeDetails(Contract):
    """What a dispute report (矛盾纠纷) must say besides the description."""

    dispute_type: Annotated[
        str, Field(pattern=r"^[a-z][a-z_]{1,40}$", examples=["neighbour", "labour", "land"])
    ]
    parties: Annotated[int, Field(ge=2, le=1000)]
    mediation: Literal["not_started", "in_progress", "settled_on_site", "failed"]
    risk_of_escalation: bool = False


class ServiceRequest(Contract):
    """A proxy-service request (帮代办): the item filed on a resident's behalf."""

    item: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,40}$")]
    item_name: ShortText
    documents: Annotated[tuple[ShortText, ...], Field(max_length=20)] = ()


class CaseSubmitted(Contract):
    """A new case from any source, accepted durably by the service that produced it."""

    case_id: CaseId
    source: Source
    external_ref: ExternalRef | None = None
    category: Category
    urgency: Urgency = Urgency.ROUTINE
    title: ShortText
    description: LongText
    location: Location
    reporter: Reporter
    attachments: Annotated[tuple[AttachmentRef, ...], Field(max_length=20)] = ()
    occurred_at: Timestamp
    reported_at: Timestamp
    hazard: HazardDetails | None = None
    dispute: DisputeDetails | None = None
    service: ServiceRequest | None = None
    beneficiary: Reporter | None = Field(
        default=None, description="the resident a proxy service is for (personal information)"
    )


class VisitOutcome(StrEnum):
    MET = "met"
    NOT_HOME = "not_home"
    REFUSED = "refused"
    HOSPITALISED = "hospitalised"
    MOVED_AWAY = "moved_away"
    DECEASED = "deceased"


class VisitRecorded(Contract):
    """A grid worker's visit (走访) to a key resident (四必访); resets that resident's obligation."""

    visit_id: Annotated[str, Field(pattern=r"^V[0-9A-HJKMNP-TV-Z]{26}$")]
    resident_id: Annotated[
        str,
        Field(
            pattern=r"^[A-Za-z0-9_-]{1,64}$",
            description="the key resident's opaque id in the visit register (never a name or ID number)",
        ),
    ]
    worker_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    unit_grid: UnitGridCode
    visited_at: Timestamp
    recorded_at: Timestamp
    outcome: VisitOutcome
    follow_up_needed: bool = False
    note: Annotated[str, Field(max_length=1000)] | None = None


class CaseState(StrEnum):
    """Where a case stands (DESIGN.md "Case lifecycle"); suspension, a pending extension request,
    a verified result and 督办 are flags of the case, not states."""

    REPORTED = "reported"
    TRIAGE = "triage"
    ASSIGNED = "assigned"
    ACCEPTED = "accepted"
    RESOLVED = "resolved"
    CLOSED = "closed"
    CANCELLED = "cancelled"


class Transition(StrEnum):
    """What happened: one value per move (verify and the extension decision have two outcomes)."""

    RECEIVED = "received"
    TRIAGED = "triaged"
    ASSIGNED = "assigned"
    SIGNED = "signed"
    RETURNED = "returned"
    REASSIGNED = "reassigned"
    ESCALATED = "escalated"
    EXTENSION_REQUESTED = "extension_requested"
    EXTENSION_APPROVED = "extension_approved"
    EXTENSION_DENIED = "extension_denied"
    SUSPENDED = "suspended"
    RESUMED = "resumed"
    PROGRESSED = "progressed"
    RESOLVED = "resolved"
    VERIFIED = "verified"
    REWORK = "rework"
    CLOSED = "closed"
    REOPENED = "reopened"
    SUPERVISED = "supervised"
    CANCELLED = "cancelled"
    MERGED = "merged"
    SPLIT = "split"


class RoutingSnapshot(Contract):
    """Which rule of which rule-set version made a routing decision."""

    rule_id: str | None
    ruleset_version: str


ActorKind = Literal["system", "department", "operator", "partner"]


class Actor(Contract):
    kind: ActorKind
    id: Annotated[
        str,
        Field(
            min_length=1,
            max_length=64,
            description="who in that kind: a department's short code, an operator's account id, "
            "a service or partner system name (never a person's name)",
        ),
    ]


ReasonCode = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z0-9_]{1,40}$",
        description="machine-readable reason, e.g. why a department returned a case",
        examples=["not_our_duty", "wrong_location", "duplicate"],
    ),
]
Note = Annotated[str, Field(min_length=1, max_length=1000)]
"""Free text of the audit timeline; never personal information (names, phones, ID numbers)."""
Count = Annotated[int, Field(ge=0)]


class CaseLifecycleEvent(Contract):
    """One transition of a case; `version` increases by one per transition of the same case.

    Besides what the move itself says (reason, note, result …), every event dispatch produces
    carries the case's standing after the move: department, co-handling departments, owning grid
    node, counters and flags, so a consumer needs no earlier event to read one. No personal
    information travels here."""

    case_id: CaseId
    version: Annotated[int, Field(ge=1)]
    transition: Transition
    from_state: CaseState | None
    to_state: CaseState
    at: Timestamp
    actor: Actor
    category: CategoryCode
    urgency: Urgency = Field(
        default=Urgency.ROUTINE, description="the case's urgency (sla picks its time limits by it)"
    )
    unit_grid: UnitGridCode | None = None
    department: DepartmentCode | None = Field(
        default=None, description="the department holding the case after the move"
    )
    routing: RoutingSnapshot | None = None
    reason: ShortText | None = Field(
        default=None, description="why: triage, reassignment, escalation, suspension, cancel …"
    )
    reason_code: ReasonCode | None = Field(
        default=None, description="a return's reason code (退单原因)"
    )
    note: Note | None = Field(
        default=None,
        description="free text of the move (progress, verification, 督办, a return's "
        "explanation); never personal information",
    )
    previous_department: DepartmentCode | None = Field(
        default=None,
        description="the department that held the case before a return or reassignment",
    )
    co_handling: Annotated[tuple[DepartmentCode, ...], Field(max_length=10)] = Field(
        default=(), description="departments assisting the holding one (协办)"
    )
    owner_node: GridNodeCode | None = Field(
        default=None,
        description="the grid node whose centre owns the case (its level: 6 digits city, 9 town, "
        "12 village, 15 unit grid); changes on escalation and on triage at the city",
    )
    extension_until: Timestamp | None = Field(
        default=None, description="the extension asked (extension_requested) or granted (approved)"
    )
    return_count: Count = Field(default=0, description="returns (退单) so far")
    rework_count: Count = Field(default=0, description="failed verifications (返工) so far")
    suspended: bool = Field(default=False, description="suspended (挂起) after the move")
    extension_pending: bool = Field(
        default=False, description="an extension request awaits a decision after the move"
    )
    supervised: bool = Field(default=False, description="under supervision (督办)")
    result: Note | None = Field(
        default=None, description="the department's result (resolved); never personal information"
    )
    attachments: Annotated[tuple[AttachmentRef, ...], Field(max_length=20)] = Field(
        default=(), description="files of the result (resolved)"
    )
    merged_into: CaseId | None = Field(
        default=None,
        description="the case this one is merged into (并案): set on `merged` and on every move "
        "of that case this one follows; its reporter and origin system get them as this case's",
    )


class VisitFrequency(StrEnum):
    """How often a key resident must be visited (四必访): at least once in each such period."""

    WEEKLY = "weekly"
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"
    HALF_YEARLY = "half_yearly"


ResidentId = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="the key resident's opaque id in the visit register (never a name or ID number)",
    ),
]


class VisitOverdue(Contract):
    """A key resident was not visited in a visit period: the worker's town centre is told."""

    resident_id: ResidentId
    category: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
    frequency: VisitFrequency
    worker_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    unit_grid: UnitGridCode
    town: GridNodeCode = Field(description="the town whose centre follows the missed visit up")
    period_start: Timestamp
    period_end: Timestamp
    last_visit_at: Timestamp | None = None
    at: Timestamp


AssessmentLevel = Literal["city", "town", "village", "unit_grid", "department", "worker"]
Rate = Annotated[float, Field(ge=0, le=100)] | None


class AssessmentPublished(Contract):
    """The KPIs of one department, grid node or worker for one month or quarter (定时考核);
    each formula is written down in docs/sla.md. A rate is a percentage rounded to two places,
    or null when its denominator is 0 (or, for satisfaction, when nothing is known)."""

    period: Annotated[str, Field(pattern=r"^[0-9]{4}-(?:[0-9]{2}|Q[1-4])$")]
    period_start: Timestamp
    period_end: Timestamp
    level: AssessmentLevel
    node: Annotated[str, Field(min_length=1, max_length=64)]
    due: Count = Field(description="应结案数: handling deadlines in the period, or resolved in it")
    closed: Count = Field(description="结案数: of those, resolved (办结)")
    closed_on_time: Count = Field(description="按期结案数: resolved within the handling limit")
    closure_rate: Rate = None
    on_time_closure_rate: Rate = None
    sign_due: Count = 0
    signed_on_time: Count = 0
    on_time_sign_rate: Rate = None
    resolved: Count = 0
    reworked: Count = 0
    rework_rate: Rate = None
    handled: Count = 0
    extended: Count = 0
    extension_rate: Rate = None
    assigned: Count = 0
    returned: Count = 0
    return_rate: Rate = None
    average_handling_hours: Annotated[float, Field(ge=0)] | None = None
    satisfaction_rate: Rate = None
    visits_due: Count = 0
    visits_done: Count = 0
    visit_rate: Rate = None


class DeadLetter(Contract):
    """A record a consumer could not decode or handle after its bounded retries."""

    service: ShortText
    consumer_group: ShortText
    topic: ShortText
    partition: Annotated[int, Field(ge=0)]
    offset: Annotated[int, Field(ge=0)]
    error: LongText
    attempts: Annotated[int, Field(ge=1)]
    failed_at: Timestamp
    original_key: str | None
    original_headers: dict[str, str]
    original_value: str = Field(description="the original value, base64-encoded")
    original_event_id: str | None = None


class SlaStage(StrEnum):
    SIGN = "sign"  # 签收
    HANDLE = "handle"  # 办理/处置
    VERIFY = "verify"  # 核查


class SlaSignalKind(StrEnum):
    WARNING = "warning"  # a warning point before the deadline (e.g. 50 %, 80 %)
    BREACH = "breach"  # the deadline passed
    ESCALATION = "escalation"  # a rung of the escalation ladder after the breach


class SlaSignal(Contract):
    """What the sla service says about a case's deadline; dispatch marks (督办) or escalates."""

    case_id: CaseId
    kind: SlaSignalKind
    stage: SlaStage
    due_at: Timestamp
    at: Timestamp
    case_version: Annotated[int, Field(ge=1, description="the case version the clock ran on")]
    department: DepartmentCode | None = None
    escalate_to: GridNodeCode | None = Field(
        default=None, description="for an escalation: the grid node that takes the case"
    )
    policy: Annotated[str, Field(min_length=1, max_length=100, description="policy id@version")]
    provisional: bool = Field(
        default=False, description="counted on a working calendar not yet officially published"
    )
