"""grid_polygons.geojson: loaded into the grid map, every problem at its feature's line."""

from pathlib import Path

import pytest

from libs.common.refdata.loader import ConfigIssue, load_reference_data
from tests.libs.common.refdata.factories import (
    TOWN,
    UNIT,
    VILLAGE,
    Ring,
    issues_of,
    line_with,
    make_box,
    make_feature,
    make_grid,
    make_polygons,
    make_town,
    make_unit,
    make_village,
    only_issue,
    write_config,
)

OTHER_UNIT = "430281001001002"
STRAY = "430281001001009"


def make_l_ring(west: float = 113.3, south: float = 27.7, size: float = 0.01) -> Ring:
    """An L: a square of side 2 × size without its north-east quarter."""
    mid_lon, mid_lat, east, north = west + size, south + size, west + 2 * size, south + 2 * size
    return [
        [west, south],
        [east, south],
        [east, mid_lat],
        [mid_lon, mid_lat],
        [mid_lon, north],
        [west, north],
        [west, south],
    ]


def polygons_file(config_dir: Path) -> str:
    return str(config_dir / "grid_polygons.geojson")


def test_an_l_shaped_grid_is_located_and_its_notch_is_not(tmp_path: Path) -> None:
    polygons = make_polygons(make_feature(UNIT, make_l_ring()))

    grid_map = load_reference_data(write_config(tmp_path, polygons=polygons)).grid_map

    assert grid_map.locate(27.705, 113.305) == UNIT
    assert grid_map.locate(27.705, 113.315) == UNIT
    assert grid_map.locate(27.715, 113.305) == UNIT
    assert grid_map.locate(27.715, 113.315) is None
    assert grid_map.locate(27.5, 113.305) is None


def test_a_multipolygon_grid_is_accepted(tmp_path: Path) -> None:
    geometry = {"type": "MultiPolygon", "coordinates": [[make_box()], [make_box(113.5)]]}
    polygons = make_polygons(make_feature(UNIT, geometry=geometry))

    grid_map = load_reference_data(write_config(tmp_path, polygons=polygons)).grid_map

    assert grid_map.locate(27.705, 113.505) == grid_map.locate(27.705, 113.305) == UNIT
    assert grid_map.locate(27.705, 113.405) is None


def test_an_unknown_code_is_refused_at_its_feature_line(tmp_path: Path) -> None:
    polygons = make_polygons(make_feature(), make_feature(STRAY))

    issue = only_issue(write_config(tmp_path, polygons=polygons))

    assert issue == ConfigIssue(
        polygons_file(tmp_path),
        line_with(polygons, STRAY),
        f"features[1].properties.code: unknown unit grid '{STRAY}': not in grid.yaml",
    )


def test_a_duplicate_code_names_both_lines(tmp_path: Path) -> None:
    polygons = make_polygons(make_feature(), make_feature())

    issue = only_issue(write_config(tmp_path, polygons=polygons))

    assert (issue.file, issue.line) == (polygons_file(tmp_path), 3)
    assert issue.reason == f"features[1].properties.code: duplicate code '{UNIT}' (first at line 2)"


def test_a_unit_grid_without_a_polygon_is_reported(tmp_path: Path) -> None:
    grid = make_grid(make_town(TOWN, make_village(VILLAGE, make_unit(UNIT), make_unit(OTHER_UNIT))))

    issue = only_issue(write_config(tmp_path, grid=grid))

    assert issue == ConfigIssue(
        polygons_file(tmp_path),
        None,
        f"no polygon for unit grid '{OTHER_UNIT}' (grid.yaml line {line_with(grid, OTHER_UNIT)})",
    )


@pytest.mark.parametrize(
    ("ring", "reason"),
    [
        (make_box()[:-1], "ring is not closed: its last position must repeat its first"),
        (
            [[113.3, 27.7], [113.4, 27.7], [113.3, 27.7]],
            "a linear ring needs at least 4 positions, got 3",
        ),
    ],
)
def test_a_bad_ring_is_refused_at_its_feature_line(tmp_path: Path, ring: Ring, reason: str) -> None:
    polygons = make_polygons(make_feature(STRAY), make_feature(UNIT, ring))

    issues = issues_of(write_config(tmp_path, polygons=polygons))

    assert [(issue.file, issue.line, issue.reason) for issue in issues] == [
        (polygons_file(tmp_path), 3, f"features[1].geometry.Polygon.coordinates[0]: {reason}")
    ]


def test_coordinates_out_of_range_are_refused(tmp_path: Path) -> None:
    ring = [[113.3, 27.7], [213.4, 27.7], [113.4, 97.8], [113.3, 27.7]]
    polygons = make_polygons(make_feature(UNIT, ring))

    issues = issues_of(write_config(tmp_path, polygons=polygons))

    assert [(issue.line, issue.reason) for issue in issues] == [
        (
            2,
            "features[0].geometry.Polygon.coordinates[0][1]: longitude 213.4 is outside [-180, 180]",
        ),
        (2, "features[0].geometry.Polygon.coordinates[0][2]: latitude 97.8 is outside [-90, 90]"),
    ]


def test_a_file_that_is_not_a_feature_collection_is_refused(tmp_path: Path) -> None:
    issue = only_issue(write_config(tmp_path, polygons=make_polygons(collection="Feature")))

    assert issue == ConfigIssue(
        polygons_file(tmp_path), 1, "type: Input should be 'FeatureCollection'"
    )


def test_a_point_geometry_is_refused(tmp_path: Path) -> None:
    point = {"type": "Point", "coordinates": [113.3, 27.7]}
    polygons = make_polygons(make_feature(UNIT, geometry=point))

    issue = only_issue(write_config(tmp_path, polygons=polygons))

    assert issue.line == 2
    assert issue.reason.startswith("features[0].geometry: Input tag 'Point' found using 'type'")


def test_invalid_json_has_the_line_where_the_parser_stopped(tmp_path: Path) -> None:
    broken = make_feature(OTHER_UNIT).replace('"code":', '"code"')
    polygons = make_polygons(make_feature(), broken, make_feature(STRAY))

    issue = only_issue(write_config(tmp_path, polygons=polygons))

    assert issue == ConfigIssue(
        polygons_file(tmp_path), 3, "invalid JSON: expected ':' after a property name"
    )


def test_a_duplicate_json_key_is_refused(tmp_path: Path) -> None:
    polygons = make_polygons(make_feature()).replace(
        '"type":"Feature",', '"type":"Feature","type":"Feature",'
    )

    issue = only_issue(write_config(tmp_path, polygons=polygons))

    assert (issue.line, issue.reason) == (2, "duplicate key 'type' (first at line 2)")


def test_a_missing_polygons_file_is_reported_like_any_missing_file(tmp_path: Path) -> None:
    issue = only_issue(write_config(tmp_path, polygons=None))

    assert issue == ConfigIssue(polygons_file(tmp_path), None, "file not found")
