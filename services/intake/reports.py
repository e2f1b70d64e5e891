"""What intake decides about a grid worker's report: accept it as a case, or refuse it and why."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from pydantic import Field

from libs.common.auth import Principal
from libs.common.contract import CategoryCode, Contract, LongText, ShortText, Timestamp
from libs.common.events import (
    AttachmentRef,
    CaseSubmitted,
    Category,
    Location,
    Reporter,
    Source,
    Urgency,
)
from libs.common.refdata import ReferenceData
from libs.common.web import ApiError


class WorkerReport(Contract):
    """An incident a grid worker found on patrol (随时巡查)."""

    category: CategoryCode
    urgency: Urgency = Urgency.ROUTINE
    title: ShortText
    description: LongText
    location: Location
    occurred_at: Timestamp
    attachments: Annotated[tuple[AttachmentRef, ...], Field(max_length=20)] = ()


class Accepted(Contract):
    case_id: str
    status: str = "accepted"


def accept_report(
    report: WorkerReport,
    *,
    principal: Principal,
    refdata: ReferenceData,
    now: datetime,
    case_id: str,
    clock_skew: timedelta,
) -> CaseSubmitted:
    """Turn a valid report into the case it starts; raise ApiError naming the field otherwise."""
    if report.category not in refdata.categories:
        raise ApiError(422, "invalid_request", "unknown category", path="body.category")
    unit_grid = report.location.unit_grid
    if unit_grid is None:
        raise ApiError(
            422, "invalid_request", "a unit grid code is required", path="body.location.unit_grid"
        )
    node = refdata.grid.get(unit_grid)
    if node is None or node.level != "unit":
        raise ApiError(422, "invalid_request", "unknown unit grid", path="body.location.unit_grid")
    if not any(refdata.grid.is_within(unit_grid, served) for served in principal.grids):
        raise ApiError(
            403, "forbidden", "the worker does not serve this grid", path="body.location.unit_grid"
        )
    if report.occurred_at > now + clock_skew:
        raise ApiError(422, "invalid_request", "lies in the future", path="body.occurred_at")
    return CaseSubmitted(
        case_id=case_id,
        source=Source.GRID_WORKER,
        category=Category(code=report.category),
        urgency=report.urgency,
        title=report.title,
        description=report.description,
        location=report.location,
        reporter=Reporter(kind="grid_worker", worker_id=principal.subject),
        attachments=report.attachments,
        occurred_at=report.occurred_at,
        reported_at=now,
    )
