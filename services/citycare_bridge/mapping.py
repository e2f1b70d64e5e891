"""The 数字城管 mapping, as configuration (config/citycare.yaml), and the pure decisions on it:
a filed case → a `CaseSubmitted`, a lifecycle event → the platform's status update, the
platform's verification → dispatch partner-API moves, a gridflow case → a task for the platform,
and the platform's steps on a task → department-API moves (and, once its 核查 passed, the
partner-API moves that verify and close the task's case).

`python -m services.citycare_bridge.mapping --config config` validates the file against the
reference data (categories, departments, unit grids) and exits 1 with "file:line: reason" lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from libs.common.bridge.dispatch import Plan
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
from services.citycare_bridge.partner import (
    CaseVerified,
    Classification,
    FiledCase,
    Kind,
    NewTask,
    Position,
    StatusUpdate,
    TaskProgressed,
    TaskReturn,
    TaskVerified,
)

MAPPING_FILE = "citycare.yaml"
MAJOR_DIGITS = 2


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Digits = Annotated[str, Field(pattern=r"^[0-9]{2,6}$")]
Name = Annotated[str, Field(min_length=1, max_length=60)]


class CodeEntry(_Strict):
    kind: Kind
    code: Digits
    name: Name
    category: str


class StandardTable(_Strict):
    """One code standard: its layout, its class names by kind and major code, its codes."""

    standard: Annotated[str, Field(min_length=1, max_length=64)]
    minor_digits: Annotated[int, Field(ge=2, le=4)]
    component_id_digits: Annotated[int, Field(ge=10, le=24)]
    classes: dict[Kind, dict[Annotated[str, Field(pattern=r"^[0-9]{2}$")], Name]] = {}
    codes: list[CodeEntry]

    def entry(self, kind: str, code: str) -> CodeEntry | None:
        return next((e for e in self.codes if e.kind == kind and e.code == code), None)

    def class_name(self, kind: str, code: str) -> str | None:
        names: dict[str, str] = dict(self.classes.get(kind, {}))  # type: ignore[call-overload]
        return names.get(code[:MAJOR_DIGITS])


class TaskCode(_Strict):
    kind: Kind
    code: Digits


class Tasks(_Strict):
    """gridflow's cases routed to the platform's department entry, filed with these codes."""

    department: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    standard: str
    codes: dict[str, TaskCode]
    levels: dict[Urgency, Annotated[str, Field(min_length=1, max_length=16)]]

    @model_validator(mode="after")
    def _every_urgency(self) -> Tasks:
        missing = [u.value for u in Urgency if u not in self.levels]
        if missing:
            raise ValueError(f"levels has no entry for {', '.join(missing)}")
        return self


class CitycareMapping(_Strict):
    system: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{1,63}$")]
    unknown_category: str
    standards: list[StandardTable]
    urgency: dict[str, Urgency]
    default_urgency: Urgency = Urgency.ROUTINE
    time_limits: dict[str, TimeLimit] = {}
    grids: dict[str, str] = {}
    status_updates: dict[Transition, Annotated[str, Field(pattern=r"^[a-z][a-z_]{1,39}$")]]
    tasks: Tasks

    def table(self, standard: str) -> StandardTable | None:
        return next((t for t in self.standards if t.standard == standard), None)


def _table_findings(index: int, table: StandardTable) -> list[Finding]:
    findings: list[Finding] = []
    seen: set[tuple[str, str]] = set()
    digits = MAJOR_DIGITS + table.minor_digits
    for number, entry in enumerate(table.codes):
        where = ("standards", index, "codes", number, "code")
        if (entry.kind, entry.code) in seen:
            findings.append(Finding(where, f"{entry.kind} {entry.code} mapped twice"))
        seen.add((entry.kind, entry.code))
        if len(entry.code) != digits:
            findings.append(Finding(where, f"a {table.standard} code has {digits} digits"))
        elif entry.kind in table.classes and table.class_name(entry.kind, entry.code) is None:
            findings.append(Finding(where, f"no {entry.kind} class {entry.code[:MAJOR_DIGITS]}"))
    return findings


def _findings(mapping: CitycareMapping, refdata: ReferenceData | None) -> list[Finding]:
    findings: list[Finding] = []
    names = [t.standard for t in mapping.standards]
    for index, table in enumerate(mapping.standards):
        if names.index(table.standard) != index:
            findings.append(Finding(("standards", index, "standard"), "standard listed twice"))
        findings += _table_findings(index, table)
    tasks = mapping.tasks
    task_table = mapping.table(tasks.standard)
    if task_table is None:
        findings.append(Finding(("tasks", "standard"), f"no table for {tasks.standard}"))
    for category, code in tasks.codes.items():
        if task_table is not None and task_table.entry(code.kind, code.code) is None:
            findings.append(
                Finding(
                    ("tasks", "codes", category), f"{code.kind} {code.code} is not in the table"
                )
            )
    return findings if refdata is None else findings + _refdata_findings(mapping, refdata)


def _refdata_findings(mapping: CitycareMapping, refdata: ReferenceData) -> list[Finding]:
    findings: list[Finding] = []
    tasks = mapping.tasks
    known = refdata.categories
    for index, table in enumerate(mapping.standards):
        for number, entry in enumerate(table.codes):
            if entry.category not in known:
                findings.append(
                    Finding(
                        ("standards", index, "codes", number, "category"),
                        f"unknown category {entry.category}",
                    )
                )
    if mapping.unknown_category not in known:
        findings.append(
            Finding(("unknown_category",), f"unknown category {mapping.unknown_category}")
        )
    for category in tasks.codes:
        if category not in known:
            findings.append(Finding(("tasks", "codes", category), f"unknown category {category}"))
    if tasks.department not in refdata.departments:
        findings.append(Finding(("tasks", "department"), f"unknown department {tasks.department}"))
    findings += grid_findings(mapping.grids, refdata)
    return findings


def load_mapping(config_dir: Path, *, refdata: ReferenceData | None) -> CitycareMapping:
    """Read and validate the mapping; ConfigError lists every issue (file:line: reason)."""
    return load_checked(
        config_dir / MAPPING_FILE, CitycareMapping, lambda mapping: _findings(mapping, refdata)
    )


# --- a filed case → a gridflow case ------------------------------------------------------------


@dataclass(frozen=True)
class MappedCase:
    case: CaseSubmitted
    failures: tuple[str, ...]  # the fields the mapping did not know: standard, code, urgency, grid


def origin_of(classification: Classification, table: StandardTable | None) -> OriginCategory:
    """The platform's code as gridflow keeps it: with its standard, and a name that says its kind
    and class (部件·公用设施·上水井盖), since in the 2013 tables a code alone is ambiguous."""
    entry = table.entry(classification.kind, classification.code) if table else None
    name = classification.name or (entry.name if entry else None)
    major = classification.major_name or (
        table.class_name(classification.kind, classification.code) if table else None
    )
    parts = [classification.kind, *([major] if major else []), *([name] if name else [])]
    return OriginCategory(
        code=classification.code, standard=classification.standard, name="·".join(parts)
    )


def map_case(
    filed: FiledCase,
    *,
    mapping: CitycareMapping,
    refdata: ReferenceData,
    calendar: ChinaCalendar,
    case_id: str,
    now: datetime,
) -> MappedCase:
    """The gridflow case a filed case becomes. Nothing the platform said is dropped: an unknown
    standard or code goes to the configured triage category with its own code and standard."""
    failures: list[str] = []
    classification = filed.classification
    table = mapping.table(classification.standard)
    entry = table.entry(classification.kind, classification.code) if table else None
    if table is None:
        failures.append("standard")
    elif entry is None:
        failures.append("code")
    category = Category(
        code=entry.category if entry else mapping.unknown_category,
        origin=origin_of(classification, table),
    )
    urgency = mapping.urgency.get(filed.level)
    if urgency is None:
        failures.append("urgency")
        urgency = mapping.default_urgency
    position = filed.position
    unit_grid = unit_grid_of(
        grid_id=filed.grid_id,
        grids=mapping.grids,
        lat=position.lat if position else None,
        lng=position.lng if position else None,
        refdata=refdata,
        same_codes=True,
    )
    if unit_grid is None:
        failures.append("grid")
    coordinates = Coordinates(lat=position.lat, lon=position.lng) if position else None
    address = filed.address
    if unit_grid is None and coordinates is None and address is None:
        address = "（案卷未提供地址）"
    description = filed.description
    if filed.component_id is not None:
        description = f"{description}\n部件编号：{filed.component_id}"
    title = filed.title or (entry.name if entry else classification.name) or "数字城管案件"
    limit = mapping.time_limits.get(filed.level)
    reporter = filed.reporter
    case = CaseSubmitted(
        case_id=case_id,
        source=Source.CITYCARE,
        external_ref=ExternalRef(
            system=mapping.system,
            id=filed.case_id,
            due_at=filed.deadline
            or (limit.after(filed.filed_at, calendar=calendar) if limit else None),
        ),
        category=category,
        urgency=urgency,
        title=title,
        description=description,
        location=Location(unit_grid=unit_grid, address=address, coordinates=coordinates),
        # an inspector (监督员) is a person with an id; a camera or the platform itself is not
        reporter=(
            Reporter(kind="inspector", worker_id=reporter.id)
            if reporter is not None and reporter.id is not None
            else Reporter(kind="system")
        ),
        occurred_at=min(filed.filed_at, now),
        reported_at=now,
    )
    return MappedCase(case, tuple(failures))


# --- a lifecycle event → the platform's status update --------------------------------------------


def status_update(
    event: CaseLifecycleEvent,
    *,
    mapping: CitycareMapping,
    case_number: str,
    department_names: Mapping[str, str],
) -> StatusUpdate | None:
    """What the platform is told about this move, or None (a move its loop has no step for)."""
    status = mapping.status_updates.get(event.transition)
    if status is None:
        return None
    department = event.department
    return StatusUpdate(
        case_id=case_number,
        status=status,
        at=event.at,
        gridflow_case_id=event.case_id,
        version=event.version,
        department=department,
        department_name=department_names.get(department) if department else None,
        reason=event.reason,
        note=event.note,
        result=event.result,
    )


# --- the platform's verification of a filed case → partner-API moves ------------------------------


def plan_verification(verdict: CaseVerified, *, state: CaseState, verified: bool) -> Plan:
    """核查 passed → verify and close; failed → rework (a failed verification). Pure."""
    if state is CaseState.RESOLVED and not verified:
        if verdict.passed:
            note = verdict.opinion or "数字城管核查通过"
            return Plan((("verify", {"passed": True, "note": note}), ("close", {})))
        return Plan((("verify", {"passed": False, "note": verdict.opinion}),))
    if state is CaseState.RESOLVED and verdict.passed:
        return Plan((("close", {}),))
    if state is CaseState.CLOSED and verdict.passed:
        return Plan()  # closed already (a repeated verdict)
    return Plan(refusal=f"{verdict.type} does not apply to a case in state {state.value}")


# --- a gridflow case → a task for the platform -------------------------------------------------------


def new_task(case: Mapping[str, Any], *, mapping: CitycareMapping) -> NewTask | str:
    """The task a gridflow case (as a department's webhook carries it) becomes on the platform,
    or why it cannot be filed there (a category with no code in `tasks.codes`)."""
    tasks = mapping.tasks
    category = case["category"]["code"]
    code = tasks.codes.get(category)
    table = mapping.table(tasks.standard)
    entry = table.entry(code.kind, code.code) if code and table else None
    if code is None or table is None or entry is None:
        return f"no {tasks.standard} code for category {category} (tasks.codes)"
    location = case.get("location") or {}
    coordinates = location.get("coordinates")
    urgency = Urgency(case.get("urgency", Urgency.ROUTINE.value))
    return NewTask(
        external_id=case["case_id"],
        classification=Classification(
            standard=table.standard,
            kind=code.kind,
            code=code.code,
            name=entry.name,
            major_name=table.class_name(code.kind, code.code),
        ),
        title=case["title"],
        description=case["description"],
        level=tasks.levels[urgency],
        address=location.get("address"),
        grid_id=location.get("unit_grid"),
        position=(
            Position(lng=coordinates["lon"], lat=coordinates["lat"]) if coordinates else None
        ),
    )


def task_return(event: CaseLifecycleEvent) -> TaskReturn | None:
    """What the platform is told of a task the grid centre sends back (rework after a failed
    verification, reopen); None for every other move (the platform reports its own)."""
    if event.transition is Transition.REWORK:
        action: Literal["rework", "reopened"] = "rework"
    elif event.transition is Transition.REOPENED:
        action = "reopened"
    else:
        return None
    return TaskReturn(
        external_id=event.case_id,
        action=action,
        at=event.at,
        version=event.version,
        reason=event.reason,
        note=event.note,
    )


# --- the platform's steps on a task → department-API moves ---------------------------------------

TASK_FILED = "task.filed"  # the bridge's own step: the platform accepted the task (立案)
TASK_RETURNS = frozenset({"task.rework", "task.reopened"})  # kinds of a task taken back
_NOTES = {"派遣": "数字城管已派遣", "处置": "数字城管处置", "反馈": "数字城管处置单位反馈"}


def _note(event: TaskProgressed) -> str:
    parts = [_NOTES[event.stage], *([event.unit] if event.unit else [])]
    text = "：".join(["，".join(parts), *([event.opinion] if event.opinion else [])])
    return text[:1000]


def plan_task(  # noqa: PLR0911  # one branch per step and state reads best as one table
    step: TaskProgressed | TaskVerified | None, *, state: CaseState
) -> Plan:
    """The department's moves for a step of the platform on a task (None: the platform filed it,
    which is the department signing for it). Sign first if the case waits for it. Pure."""
    sign: tuple[tuple[str, dict[str, Any]], ...] = (
        (("sign", {}),) if state is CaseState.ASSIGNED else ()
    )
    if state is CaseState.REPORTED:  # delivered, but dispatch records the assignment after
        return Plan(not_yet="the case is not assigned yet")
    working = state in (CaseState.ASSIGNED, CaseState.ACCEPTED)
    match step:
        case None:
            return Plan(sign)
        case TaskProgressed() if working:
            return Plan((*sign, ("progress", {"note": _note(step)})))
        case TaskVerified(passed=True) if working:
            result = (
                f"{step.result}（数字城管核查通过{'：' + step.opinion if step.opinion else ''}）"
            )
            return Plan((*sign, ("resolve", {"result": result[:1000]})))
        case TaskVerified(passed=False) if working:
            note = f"数字城管核查未通过，返工：{step.opinion or '未说明'}"
            return Plan((*sign, ("progress", {"note": note[:1000]})))
        case TaskVerified(passed=True) if state in (CaseState.RESOLVED, CaseState.CLOSED):
            return Plan()  # resolved already (a repeated verdict)
    what = step.type if step is not None else TASK_FILED
    return Plan(refusal=f"{what} does not apply to a case in state {state.value}")


def plan_task_close(step: TaskVerified, *, state: CaseState, verified: bool) -> Plan:
    """After a passed 核查 resolved a task (`plan_task`), the partner-API moves that close it: in
    the 数字城管 loop 核查结案 is the platform's own inspectors' step, so their pass is gridflow's
    verification too. A failed 核查 closes nothing. Pure."""
    if not step.passed:
        return Plan()
    if state is CaseState.RESOLVED and not verified:
        note = step.opinion or "数字城管核查通过"
        return Plan((("verify", {"passed": True, "note": note}), ("close", {})))
    if state is CaseState.RESOLVED:
        return Plan((("close", {}),))
    if state is CaseState.CLOSED:
        return Plan()  # closed already (a repeated verdict)
    return Plan(refusal=f"closing {step.type} does not apply to a case in state {state.value}")


# --- the check command --------------------------------------------------------------------------


def _summary(mapping: CitycareMapping) -> str:
    codes = sum(len(t.codes) for t in mapping.standards)
    return (
        f"{MAPPING_FILE}: {codes} codes of {len(mapping.standards)} standards "
        f"({', '.join(t.standard for t in mapping.standards)}), {len(mapping.grids)} grids, "
        f"{len(mapping.status_updates)} status updates, {len(mapping.tasks.codes)} task codes"
    )


def main(argv: list[str] | None = None) -> int:
    return check_command(
        "python -m services.citycare_bridge.mapping",
        argv,
        load=lambda config, refdata: load_mapping(config, refdata=refdata),
        summary=_summary,
    )


if __name__ == "__main__":
    raise SystemExit(main())
