"""Where a case goes: the routing tree of the reference data, walked for one case.

A route is evaluated only if its parent matched. Among siblings the first match stops the
evaluation unless it says `continue: true`. Every matched route adds its co-handling and notify
receivers; the departments of matched routes are candidates, deepest first (a matched parent's
department is the fallback of its children), then those of later siblings that `continue` let
through. The first candidate not excluded (it returned the case) decides; excluded departments
are left out of co-handling and notify too. No candidate: triage at the owning town's centre, or
at the city's when the case has no known unit grid.

Pure: the tree, the grid and the calendar are reference data, `now` is explicit, and the decision
records the deciding route and the tree's version.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from libs.common.events import CaseSubmitted, RoutingSnapshot
from libs.common.refdata import GridTree, Route, RouteMatch, RoutingTree, WorkingCalendar
from libs.common.refdata.timewindows import TimeWindow


@dataclass(frozen=True)
class RoutingDecision:
    department: str | None  # the primary department (主办); None: triage
    rule_id: str | None  # the route that chose the department
    ruleset_version: str
    co_handling: tuple[str, ...] = ()  # 协办, never the primary department
    notify: tuple[str, ...] = ()  # informed only, neither primary nor co-handling
    path: tuple[str, ...] = ()  # ids of the matched routes, in evaluation order
    triage_at: str | None = None  # when no department: the town's code, or the city's

    def snapshot(self) -> RoutingSnapshot:
        return RoutingSnapshot(rule_id=self.rule_id, ruleset_version=self.ruleset_version)


@dataclass(frozen=True)
class Step:
    """One route visited while routing a case."""

    route: Route
    depth: int  # the root is 0
    reasons: tuple[str, ...]  # why it did not match; () when it matched
    unvisited: int = 0  # later siblings left out because it matched without `continue`

    @property
    def matched(self) -> bool:
        return not self.reasons


@dataclass(frozen=True)
class Explanation:
    decision: RoutingDecision
    steps: tuple[Step, ...]  # every visited route, in evaluation order


def route(
    case: CaseSubmitted,
    tree: RoutingTree,
    *,
    now: datetime,
    calendar: WorkingCalendar,
    grid: GridTree,
    exclude: frozenset[str] = frozenset(),
) -> RoutingDecision:
    """The routing decision for `case` at `now`; departments in `exclude` are passed over."""
    walk = _Walk(_Facts(case, now=now, calendar=calendar, grid=grid), trace=None)
    walk.enter(tree.root, 0)
    return walk.decide(tree, grid, exclude)


def explain(
    case: CaseSubmitted,
    tree: RoutingTree,
    *,
    now: datetime,
    calendar: WorkingCalendar,
    grid: GridTree,
    exclude: frozenset[str] = frozenset(),
) -> Explanation:
    """`route`, plus every route visited and why it did or did not match (slower)."""
    trace: list[Step] = [Step(tree.root, 0, ())]
    walk = _Walk(_Facts(case, now=now, calendar=calendar, grid=grid), trace=trace)
    walk.enter(tree.root, 0)
    return Explanation(walk.decide(tree, grid, exclude), tuple(trace))


class _Facts:
    """What routes match on, read from the case once."""

    __slots__ = (
        "_case",
        "_text",
        "_windows",
        "calendar",
        "category",
        "grid",
        "now",
        "reported_grid",
        "source",
        "unit_grid",
        "urgency",
    )

    def __init__(
        self, case: CaseSubmitted, *, now: datetime, calendar: WorkingCalendar, grid: GridTree
    ) -> None:
        if now.utcoffset() is None:
            raise ValueError("routing needs a timezone-aware `now`")
        self._case = case
        self.category = case.category.code
        self.source = case.source.value
        self.urgency = case.urgency.value
        self.reported_grid = unit_grid = case.location.unit_grid
        # A code the grid tree does not know matches no grid route and triages at the city.
        self.unit_grid = unit_grid if unit_grid is not None and unit_grid in grid else None
        self.grid = grid
        self.now = now
        self.calendar = calendar
        self._text: str | None = None
        self._windows: dict[str, bool] = {}  # window name -> whether `now` is in it

    def within(self, node: str) -> bool:
        unit_grid = self.unit_grid
        return unit_grid is not None and node in self.grid and self.grid.is_within(unit_grid, node)

    def mentions(self, keywords: tuple[str, ...]) -> bool:
        text = self.text
        return any(keyword in text for keyword in keywords)

    def during(self, windows: tuple[TimeWindow, ...]) -> bool:
        return any(self._inside(window) for window in windows)

    def _inside(self, window: TimeWindow) -> bool:
        inside = self._windows.get(window.name)
        if inside is None:
            inside = self._windows[window.name] = window.contains(self.now, self.calendar)
        return inside

    @property
    def text(self) -> str:
        # Built once, on demand: most cases meet no keyword route before a category decides.
        if self._text is None:
            self._text = f"{self._case.title}\n{self._case.description}".casefold()
        return self._text


def _matches(match: RouteMatch, facts: _Facts) -> bool:
    # Cheapest tests first; every condition given must hold.
    return (
        (match.category is None or facts.category == match.category)
        and (match.category_prefix is None or facts.category.startswith(match.category_prefix))
        and (match.sources is None or facts.source in match.sources)
        and (match.urgencies is None or facts.urgency in match.urgencies)
        and (match.grid is None or facts.within(match.grid))
        and (not match.keywords or facts.mentions(match.keywords))
        and (not match.windows or facts.during(match.windows))
    )


def _mismatches(match: RouteMatch, facts: _Facts) -> tuple[str, ...]:
    """Every condition of `match` the case fails, in words; () exactly when `_matches`."""
    reasons = []
    if match.category is not None and facts.category != match.category:
        reasons.append(f"category {facts.category} is not {match.category}")
    prefix = match.category_prefix
    if prefix is not None and not facts.category.startswith(prefix):
        reasons.append(f"category {facts.category} does not start with {prefix!r}")
    if match.sources is not None and facts.source not in match.sources:
        reasons.append(f"source {facts.source} is not {_either(match.sources)}")
    if match.urgencies is not None and facts.urgency not in match.urgencies:
        reasons.append(f"urgency {facts.urgency} is not {_either(match.urgencies)}")
    if match.grid is not None and not facts.within(match.grid):
        reasons.append(_outside(facts, match.grid))
    if match.keywords and not facts.mentions(match.keywords):
        reasons.append(f"title and description mention none of {', '.join(match.keywords)}")
    if match.windows and not facts.during(match.windows):
        local = facts.now.astimezone(match.windows[0].timezone)
        names = ", ".join(window.name for window in match.windows)
        reasons.append(f"{local:%a %Y-%m-%d %H:%M %Z} is outside {names}")
    return tuple(reasons)


def _either(values: Iterable[str]) -> str:
    return " or ".join(sorted(values))


def _outside(facts: _Facts, node: str) -> str:
    unit_grid = facts.reported_grid
    if unit_grid is None:
        return f"the case has no unit grid, so it is not within {node}"
    if facts.unit_grid is None:
        return f"unit grid {unit_grid} is not in the grid tree"
    return f"unit grid {unit_grid} is not within {node}"


class _Walk:
    """One evaluation of the tree: matched routes, candidate departments, collected receivers."""

    def __init__(self, facts: _Facts, trace: list[Step] | None) -> None:
        self.facts = facts
        self.trace = trace
        self.path: list[str] = []
        self.candidates: list[Route] = []  # matched routes with a department, best first
        self.co_handling: list[str] = []
        self.notify: list[str] = []

    def enter(self, node: Route, depth: int) -> None:
        """`node` matched: collect its receivers, walk its children, then offer its department."""
        self.path.append(node.id)
        self.co_handling += node.co_handling
        self.notify += node.notify
        if node.routes:
            self.visit(node.routes, depth + 1)
        if node.department is not None:
            self.candidates.append(node)

    def visit(self, siblings: tuple[Route, ...], depth: int) -> None:
        facts, trace = self.facts, self.trace
        for index, node in enumerate(siblings):
            if trace is None:
                if node.match is not None and not _matches(node.match, facts):
                    continue
            else:
                reasons = () if node.match is None else _mismatches(node.match, facts)
                unvisited = 0 if reasons or node.continues else len(siblings) - index - 1
                trace.append(Step(node, depth, reasons, unvisited))
                if reasons:
                    continue
            self.enter(node, depth)
            if not node.continues:
                return

    def decide(self, tree: RoutingTree, grid: GridTree, exclude: frozenset[str]) -> RoutingDecision:
        chosen = next((node for node in self.candidates if node.department not in exclude), None)
        department = None if chosen is None else chosen.department
        # A department that returned the case gets nothing more of it; nobody is listed twice.
        co_handling = _unique(c for c in self.co_handling if c != department and c not in exclude)
        taken = {department, *co_handling, *exclude}
        notify = _unique(n for n in self.notify if n not in taken)
        triage_at = None
        if department is None:
            unit_grid = self.facts.unit_grid
            triage_at = grid.city.code if unit_grid is None else grid.town_of(unit_grid).code
        return RoutingDecision(
            department=department,
            rule_id=None if chosen is None else chosen.id,
            ruleset_version=tree.version,
            co_handling=co_handling,
            notify=notify,
            path=tuple(self.path),
            triage_at=triage_at,
        )


def _unique(codes: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(codes))
