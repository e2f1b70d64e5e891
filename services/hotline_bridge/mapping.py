"""The 12345 mapping, as configuration (config/hotline12345.yaml), and the pure decisions on it:
an order → a `CaseSubmitted`, a lifecycle event → the platform's status update, a platform
decision → the dispatch partner-API calls that carry it out.

`python -m services.hotline_bridge.mapping --config config` validates the file against the
reference data (categories, unit grids, transitions) and exits 1 with "file:line: reason" lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from libs.common.bridge.dispatch import Call, Plan
from libs.common.bridge.mapping import (
    TimeLimit,
    check_command,
    grid_findings,
    load_checked,
    unit_grid_of,
)
from libs.common.events import (
    CaseLifecycleEvent,
    CaseState,
    CaseSubmitted,
    Category,
    Coordinates,
    ExternalRef,
    Location,
    OriginCategory,
    Reporter,
    Source,
    Transition,
    Urgency,
)
from libs.common.refdata import ReferenceData
from libs.common.refdata.loader import Finding
from libs.common.worktime import ChinaCalendar
from services.hotline_bridge.partner import (
    Cancelled,
    Decision,
    ExtensionDecided,
    HotlineOrder,
    ReturnVisit,
    Reviewed,
    StatusUpdate,
    Supervised,
)

MAPPING_FILE = "hotline12345.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CategoryEntry(_Strict):
    code: Annotated[str, Field(min_length=1, max_length=32)]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    category: str


class HotlineMapping(_Strict):
    system: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{1,63}$")]
    classification_standard: Annotated[str, Field(min_length=1, max_length=64)]
    unknown_category: str
    categories: list[CategoryEntry]
    urgency: dict[str, Urgency]
    default_urgency: Urgency = Urgency.ROUTINE
    time_limits: dict[str, TimeLimit] = {}
    urgent_time_limits: dict[str, TimeLimit] = {}
    grids: dict[str, str] = {}
    status_updates: dict[Transition, Annotated[str, Field(pattern=r"^[a-z][a-z_]{1,39}$")]]

    def category_of(self, code: str) -> CategoryEntry | None:
        return next((entry for entry in self.categories if entry.code == code), None)


def _findings(mapping: HotlineMapping, refdata: ReferenceData | None) -> list[Finding]:
    findings: list[Finding] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(mapping.categories):
        if entry.code in seen:
            findings.append(
                Finding(("categories", index, "code"), f"code {entry.code} mapped twice")
            )
        seen.setdefault(entry.code, index)
    if refdata is None:
        return findings
    known = refdata.categories
    for index, entry in enumerate(mapping.categories):
        if entry.category not in known:
            findings.append(
                Finding(("categories", index, "category"), f"unknown category {entry.category}")
            )
    if mapping.unknown_category not in known:
        findings.append(
            Finding(("unknown_category",), f"unknown category {mapping.unknown_category}")
        )
    findings += grid_findings(mapping.grids, refdata)
    return findings


def load_mapping(config_dir: Path, *, refdata: ReferenceData | None) -> HotlineMapping:
    """Read and validate the mapping; ConfigError lists every issue (file:line: reason)."""
    return load_checked(
        config_dir / MAPPING_FILE, HotlineMapping, lambda mapping: _findings(mapping, refdata)
    )


# --- an order → a case --------------------------------------------------------------------------


@dataclass(frozen=True)
class MappedOrder:
    case: CaseSubmitted
    failures: tuple[str, ...]  # the fields the mapping did not know: category, urgency, grid …


def map_order(
    order: HotlineOrder,
    *,
    mapping: HotlineMapping,
    refdata: ReferenceData,
    calendar: ChinaCalendar,
    case_id: str,
    now: datetime,
) -> MappedOrder:
    """The case an order becomes. Nothing the platform said is dropped: an unknown classification
    goes to the configured triage category with its own code and name as the origin."""
    failures: list[str] = []
    entry = mapping.category_of(order.classification.code)
    if entry is None:
        failures.append("category")
    origin = OriginCategory(
        code=order.classification.code,
        standard=mapping.classification_standard,
        name=order.classification.name or (entry.name if entry else None),
    )
    category = Category(code=entry.category if entry else mapping.unknown_category, origin=origin)
    urgency = mapping.urgency.get(order.urgency)
    if urgency is None:
        failures.append("urgency")
        urgency = mapping.default_urgency
    position = order.position
    unit_grid = unit_grid_of(
        grid_id=order.grid_id,
        grids=mapping.grids,
        lat=position.lat if position else None,
        lng=position.lng if position else None,
        refdata=refdata,
    )
    if unit_grid is None:
        failures.append("grid")
    coordinates = (
        Coordinates(lat=order.position.lat, lon=order.position.lng) if order.position else None
    )
    address = order.address
    if unit_grid is None and coordinates is None and address is None:
        address = "（工单未提供地址）"
    caller = order.caller
    reporter = (
        Reporter(kind="resident", anonymous=True)
        if caller.confidential
        else Reporter(kind="resident", name=caller.name, phone=caller.phone)
    )
    case = CaseSubmitted(
        case_id=case_id,
        source=Source.HOTLINE,
        external_ref=ExternalRef(
            system=mapping.system,
            id=order.order_id,
            due_at=order.deadline or due_at(order, mapping=mapping, calendar=calendar),
        ),
        category=category,
        urgency=urgency,
        title=order.title,
        description=order.content,
        location=Location(unit_grid=unit_grid, address=address, coordinates=coordinates),
        reporter=reporter,
        occurred_at=min(order.accepted_at, now),
        reported_at=now,
    )
    return MappedOrder(case, tuple(failures))


def due_at(
    order: HotlineOrder, *, mapping: HotlineMapping, calendar: ChinaCalendar
) -> datetime | None:
    """The platform's time limit for an order that carries no deadline: by urgency first (紧急:
    hours on the wall clock), else by order type (投诉 15 working days …), else none."""
    limit = mapping.urgent_time_limits.get(order.urgency) or mapping.time_limits.get(
        order.order_type
    )
    return None if limit is None else limit.after(order.accepted_at, calendar=calendar)


# --- a lifecycle event → the platform's status update --------------------------------------------


def status_update(
    event: CaseLifecycleEvent,
    *,
    mapping: HotlineMapping,
    order_id: str,
    department_names: Mapping[str, str],
) -> StatusUpdate | None:
    """What the platform is told about this move, or None (a move its workflow has no step for)."""
    status = mapping.status_updates.get(event.transition)
    if status is None:
        return None
    department = event.department
    return StatusUpdate(
        order_id=order_id,
        status=status,
        at=event.at,
        case_id=event.case_id,
        version=event.version,
        department=department,
        department_name=department_names.get(department) if department else None,
        reason_code=event.reason_code,
        reason=event.reason,
        note=event.note,
        result=event.result,
        until=event.extension_until,
    )


# --- a platform decision → dispatch partner-API calls ---------------------------------------------

_OPEN = {CaseState.REPORTED, CaseState.TRIAGE, CaseState.ASSIGNED, CaseState.ACCEPTED}


def _close(verified: bool) -> Plan:
    verify: tuple[Call, ...] = () if verified else (("verify", {"passed": True}),)
    return Plan((*verify, ("close", {})))


def plan(  # noqa: PLR0911, PLR0912  # one branch per decision and state reads best as one table
    decision: Decision, *, state: CaseState, verified: bool, pending: bool
) -> Plan:
    """The dispatch moves that carry out `decision` on a case in `state` (`verified`: its result
    passed review; `pending`: an extension request awaits a decision). Pure."""
    resolved = state is CaseState.RESOLVED
    match decision:
        case Reviewed(passed=True):
            if resolved:
                return _close(verified)
        case Reviewed(passed=False):
            if resolved and not verified:
                note = decision.opinion or "热线审核不通过"
                return Plan((("verify", {"passed": False, "note": note}),))
        case ReturnVisit():
            redo = decision.satisfaction == "不满意" and decision.department_responsible
            reason = f"回访{decision.satisfaction}" + (
                f"：{decision.opinion}" if decision.opinion else ""
            )
            if not redo and state is CaseState.CLOSED:
                return Plan()  # closed already: the satisfied visit changes nothing
            if not redo and resolved:
                return _close(verified)
            if redo and state is CaseState.CLOSED:
                return Plan((("reopen", {"reason": reason[:200]}),))
            if redo and resolved and not verified:
                return Plan((("verify", {"passed": False, "note": reason}),))
        case Supervised():
            if state in _OPEN or resolved:
                return Plan((("supervise", {"note": f"{decision.level}：{decision.opinion}"}),))
        case ExtensionDecided():
            if state is CaseState.ACCEPTED and pending:
                body: dict[str, Any] = {"approve": decision.approved}
                if decision.approved and decision.until is not None:
                    body["until"] = decision.until.isoformat()
                if decision.opinion:
                    body["note"] = decision.opinion
                return Plan((("extension-decision", body),))
        case Cancelled():
            if state is CaseState.CANCELLED:
                return Plan()
            if state in _OPEN or resolved:
                return Plan((("cancel", {"reason": decision.reason}),))
    return Plan(refusal=f"{decision.type} does not apply to a case in state {state.value}")


# --- the check command --------------------------------------------------------------------------


def _summary(mapping: HotlineMapping) -> str:
    return (
        f"{MAPPING_FILE}: {len(mapping.categories)} classifications of {mapping.system}, "
        f"{len(mapping.grids)} grids, {len(mapping.status_updates)} status updates"
    )


def main(argv: list[str] | None = None) -> int:
    return check_command(
        "python -m services.hotline_bridge.mapping",
        argv,
        load=lambda config, refdata: load_mapping(config, refdata=refdata),
        summary=_summary,
    )


if __name__ == "__main__":
    raise SystemExit(main())
