"""What intake decides about what a grid worker sends: accept it (as a case or a visit record),
or refuse it naming the field and the reason. Pure: reference data and `now` come in as values."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import Field

from libs.common.auth import Principal
from libs.common.contract import (
    CategoryCode,
    Contract,
    LongText,
    ShortText,
    Timestamp,
    UnitGridCode,
)
from libs.common.events import (
    AttachmentRef,
    CaseSubmitted,
    Category,
    DisputeDetails,
    HazardDetails,
    Location,
    Reporter,
    ServiceRequest,
    Source,
    Urgency,
    VisitOutcome,
    VisitRecorded,
)
from libs.common.refdata import ReferenceData
from libs.common.web import ApiError

ClientId = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9_.:-]{8,100}$",
        description="the app's own id for this item (e.g. a UUID); a retry with the same id "
        "returns the first answer",
    ),
]
Attachments = Annotated[tuple[AttachmentRef, ...], Field(max_length=20)]
KnownAttachment = Callable[[AttachmentRef], bool]


class WorkerReport(Contract):
    """An incident, a safety hazard (安全隐患) or a dispute (矛盾纠纷) found on patrol (随时巡查).

    Hazard categories need `hazard`, dispute categories need `dispute` (the category's form)."""

    client_id: ClientId | None = None
    category: CategoryCode
    urgency: Urgency = Urgency.ROUTINE
    title: ShortText
    description: LongText
    location: Location
    occurred_at: Timestamp
    attachments: Attachments = ()
    hazard: HazardDetails | None = None
    dispute: DisputeDetails | None = None


class Resident(Contract):
    """The resident a proxy service is for: personal information, masked or withheld downstream."""

    name: Annotated[str, Field(min_length=1, max_length=40)]
    phone: Annotated[str, Field(pattern=r"^\+?[0-9-]{5,20}$")] | None = None
    id_number: Annotated[str, Field(pattern=r"^[0-9]{17}[0-9Xx]$")] | None = None


class ProxyServiceRequest(Contract):
    """A government-service matter filed on a resident's behalf (帮代办)."""

    client_id: ClientId | None = None
    item: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,40}$")]
    resident: Resident
    location: Location
    note: LongText | None = None
    documents: Attachments = ()
    collected_documents: Annotated[tuple[ShortText, ...], Field(max_length=20)] = ()


class VisitReport(Contract):
    """A visit to a key resident (走访, 四必访)."""

    client_id: ClientId | None = None
    resident_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    unit_grid: UnitGridCode
    visited_at: Timestamp
    outcome: VisitOutcome
    follow_up_needed: bool = False
    note: Annotated[str, Field(max_length=1000)] | None = None


class Accepted(Contract):
    status: Literal["accepted"] = "accepted"
    case_id: str | None = None
    visit_id: str | None = None

    def body(self) -> dict[str, str]:
        """The JSON answer: `model_dump(mode="json", exclude_none=True)`, without its cost."""
        body: dict[str, str] = {"status": self.status}
        if self.case_id is not None:
            body["case_id"] = self.case_id
        if self.visit_id is not None:
            body["visit_id"] = self.visit_id
        return body


def _refuse(path: str, reason: str, status: int = 422) -> ApiError:
    code = "forbidden" if status == 403 else "invalid_request"
    return ApiError(status, code, reason, path=f"body.{path}")


def resolve_grid(
    location: Location, *, principal: Principal, refdata: ReferenceData, path: str = "location"
) -> str:
    """The unit grid a location lies in (given, or found from coordinates), served by the worker."""
    unit_grid = location.unit_grid
    if unit_grid is None:
        if location.coordinates is None:
            raise _refuse(f"{path}.unit_grid", "a unit grid code or coordinates are required")
        point = location.coordinates
        unit_grid = refdata.grid_map.locate(point.lat, point.lon)
        if unit_grid is None:
            raise _refuse(f"{path}.coordinates", "the coordinates lie outside the city's grid")
    node = refdata.grid.get(unit_grid)
    if node is None or node.level != "unit":
        raise _refuse(f"{path}.unit_grid", "unknown unit grid")
    check_served(unit_grid, principal=principal, refdata=refdata, path=f"{path}.unit_grid")
    return unit_grid


def _located(location: Location, unit_grid: str) -> Location:
    """The location with its unit grid filled in (the same object when it was given)."""
    if location.unit_grid == unit_grid:
        return location
    return location.model_copy(update={"unit_grid": unit_grid})


def check_served(
    unit_grid: str, *, principal: Principal, refdata: ReferenceData, path: str
) -> None:
    served = (g for g in principal.grids if g in refdata.grid)
    if not any(refdata.grid.is_within(unit_grid, grid) for grid in served):
        raise _refuse(path, "the worker does not serve this grid", status=403)


def _check_time(moment: datetime, *, now: datetime, skew: timedelta, path: str) -> None:
    if moment > now + skew:
        raise _refuse(path, "lies in the future")


def _check_attachments(refs: Attachments, known: KnownAttachment, path: str) -> None:
    for index, ref in enumerate(refs):
        if not known(ref):
            raise _refuse(f"{path}.{index}", "unknown attachment: upload it first")


def accept_report(
    report: WorkerReport,
    *,
    principal: Principal,
    refdata: ReferenceData,
    now: datetime,
    case_id: str,
    clock_skew: timedelta,
    known_attachment: KnownAttachment,
) -> CaseSubmitted:
    category = refdata.categories.get(report.category)
    if category is None:
        raise _refuse("category", "unknown category")
    form = category.form
    if form == "service":
        raise _refuse("category", "proxy services are filed at /v1/proxy-services")
    if form == "hazard" and report.hazard is None:
        raise _refuse("hazard", "required for a safety-hazard category")
    if form == "dispute" and report.dispute is None:
        raise _refuse("dispute", "required for a dispute category")
    if form != "hazard" and report.hazard is not None:
        raise _refuse("hazard", f"only for safety-hazard categories, not {form}")
    if form != "dispute" and report.dispute is not None:
        raise _refuse("dispute", f"only for dispute categories, not {form}")
    unit_grid = resolve_grid(report.location, principal=principal, refdata=refdata)
    _check_time(report.occurred_at, now=now, skew=clock_skew, path="occurred_at")
    _check_attachments(report.attachments, known_attachment, "attachments")
    return CaseSubmitted(
        case_id=case_id,
        source=Source.GRID_WORKER,
        category=Category(code=report.category),
        urgency=report.urgency,
        title=report.title,
        description=report.description,
        location=_located(report.location, unit_grid),
        reporter=Reporter(kind="grid_worker", worker_id=principal.subject),
        attachments=report.attachments,
        occurred_at=report.occurred_at,
        reported_at=now,
        hazard=report.hazard,
        dispute=report.dispute,
    )


def accept_proxy_service(
    request: ProxyServiceRequest,
    *,
    principal: Principal,
    refdata: ReferenceData,
    now: datetime,
    case_id: str,
    known_attachment: KnownAttachment,
) -> CaseSubmitted:
    item = refdata.service_items.get(request.item)
    if item is None:
        raise _refuse("item", "unknown service item")
    unit_grid = resolve_grid(request.location, principal=principal, refdata=refdata)
    _check_attachments(request.documents, known_attachment, "documents")
    missing = [d for d in item.documents if d not in request.collected_documents]
    description = request.note or f"代办事项：{item.name}"
    if missing:
        description += "（待补材料：" + "、".join(missing) + "）"
    return CaseSubmitted(
        case_id=case_id,
        source=Source.GRID_WORKER,
        category=Category(code=item.category),
        urgency=Urgency.ROUTINE,
        title=f"帮代办：{item.name}"[:200],
        description=description[:4000],
        location=_located(request.location, unit_grid),
        reporter=Reporter(kind="grid_worker", worker_id=principal.subject),
        attachments=request.documents,
        occurred_at=now,
        reported_at=now,
        service=ServiceRequest(
            item=item.code, item_name=item.name, documents=request.collected_documents
        ),
        beneficiary=Reporter(
            kind="resident",
            name=request.resident.name,
            phone=request.resident.phone,
            id_number=request.resident.id_number,
        ),
    )


def accept_visit(
    visit: VisitReport,
    *,
    principal: Principal,
    refdata: ReferenceData,
    now: datetime,
    visit_id: str,
    clock_skew: timedelta,
) -> VisitRecorded:
    node = refdata.grid.get(visit.unit_grid)
    if node is None or node.level != "unit":
        raise _refuse("unit_grid", "unknown unit grid")
    check_served(visit.unit_grid, principal=principal, refdata=refdata, path="unit_grid")
    _check_time(visit.visited_at, now=now, skew=clock_skew, path="visited_at")
    return VisitRecorded(
        visit_id=visit_id,
        resident_id=visit.resident_id,
        worker_id=principal.subject,
        unit_grid=visit.unit_grid,
        visited_at=visit.visited_at,
        recorded_at=now,
        outcome=visit.outcome,
        follow_up_needed=visit.follow_up_needed,
        note=visit.note,
    )
