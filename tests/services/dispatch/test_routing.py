"""The routing decision: matchers, the tree's order, `continue`, fallbacks, exclusion, triage,
and the `route` command."""

from __future__ import annotations

import re
import textwrap
from datetime import UTC, datetime, timedelta
from itertools import product
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from libs.common.events import (
    CaseSubmitted,
    Category,
    Location,
    Reporter,
    RoutingSnapshot,
    Source,
    Urgency,
)
from libs.common.ids import new_case_id
from libs.common.refdata import (
    ReferenceData,
    RoutingTree,
    WeekdayCalendar,
    load_reference_data,
    load_routing_tree,
)
from services.dispatch import route as route_command
from services.dispatch.routing import RoutingDecision, explain, route

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "config"
SHANGHAI = ZoneInfo("Asia/Shanghai")
FRIDAY_MORNING = datetime(2026, 11, 27, 10, 0, tzinfo=SHANGHAI)
LONGQUAN, JINQIAO = "430281001", "430281002"  # two towns (街道) of the demo city
LONGQUAN_UNIT, JINQIAO_UNIT = "430281001001001", "430281002001001"
WINDOWS = """\
time_windows:
  office_hours:
    weekdays: [mon, tue, wed, thu, fri]
    hours: ["08:30-12:00", "14:00-17:30"]
    timezone: Asia/Shanghai
  nights: {hours: ["20:00-08:00"], timezone: Asia/Shanghai}
  rest_days: {holidays: true, timezone: Asia/Shanghai}
"""


@pytest.fixture(scope="module")
def shipped() -> ReferenceData:
    return load_reference_data(CONFIG)


def make_case(
    category: str = "city.garbage",
    *,
    unit_grid: str | None = JINQIAO_UNIT,
    source: Source = Source.GRID_WORKER,
    urgency: Urgency = Urgency.ROUTINE,
    title: str = "路边暴露垃圾",
    description: str = "人民路口有一堆垃圾",
) -> CaseSubmitted:
    return CaseSubmitted(
        case_id=new_case_id(FRIDAY_MORNING),
        source=source,
        category=Category(code=category),
        urgency=urgency,
        title=title,
        description=description,
        location=Location(unit_grid=unit_grid, address=None if unit_grid else "人民路"),
        reporter=Reporter(kind="grid_worker", worker_id="w1"),
        occurred_at=FRIDAY_MORNING,
        reported_at=FRIDAY_MORNING,
    )


def make_tree(
    tmp_path: Path, routes: str, against: ReferenceData, *, version: int = 1, root: str = ""
) -> RoutingTree:
    """A routing file of `routes` (YAML of the root's route list, any indentation)."""
    path = tmp_path / f"routing-{version}.yaml"
    body = textwrap.indent(textwrap.dedent(routes).strip("\n"), "    ")
    path.write_text(
        f"version: {version}\n{WINDOWS}route:\n  id: root\n{root}  routes:\n{body}\n",
        encoding="utf-8",
    )
    return load_routing_tree(path, against=against)


def decide(
    case: CaseSubmitted,
    tree: RoutingTree,
    refdata: ReferenceData,
    *,
    now: datetime = FRIDAY_MORNING,
    exclude: frozenset[str] = frozenset(),
) -> RoutingDecision:
    decision = route(
        case, tree, now=now, calendar=WeekdayCalendar(), grid=refdata.grid, exclude=exclude
    )
    explained = explain(
        case, tree, now=now, calendar=WeekdayCalendar(), grid=refdata.grid, exclude=exclude
    )
    assert explained.decision == decision, "explain must decide exactly as route does"
    return decision


# --- the shipped tree keeps the demo's departments ----------------------------------------------

SHIPPED_DEPARTMENTS = {
    "city.garbage": "chengguan",
    "city.street_vending": "chengguan",
    "city.illegal_parking": "chengguan",
    "city.illegal_ads": "chengguan",
    "city.road_damage": "chengguan",
    "city.manhole_cover": "chengguan",
    "city.illegal_building": "chengguan",
    "safety.hazard": "yingji",
    "safety.fire": "xiaofang",
    "dispute.neighbour": "zongzhi",
    "dispute.labour": "zongzhi",
    "civil.elderly_care": "minzheng",
    "civil.assistance": "minzheng",
    "health.epidemic": "weijian",
    "public_order.disturbance": "gongan",
    "power.outage": "gongdian",
    "power.line_hazard": "gongdian",
    "service.social_security": "minzheng",
    "service.civil_affairs": "minzheng",
    "service.household": "gongan",
    "service.elderly": "minzheng",
    "service.disability": "minzheng",
    "service.housing": "minzheng",
    "service.employment": "minzheng",
    "service.family_planning": "weijian",
    "service.other": "minzheng",
    "other.general": None,
}


def test_shipped_tree_routes_every_category_as_the_demo_did(shipped: ReferenceData) -> None:
    assert set(SHIPPED_DEPARTMENTS) == set(shipped.categories)
    found = {
        code: decide(make_case(code), shipped.routing, shipped).department
        for code in shipped.categories
    }

    assert found == SHIPPED_DEPARTMENTS


def test_shipped_demo_examples(shipped: ReferenceData) -> None:
    tree = shipped.routing
    night = datetime(2026, 11, 27, 23, 0, tzinfo=SHANGHAI)

    fire_by_day = decide(make_case("safety.fire"), tree, shipped)
    fire_at_night = decide(make_case("safety.fire"), tree, shipped, now=night)
    in_longquan = decide(make_case("city.garbage", unit_grid=LONGQUAN_UNIT), tree, shipped)
    gas = decide(make_case("city.road_damage", description="路面塌陷，燃气管道外露"), tree, shipped)

    assert (fire_by_day.department, fire_by_day.notify) == ("xiaofang", ())
    assert (fire_at_night.department, fire_at_night.notify) == ("xiaofang", ("yingji",))
    assert fire_at_night.rule_id == "fire-to-xiaofang"
    assert (in_longquan.department, in_longquan.co_handling) == ("chengguan", ("zongzhi",))
    assert (gas.department, gas.co_handling, gas.rule_id) == (
        "yingji",
        ("chengguan",),
        "city-gas-to-yingji",
    )


def test_shipped_city_appearance_of_xiangjiang_grid_workers_goes_to_citycare(
    shipped: ReferenceData,
) -> None:
    tree = shipped.routing
    xiangjiang = "430281003001001"  # 湘江街道

    def department(code: str, source: Source = Source.GRID_WORKER) -> str | None:
        return decide(
            make_case(code, unit_grid=xiangjiang, source=source), tree, shipped
        ).department

    for code in ("city.garbage", "city.illegal_ads", "city.street_vending", "city.illegal_parking"):
        assert department(code) == "shuzichengguan"
    assert department("city.manhole_cover") == "chengguan"  # no task code on the platform
    # the platform's own cases are handled by gridflow's departments, never sent back to it
    assert department("city.garbage", Source.CITYCARE) == "chengguan"


# --- matchers -----------------------------------------------------------------------------------


def test_category_exact_and_prefix(tmp_path: Path, shipped: ReferenceData) -> None:
    tree = make_tree(
        tmp_path,
        """
        - id: exact-garbage
          match: {category: city.garbage}
          department: minzheng
        - id: prefix-city
          match: {category: {prefix: "city."}}
          department: chengguan
        - id: prefix-word
          match: {category: {prefix: "safety.fi"}}
          department: xiaofang
        """,
        shipped,
    )

    def department(code: str) -> str | None:
        return decide(make_case(code), tree, shipped).department

    assert department("city.garbage") == "minzheng"
    assert department("city.illegal_ads") == "chengguan"
    assert department("safety.fire") == "xiaofang"
    assert department("safety.hazard") is None


def test_grid_subtree(tmp_path: Path, shipped: ReferenceData) -> None:
    tree = make_tree(
        tmp_path,
        f"""
        - id: longquan-village
          match: {{grid: "{LONGQUAN}002"}}
          department: minzheng
        - id: longquan
          match: {{grid: "{LONGQUAN}"}}
          department: zongzhi
        - id: whole-city
          match: {{grid: "430281"}}
          department: chengguan
        """,
        shipped,
    )

    def department(unit_grid: str | None) -> str | None:
        return decide(make_case(unit_grid=unit_grid), tree, shipped).department

    assert department(LONGQUAN_UNIT) == "zongzhi"  # 龙泉's first village
    assert department(f"{LONGQUAN}002003") == "minzheng"  # the village's own grid
    assert department(JINQIAO_UNIT) == "chengguan", "another town is not under 龙泉"
    assert department(None) is None, "no unit grid: no grid route matches"
    assert department("430281999001001") is None, "unknown to the grid tree: no match"


def test_source_and_urgency(tmp_path: Path, shipped: ReferenceData) -> None:
    tree = make_tree(
        tmp_path,
        """
        - id: hotline-emergency
          match: {source: [hotline, citycare], urgency: emergency}
          department: yingji
        - id: urgent
          match: {urgency: [urgent, emergency]}
          department: zongzhi
        """,
        shipped,
    )

    def department(source: Source, urgency: Urgency) -> str | None:
        return decide(make_case(source=source, urgency=urgency), tree, shipped).department

    assert department(Source.HOTLINE, Urgency.EMERGENCY) == "yingji"
    assert department(Source.CITYCARE, Urgency.EMERGENCY) == "yingji"
    assert department(Source.GRID_WORKER, Urgency.EMERGENCY) == "zongzhi"
    assert department(Source.HOTLINE, Urgency.URGENT) == "zongzhi"
    assert department(Source.HOTLINE, Urgency.ROUTINE) is None


def test_keywords_in_title_or_description(tmp_path: Path, shipped: ReferenceData) -> None:
    tree = make_tree(
        tmp_path,
        """
        - id: gas
          match: {keywords: [燃气, LPG]}
          department: yingji
        """,
        shipped,
    )

    def department(title: str, description: str) -> str | None:
        case = make_case(title=title, description=description)
        return decide(case, tree, shipped).department

    assert department("燃气泄漏", "有气味") == "yingji"
    assert department("有气味", "疑似燃气泄漏") == "yingji"
    assert department("餐馆", "后厨堆放 lpg 钢瓶") == "yingji", "ASCII letters ignore case"
    assert department("路灯不亮", "人民路") is None


def test_time_windows(tmp_path: Path, shipped: ReferenceData) -> None:
    tree = make_tree(
        tmp_path,
        """
        - id: office
          match: {time: office_hours}
          department: chengguan
        - id: off-hours
          match: {time: [nights, rest_days]}
          department: yingji
        """,
        shipped,
    )

    def department(now: datetime) -> str | None:
        return decide(make_case(), tree, shipped, now=now).department

    friday = datetime(2026, 11, 27, tzinfo=SHANGHAI)
    assert department(friday.replace(hour=9)) == "chengguan"
    assert department(friday.replace(hour=12, minute=30)) is None, "lunch is neither"
    assert department(friday.replace(hour=17, minute=29)) == "chengguan"
    assert department(friday.replace(hour=17, minute=30)) is None
    assert department(friday.replace(hour=22)) == "yingji"
    assert department(friday.replace(hour=10) + timedelta(days=1)) == "yingji", "Saturday"
    assert department(friday.replace(hour=10) + timedelta(days=2)) == "yingji", "Sunday"
    # The same instant in UTC: 01:30Z is 09:30 in Shanghai, 15:00Z is 23:00 there.
    assert department(datetime(2026, 11, 27, 1, 30, tzinfo=UTC)) == "chengguan"
    assert department(datetime(2026, 11, 27, 15, 0, tzinfo=UTC)) == "yingji"


def test_all_conditions_of_a_match_must_hold(tmp_path: Path, shipped: ReferenceData) -> None:
    tree = make_tree(
        tmp_path,
        f"""
        - id: all-of-them
          match:
            category: {{prefix: "safety."}}
            grid: "{LONGQUAN}"
            source: grid_worker
            keywords: [电动车]
            time: office_hours
          department: xiaofang
        """,
        shipped,
    )
    case = make_case("safety.hazard", unit_grid=LONGQUAN_UNIT, description="楼道电动车充电")

    assert decide(case, tree, shipped).department == "xiaofang"
    night = FRIDAY_MORNING.replace(hour=22)
    explanation = explain(
        make_case("city.garbage", unit_grid=JINQIAO_UNIT),
        tree,
        now=night,
        calendar=WeekdayCalendar(),
        grid=shipped.grid,
    )
    assert explanation.steps[1].reasons == (
        "category city.garbage does not start with 'safety.'",
        f"unit grid {JINQIAO_UNIT} is not within {LONGQUAN}",
        "title and description mention none of 电动车",
        "Fri 2026-11-27 22:00 CST is outside office_hours",
    )


# --- the tree: order, continue, children ---------------------------------------------------------

CONTINUING = f"""
- id: longquan-cohandling
  match: {{grid: "{LONGQUAN}"}}
  co_handling: [zongzhi]
  notify: [minzheng]
  continue: true
- id: hotline-to-gongan
  match: {{source: hotline}}
  department: gongan
  co_handling: [zongzhi]
  notify: [weijian]
  continue: true
- id: city-to-chengguan
  match: {{category: {{prefix: "city."}}}}
  department: chengguan
  notify: [gongan, minzheng]
- id: never-reached-after-a-stop
  match: {{category: city.garbage}}
  department: minzheng
  notify: [gongdian]
"""


def test_continue_collects_receivers_and_the_first_department_wins(
    tmp_path: Path, shipped: ReferenceData
) -> None:
    tree = make_tree(tmp_path, CONTINUING, shipped)

    decision = decide(make_case(unit_grid=LONGQUAN_UNIT, source=Source.HOTLINE), tree, shipped)

    assert decision.department == "gongan"
    assert decision.rule_id == "hotline-to-gongan"
    assert decision.co_handling == ("zongzhi",), "listed twice, kept once"
    assert decision.notify == ("minzheng", "weijian"), "never the primary nor a co-handler"
    assert decision.path == (
        "root",
        "longquan-cohandling",
        "hotline-to-gongan",
        "city-to-chengguan",
    )
    assert decision.triage_at is None


def test_first_match_without_continue_stops_the_siblings(
    tmp_path: Path, shipped: ReferenceData
) -> None:
    tree = make_tree(tmp_path, CONTINUING, shipped)

    decision = decide(make_case(unit_grid=JINQIAO_UNIT), tree, shipped)

    assert (decision.department, decision.rule_id) == ("chengguan", "city-to-chengguan")
    assert decision.notify == ("gongan", "minzheng")
    assert decision.path == ("root", "city-to-chengguan")
    steps = explain(
        make_case(), tree, now=FRIDAY_MORNING, calendar=WeekdayCalendar(), grid=shipped.grid
    ).steps
    assert [(s.route.id, s.matched, s.unvisited) for s in steps] == [
        ("root", True, 0),
        ("longquan-cohandling", False, 0),
        ("hotline-to-gongan", False, 0),
        ("city-to-chengguan", True, 1),
    ]


NESTED = """
- id: safety-to-yingji
  match: {category: {prefix: "safety."}}
  department: yingji
  notify: [zongzhi]
  routes:
    - id: fire-group
      match: {category: safety.fire}
      notify: [gongan]
      routes:
        - id: fire-at-night-to-xiaofang
          match: {time: nights}
          department: xiaofang
    - id: hazard-to-chengguan
      match: {category: safety.hazard, keywords: [广告牌]}
      department: chengguan
"""


def test_children_decide_and_fall_back_to_the_parent(
    tmp_path: Path, shipped: ReferenceData
) -> None:
    tree = make_tree(tmp_path, NESTED, shipped)
    night = FRIDAY_MORNING.replace(hour=23)

    fire_at_night = decide(make_case("safety.fire"), tree, shipped, now=night)
    fire_by_day = decide(make_case("safety.fire"), tree, shipped)
    sign = decide(make_case("safety.hazard", description="广告牌松动"), tree, shipped)
    other_hazard = decide(make_case("safety.hazard"), tree, shipped)

    assert (fire_at_night.department, fire_at_night.rule_id) == (
        "xiaofang",
        "fire-at-night-to-xiaofang",
    )
    assert fire_at_night.notify == ("zongzhi", "gongan"), "every matched route adds its receivers"
    assert fire_at_night.path == (
        "root",
        "safety-to-yingji",
        "fire-group",
        "fire-at-night-to-xiaofang",
    )
    # By day the fire group matches but has no department: its parent's is the fallback.
    assert (fire_by_day.department, fire_by_day.rule_id) == ("yingji", "safety-to-yingji")
    assert fire_by_day.notify == ("zongzhi", "gongan")
    assert (sign.department, sign.rule_id) == ("chengguan", "hazard-to-chengguan")
    assert (other_hazard.department, other_hazard.path) == ("yingji", ("root", "safety-to-yingji"))


def test_the_root_department_is_the_last_fallback(tmp_path: Path, shipped: ReferenceData) -> None:
    tree = make_tree(tmp_path, NESTED, shipped, root="  department: zongzhi\n")

    decision = decide(make_case("other.general"), tree, shipped)

    assert (decision.department, decision.rule_id, decision.path) == ("zongzhi", "root", ("root",))


# --- exclusion and triage -----------------------------------------------------------------------


def test_exclude_moves_to_the_next_candidate_then_to_triage(
    tmp_path: Path, shipped: ReferenceData
) -> None:
    tree = make_tree(tmp_path, NESTED, shipped)
    night = FRIDAY_MORNING.replace(hour=23)
    fire = make_case("safety.fire", unit_grid=LONGQUAN_UNIT)

    def after_returns(*departments: str) -> RoutingDecision:
        return decide(fire, tree, shipped, now=night, exclude=frozenset(departments))

    first = after_returns()
    second = after_returns("xiaofang")
    third = after_returns("xiaofang", "yingji")
    notified = after_returns("xiaofang", "yingji", "zongzhi")

    assert (first.department, first.rule_id) == ("xiaofang", "fire-at-night-to-xiaofang")
    assert (second.department, second.rule_id) == ("yingji", "safety-to-yingji")
    assert (third.department, third.rule_id, third.triage_at) == (None, None, LONGQUAN)
    assert third.path == first.path, "exclusion changes the decision, not the walk"
    assert notified.notify == ("gongan",), "a department that returned the case is not notified"


def test_triage_at_the_owning_town_or_the_city(tmp_path: Path, shipped: ReferenceData) -> None:
    tree = shipped.routing

    in_jinqiao = decide(make_case("other.general", unit_grid=JINQIAO_UNIT), tree, shipped)
    nowhere = decide(make_case("other.general", unit_grid=None), tree, shipped)
    unknown = decide(make_case("other.general", unit_grid="430281999001001"), tree, shipped)
    routed = decide(make_case("city.garbage"), tree, shipped)

    assert (in_jinqiao.department, in_jinqiao.triage_at) == (None, JINQIAO)
    assert nowhere.triage_at == unknown.triage_at == "430281"
    assert routed.triage_at is None


# --- the record of a decision -------------------------------------------------------------------


def test_the_version_changes_with_the_file_bytes(tmp_path: Path, shipped: ReferenceData) -> None:
    routes = "- id: city\n  match: {category: {prefix: 'city.'}}\n  department: chengguan\n"
    one = make_tree(tmp_path, routes, shipped)
    same = make_tree(tmp_path, routes, shipped)
    edited = make_tree(tmp_path, routes + "# a comment\n", shipped)
    bumped = make_tree(tmp_path, routes, shipped, version=2)

    assert re.fullmatch(r"v1-[0-9a-f]{12}", one.version)
    assert one.version == same.version
    assert edited.version != one.version and edited.version.startswith("v1-")
    assert bumped.version.startswith("v2-")
    decision = decide(make_case(), edited, shipped)
    assert decision.ruleset_version == edited.version


def test_snapshot_and_positional_construction_stay_compatible() -> None:
    decision = RoutingDecision("chengguan", "city-to-chengguan", "v3-0123456789ab")

    assert decision.snapshot() == RoutingSnapshot(
        rule_id="city-to-chengguan", ruleset_version="v3-0123456789ab"
    )
    assert (decision.co_handling, decision.notify, decision.path, decision.triage_at) == (
        (),
        (),
        (),
        None,
    )


def test_a_naive_now_is_refused(shipped: ReferenceData) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        route(
            make_case(),
            shipped.routing,
            now=datetime(2026, 11, 27, 10, 0),  # noqa: DTZ001  # the point of the test
            calendar=WeekdayCalendar(),
            grid=shipped.grid,
        )


def test_explain_and_route_agree_across_many_cases(shipped: ReferenceData) -> None:
    hours = [datetime(2026, 11, 27, h, 15, tzinfo=SHANGHAI) for h in (3, 9, 13, 21)]
    hours.append(datetime(2026, 11, 28, 10, 0, tzinfo=SHANGHAI))
    texts = [("路边暴露垃圾", "人民路"), ("燃气", "管道外露")]
    grids = [LONGQUAN_UNIT, JINQIAO_UNIT, None]
    for category, now, (title, text), unit_grid, urgency in product(
        shipped.categories, hours, texts, grids, Urgency
    ):
        case = make_case(
            category, unit_grid=unit_grid, title=title, description=text, urgency=urgency
        )
        decide(case, shipped.routing, shipped, now=now)  # asserts the two agree


# --- the route command --------------------------------------------------------------------------

FIRE_CASE = """{
  "source": "grid_worker",
  "category": {"code": "safety.fire"},
  "urgency": "emergency",
  "title": "楼道电动车充电",
  "description": "3号楼楼道内电动车违规充电",
  "location": {"unit_grid": "430281001001001"}
}
"""


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = route_command.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def test_route_test_prints_the_path_and_the_result(
    tmp_path: Path, shipped: ReferenceData, capsys: pytest.CaptureFixture[str]
) -> None:
    case = tmp_path / "case.json"
    case.write_text(FIRE_CASE, encoding="utf-8")
    argv = ["test", "--config", str(CONFIG), "--at", "2026-11-27T22:00+08:00", str(case)]

    status, out, err = run(argv, capsys)

    version = shipped.routing.version
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        f"routing tree {version}, at 2026-11-27T22:00:00+08:00",
        "root: matched",
        "  longquan-cohandled-by-zongzhi: matched, co-handling zongzhi, continue",
        "  emergency-notify-yingji-off-hours: matched, notify yingji, continue",
        "  city-to-chengguan: no match: category safety.fire does not start with 'city.'",
        "  safety-to-yingji: matched, department yingji,"
        " stops: 6 later sibling routes not evaluated",
        "    fire-to-xiaofang: matched, department xiaofang",
        "      fire-at-night-notify-yingji: matched, notify yingji",
        "result:",
        "  department: xiaofang (消防), route fire-to-xiaofang",
        "  co-handling: zongzhi",
        "  notify: yingji",
        "  path: root > longquan-cohandled-by-zongzhi > emergency-notify-yingji-off-hours"
        " > safety-to-yingji > fire-to-xiaofang > fire-at-night-notify-yingji",
        f"  ruleset version: {version}",
    ]


def test_route_test_with_returns_ends_in_triage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = tmp_path / "case.json"
    case.write_text(FIRE_CASE, encoding="utf-8")
    argv = ["test", "--at", "2026-11-27T10:00+08:00", str(case)]
    argv += ["--config", str(CONFIG), "--exclude", "xiaofang", "--exclude", "yingji"]

    status, out, _ = run(argv, capsys)

    assert status == 0
    assert "    fire-to-xiaofang: matched, department xiaofang (excluded: returned the case)" in out
    assert "  department: none, triage at 430281001 (龙泉街道)\n" in out
    assert "  notify: -\n" in out


def test_route_test_with_a_candidate_rule_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = tmp_path / "case.json"
    case.write_text(FIRE_CASE, encoding="utf-8")
    rules = tmp_path / "new.yaml"
    rules.write_text("version: 9\nroute:\n  id: root\n  department: zongzhi\n", encoding="utf-8")
    argv = ["test", "--config", str(CONFIG), "--rules", str(rules), str(case)]

    status, out, _ = run(argv, capsys)

    assert status == 0
    assert out.startswith("routing tree v9-")
    assert "  department: zongzhi (综治), route root\n" in out


def test_route_test_refuses_a_bad_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = tmp_path / "case.json"
    case.write_text('{"source": "radio", "category": {"code": "city.garbage"}}', encoding="utf-8")
    broken = tmp_path / "broken.json"
    broken.write_text('{"source": \n', encoding="utf-8")

    status, out, err = run(["test", "--config", str(CONFIG), str(case)], capsys)
    broken_status, _, broken_err = run(["test", "--config", str(CONFIG), str(broken)], capsys)

    assert (status, out) == (1, "")
    assert f"{case}: source: Input should be 'grid_worker'" in err
    assert f"{case}: title: Field required" in err
    assert broken_status == 1
    assert broken_err.startswith(f"{broken}: line 2: not valid JSON:")


def test_route_test_needs_an_offset_in_at(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        route_command.main(["test", "--at", "2026-11-27T22:00", str(tmp_path / "case.json")])

    assert caught.value.code == 2
    assert "has no UTC offset" in capsys.readouterr().err


def test_route_check_accepts_the_shipped_file(
    shipped: ReferenceData, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(["check", "--config", str(CONFIG)], capsys)

    assert (status, err) == (0, "")
    assert out == (
        f"OK: {CONFIG / 'routing.yaml'}: 21 routes, 3 time windows,"
        f" version {shipped.routing.version}\n"
    )


def test_route_check_prints_file_line_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "new.yaml"
    rules.write_text(
        "version: 4\nroute:\n  id: root\n  routes:\n"
        "    - id: a\n      match: {time: weekend}\n      department: nobody\n",
        encoding="utf-8",
    )

    status, out, err = run(["check", "--config", str(CONFIG), str(rules)], capsys)

    assert (status, out) == (1, "")
    assert err.splitlines() == [
        f"{rules}:6: route.routes[0].match.time[0]: unknown time window 'weekend';"
        " none is defined in time_windows",
        f"{rules}:7: route.routes[0].department: unknown department 'nobody'; known short"
        " codes: chengguan, gongan, gongdian, minzheng, shuzichengguan, weijian, xiaofang, yingji,"
        " zongzhi",
    ]


# --- the example in docs/architecture.md is a file that loads -----------------------------------


def test_the_documented_example_loads(tmp_path: Path, shipped: ReferenceData) -> None:
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text[text.index("\n## Routing\n") :]
    example = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert example is not None
    path = tmp_path / "routing.yaml"
    path.write_text(example.group(1), encoding="utf-8")

    tree = load_routing_tree(path, against=shipped)

    night = datetime(2026, 11, 27, 23, 0, tzinfo=SHANGHAI)
    fire = make_case("safety.fire", unit_grid=LONGQUAN_UNIT, urgency=Urgency.URGENT)
    decision = decide(fire, tree, shipped, now=night)
    routine = decide(make_case("safety.fire", unit_grid=LONGQUAN_UNIT), tree, shipped, now=night)
    assert (decision.department, decision.co_handling, decision.notify) == (
        "xiaofang",
        ("zongzhi",),
        ("yingji",),
    )
    assert routine.notify == ()
