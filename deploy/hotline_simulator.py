"""A stand-alone simulator of a city's 12345 platform, for tests and `make run`.

It keeps its own work orders (ids GD<date><serial>) and their states (待派单 → 已派单 → 已签收 →
已回复 → 已办结, with 退单, 延期申请, 重办, 已撤单), pushes its events to the bridge (push mode,
signed, retried in order until taken) or serves them as a feed (pull mode), and takes the
bridge's status updates (signed; deduplicated by webhook-id). After a reply it reviews the order
itself (passes, unless told otherwise). Slowness and an error rate are configurable; `/sim/…`
lets a test or a person create orders, make decisions and switch an outage on and off.

`python -m deploy.hotline_simulator --port 8091 --bridge http://127.0.0.1:8004 --demo 20`
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

log = logging.getLogger("hotline_simulator")

# status update → the order's state on the platform
STATES = {
    "assigned": "已派单",
    "signed": "已签收",
    "returned": "已退单",
    "extension_requested": "延期申请中",
    "extension_approved": "已签收",
    "extension_denied": "已签收",
    "progress": "办理中",
    "replied": "已回复",
    "rework": "重办",
    "closed": "已办结",
    "reopened": "重办",
    "cancelled": "已撤单",
    "triaged": "待分拨",
}
SAMPLES = [
    (
        "0101",
        "城市管理-暴露垃圾",
        "小区门口垃圾堆积",
        "振兴路小区南门垃圾桶旁堆放大量生活垃圾，已有三天未清运，气味难闻。",
        "投诉",
        "LQ-ZX-01",
    ),
    (
        "0102",
        "城市管理-占道经营",
        "早市摊贩占道",
        "人民路菜市场门口每天早上六点到九点有流动摊贩占道经营，行人无法通过。",
        "投诉",
        "LQ-ZX-02",
    ),
    (
        "0202",
        "交通设施-井盖缺失破损",
        "人行道井盖破损",
        "育才路与学府路交叉口人行道上一处井盖破损下陷，晚上容易绊倒行人。",
        "求助",
        "LQ-YC-01",
    ),
    (
        "0401",
        "社会治安-噪音扰民",
        "夜间施工噪音",
        "白塘村附近工地每天晚上十一点以后仍在施工，噪音很大，影响休息。",
        "投诉",
        "BT-03",
    ),
    (
        "9901",
        "其他-政策咨询",
        "咨询老旧小区改造政策",
        "想了解我们小区是否列入今年老旧小区改造计划，需要业主做什么准备。",
        "咨询",
        None,
    ),
]
SURNAMES = "王李张刘陈杨黄赵吴周"
GIVEN = ["秀英", "建国", "丽华", "志强", "桂兰", "海波", "春花", "明亮"]


@dataclass
class Order:
    order: dict[str, Any]
    state: str = "已派单"
    updates: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class HotlineSimulator(PartnerSimulator):
    auto_review: bool = True
    auto_visit: bool = False  # after 已办结, a satisfied return visit
    orders: dict[str, Order] = field(default_factory=dict)
    _serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    event_prefix: ClassVar[str] = "EV"
    push_path: ClassVar[str] = "/v1/hotline/events"
    feed_path: ClassVar[str] = "/open/v1/events"

    # --- the platform's own acts ---------------------------------------------------------------

    def new_order(self, **overrides: Any) -> dict[str, Any]:
        now = cst(datetime.now(UTC))
        code, name, title, content, kind, grid = self._rng.choice(SAMPLES)
        order_id = f"GD{now:%Y%m%d}{next(self._serial):06d}{self._rng.randrange(100):02d}"
        order: dict[str, Any] = {
            "order_id": order_id,
            "title": title,
            "content": content,
            "classification": {"code": code, "name": name},
            "order_type": kind,
            "urgency": "一般",
            "accepted_at": now.isoformat(),
            "address": "示范市" + title[:6],
            "caller": {
                "name": self._rng.choice(SURNAMES) + self._rng.choice(GIVEN),
                "phone": f"139{self._rng.randrange(10**8):08d}",
            },
        }
        if grid:
            order["grid_id"] = grid
        order.update(overrides)
        self.orders[order["order_id"]] = Order(order)
        self.emit({"type": "order.created", "order": order})
        return order

    def decide(self, order_id: str, decision: dict[str, Any]) -> dict[str, Any]:
        """A decision of the platform on an order (order.return_visit, order.supervised …)."""
        return self.emit({**decision, "order_id": order_id})

    # --- HTTP ----------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route("/open/v1/orders/{order_id}/status", self._status, methods=["POST"]),
            Route("/sim/orders", self._create, methods=["POST"]),
            Route("/sim/orders/{order_id}", self._show, methods=["GET"]),
            Route("/sim/orders/{order_id}/decisions", self._decision, methods=["POST"]),
        ]

    async def _status(self, request: Request) -> JSONResponse:
        body = await request.body()
        refused = await self.refuse(request, body)
        if refused is not None:
            return refused
        order = self.orders.get(request.path_params["order_id"])
        if order is None:
            return JSONResponse({"error": "工单不存在"}, status_code=404)
        webhook_id = request.headers["webhook-id"]
        if webhook_id not in self.seen:
            self.seen.add(webhook_id)
            update = json.loads(body)
            order.updates.append(update)
            order.state = STATES.get(update["status"], order.state)
            log.info("order %s: %s → %s", order.order["order_id"], update["status"], order.state)
            self._follow_up(order, update["status"])
            await self.notify()
        return JSONResponse({"code": 0, "message": "成功"})

    def _follow_up(self, order: Order, status: str) -> None:
        order_id = order.order["order_id"]
        if status == "replied" and self.auto_review:
            self.decide(
                order_id,
                {"type": "order.reviewed", "passed": True, "opinion": "回复内容属实，审核通过"},
            )
        if status == "closed" and self.auto_visit:
            self.decide(order_id, {"type": "order.return_visit", "satisfaction": "满意"})

    async def _create(self, request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse(self.new_order(**(json.loads(body) if body else {})), status_code=201)

    async def _show(self, request: Request) -> JSONResponse:
        order = self.orders.get(request.path_params["order_id"])
        if order is None:
            return JSONResponse({"error": "工单不存在"}, status_code=404)
        return JSONResponse({"state": order.state, "updates": order.updates, "order": order.order})

    async def _decision(self, request: Request) -> JSONResponse:
        order_id = request.path_params["order_id"]
        if order_id not in self.orders:
            return JSONResponse({"error": "工单不存在"}, status_code=404)
        return JSONResponse(self.decide(order_id, await request.json()), status_code=201)


def main(argv: list[str] | None = None) -> None:
    from libs.common.logs import configure_logging  # noqa: PLC0415

    args = arguments("python -m deploy.hotline_simulator", argv, port=8091, demo="a new order")
    configure_logging(service="hotline-simulator", level="INFO")
    simulator = HotlineSimulator(
        **secrets_from_environment(),
        bridge_url=args.bridge,
        delay_seconds=args.delay,
        error_rate=args.error_rate,
        auto_visit=True,
    )

    def demo() -> str:
        order = simulator.new_order()
        return f"order {order['order_id']} ({order['classification']['name']})"

    serve(simulator, port=args.port, demo_every=args.demo, demo=demo)


if __name__ == "__main__":
    main()
