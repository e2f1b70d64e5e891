"""The demo city in config/ is valid, has the reference shape and is regenerable."""

from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest

from libs.common.refdata import check
from libs.common.refdata.demo import CITY_BOX, render_demo_grid, render_demo_polygons
from libs.common.refdata.gridmap import Bounds, GridPolygon
from libs.common.refdata.loader import load_reference_data
from libs.common.refdata.models import (
    CategoryForm,
    GridLevel,
    ReferenceData,
    WebhookReceiver,
    uscc_check_char,
)

CONFIG = Path(__file__).resolve().parents[4] / "config"


@pytest.fixture(scope="module")
def shipped() -> ReferenceData:
    return load_reference_data(CONFIG)


def test_the_demo_city_has_the_reference_shape(shipped: ReferenceData) -> None:
    grid = shipped.grid

    shape = (len(grid.sectors), len(grid.towns), len(grid.villages), len(grid.unit_grids))
    assert shape == (5, 24, 271, 820)
    assert grid.city.code == "430281"
    assert len(grid) == 1 + 24 + 271 + 820


def test_every_town_and_village_has_children(shipped: ReferenceData) -> None:
    grid = shipped.grid

    assert all(grid.children(town.code) for town in grid.towns)
    assert all(grid.children(village.code) for village in grid.villages)
    assert len({len(grid.children(town.code)) for town in grid.towns}) > 5, "uneven on purpose"


def test_every_sector_has_towns(shipped: ReferenceData) -> None:
    towns_per_sector = Counter(shipped.grid.sector_of(town.code).id for town in shipped.grid.towns)

    assert sorted(towns_per_sector) == ["S1", "S2", "S3", "S4", "S5"]


def test_the_generator_reproduces_grid_yaml_byte_for_byte() -> None:
    assert render_demo_grid().encode("utf-8") == (CONFIG / "grid.yaml").read_bytes()


def test_the_generator_reproduces_grid_polygons_byte_for_byte() -> None:
    committed = (CONFIG / "grid_polygons.geojson").read_bytes()

    assert render_demo_polygons().encode("utf-8") == committed
    assert len(committed) < 400_000
    assert len(committed.splitlines()) == 1 + 820 + 1, "one feature per line"


def test_demo_department_codes_are_valid_credit_codes(shipped: ReferenceData) -> None:
    codes = [department.code for department in shipped.departments.values()]

    assert all(uscc_check_char(code[:17]) == code[17] for code in codes)
    assert shipped.departments["gongdian"].code.startswith("91")
    assert all(
        code.startswith("11") for code in codes if code != shipped.departments["gongdian"].code
    )


def test_departments_by_short_code_and_by_credit_code(shipped: ReferenceData) -> None:
    chengguan = shipped.departments["chengguan"]

    assert shipped.department_by_code(chengguan.code) == chengguan
    assert shipped.department_by_code("914302810000000000") is None
    assert isinstance(chengguan.receiver, WebhookReceiver)
    assert chengguan.receiver.allow_private  # the demo receiver listens on 127.0.0.1
    assert str(chengguan.receiver.url) == "http://127.0.0.1:8090/departments/chengguan"
    assert chengguan.receiver.secret_env == "GRIDFLOW_WEBHOOK_SECRET_CHENGGUAN"


def test_every_category_group_but_other_has_a_department(shipped: ReferenceData) -> None:
    # The department each category gets is asserted in tests/services/dispatch/test_routing.py.
    matches = [node.match for _, node in shipped.routing.walk() if node.department and node.match]
    prefixes = [m.category_prefix or m.category for m in matches if m.category_prefix or m.category]
    unrouted = [c for c in shipped.categories if not any(c.startswith(p or "") for p in prefixes)]

    assert unrouted == ["other.general"]
    assert shipped.routing.version.startswith("v4-")
    assert shipped.routing.root.department is None, "no match means triage"
    assert set(shipped.routing.time_windows) == {"office_hours", "nights", "rest_days"}


def test_category_forms(shipped: ReferenceData) -> None:
    forms = {code: category.form for code, category in shipped.categories.items()}

    assert forms["safety.hazard"] is forms["safety.fire"] is CategoryForm.HAZARD
    assert {forms[c] for c in forms if c.startswith("dispute.")} == {CategoryForm.DISPUTE}
    assert {forms[c] for c in forms if c.startswith("service.")} == {CategoryForm.SERVICE}
    assert forms["city.garbage"] is CategoryForm.INCIDENT


def test_the_28_service_items_file_under_service_categories(shipped: ReferenceData) -> None:
    items = shipped.service_items

    assert len(items) == 28
    assert {shipped.categories[item.category].form for item in items.values()} == {
        CategoryForm.SERVICE
    }
    assert all(item.documents for item in items.values())
    pension = items["resident_pension_enrolment"]
    assert (pension.name, pension.time_limit_days) == ("城乡居民基本养老保险参保登记", 0)


def test_open311_offers_reports_not_proxy_services(shipped: ReferenceData) -> None:
    open311 = shipped.open311

    assert sorted(open311.clients) == ["resident-app", "video-ai"]
    assert open311.clients["video-ai"].key_env == "GRIDFLOW_OPEN311_KEY_VIDEO_AI"
    assert len(open311.services) == 8
    forms = {shipped.categories[service.category].form for service in open311.services}
    assert CategoryForm.SERVICE not in forms


def test_check_accepts_the_shipped_config(capsys: pytest.CaptureFixture[str]) -> None:
    status = check.main(["--config", str(CONFIG)])

    out, err = capsys.readouterr()
    assert (status, err) == (0, "")
    version = load_reference_data(CONFIG).routing.version
    assert out == (
        "OK: 24 towns, 271 villages, 820 unit grids, 820 grid polygons, 9 departments,"
        f" 27 categories, 21 routes (version {version}), 28 service items,"
        " 2 Open311 clients, 8 Open311 services;"
        " calendar: 23 official years (2004–2026), 0 closures\n"
    )


# --- the map ------------------------------------------------------------------------------------


def centroid(polygon: GridPolygon) -> tuple[float, float]:
    """Area centroid (lat, lon) of the polygon's first exterior ring (shoelace formula)."""
    ring = polygon.parts[0][0]
    twice_area = cx = cy = 0.0
    for (x1, y1), (x2, y2) in pairwise(ring):
        cross = x1 * y2 - x2 * y1
        twice_area += cross
        cx += (x1 + x2) * cross
        cy += (y1 + y2) * cross
    return cy / (3 * twice_area), cx / (3 * twice_area)


def test_every_unit_grid_has_a_polygon_and_its_centroid_locates_to_it(
    shipped: ReferenceData,
) -> None:
    grid_map = shipped.grid_map
    units = [unit.code for unit in shipped.grid.unit_grids]

    assert sorted(grid_map.codes) == sorted(units)
    wrong = [code for code in units if grid_map.locate(*centroid(grid_map.polygon(code))) != code]
    assert wrong == []


def test_the_map_spans_the_city_box(shipped: ReferenceData) -> None:
    west, south, east, north = CITY_BOX

    assert shipped.grid_map.bounds == Bounds(
        min_lat=south, min_lon=west, max_lat=north, max_lon=east
    )
    assert shipped.grid_map.locate(28.2, 113.5) is None
    assert shipped.grid_map.locate(27.9, 113.2) is None
    assert shipped.grid_map.locate(27.9, 113.55) is not None


def test_towns_and_villages_are_contiguous_blocks(shipped: ReferenceData) -> None:
    grid, grid_map = shipped.grid, shipped.grid_map
    blocks = {village.code: grid.children(village.code) for village in grid.villages}
    for town in grid.towns:
        blocks[town.code] = tuple(u for v in grid.children(town.code) for u in blocks[v.code])
    for code, units in blocks.items():
        boxes = [grid_map.polygon(u.code).bounds for u in units]
        block_area = (max(b.max_lat for b in boxes) - min(b.min_lat for b in boxes)) * (
            max(b.max_lon for b in boxes) - min(b.min_lon for b in boxes)
        )
        area = sum((b.max_lat - b.min_lat) * (b.max_lon - b.min_lon) for b in boxes)
        assert area == pytest.approx(block_area), f"{code} has holes or strays"


def test_a_point_on_a_shared_edge_belongs_to_exactly_one_grid(shipped: ReferenceData) -> None:
    grid_map = shipped.grid_map
    polygons = [grid_map.polygon(code) for code in grid_map.codes]
    west = polygons[0]
    east = next(p for p in polygons if p.bounds.min_lon == west.bounds.max_lon)
    low = max(west.bounds.min_lat, east.bounds.min_lat)
    high = min(west.bounds.max_lat, east.bounds.max_lat)
    lat, lon = (low + high) / 2, west.bounds.max_lon

    holders = [p.code for p in polygons if p.contains(lat, lon)]
    assert len(holders) == 1
    assert grid_map.locate(lat, lon) == holders[0] in {west.code, east.code}


def test_unit_grid_codes_nest_in_their_village(shipped: ReferenceData) -> None:
    grid = shipped.grid

    for unit in grid.unit_grids:
        village = grid.node(unit.parent_code or "")
        assert village.level is GridLevel.VILLAGE
        assert unit.code.startswith(village.code)
