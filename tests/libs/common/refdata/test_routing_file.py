"""routing.yaml: the routing tree, its time windows, and every problem at its file and line."""

from dataclasses import replace
from pathlib import Path

import pytest

from libs.common.refdata import ConfigError, load_reference_data, load_routing_tree
from libs.common.refdata.loader import ConfigIssue
from tests.libs.common.refdata.factories import (
    TOWN,
    UNIT,
    VILLAGE,
    WINDOWS,
    issues_of,
    line_with,
    make_categories,
    make_department,
    make_departments,
    make_route,
    make_routing,
    only_issue,
    write_config,
)

OTHER_USCC = "114302810061453747"


def write(tmp_path: Path, routing: str) -> Path:
    """The minimal config with two departments, three categories and this routing file."""
    return write_config(
        tmp_path,
        departments=make_departments(
            make_department(),
            make_department("yingji", code=OTHER_USCC, env_name="GRIDFLOW_WEBHOOK_SECRET_YINGJI"),
        ),
        categories=make_categories("city.garbage", "safety.fire", "safety.hazard"),
        routing=routing,
    )


def reasons(config: Path) -> list[tuple[int | None, str]]:
    return [(issue.line, issue.reason) for issue in issues_of(config)]


def test_a_tree_with_windows_loads_compiled(tmp_path: Path) -> None:
    fire = make_route(
        "fire-to-yingji",
        "co_handling: [chengguan]",
        "notify: [chengguan]",
        match="{category: safety.fire, keywords: [燃气, LPG], time: [nights, rest_days]}",
        department="yingji",
    )
    routing = make_routing(
        make_route(
            "town",
            "continue: true",
            match=f'{{grid: "{TOWN}", source: hotline, urgency: [urgent, emergency]}}',
            department=None,
        ),
        make_route(routes=[fire]),
        windows=WINDOWS,
    )

    tree = load_reference_data(write(tmp_path, routing)).routing

    assert [(depth, node.id) for depth, node in tree.walk()] == [
        (0, "root"),
        (1, "town"),
        (1, "city-to-chengguan"),
        (2, "fire-to-yingji"),
    ]
    assert len(tree) == 4
    town = tree.get("town")
    assert town is not None and town.continues and town.department is None
    assert town.match is not None
    assert (town.match.grid, town.match.sources) == (TOWN, frozenset({"hotline"}))
    assert town.match.urgencies == frozenset({"urgent", "emergency"})
    node = tree.get("fire-to-yingji")
    assert node is not None and node.match is not None
    assert (node.match.category, node.match.category_prefix) == ("safety.fire", None)
    assert node.match.keywords == ("燃气", "lpg"), "casefolded once, at load"
    assert [w.name for w in node.match.windows] == ["nights", "rest_days"]
    assert (node.co_handling, node.notify, node.continues) == (
        ("chengguan",),
        ("chengguan",),
        False,
    )
    assert set(tree.time_windows) == {"office_hours", "nights", "rest_days"}
    assert tree.get("nobody") is None


def test_the_old_flat_rule_list_is_refused_clearly(tmp_path: Path) -> None:
    routing = (
        "version: 2\nrules:\n  - id: city-to-chengguan\n"
        '    match: {category_prefix: "city."}\n    department: chengguan\n'
    )

    assert reasons(write(tmp_path, routing)) == [
        (1, "route: required field is missing"),
        (2, "rules: unknown field"),
    ]


def test_duplicate_route_ids_anywhere_in_the_tree(tmp_path: Path) -> None:
    child = make_route("twice", match="{category: city.garbage}")
    routing = make_routing(make_route("twice", routes=[child]))

    issue = only_issue(write(tmp_path, routing))

    first = line_with(routing, "id: twice")
    assert (issue.line, issue.reason) == (
        line_with(routing, "id: twice", 2),
        f"route.routes[0].routes[0].id: duplicate route id 'twice' (first at line {first})",
    )


@pytest.mark.parametrize("field", ["co_handling", "notify"])
def test_unknown_receivers(tmp_path: Path, field: str) -> None:
    routing = make_routing(make_route("r", f"{field}: [yingji, nobody]"))

    issue = only_issue(write(tmp_path, routing))

    assert (issue.line, issue.reason) == (
        line_with(routing, "nobody"),
        f"route.routes[0].{field}[1]: unknown department 'nobody';"
        " known short codes: chengguan, yingji",
    )


def test_co_handling_its_own_department_is_refused(tmp_path: Path) -> None:
    routing = make_routing(make_route("r", "co_handling: [yingji, chengguan]"))

    issue = only_issue(write(tmp_path, routing))

    assert issue.reason == (
        "route.routes[0].co_handling[1]: 'chengguan' is this route's department;"
        " it cannot co-handle too"
    )


@pytest.mark.parametrize(
    ("match", "reason"),
    [
        ("{category: city.noise}", "match.category.code: unknown category 'city.noise'"),
        (
            '{category: {prefix: "power."}}',
            "match.category.prefix: category prefix 'power.' matches no category",
        ),
        (
            "{category: City.Garbage}",
            "match.category.code: String should match pattern '^[a-z][a-z_]*\\.[a-z][a-z_]*$'",
        ),
        (
            '{category: {code: city.garbage, prefix: "city."}}',
            "match.category: category is a category code or {prefix: ...}, not both",
        ),
        ("{grid: 430281001}", "match.grid: Input should be a valid string"),
        (
            '{grid: "4302810010"}',
            "match.grid: grid must be a grid node code of 6, 9, 12 or 15 digits, got '4302810010'",
        ),
        ('{grid: "430281009"}', "match.grid: unknown grid node '430281009': not in grid.yaml"),
        (
            "{source: [radio]}",
            "match.source[0]: Input should be 'grid_worker', 'hotline', 'citycare', 'open311',"
            " 'video' or 'operator'",
        ),
        ("{keywords: []}", "match.keywords: must list at least one entry"),
        ("{}", "match: match is empty; leave it out to match every case"),
        ("{colour: red}", "match.colour: unknown field"),
        (
            "{time: [nights, weekend]}",
            "match.time[1]: unknown time window 'weekend'; defined: nights, office_hours,"
            " rest_days",
        ),
    ],
)
def test_bad_matches_point_at_their_line(tmp_path: Path, match: str, reason: str) -> None:
    routing = make_routing(make_route("r", match=match), windows=WINDOWS)

    issue = only_issue(write(tmp_path, routing))

    assert (issue.line, issue.reason) == (line_with(routing, "match:"), f"route.routes[0].{reason}")


def test_a_window_name_without_time_windows(tmp_path: Path) -> None:
    routing = make_routing(make_route("r", match="{time: nights}"))

    issue = only_issue(write(tmp_path, routing))

    assert issue.reason == (
        "route.routes[0].match.time[0]: unknown time window 'nights';"
        " none is defined in time_windows"
    )


def test_single_values_stand_for_lists(tmp_path: Path) -> None:
    routing = make_routing(
        make_route("r", match="{source: hotline, urgency: urgent, keywords: 燃气, time: nights}"),
        windows=WINDOWS,
    )

    node = load_reference_data(write(tmp_path, routing)).routing.get("r")

    assert node is not None and node.match is not None
    assert (node.match.sources, node.match.urgencies) == (
        frozenset({"hotline"}),
        frozenset({"urgent"}),
    )
    assert (node.match.keywords, [w.name for w in node.match.windows]) == (("燃气",), ["nights"])


@pytest.mark.parametrize(
    ("window", "reason"),
    [
        (
            '{hours: ["8:30-12:00"]}',
            ".hours[0]: hours must look like '08:30-12:00', got '8:30-12:00'",
        ),
        (
            '{hours: ["12:00-12:00"]}',
            ".hours[0]: hours '12:00-12:00' start and end at the same time",
        ),
        (
            '{hours: ["08:30-12:75"]}',
            ".hours[0]: hours '08:30-12:75': '12:75' is not a time of day",
        ),
        (
            "{weekdays: [monday]}",
            ".weekdays[0]: Input should be 'mon', 'tue', 'wed', 'thu', 'fri',",
        ),
        ("{holidays: true, timezone: Mars/Olympus}", ".timezone: unknown timezone 'Mars/Olympus'"),
        ("{holidays: yes please}", ".holidays: Input should be a valid boolean"),
        ("{timezone: Asia/Shanghai}", ": a time window needs weekdays, hours or holidays"),
    ],
)
def test_bad_time_windows(tmp_path: Path, window: str, reason: str) -> None:
    routing = make_routing(make_route(), windows=f"time_windows:\n  odd: {window}\n")

    issue = only_issue(write(tmp_path, routing))

    assert issue.line == 3
    assert issue.reason.startswith(f"time_windows.odd{reason}")


def test_a_window_name_must_be_a_plain_name(tmp_path: Path) -> None:
    routing = make_routing(
        make_route(), windows="time_windows:\n  Office-Hours: {holidays: false}\n"
    )

    issue = only_issue(write(tmp_path, routing))

    assert issue.line == 3
    assert issue.reason.startswith("time_windows.Office-Hours.[key]: String should match pattern")


def test_continue_must_be_a_boolean(tmp_path: Path) -> None:
    routing = make_routing(make_route("r", 'continue: "yes"'))

    issue = only_issue(write(tmp_path, routing))

    assert (issue.line, issue.reason) == (
        line_with(routing, "continue:"),
        "route.routes[0].continue: Input should be a valid boolean",
    )


def test_the_root_matches_everything_and_has_no_siblings(tmp_path: Path) -> None:
    root = "  match: {category: city.garbage}\n  continue: true\n"
    routing = make_routing(make_route(), root=root)

    assert reasons(write(tmp_path, routing)) == [
        (4, "route.match: the root route matches every case; put the match on a route under it"),
        (5, "route.continue: the root route has no siblings, so continue means nothing there"),
    ]


def test_a_route_behind_an_identical_sibling_never_matches(tmp_path: Path) -> None:
    first = make_route("first", match="{source: [hotline, citycare], keywords: [燃气, 煤气]}")
    second = make_route("second", match="{keywords: [煤气, 燃气], source: [citycare, hotline]}")
    routing = make_routing(first, second)

    issue = only_issue(write(tmp_path, routing))

    assert issue == ConfigIssue(
        str(tmp_path / "routing.yaml"),
        line_with(routing, "match:", 2),
        "route.routes[1].match: route 'second' never matches: route.routes[0] ('first') before"
        f" it has the same match and does not continue (first at line {line_with(routing, 'first')})",
    )


def test_a_route_behind_a_sibling_without_match_never_matches(tmp_path: Path) -> None:
    catch_all = make_route("catch-all", match=None, department="yingji")
    child = make_route("garbage", match="{category: city.garbage}")
    routing = make_routing(make_route(routes=[catch_all, child]))

    issue = only_issue(write(tmp_path, routing))

    assert issue.line == line_with(routing, "match: {category: city.garbage}")
    assert issue.reason.startswith(
        "route.routes[0].routes[1].match: route 'garbage' never matches:"
        " route.routes[0].routes[0] ('catch-all') before it matches every case"
    )


def test_identical_siblings_are_fine_when_the_first_continues(tmp_path: Path) -> None:
    first = make_route("notify", "continue: true", "notify: [yingji]", department=None)
    routing = make_routing(first, make_route())

    tree = load_reference_data(write(tmp_path, routing)).routing

    assert [node.id for _, node in tree.walk()] == ["root", "notify", "city-to-chengguan"]


def test_broader_before_narrower_is_not_checked(tmp_path: Path) -> None:
    # Only identical matches are caught; the tree makes narrowing a child's job anyway.
    routing = make_routing(
        make_route(), make_route("garbage", match="{category: city.garbage}", department="yingji")
    )

    assert len(load_reference_data(write(tmp_path, routing)).routing) == 3


def test_unit_grid_and_village_codes_are_grid_nodes(tmp_path: Path) -> None:
    routing = make_routing(
        make_route("village", "continue: true", match=f'{{grid: "{VILLAGE}"}}'),
        make_route("unit", match=f'{{grid: "{UNIT}"}}'),
    )

    assert len(load_reference_data(write(tmp_path, routing)).routing) == 3


# --- a routing file checked against loaded reference data ---------------------------------------


def test_load_routing_tree_against_loaded_reference_data(tmp_path: Path) -> None:
    data = load_reference_data(write(tmp_path, make_routing()))
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(make_routing(make_route(department="yingji"), version=2))

    tree = load_routing_tree(candidate, against=data)
    reloaded = replace(data, routing=tree)

    assert tree.version.startswith("v2-") and tree.version != data.routing.version
    assert reloaded.routing.root.routes[0].department == "yingji"
    assert reloaded.departments is data.departments


def test_load_routing_tree_reports_file_and_line(tmp_path: Path) -> None:
    data = load_reference_data(write(tmp_path, make_routing()))
    candidate = tmp_path / "candidate.yaml"
    routing = make_routing(
        make_route(department="nobody"), make_route("x", match='{grid: "430281009"}')
    )
    candidate.write_text(routing)

    with pytest.raises(ConfigError) as caught:
        load_routing_tree(candidate, against=data)

    assert [str(issue) for issue in caught.value.issues] == [
        f"{candidate}:{line_with(routing, 'nobody')}: route.routes[0].department: unknown"
        " department 'nobody'; known short codes: chengguan, yingji",
        f"{candidate}:{line_with(routing, 'grid')}: route.routes[1].match.grid: unknown grid node"
        " '430281009': not in grid.yaml",
    ]
