"""Bad input is refused with nothing written; a platform outage and a bridge restart lose and
duplicate nothing (issue 6, "Bad input and faults")."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import sqlalchemy as sa

from libs.common.bridge.lifecycle import LifecycleUpdates
from libs.common.bridge.tables import links, queue
from libs.common.events import CaseState, Transition
from libs.common.ids import new_case_id
from libs.common.kafka import Delivery
from libs.common.topics import CASES_LIFECYCLE, build_envelope
from tests.factories import make_department_token
from tests.harness import WAIT_SECONDS, until
from tests.services.hotline_bridge.conftest import (
    CALL_SECRET,
    PUSH_SECRET,
    SYSTEM,
    HotlineStack,
    signed_push,
    statuses,
    wait_order,
)
from tests.services.sla.test_flow import lifecycle

ORDER = {
    "event_id": "EV-T-0001",
    "type": "order.created",
    "occurred_at": "2026-11-27T09:00:00+08:00",
    "order": {
        "order_id": "GD20261127990001",
        "title": "井盖破损",
        "content": "育才路人行道井盖破损下陷。",
        "classification": {"code": "0202", "name": "交通设施-井盖缺失破损"},
        "order_type": "求助",
        "urgency": "一般",
        "accepted_at": "2026-11-27T08:55:00+08:00",
        "grid_id": "LQ-YC-01",
        "caller": {"name": "王秀英", "phone": "13912345678"},
    },
}


async def test_bad_signature_malformed_and_unknown_orders_write_nothing(
    hotline_stack: HotlineStack,
) -> None:
    stack = hotline_stack
    async with stack.running_bridge() as url, httpx.AsyncClient() as client:
        body = json.dumps(ORDER, ensure_ascii=False).encode()
        forged = await signed_push(client, url, body, CALL_SECRET)  # the wrong secret
        assert forged.status_code == 401
        unsigned = await client.post(f"{url}/v1/hotline/events", content=body)
        assert unsigned.status_code == 401
        broken = {**ORDER, "order": {**ORDER["order"], "title": ""}}  # type: ignore[dict-item]
        malformed = await signed_push(client, url, json.dumps(broken).encode(), PUSH_SECRET)
        assert malformed.status_code == 400
        assert malformed.json()["detail"][0]["path"] == "body.order.title"
        not_json = await signed_push(client, url, b"{not json", PUSH_SECRET)
        assert not_json.status_code == 400
        # a NUL cannot be stored: taken, the case would be dead-lettered by dispatch's database
        nul = {**ORDER, "order": {**ORDER["order"], "content": "井盖\u0000破损"}}  # type: ignore[dict-item]
        with_nul = await signed_push(client, url, json.dumps(nul).encode(), PUSH_SECRET)
        assert with_nul.status_code == 400
        assert with_nul.json()["detail"][0]["path"] == "body.order.content"
        unknown = {
            "event_id": "EV-T-0002",
            "type": "order.supervised",
            "occurred_at": "2026-11-27T10:00:00+08:00",
            "order_id": "GD00000000000000",
            "level": "督办",
            "opinion": "请尽快办理",
        }
        missing = await signed_push(client, url, json.dumps(unknown).encode(), PUSH_SECRET)
        assert missing.status_code == 404
        assert await stack.counts() == {"links": 0, "outbox": 0, "processed_events": 0, "queue": 0}

        taken = await signed_push(client, url, body, PUSH_SECRET)
        again = await signed_push(client, url, body, PUSH_SECRET)  # the platform's retry
        assert taken.status_code == again.status_code == 200
        assert (taken.json()["status"], again.json()["status"]) == ("accepted", "duplicate")
        assert taken.json()["case_id"] == again.json()["case_id"]
        counts = await stack.counts()
        assert (counts["links"], counts["outbox"]) == (1, 1)


async def test_an_outage_and_a_restart_lose_and_duplicate_nothing(
    hotline_stack: HotlineStack,
) -> None:
    stack = hotline_stack
    async with stack.running_bridge():
        order_id = stack.simulator.new_order(grid_id="LQ-ZX-01", classification={"code": "0101"})[
            "order_id"
        ]
        webhook = await asyncio.wait_for(stack.dispatch.receiver.received.get(), WAIT_SECONDS)
        case_id = webhook.body["case"]["case_id"]
        await wait_order(stack.simulator, order_id, lambda o: "assigned" in statuses(o))
        stack.simulator.down = True  # the platform answers 503 from now on
        headers = {"Authorization": f"Bearer {make_department_token('chengguan')}"}
        for move, body in (("sign", {}), ("progress", {"note": "已安排环卫车辆"})):
            response = await stack.dispatch.client.post(
                f"/v1/department/cases/{case_id}/{move}", json=body, headers=headers
            )
            assert response.status_code == 200, response.text

        async def retried() -> bool:
            rows = await stack.rows(queue)
            return any(
                r.kind == "signed" and r.attempts >= 2 and r.finished_at is None for r in rows
            )

        await until(retried)
    # the bridge is stopped with both updates undelivered; the platform comes back meanwhile
    stack.simulator.down = False
    async with stack.running_bridge():
        done = await wait_order(stack.simulator, order_id, lambda o: "progress" in statuses(o))
        assert statuses(done) == ["assigned", "signed", "progress"]

        async def recorded() -> bool:  # the simulator answers before the bridge records
            return all(r.finished_at is not None for r in await stack.rows(queue))

        await until(recorded)
        rows = await stack.rows(queue)
        assert sorted(r.kind for r in rows) == ["assigned", "progress", "signed"]
        assert [r.outcome for r in rows] == ["sent"] * 3
        async with stack.bridge.state.runtime.sessions() as session:  # type: ignore[union-attr]
            links = (await session.execute(sa.text("SELECT count(*) FROM links"))).scalar()
        assert links == 1


@dataclass
class _Update:
    status: str

    def model_dump(self, *, mode: str, exclude_none: bool) -> dict[str, Any]:
        return {"status": self.status}


async def test_a_fetched_batch_of_lifecycle_events_queues_what_one_by_one_would(
    hotline_stack: HotlineStack,
) -> None:
    """Regression (make faults): a bridge followed cases.lifecycle in a transaction per record
    and fell a minute behind dispatch at 150 reports/s; a fetched batch is now one transaction
    with the same effects: only linked cases' updates, in order, each event id queued once."""
    now = datetime.now(UTC)
    linked, elsewhere = new_case_id(now), new_case_id(now)
    async with hotline_stack.running_bridge():
        assert hotline_stack.bridge is not None
        runtime = hotline_stack.bridge.state.runtime
        async with runtime.sessions() as session, session.begin():
            await session.execute(
                sa.insert(links).values(
                    partner=SYSTEM, external_id="GD-BATCH-1", case_id=linked, created_at=now
                )
            )
        commits: list[int] = []
        updates = LifecycleUpdates(
            runtime=runtime,
            channel="batch-test",
            updates={
                SYSTEM: lambda event, external_id, _: _Update(f"{external_id}:{event.version}")
            },
            on_commit=lambda: commits.append(1),
        )
        events = [
            lifecycle(linked, 2, Transition.ASSIGNED, CaseState.ASSIGNED, now),
            lifecycle(elsewhere, 2, Transition.ASSIGNED, CaseState.ASSIGNED, now),
            lifecycle(linked, 3, Transition.SIGNED, CaseState.ACCEPTED, now),
        ]
        envelopes = [
            build_envelope(CASES_LIFECYCLE, e, source="tests", key=e.case_id, now=now)
            for e in events
        ]
        batch = [0, 1, 0, 2]  # the first record twice: a redelivery inside the batch
        await updates.handle_batch(
            [
                Delivery(envelopes[n], events[n], "cases.lifecycle", 0, offset)
                for offset, n in enumerate(batch)
            ]
        )
        await updates(Delivery(envelopes[2], events[2], "cases.lifecycle", 0, 9))  # again, later
        rows = [r for r in await hotline_stack.rows(queue) if r.channel == "batch-test"]
    assert [(r.case_id, r.message_id, r.kind) for r in sorted(rows, key=lambda r: r.id)] == [
        (linked, envelopes[0].id, "GD-BATCH-1:2"),
        (linked, envelopes[2].id, "GD-BATCH-1:3"),
    ]
    assert commits == [1]  # the later redelivery queued nothing new
