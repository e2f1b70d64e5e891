"""Deterministic generator of the demo city's grid tree and unit-grid polygons.

    python -m libs.common.refdata.demo --out config/grid.yaml \
        --polygons-out config/grid_polygons.geojson

The demo city has the reference shape of a county-level city: 5 sectors, 24 towns and
sub-districts, 271 villages and communities, 820 unit grids. Names are fictional, and so is the
map: the city is the box lon 113.30-113.80, lat 27.70-28.10 (in Hunan), cut into rectangles so
that each town is one block, each village a block inside its town and each unit grid a block
inside its village, with no gaps and no overlaps.
"""

import argparse
import json
import random
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from libs.common.refdata.models import (
    TOWN_SEQUENCES,
    VILLAGE_SEQUENCES,
    TownKind,
    VillageKind,
)

SEED = 20261127
CITY_CODE = "430281"
CITY_NAME = "示范市"
VILLAGE_TOTAL = 271
UNIT_GRID_TOTAL = 820
CITY_BOX = (113.30, 27.70, 113.80, 28.10)  # west, south, east, north (WGS-84 degrees)
LON_SCALE = 0.883  # km per degree of longitude over km per degree of latitude, at 28° N
COORDINATE_DECIMALS = 6  # about 0.1 m; cuts are rounded once, so neighbours share exact edges
# A village grid covers more ground than a community grid: fields and hills against streets.
GRID_AREA = {VillageKind.COMMUNITY: 1, VillageKind.VILLAGE: 5}

SECTORS = (
    ("S1", "中心城区片区", "市委副书记"),
    ("S2", "东部片区", "常务副市长"),
    ("S3", "南部片区", "副市长"),
    ("S4", "西部片区", "副市长"),
    ("S5", "北部片区", "市委常委、政法委书记"),
)
SUBDISTRICTS = ("龙泉", "金桥", "湘江", "书院", "东岳", "白鹭")
TOWNS = (
    "青山", "石门", "桃花", "双江", "柳塘", "高桥", "枫林",
    "马鞍", "凤凰", "长岭", "新塘", "杨林", "黄土岭", "荷花",
)  # fmt: skip
TOWNSHIPS = ("梅溪", "松柏", "云台", "官庄")
TOWN_STYLES = {
    # kind: (name suffix, leader's title, weight range for the number of villages)
    TownKind.SUBDISTRICT: ("街道", "街道党工委书记", (5, 14)),
    TownKind.TOWN: ("镇", "镇党委书记", (8, 20)),
    TownKind.TOWNSHIP: ("乡", "乡党委书记", (4, 10)),
}
VILLAGE_FIRST = "金银石竹桃李杨柳梅松枫荷莲青白黄红高长新大小上下东西南北中前后龙凤马鹤鹿泉"
VILLAGE_SECOND = "山塘湾冲坪桥岭湖溪坡田园林坝洲港岗铺庄垅垸坳"
COMMUNITY_ROOTS = (
    "建设", "人民", "解放", "新华", "文化", "胜利", "和平", "友谊", "光明", "朝阳",
    "幸福", "团结", "振兴", "育才", "迎宾", "滨江", "花园", "锦绣", "春晖", "金霞",
    "书香", "翠竹", "紫荆", "丹桂", "银杏", "桂花", "芙蓉", "玉兰", "清水", "望城",
)  # fmt: skip
COMMUNITY_SUFFIXES = ("", "路", "街", "里", "苑", "园")
SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程"
    "苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦方白邹孟熊秦邱江尹薛段雷侯龙史陶黎贺顾毛郝龚"
)
GIVEN_NAMES = (
    "建国", "国强", "志明", "秀英", "桂兰", "海燕", "丽华", "伟", "芳", "敏", "静", "强", "磊",
    "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超", "秀兰", "霞", "平", "刚", "桂英",
    "建华", "建军", "红梅", "小红", "春生", "德明", "文革", "卫东", "志刚", "玉梅", "俊", "斌",
    "立新", "爱民", "湘平", "湘云", "冬梅", "志强", "晓燕", "国华", "永红", "海波", "亚军",
    "新民", "跃进", "雪梅", "丽娟", "振华", "明亮", "春花", "铁军", "向阳", "长青",
)  # fmt: skip
_DIGITS = "一二三四五六七八九"
_PLAIN = re.compile(r"^[\u4e00-\u9fff\u3001A-Za-z][\u4e00-\u9fff\u3001A-Za-z0-9]*$")


@dataclass(frozen=True)
class DemoPerson:
    name: str
    title: str


@dataclass(frozen=True)
class DemoUnit:
    code: str
    name: str
    responsible: DemoPerson


@dataclass(frozen=True)
class DemoVillage:
    code: str
    name: str
    kind: VillageKind
    responsible: DemoPerson
    grids: tuple[DemoUnit, ...]


@dataclass(frozen=True)
class DemoTown:
    code: str
    name: str
    kind: TownKind
    sector: str
    responsible: DemoPerson
    villages: tuple[DemoVillage, ...]


def apportion(total: int, weights: Sequence[int]) -> list[int]:
    """Split `total` into shares of at least 1 in proportion to `weights` (largest remainder)."""
    spare, weight_sum = total - len(weights), sum(weights)
    if spare < 0 or weight_sum <= 0:
        raise ValueError(f"cannot split {total} into {len(weights)} positive shares")
    shares = [spare * weight // weight_sum for weight in weights]
    remainders = [spare * weight % weight_sum for weight in weights]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    for i in by_remainder[: spare - sum(shares)]:
        shares[i] += 1
    return [1 + share for share in shares]


def chinese_number(n: int) -> str:
    """1..99 in Chinese numerals: 1 -> 一, 10 -> 十, 21 -> 二十一."""
    if not 1 <= n <= 99:
        raise ValueError(f"{n} is outside 1..99")
    tens, ones = divmod(n, 10)
    prefix = "" if tens == 0 else ("十" if tens == 1 else _DIGITS[tens - 1] + "十")
    return prefix + ("" if ones == 0 else _DIGITS[ones - 1])


def _sequences(allowed: range) -> Iterator[int]:
    # Like published division codes, skip the round x00 (towns start at 101, villages at 201).
    return (n for n in allowed if n % 100)


class _DemoCity:
    """Draws the demo tree from one seeded generator, in a fixed order."""

    def __init__(self) -> None:
        self._rng = random.Random(SEED)  # noqa: S311 - fictional demo data, not security
        villages = [a + b for a in VILLAGE_FIRST for b in VILLAGE_SECOND]
        communities = [a + b for a in COMMUNITY_ROOTS for b in COMMUNITY_SUFFIXES]
        self._village_names = iter(self._rng.sample(villages, len(villages)))
        self._community_names = iter(self._rng.sample(communities, len(communities)))

    def person(self, title: str) -> DemoPerson:
        return DemoPerson(self._rng.choice(SURNAMES) + self._rng.choice(GIVEN_NAMES), title)

    def towns(self) -> list[DemoTown]:
        kinds = [
            *((TownKind.SUBDISTRICT, name) for name in SUBDISTRICTS),
            *((TownKind.TOWN, name) for name in TOWNS),
            *((TownKind.TOWNSHIP, name) for name in TOWNSHIPS),
        ]
        village_counts = apportion(
            VILLAGE_TOTAL, [self._rng.randint(*TOWN_STYLES[kind][2]) for kind, _ in kinds]
        )
        plans = [
            (kind, root, self._community_count(kind, count))
            for (kind, root), count in zip(kinds, village_counts, strict=True)
        ]
        village_kinds = [
            [VillageKind.COMMUNITY] * communities + [VillageKind.VILLAGE] * (count - communities)
            for (_, _, communities), count in zip(plans, village_counts, strict=True)
        ]
        grid_counts = iter(
            apportion(UNIT_GRID_TOTAL, [self._grid_weight(k) for ks in village_kinds for k in ks])
        )
        sequences = {kind: _sequences(TOWN_SEQUENCES[kind]) for kind in TownKind}
        return [
            self._town(
                kind=kind,
                root=root,
                sequence=next(sequences[kind]),
                index=index,
                village_kinds=kinds_here,
                grid_counts=grid_counts,
            )
            for index, ((kind, root, _), kinds_here) in enumerate(
                zip(plans, village_kinds, strict=True)
            )
        ]

    def _community_count(self, kind: TownKind, villages: int) -> int:
        # Sub-districts are mostly communities with a few urban-fringe villages; towns have a
        # community or two around the town centre; townships are villages.
        if kind is TownKind.SUBDISTRICT:
            return max(1, villages - self._rng.randint(0, 3))
        if kind is TownKind.TOWN:
            return min(villages, self._rng.randint(1, 2))
        return min(villages - 1, self._rng.randint(0, 1))

    def _grid_weight(self, kind: VillageKind) -> int:
        return (
            self._rng.randint(4, 14) if kind is VillageKind.COMMUNITY else self._rng.randint(1, 7)
        )

    def _town(
        self,
        *,
        kind: TownKind,
        root: str,
        sequence: int,
        index: int,
        village_kinds: list[VillageKind],
        grid_counts: Iterator[int],
    ) -> DemoTown:
        suffix, title, _ = TOWN_STYLES[kind]
        code = f"{CITY_CODE}{sequence:03d}"
        sector = "S1" if kind is TownKind.SUBDISTRICT else SECTORS[1 + index % 4][0]
        responsible = self.person(title)
        sequences = {vkind: _sequences(VILLAGE_SEQUENCES[vkind]) for vkind in VillageKind}
        villages = tuple(
            self._village(code, village_kind, next(sequences[village_kind]), next(grid_counts))
            for village_kind in village_kinds
        )
        return DemoTown(code, root + suffix, kind, sector, responsible, villages)

    def _village(self, town_code: str, kind: VillageKind, sequence: int, grids: int) -> DemoVillage:
        code = f"{town_code}{sequence:03d}"
        if kind is VillageKind.COMMUNITY:
            name, title = next(self._community_names) + "社区", "社区书记"
        else:
            name, title = next(self._village_names) + "村", "村支书"
        responsible = self.person(title)
        units = tuple(
            DemoUnit(f"{code}{n:03d}", f"{name}第{chinese_number(n)}网格", self.person("网格长"))
            for n in range(1, grids + 1)
        )
        return DemoVillage(code, name, kind, responsible, units)


@dataclass(frozen=True)
class DemoCity:
    responsible: DemoPerson
    sectors: tuple[tuple[str, str, DemoPerson], ...]  # id, name, leader
    towns: tuple[DemoTown, ...]


def draw_demo_city() -> DemoCity:
    """The whole demo tree, drawn in the one order that render_demo_grid has always used."""
    city = _DemoCity()
    responsible = city.person("市委书记")
    sectors = tuple((sid, name, city.person(title)) for sid, name, title in SECTORS)
    return DemoCity(responsible, sectors, tuple(city.towns()))


def _text(value: str) -> str:
    return value if _PLAIN.fullmatch(value) else json.dumps(value, ensure_ascii=False)


def _person(person: DemoPerson) -> str:
    return f"{{name: {_text(person.name)}, title: {_text(person.title)}}}"


def _town_lines(town: DemoTown) -> Iterator[str]:
    yield f'  - code: "{town.code}"'
    yield f"    name: {_text(town.name)}"
    yield f"    kind: {town.kind}"
    yield f"    sector: {town.sector}"
    yield f"    responsible: {_person(town.responsible)}"
    yield "    villages:"
    for village in town.villages:
        yield f'      - code: "{village.code}"'
        yield f"        name: {_text(village.name)}"
        yield f"        kind: {village.kind}"
        yield f"        responsible: {_person(village.responsible)}"
        yield "        grids:"
        for unit in village.grids:
            yield (
                f'          - {{code: "{unit.code}", name: {_text(unit.name)},'
                f" responsible: {_person(unit.responsible)}}}"
            )


def render_demo_grid() -> str:
    """The demo grid.yaml, identical on every run."""
    city = draw_demo_city()
    lines = [
        "# Demo grid tree of the fictional 示范市 (county code 430281); all names are invented.",
        "# Generated: python -m libs.common.refdata.demo --out config/grid.yaml (do not edit).",
        "city:",
        f'  code: "{CITY_CODE}"',
        f"  name: {CITY_NAME}",
        f"  responsible: {_person(city.responsible)}",
        "sectors:",
    ]
    for sector_id, name, person in city.sectors:
        lines += [
            f"  - id: {sector_id}",
            f"    name: {_text(name)}",
            f"    responsible: {_person(person)}",
        ]
    lines.append("towns:")
    for town in city.towns:
        lines += _town_lines(town)
    return "\n".join(lines) + "\n"


# --- the map ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    west: float
    south: float
    east: float
    north: float

    def ring(self) -> list[list[float]]:
        """The closed exterior ring, counterclockwise as RFC 7946 asks."""
        corners = [[self.west, self.south], [self.east, self.south], [self.east, self.north]]
        return [*corners, [self.west, self.north], [self.west, self.south]]


def slice_box(box: Box, weights: Sequence[int]) -> list[Box]:
    """Cut `box` into one box per weight, areas in proportion, neighbours in order.

    Halves the list where the weight splits most evenly and cuts the box across its longer side
    (in kilometres), recursively, so the pieces stay squarish and consecutive weights adjoin.
    """
    if len(weights) == 1:
        return [box]
    total = sum(weights)
    running = [sum(weights[:k]) for k in range(1, len(weights))]
    k = 1 + min(range(len(running)), key=lambda i: (abs(2 * running[i] - total), i))
    share = running[k - 1] / total
    if (box.east - box.west) * LON_SCALE >= box.north - box.south:
        cut = round(box.west + (box.east - box.west) * share, COORDINATE_DECIMALS)
        first, second = (
            Box(box.west, box.south, cut, box.north),
            Box(cut, box.south, box.east, box.north),
        )
    else:
        cut = round(box.south + (box.north - box.south) * share, COORDINATE_DECIMALS)
        first, second = (
            Box(box.west, box.south, box.east, cut),
            Box(box.west, cut, box.east, box.north),
        )
    if not (first.west < first.east and first.south < first.north) or not (
        second.west < second.east and second.south < second.north
    ):
        raise ValueError(f"{box} is too small to cut at {COORDINATE_DECIMALS} decimals")
    return slice_box(first, weights[:k]) + slice_box(second, weights[k:])


def demo_grid_boxes(towns: Sequence[DemoTown]) -> dict[str, Box]:
    """The box of every unit grid, by code: towns tile the city, villages their town, and so on."""
    boxes: dict[str, Box] = {}
    town_weights = [
        sum(GRID_AREA[village.kind] * len(village.grids) for village in town.villages)
        for town in towns
    ]
    for town, town_box in zip(towns, slice_box(Box(*CITY_BOX), town_weights), strict=True):
        village_weights = [GRID_AREA[v.kind] * len(v.grids) for v in town.villages]
        for village, village_box in zip(
            town.villages, slice_box(town_box, village_weights), strict=True
        ):
            units = slice_box(village_box, [1] * len(village.grids))
            boxes.update((unit.code, box) for unit, box in zip(village.grids, units, strict=True))
    return boxes


def render_demo_polygons() -> str:
    """The demo grid_polygons.geojson, identical on every run: one feature per line."""
    boxes = demo_grid_boxes(draw_demo_city().towns)
    header = {
        "type": "FeatureCollection",
        "name": "示范市单元网格 (generated: python -m libs.common.refdata.demo"
        " --polygons-out config/grid_polygons.geojson; do not edit)",
    }
    features = [
        _compact_json(
            {
                "type": "Feature",
                "properties": {"code": code},
                "geometry": {"type": "Polygon", "coordinates": [box.ring()]},
            }
        )
        for code, box in boxes.items()
    ]
    opening = _compact_json(header)[:-1] + ',"features":['
    return "\n".join([opening, ",\n".join(features), "]}"]) + "\n"


def _compact_json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m libs.common.refdata.demo",
        description="Write the demo grid.yaml and grid_polygons.geojson.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="where to write grid.yaml (default: standard output, unless --polygons-out is given)",
    )
    parser.add_argument("--polygons-out", type=Path, help="where to write grid_polygons.geojson")
    args = parser.parse_args(argv)
    if args.out is None and args.polygons_out is None:
        sys.stdout.write(render_demo_grid())
    if args.out is not None:
        args.out.write_text(render_demo_grid(), encoding="utf-8", newline="\n")
    if args.polygons_out is not None:
        args.polygons_out.write_text(render_demo_polygons(), encoding="utf-8", newline="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
