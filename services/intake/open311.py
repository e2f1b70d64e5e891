"""Open311 GeoReport v2 for residents' and third-party apps, mounted at /open311/v2 (JSON only).

Endpoints: GET services.json, GET services/{service_code}.json, POST requests.json,
GET requests.json, GET requests/{service_request_id}.json. Errors use the spec's shape, a list
`[{"code": <HTTP status>, "description": "<field>: <reason>"}]`, on every /open311 path (the
rest of intake keeps its own error shape); invalid input is 400, as the spec has it.

Clients and keys. Each client of `open311.yaml` has its key in the environment variable its
`key_env` names; intake refuses to start when one is missing. Every endpoint needs a key (a
client sees only the requests it submitted): the spec's `api_key` parameter (query string, or
the POST body), or the password of HTTP Basic authentication, which is how clients that send no
key on GETs (e.g. the `georeport` library) can still authenticate: `https://<any>:<key>@host/…`.
A key in the Basic header also stays out of access logs, a query string does not.

A request becomes a case. `POST requests.json` takes the spec's form-encoded body (or JSON with
the same keys) and builds a `CaseSubmitted`: source `open311`, the service's category, the unit
grid found from lat/long (gridflow needs a grid, so lat and long are required), the reporter as a
resident with the name and phone given (personal information lives only in `Reporter`, and is
never logged), and `external_ref` = (`open311.<client id>`, the case id): the owning client
travels with the case, so intake can tell whose request a case is from the case alone. It is
accepted durably through the acceptor like the grid workers' reports (outbox + idempotency key,
scoped to the client, in one transaction) and answered 201 with the case id as
`service_request_id`. email, device_id and account_id are accepted as the spec allows and kept
nowhere: gridflow keeps no resident accounts (minimum necessary, DOMAIN.md §6).

Status: a read model fed by `cases.lifecycle`. The table `open311_requests` holds one row per
accepted request: its facts (service, text, place, media_url, time) and its latest status
(state, version, department, Chinese status notes), which `consumer.py` updates from each
lifecycle event newer than the row's version. The acceptor's transaction holds only the outbox
and the idempotency key, so the row cannot be written in it; it comes from, in turn:
1. right after the acceptor's commit, the POST inserts it (status "open", version 0); this is
   the only place that knows media_url and address_id, which the case payload has no field for
   (so departments do not see media_url yet: CaseSubmitted would need a field for remote media);
2. if intake stopped between that commit and the insert, the consumer creates the row when the
   case's first lifecycle event arrives, from the case itself as staged in the outbox (indexed
   for Open311 submissions only, see rev_0003);
3. until then, GET by id (and by service_request_id list) answers from the outbox row: the
   request is "open", status notes "已受理".
So an accepted request is never missing from GET by id, and missing from a date-window listing
only in case 2, from the crash until its first lifecycle event (usually seconds).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field, HttpUrl, SecretStr, ValidationError
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException as StarletteHTTPException

from libs.common.contract import Contract, LongText, ShortText
from libs.common.events import (
    CaseLifecycleEvent,
    CaseState,
    CaseSubmitted,
    Category,
    Coordinates,
    DisputeDetails,
    ExternalRef,
    HazardDetails,
    Location,
    Reporter,
    Source,
    Urgency,
)
from libs.common.ids import new_case_id
from libs.common.refdata import CategoryForm, ReferenceData
from libs.common.topics import CASES_SUBMITTED
from libs.common.web import NUL_REASON, UNAVAILABLE_ERRORS, nul_path, unavailable_response
from services.intake.acceptance import Claim, Staged
from services.intake.api import fingerprint
from services.intake.deps import Open311KeysDep, StateDep

log = logging.getLogger(__name__)

PREFIX = "/open311/v2"
SOURCE = "open311"
MAX_RESULTS = 1000
WINDOW = timedelta(days=90)
MAX_BODY_BYTES = 64 * 1024
MIN_KEY_LENGTH = 16
EXCERPT = 30  # characters of the description in a case's title
SERVICE_NOTICE = (
    "已受理。网格化服务管理中心将派发至责任单位办理，可凭 service_request_id 查询进度。"
)
CLOSED_STATES = frozenset({CaseState.CLOSED, CaseState.CANCELLED})
# states in which a department holds the case (it stays named after it closed it)
HELD_STATES = frozenset(
    {CaseState.ASSIGNED, CaseState.ACCEPTED, CaseState.RESOLVED, CaseState.CLOSED}
)

router = APIRouter(prefix=PREFIX, tags=["Open311 GeoReport v2"])


class Open311Error(Exception):
    """A refusal in the GeoReport shape: one HTTP status, one or more descriptions."""

    def __init__(self, status: int, *descriptions: str) -> None:
        super().__init__("; ".join(descriptions))
        self.status = status
        self.descriptions = descriptions


def _invalid(field: str, reason: str) -> Open311Error:
    return Open311Error(400, f"{field}: {reason}")


# --- clients and their keys ---------------------------------------------------------------------


class MissingKeyError(RuntimeError):
    pass


def external_system(client_id: str) -> str:
    return f"open311.{client_id}"


def client_keys(refdata: ReferenceData, environ: Mapping[str, str]) -> dict[str, SecretStr]:
    """Each Open311 client's API key by client id, read from the variable its key_env names."""
    keys: dict[str, SecretStr] = {}
    problems = []
    for client_id, client in refdata.open311.clients.items():
        value = environ.get(client.key_env, "")
        try:
            ExternalRef(system=external_system(client_id), id="-")
        except ValidationError:
            problems.append(f"client id {client_id!r} is too long to name a case's origin")
        if not value:
            problems.append(f"{client.key_env} (client {client_id}) is not set")
        elif len(value) < MIN_KEY_LENGTH:
            problems.append(
                f"{client.key_env} (client {client_id}) is shorter than {MIN_KEY_LENGTH} characters"
            )
        elif any(
            hmac.compare_digest(value.encode(), other.get_secret_value().encode())
            for other in keys.values()
        ):
            problems.append(f"{client.key_env} (client {client_id}) repeats another client's key")
        else:
            keys[client_id] = SecretStr(value)
    if problems:
        raise MissingKeyError("Open311 API keys: " + "; ".join(problems))
    return keys


def identify(offered: str | None, keys: Mapping[str, SecretStr]) -> str:
    """The client whose key was offered; every key is compared, in constant time each."""
    found = None
    if offered:
        for client_id, key in keys.items():
            if hmac.compare_digest(offered.encode(), key.get_secret_value().encode()):
                found = client_id
    if found is None:
        raise Open311Error(401, "api_key missing or unknown")
    return found


def offered_key(request: Request) -> str | None:
    """The `api_key` query parameter, else the password of HTTP Basic authentication."""
    if key := request.query_params.get("api_key"):
        return key
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2] or None


# --- services -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attribute:
    """One attribute of a service definition, mirroring a field of the form's details model."""

    code: str
    datatype: Literal["string", "number", "singlevaluelist"]
    required: bool
    description: str
    datatype_description: str
    values: tuple[tuple[str, str], ...] = ()


ATTRIBUTES: dict[CategoryForm, tuple[Attribute, ...]] = {
    CategoryForm.HAZARD: (  # HazardDetails
        Attribute(
            "level",
            "singlevaluelist",
            True,
            "隐患等级",
            "从列表中选择一项",
            (("general", "一般隐患"), ("major", "重大隐患")),
        ),
        Attribute(
            "hazard_type",
            "string",
            True,
            "隐患类型",
            "小写英文字母和下划线，例如 building、gas、electrical",
        ),
        Attribute("people_at_risk", "number", False, "受威胁人数", "0 至 100000 的整数，默认 0"),
    ),
    CategoryForm.DISPUTE: (  # DisputeDetails
        Attribute(
            "dispute_type",
            "string",
            True,
            "纠纷类型",
            "小写英文字母和下划线，例如 neighbour、labour、land",
        ),
        Attribute("parties", "number", True, "当事方数量", "2 至 1000 的整数"),
        Attribute(
            "mediation",
            "singlevaluelist",
            True,
            "调解情况",
            "从列表中选择一项",
            (
                ("not_started", "尚未调解"),
                ("in_progress", "正在调解"),
                ("settled_on_site", "已当场调解"),
                ("failed", "调解未成"),
            ),
        ),
    ),
}


def _offered(refdata: ReferenceData) -> dict[str, str]:
    """Offered service codes and their Open311 group, in file order."""
    return {service.category: service.group for service in refdata.open311.services}


def service_list(refdata: ReferenceData) -> list[dict[str, Any]]:
    services = []
    for service in refdata.open311.services:
        category = refdata.categories[service.category]
        services.append(
            {
                "service_code": category.code,
                "service_name": category.name,
                "description": category.description or category.name,
                "metadata": category.form in ATTRIBUTES,
                "type": "realtime",
                "keywords": ",".join(service.keywords),
                "group": service.group,
            }
        )
    return services


def service_definition(refdata: ReferenceData, service_code: str) -> dict[str, Any] | None:
    if service_code not in _offered(refdata):
        return None
    form = refdata.categories[service_code].form
    attributes = []
    for order, attribute in enumerate(ATTRIBUTES.get(form, ()), start=1):
        item: dict[str, Any] = {
            "variable": True,
            "code": attribute.code,
            "datatype": attribute.datatype,
            "required": attribute.required,
            "datatype_description": attribute.datatype_description,
            "order": order,
            "description": attribute.description,
        }
        if attribute.values:
            item["values"] = [{"key": key, "name": name} for key, name in attribute.values]
        attributes.append(item)
    return {"service_code": service_code, "attributes": attributes}


# --- POST requests: parsing and deciding --------------------------------------------------------

Phone = Annotated[str, Field(pattern=r"^\+?[0-9-]{5,20}$")]
NamePart = Annotated[str, Field(max_length=20)]
Opaque = Annotated[str, Field(max_length=200)]
Latitude = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
Longitude = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]


class Open311Submission(Contract):
    """The spec's POST fields (api_key and jurisdiction_id are taken out before)."""

    service_code: Annotated[str, Field(min_length=1, max_length=64)]
    lat: Latitude | None = None
    long: Longitude | None = None
    address_string: ShortText | None = None
    address_id: Opaque | None = None
    email: Annotated[str, Field(max_length=254)] | None = None
    device_id: Opaque | None = None
    account_id: Opaque | None = None
    first_name: NamePart | None = None
    last_name: NamePart | None = None
    phone: Phone | None = None
    description: LongText
    media_url: Annotated[HttpUrl, Field(max_length=2000)] | None = None
    attribute: dict[str, Annotated[str, Field(max_length=200)] | int | float] = Field(
        default_factory=dict
    )


_ATTRIBUTE_KEY = re.compile(r"^attribute\[([^\]]*)\]$")


def _field_name(loc: Sequence[int | str]) -> str:
    if len(loc) > 1 and loc[0] == "attribute":
        return f"attribute[{loc[1]}]"
    return ".".join(str(part) for part in loc) or "body"


def _reason(error: Mapping[str, Any]) -> str:
    if error["type"] == "missing":
        return "required"
    if error["type"] == "extra_forbidden":
        return "unknown field"
    return str(error["msg"])


def _descriptions(exc: ValidationError, prefix: Sequence[int | str] = ()) -> list[str]:
    return [f"{_field_name([*prefix, *e['loc']])}: {_reason(e)}" for e in exc.errors()]


def form_fields(body: bytes) -> dict[str, Any]:
    """A form-encoded body as one value per key; `attribute[code]` keys become a mapping."""
    try:
        pairs = parse_qs(
            body.decode(),
            keep_blank_values=True,
            max_num_fields=200,
            encoding="utf-8",
            errors="strict",
        )
    except UnicodeDecodeError as exc:
        raise _invalid("body", "not UTF-8") from exc
    except ValueError as exc:
        raise _invalid("body", "too many fields") from exc
    fields: dict[str, Any] = {}
    for name, values in pairs.items():
        if len(set(values)) > 1:
            raise _invalid(name, "given more than once with different values")
        fields[name] = values[0]
    return fields


def json_fields(body: bytes) -> dict[str, Any]:
    try:
        fields = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _invalid("body", "not valid JSON") from exc
    if not isinstance(fields, dict):
        raise _invalid("body", "must be a JSON object")
    return fields


def submission_values(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Blank values dropped, `attribute[code]` keys gathered into `attribute`."""
    values: dict[str, Any] = {}
    attributes = dict(fields["attribute"]) if isinstance(fields.get("attribute"), dict) else {}
    for name, value in fields.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if match := _ATTRIBUTE_KEY.match(name):
            attributes[match.group(1)] = value
        elif name != "attribute" or not isinstance(value, dict):
            values[name] = value
    if attributes:
        values["attribute"] = attributes
    return values


def validate_submission(values: Mapping[str, Any]) -> Open311Submission:
    try:
        return Open311Submission.model_validate(values)
    except ValidationError as exc:
        raise Open311Error(400, *_descriptions(exc)) from exc


def _details(
    form: CategoryForm, given: Mapping[str, str | int | float]
) -> HazardDetails | DisputeDetails | None:
    """The form's details from the attributes: each known, required ones present, typed."""
    spec = ATTRIBUTES.get(form, ())
    problems = [
        f"attribute[{code}]: not an attribute of this service"
        for code in given
        if code not in {a.code for a in spec}
    ]
    for attribute in spec:
        value = given.get(attribute.code)
        if value is None:
            if attribute.required:
                problems.append(f"attribute[{attribute.code}]: required")
        elif attribute.values and str(value) not in dict(attribute.values):
            keys = ", ".join(key for key, _ in attribute.values)
            problems.append(f"attribute[{attribute.code}]: must be one of {keys}")
    if problems:
        raise Open311Error(400, *problems)
    if form is CategoryForm.HAZARD:
        model: type[HazardDetails | DisputeDetails] = HazardDetails
    elif form is CategoryForm.DISPUTE:
        model = DisputeDetails
    else:
        return None
    try:
        return model.model_validate(dict(given))
    except ValidationError as exc:
        raise Open311Error(400, *_descriptions(exc, ("attribute",))) from exc


def reporter_of(submission: Open311Submission) -> Reporter:
    """The resident as a reporter; a Chinese name is written surname first."""
    first, last = submission.first_name, submission.last_name
    name = first or last
    if first and last:
        name = f"{first} {last}" if (first + last).isascii() else f"{last}{first}"
    phone = submission.phone
    try:
        return Reporter(kind="resident", name=name, phone=phone, anonymous=not (name or phone))
    except ValidationError as exc:
        raise _invalid("first_name, last_name", "together at most 40 characters") from exc


def title_of(service_name: str, description: str) -> str:
    text = " ".join(description.split())
    excerpt = text if len(text) <= EXCERPT else text[:EXCERPT] + "…"
    return f"{service_name}：{excerpt}"


def accept_request(
    submission: Open311Submission,
    *,
    client_id: str,
    refdata: ReferenceData,
    now: datetime,
    case_id: str,
) -> CaseSubmitted:
    """The case an Open311 request becomes, or the refusal naming the field (pure)."""
    if submission.service_code not in _offered(refdata):
        raise _invalid("service_code", "not a service offered here (see services.json)")
    category = refdata.categories[submission.service_code]
    details = _details(category.form, submission.attribute)
    if submission.lat is None or submission.long is None:
        raise Open311Error(400, "lat and long are required")
    unit_grid = refdata.grid_map.locate(submission.lat, submission.long)
    node = refdata.grid.get(unit_grid) if unit_grid is not None else None
    if unit_grid is None or node is None or node.level != "unit":
        raise _invalid("lat/long", "outside the city")
    return CaseSubmitted(
        case_id=case_id,
        source=Source.OPEN311,
        external_ref=ExternalRef(system=external_system(client_id), id=case_id),
        category=Category(code=category.code),
        urgency=Urgency.ROUTINE,
        title=title_of(category.name, submission.description),
        description=submission.description,
        location=Location(
            unit_grid=unit_grid,
            address=submission.address_string,
            coordinates=Coordinates(lat=submission.lat, lon=submission.long),
        ),
        reporter=reporter_of(submission),
        occurred_at=now,
        reported_at=now,
        hazard=details if isinstance(details, HazardDetails) else None,
        dispute=details if isinstance(details, DisputeDetails) else None,
    )


# --- status: what a lifecycle event means to the client -----------------------------------------


@dataclass(frozen=True)
class RequestStatus:
    state: CaseState
    version: int
    department: str | None  # short code
    notes: str
    updated_at: datetime

    @property
    def closed(self) -> bool:
        return self.state in CLOSED_STATES


def received(at: datetime) -> RequestStatus:
    """The status of an accepted request before its first lifecycle event."""
    return RequestStatus(CaseState.REPORTED, 0, None, status_notes(CaseState.REPORTED, None), at)


def status_notes(state: CaseState, department_name: str | None) -> str:
    """The latest step in Chinese, naming the department (never a person) where one holds it."""
    name = department_name or "责任单位"
    return {
        CaseState.REPORTED: "已受理",
        CaseState.TRIAGE: "待人工分派",
        CaseState.ASSIGNED: f"已派发至{name}",
        CaseState.ACCEPTED: f"{name}已签收，正在办理",
        CaseState.RESOLVED: f"{name}已办理完毕，待核查",
        CaseState.CLOSED: "已办结",
        CaseState.CANCELLED: "已撤销",
    }[state]


def status_after(
    event: CaseLifecycleEvent, *, department: str | None, refdata: ReferenceData
) -> RequestStatus:
    """The status after `event`, given the department the request had (pure).

    Keyed on the state reached, not on the transition's name, so moves dispatch adds later
    (return, reassign, resolve, close …) need no change here."""
    held = event.department or (department if event.to_state in HELD_STATES else None)
    known = refdata.departments.get(held) if held else None
    return RequestStatus(
        state=event.to_state,
        version=event.version,
        department=held,
        notes=status_notes(event.to_state, known.short_name if known else None),
        updated_at=event.at,
    )


@dataclass(frozen=True)
class RequestRecord:
    """One request as GET shows it: its facts and its status."""

    case_id: str
    client_id: str
    service_code: str
    description: str
    lat: float
    lon: float
    address: str | None
    address_id: str | None
    media_url: str | None
    requested_at: datetime
    status: RequestStatus

    def with_status(self, status: RequestStatus) -> RequestRecord:
        return replace(self, status=status)


def client_of(case: CaseSubmitted) -> str | None:
    """The Open311 client that submitted a case, if one did."""
    ref = case.external_ref
    prefix = external_system("")
    if case.source is not Source.OPEN311 or ref is None or not ref.system.startswith(prefix):
        return None
    return ref.system.removeprefix(prefix)


def record_from_case(
    case: CaseSubmitted,
    *,
    client_id: str,
    address_id: str | None = None,
    media_url: str | None = None,
) -> RequestRecord:
    point = case.location.coordinates
    if point is None:  # intake never accepts an Open311 request without them
        raise ValueError(f"case {case.case_id} has no coordinates")
    return RequestRecord(
        case_id=case.case_id,
        client_id=client_id,
        service_code=case.category.code,
        description=case.description,
        lat=point.lat,
        lon=point.lon,
        address=case.location.address,
        address_id=address_id,
        media_url=media_url,
        requested_at=case.reported_at,
        status=received(case.reported_at),
    )


def request_view(record: RequestRecord, refdata: ReferenceData) -> dict[str, Any]:
    """A request in the spec's shape (expected_datetime and zipcode are left out)."""
    status = record.status
    category = refdata.categories.get(record.service_code)
    department = refdata.departments.get(status.department) if status.department else None
    return {
        "service_request_id": record.case_id,
        "status": "closed" if status.closed else "open",
        "status_notes": status.notes,
        "service_name": category.name if category else record.service_code,
        "service_code": record.service_code,
        "description": record.description,
        "agency_responsible": department.name if department else None,
        "service_notice": SERVICE_NOTICE,
        "requested_datetime": record.requested_at.isoformat(),
        "updated_datetime": status.updated_at.isoformat(),
        "address": record.address,
        "address_id": record.address_id,
        "lat": record.lat,
        "long": record.lon,
        "media_url": record.media_url,
    }


# --- storage: the read model, and the outbox as the fallback ------------------------------------

metadata = sa.MetaData()
open311_requests = sa.Table(
    "open311_requests",
    metadata,
    sa.Column("case_id", sa.Text, primary_key=True),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("service_code", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("lat", sa.Float, nullable=False),
    sa.Column("lon", sa.Float, nullable=False),
    sa.Column("address", sa.Text),
    sa.Column("address_id", sa.Text),
    sa.Column("media_url", sa.Text),
    sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("department", sa.Text),
    sa.Column("status_notes", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
_T = open311_requests.c

# literal predicates, so the planner uses the partial index outbox_open311_cases (rev_0003)
_SUBMITTED = sa.text(
    """
    SELECT data FROM outbox
    WHERE key = ANY(CAST(:ids AS text[]))
      AND event_type = 'gridflow.case.submitted' AND (data ->> 'source') = 'open311'
    """
)


def _status_values(status: RequestStatus) -> dict[str, Any]:
    return {
        "state": status.state.value,
        "version": status.version,
        "department": status.department,
        "status_notes": status.notes,
        "updated_at": status.updated_at,
    }


def _row_values(record: RequestRecord) -> dict[str, Any]:
    return {
        "case_id": record.case_id,
        "client_id": record.client_id,
        "service_code": record.service_code,
        "description": record.description,
        "lat": record.lat,
        "lon": record.lon,
        "address": record.address,
        "address_id": record.address_id,
        "media_url": record.media_url,
        "requested_at": record.requested_at,
        **_status_values(record.status),
    }


def _record(row: sa.Row[Any]) -> RequestRecord:
    return RequestRecord(
        case_id=row.case_id,
        client_id=row.client_id,
        service_code=row.service_code,
        description=row.description,
        lat=row.lat,
        lon=row.lon,
        address=row.address,
        address_id=row.address_id,
        media_url=row.media_url,
        requested_at=row.requested_at,
        status=RequestStatus(
            CaseState(row.state), row.version, row.department, row.status_notes, row.updated_at
        ),
    )


async def record_request(session: AsyncSession, *, record: RequestRecord) -> None:
    """The POST's row; if the consumer made it first (from the outbox), add what only we know."""
    statement = insert(open311_requests).values(_row_values(record))
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[_T.case_id],
            set_={
                "address_id": statement.excluded.address_id,
                "media_url": statement.excluded.media_url,
            },
        )
    )


async def restore_request(session: AsyncSession, *, record: RequestRecord) -> None:
    """The consumer's row from the outbox; if the POST's row appeared meanwhile, the newer
    status wins."""
    statement = insert(open311_requests).values(_row_values(record))
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[_T.case_id],
            set_={name: statement.excluded[name] for name in _status_values(record.status)},
            where=_T.version < statement.excluded.version,
        )
    )


async def update_status(session: AsyncSession, *, case_id: str, status: RequestStatus) -> None:
    await session.execute(
        sa.update(open311_requests)
        .where(_T.case_id == case_id, _T.version < status.version)
        .values(_status_values(status))
    )


async def current_status(session: AsyncSession, *, case_id: str) -> RequestStatus | None:
    """The stored status, locked until the transaction ends."""
    row = (
        await session.execute(
            sa.select(open311_requests).where(_T.case_id == case_id).with_for_update()
        )
    ).first()
    return None if row is None else _record(row).status


async def shown_cases(session: AsyncSession, *, case_ids: Sequence[str]) -> set[str]:
    """Which of `case_ids` have a row in the read model."""
    rows = await session.execute(sa.select(_T.case_id).where(_T.case_id.in_(case_ids)))
    return set(rows.scalars())


async def submitted_cases(session: AsyncSession, *, case_ids: Sequence[str]) -> list[CaseSubmitted]:
    """Open311 cases as intake staged them in its outbox."""
    rows = await session.execute(_SUBMITTED, {"ids": list(case_ids)})
    return [CaseSubmitted.model_validate(row.data) for row in rows]


async def requests_by_id(
    session: AsyncSession, *, client_id: str, case_ids: Sequence[str]
) -> list[RequestRecord]:
    """The client's requests among `case_ids`, newest first; read-model rows, else the outbox."""
    rows = await session.execute(
        sa.select(open311_requests).where(_T.client_id == client_id, _T.case_id.in_(case_ids))
    )
    found = {record.case_id: record for record in map(_record, rows)}
    missing = [case_id for case_id in case_ids if case_id not in found]
    if missing:
        for case in await submitted_cases(session, case_ids=missing):
            if client_of(case) == client_id:
                found[case.case_id] = record_from_case(case, client_id=client_id)
    return sorted(found.values(), key=lambda r: (r.requested_at, r.case_id), reverse=True)


@dataclass(frozen=True)
class Query:
    """The filters of GET requests.json, already checked."""

    service_codes: tuple[str, ...]
    closed: bool | None  # None: both
    start: datetime
    end: datetime


async def requests_matching(
    session: AsyncSession, *, client_id: str, query: Query
) -> list[RequestRecord]:
    statement = sa.select(open311_requests).where(
        _T.client_id == client_id,
        _T.requested_at >= query.start,
        _T.requested_at <= query.end,
    )
    if query.service_codes:
        statement = statement.where(_T.service_code.in_(query.service_codes))
    closed = [state.value for state in CLOSED_STATES]
    if query.closed is True:
        statement = statement.where(_T.state.in_(closed))
    elif query.closed is False:
        statement = statement.where(_T.state.not_in(closed))
    statement = statement.order_by(_T.requested_at.desc(), _T.case_id.desc()).limit(MAX_RESULTS)
    return [_record(row) for row in await session.execute(statement)]


# --- the HTTP API -------------------------------------------------------------------------------

_CASE_ID = re.compile(r"^C[0-9A-HJKMNP-TV-Z]{26}$")


def _json_only(fmt: str) -> None:
    if fmt != "json":
        raise _invalid("format", "only json is supported (end the path in .json)")


def _list(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _moment(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise _invalid(name, "not a W3C date-time, e.g. 2026-11-28T08:00:00+08:00") from exc
    if moment.tzinfo is None:
        raise _invalid(name, "needs a time zone, e.g. 2026-11-28T08:00:00Z")
    return moment


def parse_query(params: Mapping[str, str], *, now: datetime) -> Query:
    statuses = set(_list(params.get("status")))
    if statuses - {"open", "closed"}:
        raise _invalid("status", "must be open or closed (comma-separated)")
    start = _moment("start_date", params.get("start_date"))
    end = _moment("end_date", params.get("end_date"))
    if start is None and end is None:
        end = now
    if start is None:
        assert end is not None  # noqa: S101  # set just above when both were None
        start = end - WINDOW
    if end is None:
        end = start + WINDOW
    if end < start:
        raise _invalid("end_date", "before start_date")
    if end - start > WINDOW:
        raise _invalid("end_date", "at most 90 days after start_date")
    return Query(
        service_codes=tuple(_list(params.get("service_code"))),
        closed=None if len(statuses) != 1 else statuses == {"closed"},
        start=start,
        end=end,
    )


_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
        raise _invalid("Idempotency-Key", "1 to 200 visible ASCII characters")
    return key


# The OpenAPI of the paths: `.json` is the one format, the key a query parameter (or HTTP Basic's
# password, which OpenAPI cannot say of a parameter), refusals in the spec's list shape.
Format = Annotated[str, Path(json_schema_extra={"enum": ["json"]})]
_KEYED: dict[str, Any] = {
    "parameters": [
        {
            "name": "api_key",
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": "the client's key (or the password of HTTP Basic authentication)",
        }
    ]
}
_ERRORS = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"code": {"type": "integer"}, "description": {"type": "string"}},
        "required": ["code", "description"],
    },
}
_REFUSED = {
    400: "invalid input",
    401: "api_key missing or unknown",
    404: "not found (another client's request is as unknown as a made-up id)",
    409: "the Idempotency-Key was used with a different request",
    413: "body too large",
    415: "neither form-encoded nor JSON",
}


def _refusals(*statuses: int) -> dict[int | str, dict[str, Any]]:
    content = {"application/json": {"schema": _ERRORS}}
    return {status: {"description": _REFUSED[status], "content": content} for status in statuses}


def _post_openapi() -> dict[str, Any]:
    schema = Open311Submission.model_json_schema()
    schema["properties"] = {"api_key": {"type": "string"}, **schema["properties"]}
    schema["description"] = (
        "The spec's fields; attributes as attribute[<code>]=<value> (in JSON also an object"
        " `attribute`). email, device_id and account_id are accepted and kept nowhere."
    )
    content = {"application/x-www-form-urlencoded": {"schema": schema}}
    return {
        "requestBody": {
            "required": True,
            "content": {**content, "application/json": {"schema": schema}},
        },
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                "description": "a retry with the same key (per client) gets the first answer",
            }
        ],
    }


async def _read_body(request: Request) -> bytes:
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY_BYTES:
            raise Open311Error(413, f"body: larger than {MAX_BODY_BYTES} bytes")
    return bytes(data)


async def _fields(request: Request) -> dict[str, Any]:
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    body = await _read_body(request)
    if media_type in ("", "application/x-www-form-urlencoded"):
        fields = form_fields(body)
    elif media_type == "application/json":
        fields = json_fields(body)
    else:
        raise Open311Error(
            415, "Content-Type: use application/x-www-form-urlencoded or application/json"
        )
    found = nul_path(fields)
    if found is not None:  # else it fails the commit of every request batched with it
        raise _invalid(".".join(map(str, found)), NUL_REASON)
    return fields


@router.get(
    "/services.{fmt}",
    summary="the services offered (GeoReport: GET Service List)",
    responses=_refusals(400, 401),
    openapi_extra=_KEYED,
)
async def get_services(
    fmt: Format, request: Request, state: StateDep, keys: Open311KeysDep
) -> JSONResponse:
    _json_only(fmt)
    identify(offered_key(request), keys)
    return JSONResponse(service_list(state.runtime.refdata))


@router.get(
    "/services/{service_code}.{fmt}",
    summary="a service's attributes (GET Service Definition)",
    responses=_refusals(400, 401, 404),
    openapi_extra=_KEYED,
)
async def get_service_definition(
    service_code: str, fmt: Format, request: Request, state: StateDep, keys: Open311KeysDep
) -> JSONResponse:
    _json_only(fmt)
    identify(offered_key(request), keys)
    definition = service_definition(state.runtime.refdata, service_code)
    if definition is None:
        raise Open311Error(404, "service_code: not a service offered here")
    return JSONResponse(definition)


@router.post(
    "/requests.{fmt}",
    status_code=201,
    summary="submit a request (form-encoded as in the spec, or JSON with the same keys)",
    responses=_refusals(400, 401, 409, 413, 415),
    openapi_extra=_post_openapi(),
)
async def post_request(
    fmt: Format, request: Request, state: StateDep, keys: Open311KeysDep
) -> JSONResponse:
    _json_only(fmt)
    fields = await _fields(request)
    api_key = fields.pop("api_key", None)
    client_id = identify(api_key if isinstance(api_key, str) else offered_key(request), keys)
    key = _idempotency_key(request)
    fields.pop("jurisdiction_id", None)  # one jurisdiction here
    runtime = state.runtime
    now = runtime.clock.now()
    try:
        submission = validate_submission(submission_values(fields))
        case = accept_request(
            submission,
            client_id=client_id,
            refdata=runtime.refdata,
            now=now,
            case_id=new_case_id(now),
        )
    except Open311Error:
        state.outcomes.labels(SOURCE, "invalid_request").inc()
        raise
    answer = {
        "service_request_id": case.case_id,
        "service_notice": SERVICE_NOTICE,
        "account_id": None,  # gridflow keeps no resident accounts
    }
    claim = None
    if key is not None:
        claim = Claim(f"open311:{client_id}", key, fingerprint("open311", submission), 201, answer)
    replay = await state.acceptor.submit([Staged(CASES_SUBMITTED, case, key=case.case_id)], claim)
    if replay is not None:
        if not replay.same_request:
            state.outcomes.labels(SOURCE, "idempotency_conflict").inc()
            raise Open311Error(409, "Idempotency-Key: already used for a different request")
        state.outcomes.labels(SOURCE, "replayed").inc()
        return JSONResponse(
            [replay.response], status_code=replay.status, headers={"Idempotent-Replayed": "true"}
        )
    state.outcomes.labels(SOURCE, "accepted").inc()
    media_url = str(submission.media_url) if submission.media_url else None
    record = record_from_case(
        case, client_id=client_id, address_id=submission.address_id, media_url=media_url
    )
    try:
        async with runtime.sessions() as session, session.begin():
            await record_request(session, record=record)
    except Exception as exc:  # accepted all the same: GET answers from the outbox meanwhile
        log.warning("open311 request %s not recorded: %s", case.case_id, type(exc).__name__)
    return JSONResponse([answer], status_code=201)


@router.get(
    "/requests.{fmt}",
    summary="the client's own requests (GET Service Requests)",
    responses=_refusals(400, 401),
    openapi_extra=_KEYED,
)
async def get_requests(
    fmt: Format, request: Request, state: StateDep, keys: Open311KeysDep
) -> JSONResponse:
    _json_only(fmt)
    client_id = identify(offered_key(request), keys)
    runtime = state.runtime
    params = request.query_params
    ids = _list(params.get("service_request_id"))
    if len(ids) > MAX_RESULTS:
        raise _invalid("service_request_id", f"at most {MAX_RESULTS} ids")
    async with runtime.sessions() as session:
        if ids:  # the spec: a list of ids overrides every other filter
            valid = [case_id for case_id in ids if _CASE_ID.match(case_id)]
            found = await requests_by_id(session, client_id=client_id, case_ids=valid)
        else:
            query = parse_query(params, now=runtime.clock.now())
            found = await requests_matching(session, client_id=client_id, query=query)
    return JSONResponse([request_view(record, runtime.refdata) for record in found])


@router.get(
    "/requests/{service_request_id}.{fmt}",
    summary="one of the client's requests (GET Request)",
    responses=_refusals(400, 401, 404),
    openapi_extra=_KEYED,
)
async def get_request(
    service_request_id: str, fmt: Format, request: Request, state: StateDep, keys: Open311KeysDep
) -> JSONResponse:
    _json_only(fmt)
    client_id = identify(offered_key(request), keys)
    found: list[RequestRecord] = []
    if _CASE_ID.match(service_request_id):
        async with state.runtime.sessions() as session:
            found = await requests_by_id(
                session, client_id=client_id, case_ids=[service_request_id]
            )
    if not found:  # another client's request is as unknown as a made-up id
        raise Open311Error(404, "service_request_id: not found")
    return JSONResponse([request_view(found[0], state.runtime.refdata)])


# --- errors in the GeoReport shape --------------------------------------------------------------

ErrorHandler = Callable[[Request, Exception], Response | Awaitable[Response]]


def _errors(status: int, descriptions: Sequence[str], **kwargs: Any) -> JSONResponse:
    body = [{"code": status, "description": d} for d in descriptions]
    return JSONResponse(body, status_code=status, **kwargs)


def _is_open311(request: Request) -> bool:
    path = request.url.path
    return path == PREFIX or path.startswith(PREFIX + "/")


async def _refused(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, Open311Error)  # noqa: S101  # registered for this type only
    headers = {"WWW-Authenticate": 'Basic realm="gridflow-open311"'} if exc.status == 401 else None
    return _errors(exc.status, exc.descriptions, headers=headers)


def _scoped(fallback: ErrorHandler) -> ErrorHandler:
    """Starlette's HTTP errors in the spec's shape under /open311; elsewhere as before."""

    async def handle(request: Request, exc: Exception) -> Response:
        if _is_open311(request) and isinstance(exc, StarletteHTTPException):
            return _errors(exc.status_code, [str(exc.detail).lower()], headers=exc.headers)
        response = fallback(request, exc)
        return await response if isinstance(response, Awaitable) else response

    return handle


def _scoped_unavailable(fallback: ErrorHandler) -> ErrorHandler:
    """A database or broker out of reach answered under /open311 as the spec's 503 list."""

    async def handle(request: Request, exc: Exception) -> Response:
        if _is_open311(request) and (common := unavailable_response(exc)) is not None:
            return _errors(
                503,
                ["service unavailable: retry later"],
                headers={"Retry-After": common.headers["Retry-After"]},
            )
        response = fallback(request, exc)
        return await response if isinstance(response, Awaitable) else response

    return handle


def install_error_format(app: FastAPI) -> None:
    """Open311 refusals, and Starlette's own under /open311 (unknown path, wrong method), in the
    spec's shape; so is a 503 while the database or broker is away. Call after the common
    handlers are installed: they stay for other paths."""
    app.add_exception_handler(Open311Error, _refused)
    fallback = app.exception_handlers[StarletteHTTPException]
    app.add_exception_handler(StarletteHTTPException, _scoped(fallback))
    for error in UNAVAILABLE_ERRORS:
        app.add_exception_handler(error, _scoped_unavailable(app.exception_handlers[error]))
