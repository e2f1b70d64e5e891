"""A stand-alone simulator of a city's 数字城管 (digital city management) platform, for tests and
`make run`.

It keeps its own cases (案卷号 SZCG<date><serial>) and runs the seven-step loop on them: 信息采集 →
立案 → 派遣 → 处置 → 反馈 → 核查 → 结案 (综合评价 is the platform's own business). Cases its
inspectors find are filed and handed to gridflow (event `case.filed`, codes of GB/T 30428.2-2013
or GB/T 47678.5-2026 with their names); it follows gridflow's status updates and, once gridflow
reports feedback (反馈), verifies on site (核查: passes, unless told to fail the next one). Cases
gridflow files on it (tasks, `POST /api/v1/tasks`) it runs through its own loop and reports each
step; when gridflow takes a task back (its verification failed, or it reopened the case) the
platform handles it again. Events are pushed to the bridge (signed, in order, retried until
taken) or served as a feed (pull mode). Slowness and an error rate are configurable; `/sim/…`
lets a test or a person file cases, fail verifications and switch an outage on and off.

`python -m deploy.citycare_simulator --port 8092 --bridge http://127.0.0.1:8005 --demo 20`
(secrets from GRIDFLOW_PARTNER_INBOUND_SECRET / GRIDFLOW_PARTNER_OUTBOUND_SECRET).
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from deploy.partner_simulator import (
    PartnerSimulator,
    arguments,
    cst,
    secrets_from_environment,
    serve,
)

log = logging.getLogger("citycare_simulator")
STD_2013, STD_2026 = "GB/T 30428.2-2013", "GB/T 47678.5-2026"
COUNTY = "430281"

# gridflow's status update → the filed case's state on the platform
STATES = {
    "dispatched": "已派遣",
    "returned": "待派遣",
    "triaged": "待派遣",
    "handling": "处置中",
    "feedback": "已反馈",
    "rework": "处置中",
    "closed": "已结案",
    "cancelled": "已作废",
}
# (standard, kind, code, name, class, title, description, level, unit grid)
SAMPLES = [
    (
        STD_2013,
        "事件",
        "0102",
        "暴露垃圾",
        "市容环境",
        "胜利路暴露垃圾",
        "胜利路与湘江路交叉口东北角人行道上暴露生活垃圾约2立方米，未装袋。",
        "一般",
        "430281003001001",
    ),
    (
        STD_2013,
        "部件",
        "0101",
        "上水井盖",
        "公用设施",
        "上水井盖破损",
        "龙泉街道振兴路12号门前上水井盖破损，边缘翘起，有绊倒行人隐患。",
        "紧急",
        "430281001001001",
    ),
    (
        STD_2026,
        "事件",
        "07001",
        "非法小广告",
        None,
        "电线杆非法小广告",
        "学府路沿线电线杆、配电箱上张贴大量办证、通下水道类小广告。",
        "一般",
        "430281001001002",
    ),
    (
        STD_2026,
        "事件",
        "09006",
        "占道经营",
        None,
        "菜市场门口占道经营",
        "人民路菜市场东门外流动摊贩在人行道上摆摊卖菜，占道约20米。",
        "一般",
        "430281003001002",
    ),
    (
        STD_2026,
        "事件",
        "09009",
        "机动车乱停放",
        None,
        "人行道机动车乱停放",
        "书院路步行街入口处多辆小汽车停放在人行道和盲道上。",
        "一般",
        "430281001002001",
    ),
]
UNITS = ["市容环卫处", "城管执法大队", "市政设施维护中心"]


@dataclass
class PlatformCase:
    record: dict[str, Any]
    origin: str  # "inspector": filed by the platform; "gridflow": a task gridflow gave it
    state: str = "立案"
    updates: list[dict[str, Any]] = field(default_factory=list)  # gridflow's status updates


@dataclass
class CitycareSimulator(PartnerSimulator):
    auto_verify: bool = True  # verify a filed case on site once gridflow reports feedback
    auto_handle: bool = True  # run a task through 派遣 → 处置 → 反馈 → 核查 at once
    fail_next_verification: set[str] = field(default_factory=set)  # case ids (or gridflow's)
    cases: dict[str, PlatformCase] = field(default_factory=dict)
    tasks: dict[str, str] = field(default_factory=dict)  # gridflow case id → case id
    _serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    event_prefix: ClassVar[str] = "SZ"
    push_path: ClassVar[str] = "/v1/citycare/events"
    feed_path: ClassVar[str] = "/api/v1/events"
    pushes_for_unknown: ClassVar[int] = 20  # a task step pushed before the bridge linked it

    def error(self, status: int, message: str) -> JSONResponse:
        return JSONResponse({"code": status, "message": message}, status_code=status)

    # --- the platform's own acts ---------------------------------------------------------------

    def _case_number(self) -> str:
        return f"SZCG{cst(datetime.now(UTC)):%Y%m%d}{next(self._serial):05d}"

    def file_case(self, sample: int | None = None, **overrides: Any) -> dict[str, Any]:
        """An inspector's find, filed (立案) and handed to gridflow; `sample` picks one of SAMPLES."""
        now = cst(datetime.now(UTC))
        chosen = SAMPLES[sample] if sample is not None else self._rng.choice(SAMPLES)
        standard, kind, code, name, major, title, text, level, grid = chosen
        classification = {"standard": standard, "kind": kind, "code": code, "name": name}
        if major:
            classification["major_name"] = major
        record: dict[str, Any] = {
            "case_id": self._case_number(),
            "classification": classification,
            "title": title,
            "description": text,
            "level": level,
            "filed_at": now.isoformat(),
            "grid_id": grid,
            "address": "示范市" + title[:8],
            "reporter": {"role": "监督员", "id": f"J{self._rng.randrange(1, 80):04d}"},
        }
        if kind == "部件":
            # 6-digit county + the code (2+2 or 2+3 digits) + a 6-digit serial: 16 or 17 digits
            record["component_id"] = f"{COUNTY}{code}{self._rng.randrange(10**6):06d}"
        record.update(overrides)
        self.cases[record["case_id"]] = PlatformCase(record, "inspector")
        self.emit({"type": "case.filed", "case": record})
        return record

    def verify_case(self, case_id: str, *, passed: bool, opinion: str | None = None) -> None:
        """核查 of a filed case gridflow handled."""
        body: dict[str, Any] = {"type": "case.verified", "case_id": case_id, "passed": passed}
        body["opinion"] = opinion or (
            "现场核查已处理完毕" if passed else "现场核查仍有问题，需返工"
        )
        self.cases[case_id].state = "核查通过" if passed else "核查未通过"
        self.emit(body)

    def _task_step(self, case: PlatformCase, body: dict[str, Any], state: str) -> None:
        case.state = state
        self.emit(
            {**body, "case_id": case.record["case_id"], "external_id": case.record["external_id"]}
        )

    def handle_task(self, case_id: str) -> None:
        """The platform's own loop on a task: 派遣, 处置, 反馈, 核查 (failed once when told to,
        then handled again), 结案."""
        case = self.cases[case_id]
        unit = self._rng.choice(UNITS)
        progressed = {"type": "task.progressed", "unit": unit}
        self._task_step(case, {**progressed, "stage": "派遣"}, "已派遣")
        self._task_step(
            case, {**progressed, "stage": "处置", "opinion": "已安排人员到场处置"}, "处置中"
        )
        self._task_step(
            case, {**progressed, "stage": "反馈", "opinion": "现场已清理完毕"}, "已反馈"
        )
        external_id = case.record["external_id"]
        if {case_id, external_id} & self.fail_next_verification:
            self.fail_next_verification -= {case_id, external_id}
            failed = {"type": "task.verified", "passed": False, "opinion": "现场仍有残留，返工"}
            self._task_step(case, failed, "处置中")
            self._task_step(
                case, {**progressed, "stage": "反馈", "opinion": "已二次清理"}, "已反馈"
            )
        passed = {
            "type": "task.verified",
            "passed": True,
            "result": f"{unit}已到场处置，现场已恢复整洁",
            "opinion": "监督员现场核查通过",
        }
        self._task_step(case, passed, "已结案")

    # --- HTTP ----------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/cases/{case_id}/status", self._status, methods=["POST"]),
            Route("/api/v1/tasks", self._task, methods=["POST"]),
            Route("/api/v1/tasks/{external_id}/return", self._returned, methods=["POST"]),
            Route("/sim/cases", self._file, methods=["POST"]),
            Route("/sim/cases/{case_id}", self._show, methods=["GET"]),
            Route("/sim/cases/{case_id}/verification", self._verification, methods=["POST"]),
        ]

    async def _status(self, request: Request) -> JSONResponse:
        body = await request.body()
        refused = await self.refuse(request, body)
        if refused is not None:
            return refused
        case = self.cases.get(request.path_params["case_id"])
        if case is None or case.origin != "inspector":
            return self.error(404, "案卷不存在")
        webhook_id = request.headers["webhook-id"]
        if webhook_id not in self.seen:
            self.seen.add(webhook_id)
            update = json.loads(body)
            case.updates.append(update)
            case.state = STATES.get(update["status"], case.state)
            log.info("case %s: %s → %s", case.record["case_id"], update["status"], case.state)
            if update["status"] == "feedback" and self.auto_verify:
                case_id = case.record["case_id"]
                failing = case_id in self.fail_next_verification
                self.fail_next_verification.discard(case_id)
                self.verify_case(case_id, passed=not failing)
            await self.notify()
        return JSONResponse({"code": 0, "message": "成功"})

    async def _task(self, request: Request) -> JSONResponse:
        """立案 of a case gridflow hands over; one case per external id."""
        body = await request.body()
        refused = await self.refuse(request, body)
        if refused is not None:
            return refused
        task = json.loads(body)
        external_id = task["external_id"]
        case_id = self.tasks.get(external_id)
        if case_id is None:
            case_id = self._case_number()
            self.tasks[external_id] = case_id
            record = {**task, "case_id": case_id, "filed_at": cst(datetime.now(UTC)).isoformat()}
            self.cases[case_id] = PlatformCase(record, "gridflow")
            log.info("task %s filed for gridflow case %s", case_id, external_id)
            if self.auto_handle:
                self.handle_task(case_id)
            await self.notify()
        return JSONResponse({"code": 0, "case_id": case_id}, status_code=201)

    async def _returned(self, request: Request) -> JSONResponse:
        """gridflow takes a task back (its verification failed, or it reopened the case): the
        platform handles it again."""
        body = await request.body()
        refused = await self.refuse(request, body)
        if refused is not None:
            return refused
        case_id = self.tasks.get(request.path_params["external_id"])
        if case_id is None:
            return self.error(404, "案卷不存在")
        webhook_id = request.headers["webhook-id"]
        if webhook_id not in self.seen:
            self.seen.add(webhook_id)
            case = self.cases[case_id]
            case.updates.append(json.loads(body))
            case.state = "处置中"
            log.info("task %s returned by gridflow", case_id)
            if self.auto_handle:
                self.handle_task(case_id)
            await self.notify()
        return JSONResponse({"code": 0, "case_id": case_id})

    async def _file(self, request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse(self.file_case(**(json.loads(body) if body else {})), status_code=201)

    async def _show(self, request: Request) -> JSONResponse:
        case = self.cases.get(request.path_params["case_id"])
        if case is None:
            return self.error(404, "案卷不存在")
        return JSONResponse({"state": case.state, "updates": case.updates, "case": case.record})

    async def _verification(self, request: Request) -> JSONResponse:
        case_id = request.path_params["case_id"]
        if case_id not in self.cases:
            return self.error(404, "案卷不存在")
        body = await request.json()
        self.verify_case(case_id, passed=bool(body["passed"]), opinion=body.get("opinion"))
        return JSONResponse({"state": self.cases[case_id].state}, status_code=201)


def main(argv: list[str] | None = None) -> None:
    from libs.common.logs import configure_logging  # noqa: PLC0415

    args = arguments("python -m deploy.citycare_simulator", argv, port=8092, demo="a filed case")
    configure_logging(service="citycare-simulator", level="INFO")
    simulator = CitycareSimulator(
        **secrets_from_environment(),
        bridge_url=args.bridge,
        delay_seconds=args.delay,
        error_rate=args.error_rate,
    )

    def demo() -> str:
        case = simulator.file_case()
        code = case["classification"]
        return f"case {case['case_id']} ({code['standard']} {code['code']} {code['name']})"

    serve(simulator, port=args.port, demo_every=args.demo, demo=demo)


if __name__ == "__main__":
    main()
