"""Reference-data models: the grid tree and its polygons, departments, categories, routing rules,
proxy-service items and the Open311 configuration.

The `*Spec` and `*File` models are the file schema; `GridTree`, `GridMap`, `RoutingTree`,
`Open311Config` and `ReferenceData` are what the rest of gridflow reads once the loader has
validated every file.
"""

import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    Strict,
    StrictBool,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from libs.common.events import Source, Urgency
from libs.common.refdata.gridmap import GridMap
from libs.common.refdata.timewindows import TimeWindow, minute_ranges, zone


class FrozenModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GridLevel(StrEnum):
    CITY = "city"
    TOWN = "town"
    VILLAGE = "village"
    UNIT = "unit"


class TownKind(StrEnum):
    SUBDISTRICT = "subdistrict"  # 街道
    TOWN = "town"  # 镇
    TOWNSHIP = "township"  # 乡


class VillageKind(StrEnum):
    COMMUNITY = "community"  # 社区/居委会
    VILLAGE = "village"  # 村委会


# The 3-digit part of a division code tells its kind (statistical division code rules).
TOWN_SEQUENCES: Mapping[TownKind, range] = {
    TownKind.SUBDISTRICT: range(1, 100),
    TownKind.TOWN: range(100, 200),
    TownKind.TOWNSHIP: range(200, 400),
}
VILLAGE_SEQUENCES: Mapping[VillageKind, range] = {
    VillageKind.COMMUNITY: range(1, 200),
    VillageKind.VILLAGE: range(200, 400),
}
UNIT_SEQUENCES = range(1, 1000)
CODE_LENGTHS: Mapping[GridLevel, int] = {
    GridLevel.CITY: 6,
    GridLevel.TOWN: 9,
    GridLevel.VILLAGE: 12,
    GridLevel.UNIT: 15,
}


def _digit_code(level: GridLevel) -> AfterValidator:
    length = CODE_LENGTHS[level]
    label = "unit grid" if level is GridLevel.UNIT else str(level)

    def check(value: str) -> str:
        if len(value) != length or not (value.isascii() and value.isdigit()):
            raise ValueError(
                f"{label} code must be {length} digits, got {value!r} ({len(value)} characters)"
            )
        return value

    return AfterValidator(check)


def _non_empty(value: object) -> object:
    # Checked before item validation: a min_length would also fire when only an item is invalid.
    if isinstance(value, list | tuple) and not value:
        raise ValueError("must list at least one entry")
    return value


CityCode = Annotated[str, _digit_code(GridLevel.CITY)]
TownCode = Annotated[str, _digit_code(GridLevel.TOWN)]
VillageCode = Annotated[str, _digit_code(GridLevel.VILLAGE)]
UnitGridCode = Annotated[str, _digit_code(GridLevel.UNIT)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60)]
NonEmpty = BeforeValidator(_non_empty)
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")]


def child_code_problem(code: str, parent_code: str, sequences: range, kind: str) -> str | None:
    """Why `code` cannot be a `kind` child of `parent_code`, or None if it can."""
    if not code.startswith(parent_code):
        return f"code {code!r} does not start with its parent's code {parent_code!r}"
    sequence = int(code[len(parent_code) :])
    if sequence not in sequences:
        first, last = sequences[0], sequences[-1]
        return (
            f"code {code!r}: a {kind} takes a sequence in {first:03d}-{last:03d},"
            f" got {sequence:03d}"
        )
    return None


# --- grid ---------------------------------------------------------------------------------------


class Person(FrozenModel):
    """A grid's first responsible person (第一责任人)."""

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20)]
    title: Name | None = None


class Sector(FrozenModel):
    """A city-level grid (片区) led by a city leader; every town belongs to one."""

    id: Annotated[str, StringConstraints(pattern=r"^S[1-9][0-9]*$")]
    name: Name
    responsible: Person


class GridNode(FrozenModel):
    code: str
    level: GridLevel
    name: str
    parent_code: str | None
    responsible: Person


class UnitGridSpec(FrozenModel):
    code: UnitGridCode
    name: Name
    responsible: Person


class VillageSpec(FrozenModel):
    code: VillageCode
    name: Name
    kind: VillageKind
    responsible: Person
    grids: Annotated[tuple[UnitGridSpec, ...], NonEmpty]


class TownSpec(FrozenModel):
    code: TownCode
    name: Name
    kind: TownKind
    sector: str
    responsible: Person
    villages: Annotated[tuple[VillageSpec, ...], NonEmpty]


class CitySpec(FrozenModel):
    code: CityCode
    name: Name
    responsible: Person


class GridFile(FrozenModel):
    """Schema of grid.yaml: the nested city → town → village → unit grid tree."""

    city: CitySpec
    sectors: Annotated[tuple[Sector, ...], NonEmpty]
    towns: Annotated[tuple[TownSpec, ...], NonEmpty]


class GridTree:
    """The validated four-level grid tree, indexed by code."""

    def __init__(
        self,
        *,
        city: GridNode,
        sectors: Iterable[Sector],
        nodes: Iterable[GridNode],
        town_sectors: Mapping[str, str],
    ) -> None:
        self.city = city
        self.sectors = tuple(sectors)
        self._nodes: dict[str, GridNode] = {city.code: city}
        self._children: dict[str, list[GridNode]] = {city.code: []}
        for node in nodes:
            siblings = self._children.get(node.parent_code or "")
            if node.code in self._nodes or siblings is None:
                raise ValueError(
                    f"grid node {node.code!r} is duplicated or comes before its parent"
                )
            siblings.append(node)
            self._nodes[node.code] = node
            self._children[node.code] = []
        sector_by_id = {sector.id: sector for sector in self.sectors}
        self._town_sectors = {town: sector_by_id[sid] for town, sid in town_sectors.items()}

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, code: object) -> bool:
        return code in self._nodes

    def node(self, code: str) -> GridNode:
        """The node with this code; KeyError if unknown."""
        return self._nodes[code]

    def get(self, code: str) -> GridNode | None:
        return self._nodes.get(code)

    def children(self, code: str) -> tuple[GridNode, ...]:
        return tuple(self._children[code])

    def ancestors(self, code: str) -> list[GridNode]:
        """Parent first, city last; empty for the city."""
        result: list[GridNode] = []
        parent_code = self.node(code).parent_code
        while parent_code is not None:
            parent = self._nodes[parent_code]
            result.append(parent)
            parent_code = parent.parent_code
        return result

    def is_within(self, code: str, ancestor_code: str) -> bool:
        """True if `code` is `ancestor_code` or below it; KeyError if either is unknown."""
        self.node(ancestor_code)
        return code == ancestor_code or any(
            node.code == ancestor_code for node in self.ancestors(code)
        )

    def town_of(self, code: str) -> GridNode:
        """The town containing a village or unit grid, or the town itself."""
        node = self.node(code)
        for candidate in [node, *self.ancestors(code)]:
            if candidate.level is GridLevel.TOWN:
                return candidate
        raise ValueError(f"{code!r} is the city, which is not within a town")

    def sector_of(self, code: str) -> Sector:
        """The sector (片区) of the town containing `code`."""
        return self._town_sectors[self.town_of(code).code]

    def _at_level(self, level: GridLevel) -> tuple[GridNode, ...]:
        return tuple(node for node in self._nodes.values() if node.level is level)

    @property
    def towns(self) -> tuple[GridNode, ...]:
        return self._at_level(GridLevel.TOWN)

    @property
    def villages(self) -> tuple[GridNode, ...]:
        return self._at_level(GridLevel.VILLAGE)

    @property
    def unit_grids(self) -> tuple[GridNode, ...]:
        return self._at_level(GridLevel.UNIT)


# --- departments ------------------------------------------------------------------------------

USCC_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
SECRET_ENV_PATTERN = re.compile(r"^GRIDFLOW_[A-Z0-9_]+$")
# Query keys that suggest a credential was pasted into a receiver URL.
_SECRET_QUERY_KEY = re.compile(r"secret|token|key|pass|sig|auth", re.IGNORECASE)


def uscc_check_char(first17: str) -> str:
    """The 18th character of a unified social credit code (GB 32100-2015)."""
    if len(first17) != 17 or any(char not in USCC_CHARSET for char in first17):
        raise ValueError(f"need 17 characters from {USCC_CHARSET}, got {first17!r}")
    total = sum(
        USCC_CHARSET.index(char) * weight
        for char, weight in zip(first17, USCC_WEIGHTS, strict=True)
    )
    return USCC_CHARSET[(31 - total % 31) % 31]


def _uscc(value: str) -> str:
    if len(value) != 18:
        raise ValueError(f"unified social credit code must be 18 characters, got {len(value)}")
    bad = sorted({char for char in value if char not in USCC_CHARSET})
    if bad:
        raise ValueError(f"unified social credit code contains invalid characters {bad}")
    expected = uscc_check_char(value[:17])
    if value[17] != expected:
        raise ValueError(
            f"unified social credit code {value!r} fails its check digit"
            f" (expected {expected!r}, got {value[17]!r})"
        )
    return value


def _env_name(field_name: str, holds: str) -> AfterValidator:
    def check(value: str) -> str:
        if not SECRET_ENV_PATTERN.fullmatch(value):
            # Never echo the value: it may be the secret itself.
            raise ValueError(
                f"{field_name} must be the NAME of an environment variable matching"
                f" {SECRET_ENV_PATTERN.pattern}, never the {holds} itself"
            )
        return value

    return AfterValidator(check)


Uscc = Annotated[str, AfterValidator(_uscc)]
SecretEnvName = Annotated[str, _env_name("secret_env", "secret")]
ApiKeyEnvName = Annotated[str, _env_name("key_env", "key")]
ShortCode = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=40)]


ReporterSharing = Literal["full", "masked", "none"]
# a partner system's name as its bridge writes it in `external_ref.system` (events.ExternalRef)
PartnerSystem = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.-]{1,63}$")]
# Hosts a receiver may never be: cloud metadata services answer there with credentials.
METADATA_HOSTS = frozenset({"metadata.google.internal", "169.254.169.254", "100.100.100.200"})
_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if host == "localhost" or host.endswith(".localhost"):
        return ipaddress.ip_address("127.0.0.1")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None  # a DNS name
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return mapped or address  # ::ffff:169.254.169.254 is 169.254.169.254


def url_problem(url: AnyHttpUrl, *, allow_private: bool) -> str | None:
    """Why a receiver may not be reached at `url` (SSRF guard), or None if it may.

    Only literal addresses and well-known names are judged: names are not resolved here."""
    host = (url.host or "").strip("[]").rstrip(".").lower()
    address = _address(host)
    problem = None
    if url.scheme not in {"http", "https"}:
        problem = f"scheme must be http or https, got {url.scheme!r}"
    elif host in METADATA_HOSTS:
        problem = f"host {host!r} is a cloud metadata service"
    elif address is None:
        pass
    elif address.is_unspecified:
        problem = f"host {host!r} is the unspecified address"
    elif any(address in network for network in _LINK_LOCAL):
        problem = f"host {host!r} is link-local"
    elif (address.is_private or address.is_loopback) and not allow_private:
        problem = (
            f"host {host!r} is a private or loopback address;"
            " set allow_private: true on the receiver to allow it"
        )
    return problem


class WebhookReceiver(FrozenModel):
    """Where a department receives cases: a Standard Webhooks endpoint.

    `secret_env_next` names the next secret during a rotation: while both are set every delivery
    carries two signatures. `reporter` says how much of the reporter (and of a proxy service's
    beneficiary) the department gets; `allow_private` lets the URL be a private or loopback address.
    `partner` names the partner system (the `sub` of its partner token, e.g. `citycare`) whose
    bridge this receiver is: that platform verifies and closes the cases its department entry
    holds, through the partner API. `concurrency` caps the attempts in flight to this endpoint
    (a small department's system may take 2; a partner bridge more than the deployment's default).
    """

    kind: Literal["webhook"]
    allow_private: StrictBool = False  # before `url`: its validator reads it
    url: AnyHttpUrl
    secret_env: SecretEnvName
    secret_env_next: SecretEnvName | None = None
    reporter: ReporterSharing = "masked"
    partner: PartnerSystem | None = None
    # attempts in flight at once to this endpoint, across dispatch's instances; unset: the
    # deployment's GRIDFLOW_DELIVERY_CONCURRENCY_PER_DEPARTMENT
    concurrency: Annotated[int, Field(ge=1, le=64)] | None = None

    @field_validator("url")
    @classmethod
    def _safe_url(cls, url: AnyHttpUrl, info: ValidationInfo) -> AnyHttpUrl:
        if url.username or url.password:
            raise ValueError("url must not contain credentials; name an env var in secret_env")
        if any(_SECRET_QUERY_KEY.search(key) for key, _ in url.query_params()):
            raise ValueError("url query must not carry secrets; name an env var in secret_env")
        problem = url_problem(url, allow_private=bool(info.data.get("allow_private", False)))
        if problem is not None:
            raise ValueError(f"url refused: {problem}")
        return url

    @model_validator(mode="after")
    def _two_secrets(self) -> "WebhookReceiver":
        if self.secret_env_next == self.secret_env:
            raise ValueError("secret_env_next must name another variable than secret_env")
        return self

    @property
    def secret_envs(self) -> tuple[str, ...]:
        """The variables of the secrets in use: the current one, then the next one if any."""
        return (
            (self.secret_env,)
            if self.secret_env_next is None
            else (
                self.secret_env,
                self.secret_env_next,
            )
        )


class PullReceiver(FrozenModel):
    """A department that fetches its cases from its inbox in the department API (no webhook)."""

    kind: Literal["pull"]
    reporter: ReporterSharing = "masked"


Receiver = Annotated[WebhookReceiver | PullReceiver, Field(discriminator="kind")]


class Department(FrozenModel):
    code: Uscc
    name: Name
    short_name: Name
    short_code: ShortCode
    receiver: Receiver


class DepartmentsFile(FrozenModel):
    departments: Annotated[tuple[Department, ...], NonEmpty]


# --- categories ---------------------------------------------------------------------------------


class CategoryForm(StrEnum):
    """Which form a grid worker fills in for a category, and which intake path takes it."""

    INCIDENT = "incident"  # an event found on patrol (the default)
    HAZARD = "hazard"  # a safety hazard (安全隐患): the report carries hazard details
    DISPUTE = "dispute"  # a dispute (矛盾纠纷): the report carries the parties and mediation
    SERVICE = "service"  # a proxy service (帮代办), filed as a service item, never as a report


CategoryCode = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z_]*\.[a-z][a-z_]*$")]


class Category(FrozenModel):
    code: CategoryCode
    name: Name
    description: str | None = None
    form: CategoryForm = CategoryForm.INCIDENT


class CategoriesFile(FrozenModel):
    categories: Annotated[tuple[Category, ...], NonEmpty]


# --- routing ------------------------------------------------------------------------------------

CITY_TIMEZONE = "Asia/Shanghai"
WindowName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=40)]
CategoryPrefix = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z_.]*$", max_length=60)]
RouteKeyword = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _one_or_many(value: object) -> object:
    # `source: hotline` is read as `source: [hotline]`.
    return [value] if isinstance(value, str) else value


def _hour_span(value: str) -> str:
    minute_ranges(value)
    return value


def _timezone(value: str) -> str:
    zone(value)
    return value


def _grid_node_code(value: str) -> str:
    if len(value) not in CODE_LENGTHS.values() or not (value.isascii() and value.isdigit()):
        raise ValueError(f"grid must be a grid node code of 6, 9, 12 or 15 digits, got {value!r}")
    return value


OneOrMany = BeforeValidator(_one_or_many)
HourSpan = Annotated[str, AfterValidator(_hour_span)]
GridNodeCode = Annotated[str, AfterValidator(_grid_node_code)]


class TimeWindowSpec(FrozenModel):
    """A named window of `time_windows`: every condition given must hold."""

    weekdays: Annotated[tuple[Weekday, ...], NonEmpty] | None = None
    hours: Annotated[tuple[HourSpan, ...], NonEmpty] | None = None  # "08:30-12:00", local time
    holidays: StrictBool | None = None  # true: rest days only; false: working days only
    timezone: Annotated[str, AfterValidator(_timezone)] = CITY_TIMEZONE

    @model_validator(mode="after")
    def _says_something(self) -> "TimeWindowSpec":
        if self.weekdays is None and self.hours is None and self.holidays is None:
            raise ValueError("a time window needs weekdays, hours or holidays")
        return self


class CategoryMatchSpec(FrozenModel):
    """`category: city.garbage` (that category) or `category: {prefix: "city."}`."""

    code: CategoryCode | None = None
    prefix: CategoryPrefix | None = None

    @model_validator(mode="before")
    @classmethod
    def _code_alone(cls, value: object) -> object:
        return {"code": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_of_them(self) -> "CategoryMatchSpec":
        if (self.code is None) == (self.prefix is None):
            raise ValueError("category is a category code or {prefix: ...}, not both")
        return self


class MatchSpec(FrozenModel):
    """What a case must have for a route to match: every field given must hold."""

    category: CategoryMatchSpec | None = None
    grid: GridNodeCode | None = None  # this grid node and everything under it
    source: Annotated[tuple[Source, ...], OneOrMany, NonEmpty] | None = None
    urgency: Annotated[tuple[Urgency, ...], OneOrMany, NonEmpty] | None = None
    keywords: Annotated[tuple[RouteKeyword, ...], OneOrMany, NonEmpty] | None = None  # any
    time: Annotated[tuple[WindowName, ...], OneOrMany, NonEmpty] | None = None  # any window

    @model_validator(mode="after")
    def _not_empty(self) -> "MatchSpec":
        if all(getattr(self, name) is None for name in type(self).model_fields):
            raise ValueError("match is empty; leave it out to match every case")
        return self


class RouteSpec(FrozenModel):
    """A node of the routing tree (the root has neither `match` nor `continue`)."""

    id: Slug
    match: MatchSpec | None = None  # None: every case
    department: ShortCode | None = None  # the primary department (主办)
    co_handling: tuple[ShortCode, ...] = ()  # 协办
    notify: tuple[ShortCode, ...] = ()  # informed only
    continue_: StrictBool = Field(default=False, alias="continue")
    routes: tuple["RouteSpec", ...] = ()


class RoutingFile(FrozenModel):
    """Schema of routing.yaml: named time windows and the routing tree under `route`."""

    version: PositiveInt
    time_windows: dict[WindowName, TimeWindowSpec] = Field(default_factory=dict)
    route: RouteSpec


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """A compiled `match`: plain values and sets, so matching a case is a few comparisons."""

    category: str | None = None
    category_prefix: str | None = None
    grid: str | None = None
    sources: frozenset[str] | None = None
    urgencies: frozenset[str] | None = None
    keywords: tuple[str, ...] = ()  # casefolded
    windows: tuple[TimeWindow, ...] = ()


@dataclass(frozen=True, slots=True)
class Route:
    id: str
    match: RouteMatch | None  # None: every case
    department: str | None
    co_handling: tuple[str, ...]
    notify: tuple[str, ...]
    continues: bool  # `continue: true`: later siblings are evaluated too
    routes: tuple["Route", ...]


@dataclass(frozen=True)
class RoutingTree:
    """The validated routing tree; `version` is "v<declared>-<sha256 of the file, 12 hex>"."""

    root: Route
    version: str
    time_windows: Mapping[str, TimeWindow]

    def walk(self) -> Iterator[tuple[int, Route]]:
        """Every route with its depth (root 0), parents before children, in file order."""
        stack = [(0, self.root)]
        while stack:
            depth, node = stack.pop()
            yield depth, node
            stack.extend((depth + 1, child) for child in reversed(node.routes))

    def __len__(self) -> int:
        return sum(1 for _ in self.walk())

    def get(self, route_id: str) -> Route | None:
        return next((node for _, node in self.walk() if node.id == route_id), None)


# --- unit-grid polygons (GeoJSON, RFC 7946) -----------------------------------------------------


def _position(value: tuple[float, ...]) -> tuple[float, ...]:
    if not 2 <= len(value) <= 3:
        raise ValueError(
            f"a position is [longitude, latitude] (an altitude may follow), got {len(value)} numbers"
        )
    lon, lat = value[0], value[1]
    if not -180 <= lon <= 180:
        raise ValueError(f"longitude {lon} is outside [-180, 180]")
    if not -90 <= lat <= 90:
        raise ValueError(f"latitude {lat} is outside [-90, 90]")
    return value


def _linear_ring(ring: tuple[tuple[float, ...], ...]) -> tuple[tuple[float, ...], ...]:
    if len(ring) < 4:
        raise ValueError(f"a linear ring needs at least 4 positions, got {len(ring)}")
    if ring[0] != ring[-1]:
        raise ValueError("ring is not closed: its last position must repeat its first")
    return ring


Position = Annotated[tuple[Annotated[float, Strict()], ...], AfterValidator(_position)]
LinearRing = Annotated[tuple[Position, ...], AfterValidator(_linear_ring)]
PolygonCoordinates = Annotated[tuple[LinearRing, ...], NonEmpty]  # exterior ring, then holes
BoundingBox = tuple[float, ...]


class PolygonGeometry(FrozenModel):
    type: Literal["Polygon"]
    coordinates: PolygonCoordinates
    bbox: BoundingBox | None = None


class MultiPolygonGeometry(FrozenModel):
    type: Literal["MultiPolygon"]
    coordinates: Annotated[tuple[PolygonCoordinates, ...], NonEmpty]
    bbox: BoundingBox | None = None


class GridFeatureProperties(FrozenModel):
    code: UnitGridCode


class GridFeature(FrozenModel):
    type: Literal["Feature"]
    id: str | int | None = None
    bbox: BoundingBox | None = None
    properties: GridFeatureProperties
    geometry: Annotated[PolygonGeometry | MultiPolygonGeometry, Field(discriminator="type")]

    @property
    def polygons(self) -> tuple[tuple[tuple[tuple[float, ...], ...], ...], ...]:
        """Polygon or MultiPolygon, as a tuple of polygons (each its rings of positions)."""
        geometry = self.geometry
        if isinstance(geometry, PolygonGeometry):
            return (geometry.coordinates,)
        return geometry.coordinates


class GridPolygonsFile(FrozenModel):
    """Schema of grid_polygons.geojson: one Feature per unit grid, `properties.code` its code."""

    type: Literal["FeatureCollection"]
    name: str | None = None  # a foreign member GIS tools write; here it says the file is generated
    bbox: BoundingBox | None = None
    features: Annotated[tuple[GridFeature, ...], NonEmpty]


# --- proxy-service items (帮代办) -----------------------------------------------------------------

DocumentName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60)]


class ServiceItem(FrozenModel):
    """A government-service matter a grid worker may file on a resident's behalf."""

    code: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{1,40}$")]
    name: Name
    category: CategoryCode  # a category of form `service`
    documents: Annotated[tuple[DocumentName, ...], NonEmpty]  # what to collect from the resident
    time_limit_days: NonNegativeInt | None  # committed limit, working days; 0 = on the spot (即办)


class ServiceItemsFile(FrozenModel):
    items: tuple[ServiceItem, ...]


# --- Open311 (GeoReport v2) ---------------------------------------------------------------------


class Open311Client(FrozenModel):
    """An app allowed to call the Open311 API; its key is read from the environment."""

    id: Slug
    name: Name
    key_env: ApiKeyEnvName


Keyword = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20)]


class Open311Service(FrozenModel):
    """A gridflow category offered as an Open311 service (service_code = the category code)."""

    category: CategoryCode
    group: Name
    keywords: tuple[Keyword, ...] = ()


class Open311File(FrozenModel):
    clients: tuple[Open311Client, ...]
    services: tuple[Open311Service, ...]


@dataclass(frozen=True)
class Open311Config:
    clients: Mapping[str, Open311Client]  # by id
    services: tuple[Open311Service, ...]  # in file order, as GET /services lists them


# --- the whole set ------------------------------------------------------------------------------


def _no_service_items() -> Mapping[str, ServiceItem]:
    return MappingProxyType({})


def _no_open311() -> Open311Config:
    return Open311Config(clients=MappingProxyType({}), services=())


@dataclass(frozen=True)
class ReferenceData:
    grid: GridTree
    departments: Mapping[str, Department]  # by short_code
    categories: Mapping[str, Category]  # by code
    routing: RoutingTree
    grid_map: GridMap = field(default_factory=GridMap)  # unit-grid polygons; locate(lat, lon)
    service_items: Mapping[str, ServiceItem] = field(default_factory=_no_service_items)  # by code
    open311: Open311Config = field(default_factory=_no_open311)

    def partner_department(self, system: str) -> str | None:
        """The department entry that is partner `system`'s platform (its webhook receiver says
        `partner: <system>`), or None."""
        return next(
            (
                code
                for code, dep in self.departments.items()
                if isinstance(dep.receiver, WebhookReceiver) and dep.receiver.partner == system
            ),
            None,
        )

    def department_by_code(self, uscc: str) -> Department | None:
        return next((dep for dep in self.departments.values() if dep.code == uscc), None)
