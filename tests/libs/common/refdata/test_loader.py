"""Broken reference data is refused with every issue, each at the right file and line."""

from pathlib import Path

import pytest

from libs.common.refdata import check
from libs.common.refdata.loader import ConfigIssue, load_reference_data
from tests.libs.common.refdata.factories import (
    CITY,
    OTHER_USCC,
    TOWN,
    UNIT,
    USCC,
    VILLAGE,
    issues_of,
    line_with,
    make_categories,
    make_department,
    make_departments,
    make_feature,
    make_grid,
    make_polygons,
    make_route,
    make_routing,
    make_town,
    make_village,
    only_issue,
    write_config,
)


def test_the_minimal_config_loads(tmp_path: Path) -> None:
    data = load_reference_data(write_config(tmp_path))

    assert [node.code for node in data.grid.unit_grids] == [UNIT]
    assert data.routing.version.startswith("v1-")


def test_wrong_code_length_points_at_the_code(tmp_path: Path) -> None:
    grid = make_grid(make_town("43028100", make_village()))

    issue = only_issue(write_config(tmp_path, grid=grid))

    assert issue.file == str(tmp_path / "grid.yaml")
    assert issue.line == line_with(grid, '"43028100"')
    assert issue.reason == (
        "towns[0].code: town code must be 9 digits, got '43028100' (8 characters)"
    )


def test_an_unquoted_code_is_refused(tmp_path: Path) -> None:
    grid = make_grid().replace(f'"{CITY}"', CITY)

    issue = only_issue(write_config(tmp_path, grid=grid))

    assert (issue.line, issue.reason) == (2, "city.code: Input should be a valid string")


def test_code_must_extend_its_parents_code(tmp_path: Path) -> None:
    grid = make_grid(make_town(TOWN, make_village("430281002001")))
    polygons = make_polygons(make_feature("430281002001001"))

    issue = only_issue(write_config(tmp_path, grid=grid, polygons=polygons))

    assert issue.line == line_with(grid, '"430281002001"')
    assert "does not start with its parent's code '430281001'" in issue.reason


def test_code_sequence_must_fit_the_kind(tmp_path: Path) -> None:
    grid = make_grid(make_town(TOWN, kind="town"))

    issue = only_issue(write_config(tmp_path, grid=grid))

    assert issue.line == line_with(grid, f'"{TOWN}"')
    assert (
        issue.reason
        == "towns[0].code: code '430281001': a town takes a sequence in 100-199, got 001"
    )


def test_duplicate_code_names_both_lines(tmp_path: Path) -> None:
    grid = make_grid(make_town(TOWN, make_village(VILLAGE), make_village(VILLAGE)))

    issues = issues_of(write_config(tmp_path, grid=grid))

    first, second = line_with(grid, f'"{VILLAGE}"'), line_with(grid, f'"{VILLAGE}"', 2)
    expected = [
        (second, f"towns[0].villages[1].code: duplicate code '{VILLAGE}' (first at line {first})"),
        (
            second + 5,
            f"towns[0].villages[1].grids[0].code: duplicate code '{UNIT}'"
            f" (first at line {first + 5})",
        ),
    ]
    assert [(issue.line, issue.reason) for issue in issues] == expected


def test_unknown_sector(tmp_path: Path) -> None:
    grid = make_grid(make_town(sector="S9"))

    issue = only_issue(write_config(tmp_path, grid=grid))

    assert issue.line == line_with(grid, "sector: S9")
    assert issue.reason == "towns[0].sector: unknown sector 'S9'; sectors are S1"


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    departments = make_departments(
        make_department().replace("    short_name: 城管", "    name: 城管")
    )

    issue = only_issue(write_config(tmp_path, departments=departments))

    assert issue.file == str(tmp_path / "departments.yaml")
    assert issue.line == line_with(departments, "name: 城管")
    assert issue.reason == "duplicate key 'name' (first at line 3)"


def test_unknown_department_in_a_route(tmp_path: Path) -> None:
    routing = make_routing(make_route(department="nobody"))

    issue = only_issue(write_config(tmp_path, routing=routing))

    assert issue.file == str(tmp_path / "routing.yaml")
    assert issue.line == line_with(routing, "department: nobody")
    assert issue.reason == (
        "route.routes[0].department: unknown department 'nobody'; known short codes: chengguan"
    )


def test_prefix_matching_no_category(tmp_path: Path) -> None:
    routing = make_routing(make_route(match='{category: {prefix: "safety."}}'))

    issue = only_issue(write_config(tmp_path, routing=routing))

    assert issue.line == line_with(routing, "safety.")
    assert issue.reason == (
        "route.routes[0].match.category.prefix: category prefix 'safety.' matches no category"
    )


def test_a_category_no_rule_reaches_is_fine(tmp_path: Path) -> None:
    data = load_reference_data(
        write_config(tmp_path, categories=make_categories("city.garbage", "other.general"))
    )

    assert set(data.categories) == {"city.garbage", "other.general"}


def test_an_inline_secret_is_refused_without_echoing_it(tmp_path: Path) -> None:
    departments = make_departments(make_department(env_name="whsec_MfKQ9r8GKYqrTwjUPD8ILPZI"))

    issue = only_issue(write_config(tmp_path, departments=departments))

    assert issue.line == line_with(departments, "secret_env:")
    assert issue.reason.startswith(
        "departments[0].receiver.secret_env: secret_env must be the NAME"
    )
    assert "whsec_" not in issue.reason


def test_credentials_in_the_url_are_refused(tmp_path: Path) -> None:
    url = "https://gridflow:hunter2@example.org/hook"
    departments = make_departments(make_department(url=url))

    issue = only_issue(write_config(tmp_path, departments=departments))

    assert issue.line == line_with(departments, "url:")
    assert issue.reason == (
        "departments[0].receiver.url: url must not contain credentials;"
        " name an env var in secret_env"
    )


def test_a_link_local_url_is_refused_naming_the_field(tmp_path: Path) -> None:
    departments = make_departments(make_department(url="http://169.254.169.254/latest"))

    issue = only_issue(write_config(tmp_path, departments=departments))

    assert issue.line == line_with(departments, "url:")
    assert issue.reason == (
        "departments[0].receiver.url: url refused: host '169.254.169.254'"
        " is a cloud metadata service"
    )


def test_a_corrupted_credit_code_is_refused(tmp_path: Path) -> None:
    departments = make_departments(make_department(code=USCC[:-1] + "Y"))

    issue = only_issue(write_config(tmp_path, departments=departments))

    assert issue.line == line_with(departments, "code: ")
    assert "fails its check digit (expected 'X', got 'Y')" in issue.reason


def test_duplicate_short_codes(tmp_path: Path) -> None:
    departments = make_departments(make_department(), make_department(code=OTHER_USCC))

    issue = only_issue(write_config(tmp_path, departments=departments))

    assert issue.line == line_with(departments, "short_code:", 2)
    assert (
        issue.reason
        == "departments[1].short_code: duplicate short_code 'chengguan' (first at line 5)"
    )


def test_a_partner_platform_is_one_department_entry(tmp_path: Path) -> None:
    platform = "\n      partner: citycare"
    departments = make_departments(
        make_department() + platform, make_department("yingji", code=OTHER_USCC) + platform
    )

    issue = only_issue(write_config(tmp_path, departments=departments))

    assert issue.line == line_with(departments, "partner:", 2)
    assert issue.reason == (
        "departments[1].receiver.partner: duplicate partner 'citycare' (first at line 11)"
    )


def test_the_partner_names_the_department_that_is_its_platform(tmp_path: Path) -> None:
    departments = make_departments(
        make_department(),
        make_department("yingji", code=OTHER_USCC) + "\n      partner: citycare",
    )

    refdata = load_reference_data(write_config(tmp_path, departments=departments))

    assert refdata.partner_department("citycare") == "yingji"
    assert refdata.partner_department("hotline12345") is None


def test_missing_field_points_at_its_parent(tmp_path: Path) -> None:
    categories = "categories:\n  - code: city.garbage\n"

    issue = only_issue(write_config(tmp_path, categories=categories))

    assert (issue.line, issue.reason) == (2, "categories[0].name: required field is missing")


def test_missing_file(tmp_path: Path) -> None:
    issue = only_issue(write_config(tmp_path, routing=None))

    assert issue == ConfigIssue(str(tmp_path / "routing.yaml"), None, "file not found")
    assert str(issue) == f"{tmp_path / 'routing.yaml'}: file not found"


def test_missing_folder(tmp_path: Path) -> None:
    issue = only_issue(tmp_path / "nowhere")

    assert str(issue) == f"{tmp_path / 'nowhere'}: config folder not found"


def test_yaml_syntax_error_has_the_parsers_line(tmp_path: Path) -> None:
    categories = "categories:\n  - code: city.garbage\n    name: [暴露垃圾\n  - code: city.x\n"

    issue = only_issue(write_config(tmp_path, categories=categories))

    assert issue.file == str(tmp_path / "categories.yaml")
    assert issue.line == 4
    assert issue.reason.startswith("YAML syntax error: while parsing a flow sequence")


def test_every_issue_in_every_file_is_reported(tmp_path: Path) -> None:
    grid = make_grid(make_town("43028100", make_village()), make_town("430281002"))
    categories = make_categories("city.garbage", "city.garbage")
    routing = make_routing(
        make_route(department="nobody"),
        make_route("power", match='{category: {prefix: "power."}}'),
    )

    issues = issues_of(write_config(tmp_path, grid=grid, categories=categories, routing=routing))

    assert [(Path(issue.file).name, issue.line) for issue in issues] == [
        ("categories.yaml", 4),
        ("grid.yaml", line_with(grid, '"43028100"')),
        ("routing.yaml", line_with(routing, "department: nobody")),
        ("routing.yaml", line_with(routing, '"power."')),
    ]


def test_check_reports_each_issue_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = make_grid(make_town("43028100", make_village()))
    write_config(tmp_path, grid=grid, routing=make_routing(make_route(department="nobody")))

    status = check.main(["--config", str(tmp_path)])

    out, err = capsys.readouterr()
    assert (status, out) == (1, "")
    assert err.splitlines() == [
        f"{tmp_path / 'grid.yaml'}:{line_with(grid, '43028100')}: towns[0].code: town code must"
        " be 9 digits, got '43028100' (8 characters)",
        f"{tmp_path / 'routing.yaml'}:7: route.routes[0].department: unknown department 'nobody';"
        " known short codes: chengguan",
    ]


def test_routing_version_changes_with_any_edit(tmp_path: Path) -> None:
    before = load_reference_data(write_config(tmp_path)).routing.version
    after = load_reference_data(
        write_config(tmp_path, routing="# a comment\n" + make_routing())
    ).routing.version

    assert before.startswith("v1-") and after.startswith("v1-")
    assert before != after
