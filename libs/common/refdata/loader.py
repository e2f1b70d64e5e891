"""Load the reference-data folder and report every problem with its file and line."""

import hashlib
from collections.abc import Callable, Collection, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from libs.common.refdata.gridmap import GridMap, GridPolygon
from libs.common.refdata.jsonsource import parse_json
from libs.common.refdata.models import (
    TOWN_SEQUENCES,
    UNIT_SEQUENCES,
    VILLAGE_SEQUENCES,
    CategoriesFile,
    CategoryForm,
    DepartmentsFile,
    GridFile,
    GridLevel,
    GridNode,
    GridPolygonsFile,
    GridTree,
    MatchSpec,
    Open311Config,
    Open311File,
    Person,
    ReferenceData,
    Route,
    RouteMatch,
    RouteSpec,
    RoutingFile,
    RoutingTree,
    ServiceItemsFile,
    WebhookReceiver,
    child_code_problem,
)
from libs.common.refdata.timewindows import TimeWindow
from libs.common.refdata.yamlsource import Loc, YamlDocument, YamlSourceError, parse_yaml

GRID_FILE = "grid.yaml"
DEPARTMENTS_FILE = "departments.yaml"
CATEGORIES_FILE = "categories.yaml"
ROUTING_FILE = "routing.yaml"
POLYGONS_FILE = "grid_polygons.geojson"
SERVICE_ITEMS_FILE = "service_items.yaml"
OPEN311_FILE = "open311.yaml"

Schema = TypeVar("Schema", bound=BaseModel)


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    line: int | None  # 1-based; None when the problem is the file as a whole
    reason: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.reason}"


class ConfigError(Exception):
    """The reference data is unusable; `issues` lists every problem found."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


@dataclass(frozen=True)
class Finding:
    """A problem at a path inside a schema-valid document."""

    loc: Loc
    reason: str
    first: Loc | None = None  # for duplicates: where the value first appeared


@dataclass(frozen=True)
class Source(Generic[Schema]):
    """One schema-valid file."""

    file: str
    raw: bytes
    document: YamlDocument
    model: Schema

    def issues(self, findings: Iterable[Finding]) -> list[ConfigIssue]:
        return [self._issue(finding) for finding in findings]

    def _issue(self, finding: Finding) -> ConfigIssue:
        reason = f"{dotted(finding.loc)}: {finding.reason}"
        if finding.first is not None:
            reason += f" (first at line {self.document.line_of(finding.first)})"
        return ConfigIssue(self.file, self.document.line_of(finding.loc), reason)


def load_reference_data(config_dir: Path, *, routing_file: Path | None = None) -> ReferenceData:
    """Read, validate and cross-check the reference files; ConfigError lists all issues.

    `routing_file` replaces the folder's routing.yaml, to try a rule change before deploying it.
    """
    if not config_dir.is_dir():
        raise ConfigError([ConfigIssue(str(config_dir), None, "config folder not found")])
    grid, grid_issues = read_source(config_dir / GRID_FILE, GridFile)
    departments, department_issues = read_source(config_dir / DEPARTMENTS_FILE, DepartmentsFile)
    categories, category_issues = read_source(config_dir / CATEGORIES_FILE, CategoriesFile)
    routing, routing_issues = read_source(routing_file or config_dir / ROUTING_FILE, RoutingFile)
    polygons, polygon_issues = read_source(
        config_dir / POLYGONS_FILE, GridPolygonsFile, parse=parse_json
    )
    items, item_issues = read_source(config_dir / SERVICE_ITEMS_FILE, ServiceItemsFile)
    open311, open311_issues = read_source(config_dir / OPEN311_FILE, Open311File)
    issues = [
        *grid_issues,
        *department_issues,
        *category_issues,
        *routing_issues,
        *polygon_issues,
        *item_issues,
        *open311_issues,
    ]
    category_model = None if categories is None else categories.model
    if grid is not None:
        issues += grid.issues(grid_findings(grid.model))
    if departments is not None:
        issues += departments.issues(department_findings(departments.model))
    if categories is not None:
        issues += categories.issues(category_findings(categories.model))
    if routing is not None:
        issues += routing.issues(
            routing_findings(
                routing.model,
                departments=None
                if departments is None
                else [d.short_code for d in departments.model.departments],
                categories=None
                if category_model is None
                else [c.code for c in category_model.categories],
                grid=None if grid is None else _grid_codes(grid.model),
            )
        )
    if polygons is not None:
        issues += polygons.issues(
            polygon_findings(polygons.model, grid=None if grid is None else grid.model)
        )
        if grid is not None:
            issues += missing_polygon_issues(polygons, grid)
    if items is not None:
        issues += items.issues(service_item_findings(items.model, categories=category_model))
    if open311 is not None:
        issues += open311.issues(open311_findings(open311.model, categories=category_model))
    if (
        issues
        or grid is None
        or departments is None
        or categories is None
        or routing is None
        or polygons is None
        or items is None
        or open311 is None
    ):
        raise ConfigError(sorted(issues, key=lambda issue: (issue.file, issue.line or 0)))
    return ReferenceData(
        grid=build_grid_tree(grid.model),
        departments=MappingProxyType({d.short_code: d for d in departments.model.departments}),
        categories=MappingProxyType({c.code: c for c in categories.model.categories}),
        routing=build_routing_tree(routing.model, routing.raw),
        grid_map=build_grid_map(polygons.model),
        service_items=MappingProxyType({item.code: item for item in items.model.items}),
        open311=Open311Config(
            clients=MappingProxyType({client.id: client for client in open311.model.clients}),
            services=open311.model.services,
        ),
    )


def read_source(
    path: Path, schema: type[Schema], *, parse: Callable[[str], YamlDocument] = parse_yaml
) -> tuple[Source[Schema] | None, list[ConfigIssue]]:
    """Parse and schema-validate one file: the Source, or None and the reasons why not.

    `parse` turns the text into values with their lines: YAML by default, `parse_json` for JSON.
    """
    file = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, [ConfigIssue(file, None, "file not found")]
    except OSError as error:
        return None, [ConfigIssue(file, None, f"cannot read file: {error.strerror}")]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        return None, [ConfigIssue(file, raw[: error.start].count(b"\n") + 1, "not valid UTF-8")]
    try:
        document = parse(text)
    except YamlSourceError as error:
        return None, [ConfigIssue(file, problem.line, problem.reason) for problem in error.problems]
    try:
        model = schema.model_validate(document.data)
    except ValidationError as error:
        details = [
            {**detail, "loc": without_union_tags(detail["loc"], document.data)}
            for detail in error.errors()
        ]
        return None, [
            ConfigIssue(file, document.line_of(detail["loc"]), schema_reason(detail))  # type: ignore[arg-type]
            for detail in details
        ]
    return Source(file=file, raw=raw, document=document, model=model), []


def without_union_tags(loc: Iterable[str | int], data: object) -> tuple[str | int, ...]:
    """The path as the file spells it: pydantic puts the tag of a union discriminated by `kind`
    (a receiver's `webhook`/`pull`) into the path; a reader knows `receiver.url`."""
    kept: list[str | int] = []
    node = data
    for part in loc:
        tag = isinstance(node, dict) and part not in node and part == node.get("kind")
        if tag and isinstance(part, str):
            continue
        kept.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(kept)


def schema_reason(detail: ErrorDetails) -> str:
    """A one-line reason for a pydantic error, prefixed with the path of the offending value."""
    kind = detail["type"]
    if kind == "missing":
        message = "required field is missing"
    elif kind == "extra_forbidden":
        message = "unknown field"
    elif kind in {"model_type", "model_attributes_type", "dict_type"}:
        message = "expected a mapping of fields"
    elif kind == "value_error" and "ctx" in detail:
        message = str(detail["ctx"]["error"])
    else:
        message = detail["msg"]
    where = dotted(detail["loc"])
    return f"{where}: {message}" if where else message


def dotted(loc: Iterable[str | int]) -> str:
    """("towns", 3, "villages", 0, "code") -> "towns[3].villages[0].code"."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".")


# --- checks on schema-valid files ---------------------------------------------------------------


def duplicate_findings(values: Iterable[tuple[Loc, str]], what: str) -> list[Finding]:
    first: dict[str, Loc] = {}
    findings = []
    for loc, value in values:
        if value in first:
            findings.append(Finding(loc, f"duplicate {what} {value!r}", first=first[value]))
        else:
            first[value] = loc
    return findings


@dataclass(frozen=True)
class _GridEntry:
    loc: Loc
    code: str
    parent_code: str
    sequences: range
    kind: str


def _grid_entries(grid: GridFile) -> Iterator[_GridEntry]:
    for t, town in enumerate(grid.towns):
        town_loc: Loc = ("towns", t)
        yield _GridEntry(town_loc, town.code, grid.city.code, TOWN_SEQUENCES[town.kind], town.kind)
        for v, village in enumerate(town.villages):
            village_loc: Loc = (*town_loc, "villages", v)
            sequences = VILLAGE_SEQUENCES[village.kind]
            yield _GridEntry(village_loc, village.code, town.code, sequences, village.kind)
            for g, unit in enumerate(village.grids):
                unit_loc: Loc = (*village_loc, "grids", g)
                yield _GridEntry(unit_loc, unit.code, village.code, UNIT_SEQUENCES, "unit grid")


def grid_findings(grid: GridFile) -> list[Finding]:
    """Codes nest under their parent in the range of their kind, are unique; sectors exist."""
    entries = list(_grid_entries(grid))
    findings = duplicate_findings(
        ((("sectors", i, "id"), sector.id) for i, sector in enumerate(grid.sectors)), "sector id"
    )
    sector_ids = sorted({sector.id for sector in grid.sectors})
    for t, town in enumerate(grid.towns):
        if town.sector not in sector_ids:
            reason = f"unknown sector {town.sector!r}; sectors are {', '.join(sector_ids)}"
            findings.append(Finding(("towns", t, "sector"), reason))
    for entry in entries:
        problem = child_code_problem(entry.code, entry.parent_code, entry.sequences, entry.kind)
        if problem is not None:
            findings.append(Finding((*entry.loc, "code"), problem))
    codes: list[tuple[Loc, str]] = [(("city", "code"), grid.city.code)]
    codes += [((*entry.loc, "code"), entry.code) for entry in entries]
    return findings + duplicate_findings(codes, "code")


def department_findings(departments: DepartmentsFile) -> list[Finding]:
    indexed = list(enumerate(departments.departments))
    return [
        *duplicate_findings(
            ((("departments", i, "short_code"), d.short_code) for i, d in indexed), "short_code"
        ),
        *duplicate_findings(((("departments", i, "code"), d.code) for i, d in indexed), "code"),
        # a partner platform is one department entry: the one whose cases it may decide
        *duplicate_findings(
            (
                (("departments", i, "receiver", "partner"), d.receiver.partner)
                for i, d in indexed
                if isinstance(d.receiver, WebhookReceiver) and d.receiver.partner is not None
            ),
            "partner",
        ),
    ]


def category_findings(categories: CategoriesFile) -> list[Finding]:
    return duplicate_findings(
        ((("categories", i, "code"), c.code) for i, c in enumerate(categories.categories)), "code"
    )


def load_routing_tree(path: Path, *, against: ReferenceData) -> RoutingTree:
    """Read and check a routing file against loaded reference data; ConfigError lists its issues.

    This is how a rule change is taken without a restart (swap the tree into the running
    `ReferenceData` with `dataclasses.replace`) or tried before it is deployed.
    """
    source, issues = read_source(path, RoutingFile)
    if source is not None:
        issues = source.issues(
            routing_findings(
                source.model,
                departments=list(against.departments),
                categories=list(against.categories),
                grid=against.grid,
            )
        )
    if issues or source is None:
        raise ConfigError(sorted(issues, key=lambda issue: issue.line or 0))
    return build_routing_tree(source.model, source.raw)


def routing_findings(
    routing: RoutingFile,
    *,
    departments: Collection[str] | None,
    categories: Collection[str] | None,
    grid: Container[str] | None,
) -> list[Finding]:
    """Route ids are unique, time windows exist, no route is hidden behind an identical sibling,
    and, when those files are valid, departments, categories and grid nodes resolve.

    A category no route reaches is fine: its cases go to triage.
    """
    routes = list(_route_entries(routing.route, ("route",)))
    findings = duplicate_findings((((*loc, "id"), spec.id) for loc, spec in routes), "route id")
    if routing.route.match is not None:
        reason = "the root route matches every case; put the match on a route under it"
        findings.append(Finding(("route", "match"), reason))
    if routing.route.continue_:
        reason = "the root route has no siblings, so continue means nothing there"
        findings.append(Finding(("route", "continue"), reason))
    known = None if departments is None else sorted(departments)
    windows = sorted(routing.time_windows)
    for loc, spec in routes:
        findings += _action_findings(loc, spec, known)
        if spec.match is not None:
            findings += _match_findings(
                (*loc, "match"),
                spec.match,
                categories=categories,
                grid=grid,
                windows=windows,
            )
        findings += _hidden_route_findings(loc, spec.routes)
    return findings


def _route_entries(spec: RouteSpec, loc: Loc) -> Iterator[tuple[Loc, RouteSpec]]:
    yield loc, spec
    for i, child in enumerate(spec.routes):
        yield from _route_entries(child, (*loc, "routes", i))


def _action_findings(loc: Loc, spec: RouteSpec, known: Sequence[str] | None) -> list[Finding]:
    targets: list[tuple[Loc, str]] = []
    if spec.department is not None:
        targets.append(((*loc, "department"), spec.department))
    targets += [((*loc, "co_handling", i), code) for i, code in enumerate(spec.co_handling)]
    targets += [((*loc, "notify", i), code) for i, code in enumerate(spec.notify)]
    findings = [
        *duplicate_findings(
            (((*loc, "co_handling", i), code) for i, code in enumerate(spec.co_handling)),
            "co-handling department",
        ),
        *duplicate_findings(
            (((*loc, "notify", i), code) for i, code in enumerate(spec.notify)), "notify receiver"
        ),
    ]
    if spec.department in spec.co_handling:
        where = (*loc, "co_handling", spec.co_handling.index(spec.department))
        reason = f"{spec.department!r} is this route's department; it cannot co-handle too"
        findings.append(Finding(where, reason))
    if known is not None:
        findings += [
            Finding(where, f"unknown department {code!r}; known short codes: {', '.join(known)}")
            for where, code in targets
            if code not in known
        ]
    return findings


def _match_findings(
    loc: Loc,
    match: MatchSpec,
    *,
    categories: Collection[str] | None,
    grid: Container[str] | None,
    windows: Sequence[str],
) -> list[Finding]:
    findings = []
    category = match.category
    if category is not None and categories is not None:
        if category.code is not None and category.code not in categories:
            findings.append(
                Finding((*loc, "category", "code"), f"unknown category {category.code!r}")
            )
        prefix = category.prefix
        if prefix is not None and not any(code.startswith(prefix) for code in categories):
            reason = f"category prefix {prefix!r} matches no category"
            findings.append(Finding((*loc, "category", "prefix"), reason))
    if match.grid is not None and grid is not None and match.grid not in grid:
        reason = f"unknown grid node {match.grid!r}: not in {GRID_FILE}"
        findings.append(Finding((*loc, "grid"), reason))
    defined = f"defined: {', '.join(windows)}" if windows else "none is defined in time_windows"
    findings += [
        Finding((*loc, "time", i), f"unknown time window {name!r}; {defined}")
        for i, name in enumerate(match.time or ())
        if name not in windows
    ]
    return findings


def _match_key(match: MatchSpec | None) -> object:
    """Equal for two matches that take exactly the same cases however their lists are ordered."""
    if match is None:
        return None
    category = match.category
    return (
        None if category is None else (category.code, category.prefix),
        match.grid,
        *(
            None if values is None else frozenset(values)
            for values in (match.source, match.urgency, match.time)
        ),
        None if match.keywords is None else frozenset(k.casefold() for k in match.keywords),
    )


def _hidden_route_findings(loc: Loc, siblings: Sequence[RouteSpec]) -> list[Finding]:
    """A route after a sibling without `continue` that matches the same cases never matches.

    Only identical matches (and a sibling without any match) are caught, not broader ones.
    """
    findings = []
    stoppers: dict[object, int] = {}  # match key -> index of the first sibling that stops there
    for i, spec in enumerate(siblings):
        key = _match_key(spec.match)
        earlier = stoppers.get(None, stoppers.get(key))
        if earlier is not None:
            sibling: Loc = (*loc, "routes", earlier)
            how = "matches every case" if siblings[earlier].match is None else "has the same match"
            reason = (
                f"route {spec.id!r} never matches: {dotted(sibling)} ({siblings[earlier].id!r})"
                f" before it {how} and does not continue"
            )
            where = (*loc, "routes", i, "match" if spec.match is not None else "id")
            findings.append(Finding(where, reason, first=sibling))
        elif not spec.continue_:
            stoppers.setdefault(key, i)
    return findings


def _grid_codes(grid: GridFile) -> set[str]:
    return {grid.city.code, *(entry.code for entry in _grid_entries(grid))}


def _unit_grid_codes(grid: GridFile) -> dict[str, Loc]:
    return {
        entry.code: (*entry.loc, "code")
        for entry in _grid_entries(grid)
        if entry.kind == "unit grid"
    }


def polygon_findings(polygons: GridPolygonsFile, *, grid: GridFile | None) -> list[Finding]:
    """Each feature's code is unique and, when grid.yaml is valid, one of its unit grids."""
    codes: list[tuple[Loc, str]] = [
        (("features", i, "properties", "code"), feature.properties.code)
        for i, feature in enumerate(polygons.features)
    ]
    findings = duplicate_findings(codes, "code")
    if grid is not None:
        units = _unit_grid_codes(grid)
        findings += [
            Finding(loc, f"unknown unit grid {code!r}: not in {GRID_FILE}")
            for loc, code in codes
            if code not in units
        ]
    return findings


def missing_polygon_issues(
    polygons: Source[GridPolygonsFile], grid: Source[GridFile]
) -> list[ConfigIssue]:
    """One file-level issue per unit grid of grid.yaml that no feature covers."""
    covered = {feature.properties.code for feature in polygons.model.features}
    return [
        ConfigIssue(
            polygons.file,
            None,
            f"no polygon for unit grid {code!r} ({GRID_FILE} line {grid.document.line_of(loc)})",
        )
        for code, loc in _unit_grid_codes(grid.model).items()
        if code not in covered
    ]


def _category_forms(categories: CategoriesFile) -> dict[str, CategoryForm]:
    return {category.code: category.form for category in categories.categories}


def service_item_findings(
    items: ServiceItemsFile, *, categories: CategoriesFile | None
) -> list[Finding]:
    """Codes are unique, documents are not listed twice; categories exist with form `service`."""
    indexed = list(enumerate(items.items))
    findings = duplicate_findings(
        ((("items", i, "code"), item.code) for i, item in indexed), "code"
    )
    for i, item in indexed:
        findings += duplicate_findings(
            ((("items", i, "documents", d), doc) for d, doc in enumerate(item.documents)),
            "document",
        )
    if categories is not None:
        forms = _category_forms(categories)
        for i, item in indexed:
            form = forms.get(item.category)
            if form is None:
                reason = f"unknown category {item.category!r}"
            elif form is not CategoryForm.SERVICE:
                reason = (
                    f"category {item.category!r} has form {form};"
                    " a service item needs a category of form 'service'"
                )
            else:
                continue
            findings.append(Finding(("items", i, "category"), reason))
    return findings


def open311_findings(open311: Open311File, *, categories: CategoriesFile | None) -> list[Finding]:
    """Client ids and key names are unique; each category is offered once, exists, is no service.

    Proxy services (form `service`) are filed by grid workers, never through Open311.
    """
    clients = list(enumerate(open311.clients))
    services = list(enumerate(open311.services))
    findings = [
        *duplicate_findings(((("clients", i, "id"), c.id) for i, c in clients), "client id"),
        *duplicate_findings(
            ((("clients", i, "key_env"), c.key_env) for i, c in clients), "key_env"
        ),
        *duplicate_findings(
            ((("services", i, "category"), s.category) for i, s in services), "category"
        ),
    ]
    if categories is not None:
        forms = _category_forms(categories)
        for i, service in services:
            form = forms.get(service.category)
            if form is None:
                reason = f"unknown category {service.category!r}"
            elif form is CategoryForm.SERVICE:
                reason = (
                    f"category {service.category!r} has form service;"
                    " proxy services are not offered through Open311"
                )
            else:
                continue
            findings.append(Finding(("services", i, "category"), reason))
    return findings


# --- building the runtime values ----------------------------------------------------------------


def build_grid_tree(grid: GridFile) -> GridTree:
    """The indexed tree of a grid file that passed `grid_findings`."""
    city = grid.city
    nodes: list[GridNode] = []
    for town in grid.towns:
        nodes.append(_node(town.code, GridLevel.TOWN, town.name, city.code, town.responsible))
        for village in town.villages:
            nodes.append(
                _node(village.code, GridLevel.VILLAGE, village.name, town.code, village.responsible)
            )
            nodes += [
                _node(unit.code, GridLevel.UNIT, unit.name, village.code, unit.responsible)
                for unit in village.grids
            ]
    return GridTree(
        city=GridNode(
            code=city.code,
            level=GridLevel.CITY,
            name=city.name,
            parent_code=None,
            responsible=city.responsible,
        ),
        sectors=grid.sectors,
        nodes=nodes,
        town_sectors={town.code: town.sector for town in grid.towns},
    )


def _node(code: str, level: GridLevel, name: str, parent: str, responsible: Person) -> GridNode:
    return GridNode(code=code, level=level, name=name, parent_code=parent, responsible=responsible)


def build_grid_map(polygons: GridPolygonsFile) -> GridMap:
    """The indexed map of a polygons file that passed `polygon_findings` (unique codes)."""
    return GridMap(
        GridPolygon(
            code=feature.properties.code,
            parts=tuple(
                tuple(tuple((position[0], position[1]) for position in ring) for ring in polygon)
                for polygon in feature.polygons
            ),
        )
        for feature in polygons.features
    )


def build_routing_tree(routing: RoutingFile, raw: bytes) -> RoutingTree:
    """The compiled tree of a routing file that passed `routing_findings`."""
    windows = {
        name: TimeWindow.build(
            name,
            timezone=spec.timezone,
            weekdays=spec.weekdays,
            hours=spec.hours or (),
            holidays=spec.holidays,
        )
        for name, spec in routing.time_windows.items()
    }
    return RoutingTree(
        root=_compile_route(routing.route, windows),
        version=routing_version(routing, raw),
        time_windows=MappingProxyType(windows),
    )


def _compile_route(spec: RouteSpec, windows: Mapping[str, TimeWindow]) -> Route:
    return Route(
        id=spec.id,
        match=None if spec.match is None else _compile_match(spec.match, windows),
        department=spec.department,
        co_handling=spec.co_handling,
        notify=spec.notify,
        continues=spec.continue_,
        routes=tuple(_compile_route(child, windows) for child in spec.routes),
    )


def _compile_match(match: MatchSpec, windows: Mapping[str, TimeWindow]) -> RouteMatch:
    category = match.category
    return RouteMatch(
        category=None if category is None else category.code,
        category_prefix=None if category is None else category.prefix,
        grid=match.grid,
        sources=None if match.source is None else frozenset(s.value for s in match.source),
        urgencies=None if match.urgency is None else frozenset(u.value for u in match.urgency),
        keywords=tuple(dict.fromkeys(keyword.casefold() for keyword in match.keywords or ())),
        windows=tuple(windows[name] for name in dict.fromkeys(match.time or ())),
    )


def routing_version(routing: RoutingFile, raw: bytes) -> str:
    """The declared version plus a hash of the file bytes, so any edit changes it."""
    return f"v{routing.version}-{hashlib.sha256(raw).hexdigest()[:12]}"
