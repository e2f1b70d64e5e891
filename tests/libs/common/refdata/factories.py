"""Small builders of reference-data files, each valid unless told otherwise."""

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from libs.common.refdata.loader import ConfigError, ConfigIssue, load_reference_data

USCC = "11430281006145200X"  # a valid code, the demo 城管 department's
OTHER_USCC = "114302810061453747"
CITY = "430281"
TOWN = "430281001"
VILLAGE = "430281001001"
UNIT = "430281001001001"


def make_unit(code: str = UNIT) -> str:
    person = "{name: 李四, title: 网格长}"
    return f'          - {{code: "{code}", name: 第一网格, responsible: {person}}}'


def make_village(code: str = VILLAGE, *units: str, kind: str = "community") -> str:
    return "\n".join(
        [
            f'      - code: "{code}"',
            "        name: 建设社区",
            f"        kind: {kind}",
            "        responsible: {name: 王五, title: 社区书记}",
            "        grids:",
            *(units or [make_unit(code + "001")]),
        ]
    )


def make_town(
    code: str = TOWN, *villages: str, kind: str = "subdistrict", sector: str = "S1"
) -> str:
    return "\n".join(
        [
            f'  - code: "{code}"',
            "    name: 龙泉街道",
            f"    kind: {kind}",
            f"    sector: {sector}",
            "    responsible: {name: 赵六, title: 街道党工委书记}",
            "    villages:",
            *(villages or [make_village(code + "001")]),
        ]
    )


def make_grid(*towns: str, city_code: str = CITY) -> str:
    lines = [
        "city:",
        f'  code: "{city_code}"',
        "  name: 示范市",
        "  responsible: {name: 张三, title: 市委书记}",
        "sectors:",
        "  - id: S1",
        "    name: 中心城区片区",
        "    responsible: {name: 钱七, title: 市委副书记}",
        "towns:",
        *(towns or [make_town()]),
    ]
    return "\n".join(lines) + "\n"


def make_department(
    short_code: str = "chengguan",
    *,
    code: str = USCC,
    url: str = "http://127.0.0.1:8090/departments/chengguan",
    env_name: str = "GRIDFLOW_WEBHOOK_SECRET_CHENGGUAN",
) -> str:
    return "\n".join(
        [
            f'  - code: "{code}"',
            "    name: 示范市城市管理和综合执法局",
            "    short_name: 城管",
            f"    short_code: {short_code}",
            "    receiver:",
            "      kind: webhook",
            "      allow_private: true",
            f"      url: {url}",
            f"      secret_env: {env_name}",
        ]
    )


def make_departments(*departments: str) -> str:
    return "departments:\n" + "\n".join(departments or [make_department()]) + "\n"


def make_categories(*codes: str, forms: Mapping[str, str] | None = None) -> str:
    """Categories named 暴露垃圾; `forms` gives some of them a `form`."""
    entries = []
    for code in codes or ["city.garbage"]:
        entries.append(f"  - code: {code}\n    name: 暴露垃圾")
        if forms and code in forms:
            entries.append(f"    form: {forms[code]}")
    return "categories:\n" + "\n".join(entries) + "\n"


def make_route(
    route_id: str = "city-to-chengguan",
    *lines: str,
    match: str | None = '{category: {prefix: "city."}}',
    department: str | None = "chengguan",
    routes: Sequence[str] = (),
) -> str:
    """One entry of the root's `routes:`; `lines` are more fields ("continue: true"), `routes`
    its children (made by this function too)."""
    fields = [f"id: {route_id}"]
    if match is not None:
        fields.append(f"match: {match}")
    if department is not None:
        fields.append(f"department: {department}")
    fields += lines
    text = ["    - " + fields[0], *("      " + field for field in fields[1:])]
    if routes:
        text.append("      routes:")
        text += ["    " + line for child in routes for line in child.splitlines()]
    return "\n".join(text)


WINDOWS = """time_windows:
  office_hours: {weekdays: [mon, tue, wed, thu, fri], hours: ["08:30-12:00", "14:00-17:30"]}
  nights: {hours: ["20:00-08:00"], timezone: Asia/Shanghai}
  rest_days: {holidays: true}
"""


def make_routing(*routes: str, windows: str = "", version: int = 1, root: str = "") -> str:
    """A routing file: `version`, then `windows` (the `time_windows:` block), then the root
    route (`root` adds lines to it, each indented two spaces) with `routes`."""
    return (
        f"version: {version}\n{windows}route:\n  id: root\n{root}  routes:\n"
        + "\n".join(routes or [make_route()])
        + "\n"
    )


# --- grid_polygons.geojson: one feature per line, feature i on line i + 2 -----------------------

Ring = list[list[float]]


def make_box(west: float = 113.3, south: float = 27.7, size: float = 0.01) -> Ring:
    """A closed counterclockwise square ring."""
    east, north = west + size, south + size
    return [[west, south], [east, south], [east, north], [west, north], [west, south]]


def make_feature(
    code: str = UNIT, *rings: Ring, geometry: Mapping[str, object] | None = None
) -> str:
    """One compact feature: a Polygon of `rings` (default one square), or `geometry` as given."""
    shape = geometry or {"type": "Polygon", "coordinates": list(rings or [make_box()])}
    feature = {"type": "Feature", "properties": {"code": code}, "geometry": shape}
    return json.dumps(feature, ensure_ascii=False, separators=(",", ":"))


def make_polygons(*features: str, collection: str = "FeatureCollection") -> str:
    body = ",\n".join(features or [make_feature()])
    return f'{{"type":"{collection}","features":[\n{body}\n]}}\n'


# --- service_items.yaml and open311.yaml --------------------------------------------------------


def make_service_item(
    code: str = "minimum_living_allowance",
    *,
    category: str = "service.civil_affairs",
    documents: str = "[居民身份证, 户口簿]",
) -> str:
    return "\n".join(
        [
            f"  - code: {code}",
            "    name: 最低生活保障申请",
            f"    category: {category}",
            f"    documents: {documents}",
            "    time_limit_days: 30",
        ]
    )


def make_service_items(*items: str) -> str:
    return "items:\n" + "\n".join(items) + "\n" if items else "items: []\n"


def make_client(
    client_id: str = "resident-app", *, key_env: str = "GRIDFLOW_OPEN311_KEY_RESIDENT_APP"
) -> str:
    return f"  - id: {client_id}\n    name: 示范市民生通\n    key_env: {key_env}"


def make_open311_service(category: str = "city.garbage") -> str:
    return f"  - category: {category}\n    group: 市容环境\n    keywords: [垃圾, 卫生]"


def make_open311(clients: Sequence[str] = (), services: Sequence[str] = ()) -> str:
    def section(name: str, entries: Sequence[str]) -> str:
        return f"{name}:\n" + "\n".join(entries) if entries else f"{name}: []"

    return section("clients", clients) + "\n" + section("services", services) + "\n"


FILE_NAMES = {
    "grid": "grid.yaml",
    "departments": "departments.yaml",
    "categories": "categories.yaml",
    "routing": "routing.yaml",
    "polygons": "grid_polygons.geojson",
    "service_items": "service_items.yaml",
    "open311": "open311.yaml",
}


def write_config(directory: Path, **files: str | None) -> Path:
    """A valid minimal config; `grid=...` etc. replaces that file, `None` leaves it out."""
    contents: dict[str, str | None] = {
        "grid": make_grid(),
        "departments": make_departments(),
        "categories": make_categories(),
        "routing": make_routing(),
        "polygons": make_polygons(),
        "service_items": make_service_items(),
        "open311": make_open311(),
    }
    contents.update(files)
    for name, text in contents.items():
        if text is not None:
            (directory / FILE_NAMES[name]).write_text(text, encoding="utf-8")
    return directory


def line_with(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based number of the line holding the `occurrence`-th `needle`."""
    numbers = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    return numbers[occurrence - 1]


def issues_of(config_dir: Path) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        load_reference_data(config_dir)
    return caught.value.issues


def only_issue(config_dir: Path) -> ConfigIssue:
    issues = issues_of(config_dir)
    assert len(issues) == 1, issues
    return issues[0]
