"""Load the reference-data folder and report every problem with its file and line."""

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
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
    Open311Config,
    Open311File,
    Person,
    ReferenceData,
    RoutingFile,
    RoutingTable,
    ServiceItemsFile,
    child_code_problem,
)
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


def load_reference_data(config_dir: Path) -> ReferenceData:
    """Read, validate and cross-check the reference files; ConfigError lists all issues."""
    if not config_dir.is_dir():
        raise ConfigError([ConfigIssue(str(config_dir), None, "config folder not found")])
    grid, grid_issues = read_source(config_dir / GRID_FILE, GridFile)
    departments, department_issues = read_source(config_dir / DEPARTMENTS_FILE, DepartmentsFile)
    categories, category_issues = read_source(config_dir / CATEGORIES_FILE, CategoriesFile)
    routing, routing_issues = read_source(config_dir / ROUTING_FILE, RoutingFile)
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
                departments=None if departments is None else departments.model,
                categories=category_model,
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
        routing=RoutingTable(
            rules=routing.model.rules, version=routing_version(routing.model, routing.raw)
        ),
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
        return None, [
            ConfigIssue(file, document.line_of(detail["loc"]), schema_reason(detail))
            for detail in error.errors()
        ]
    return Source(file=file, raw=raw, document=document, model=model), []


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
    ]


def category_findings(categories: CategoriesFile) -> list[Finding]:
    return duplicate_findings(
        ((("categories", i, "code"), c.code) for i, c in enumerate(categories.categories)), "code"
    )


def routing_findings(
    routing: RoutingFile,
    *,
    departments: DepartmentsFile | None,
    categories: CategoriesFile | None,
) -> list[Finding]:
    """Rule ids are unique, and, when those files are valid, departments and prefixes resolve.

    A category no rule reaches is fine: its cases go to triage. A rule that can never apply,
    because earlier rules take every category it matches (first match wins), is not.
    """
    findings = duplicate_findings(
        ((("rules", i, "id"), rule.id) for i, rule in enumerate(routing.rules)), "rule id"
    )
    if departments is not None:
        known = sorted(d.short_code for d in departments.departments)
        for i, rule in enumerate(routing.rules):
            if rule.department not in known:
                reason = (
                    f"unknown department {rule.department!r}; known short codes: {', '.join(known)}"
                )
                findings.append(Finding(("rules", i, "department"), reason))
    if categories is not None:
        codes = [c.code for c in categories.categories]
        taken: dict[str, int] = {}  # category code -> index of the rule that takes it
        for i, rule in enumerate(routing.rules):
            matched = [code for code in codes if code.startswith(rule.category_prefix)]
            loc: Loc = ("rules", i, "match", "category_prefix")
            if not matched:
                reason = f"category_prefix {rule.category_prefix!r} matches no category"
                findings.append(Finding(loc, reason))
            elif all(code in taken for code in matched):
                earlier = ", ".join(f"rules[{j}]" for j in sorted({taken[c] for c in matched}))
                reason = (
                    f"rule never applies: {earlier} before it take every category it matches"
                    " (first match wins); list the more specific prefix first"
                )
                findings.append(Finding(loc, reason))
            for code in matched:
                taken.setdefault(code, i)
    return findings


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


def routing_version(routing: RoutingFile, raw: bytes) -> str:
    """The declared version plus a hash of the file bytes, so any edit changes it."""
    return f"v{routing.version}-{hashlib.sha256(raw).hexdigest()[:12]}"
