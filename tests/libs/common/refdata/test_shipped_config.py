"""The demo city in config/ is valid, has the reference shape and is regenerable."""

from collections import Counter
from pathlib import Path

import pytest

from libs.common.refdata import check
from libs.common.refdata.demo import render_demo_grid
from libs.common.refdata.loader import load_reference_data
from libs.common.refdata.models import GridLevel, ReferenceData, uscc_check_char

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
    assert str(chengguan.receiver.url) == "http://127.0.0.1:8090/departments/chengguan"
    assert chengguan.receiver.secret_env == "GRIDFLOW_WEBHOOK_SECRET_CHENGGUAN"


def test_every_category_group_but_other_is_routed(shipped: ReferenceData) -> None:
    prefixes = [rule.category_prefix for rule in shipped.routing.rules]
    unrouted = [c for c in shipped.categories if not any(c.startswith(p) for p in prefixes)]

    assert unrouted == ["other.general"]
    assert shipped.routing.version.startswith("v1-")


def test_check_accepts_the_shipped_config(capsys: pytest.CaptureFixture[str]) -> None:
    status = check.main(["--config", str(CONFIG)])

    out, err = capsys.readouterr()
    assert (status, err) == (0, "")
    assert out.startswith(
        "OK: 24 towns, 271 villages, 820 unit grids, 8 departments, 17 categories,"
        " 8 routing rules (version v1-"
    )


def test_unit_grid_codes_nest_in_their_village(shipped: ReferenceData) -> None:
    grid = shipped.grid

    for unit in grid.unit_grids:
        village = grid.node(unit.parent_code or "")
        assert village.level is GridLevel.VILLAGE
        assert unit.code.startswith(village.code)
