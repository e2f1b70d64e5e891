"""Open311 GeoReport v2 against a real HTTP server, the real broker and the real database.

A client library nobody here wrote (`georeport` 0.3.1, synchronous `requests`) lists services,
reads a definition and follows a request; it cannot create requests, so POSTs are sent form-encoded
as the spec has them. It sends no api_key on GETs: it authenticates with HTTP Basic credentials in
its root address. The status follows lifecycle events the tests publish themselves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from georeport import GeoReport

from libs.common.events import (
    CaseLifecycleEvent,
    CaseState,
    CaseSubmitted,
    Transition,
)
from libs.common.ids import new_case_id
from libs.common.kafka import Delivery, Publisher, TopicNames
from libs.common.topics import CASES_LIFECYCLE, build_envelope
from services.intake.app import create_app
from services.intake.consumer import RequestStatuses
from services.intake.open311 import MissingKeyError, open311_requests
from tests.factories import (
    OPEN311_KEYS,
    OUTSIDE_CITY,
    RESIDENT_APP_KEY,
    UNIT_GRID,
    VIDEO_AI_KEY,
    Isolation,
    make_intake_settings,
    make_open311_request,
    make_report,
)
from tests.harness import http_server, running, until
from tests.services.intake.conftest import outbox_rows
from tests.services.sla.test_flow import lifecycle

CHENGGUAN = "示范市城市管理和综合执法局"
_REQUEST = open311_requests.c


@dataclass
class Open311Stack:
    app: FastAPI
    base_url: str
    client: httpx.AsyncClient  # at /open311/v2 of the real server
    publisher: Publisher

    def georeport(self, client_id: str = "resident-app", key: str = RESIDENT_APP_KEY) -> GeoReport:
        root = self.base_url.replace("http://", f"http://{client_id}:{key}@", 1)
        return GeoReport(root_address=f"{root}/open311/v2", api_key=key)

    async def lifecycle(
        self,
        case_id: str,
        version: int,
        to_state: CaseState,
        *,
        transition: Transition = Transition.ASSIGNED,
        department: str | None = None,
    ) -> None:
        at = datetime.now(UTC)
        event = lifecycle(case_id, version, transition, to_state, at, department=department)
        await self.publisher.publish(CASES_LIFECYCLE, event, key=case_id, now=event.at)

    async def submit(self, **overrides: str | None) -> str:
        response = await self.client.post("/requests.json", data=make_open311_request(**overrides))
        assert response.status_code == 201, response.text
        [answer] = response.json()
        return str(answer["service_request_id"])

    async def read(self, case_id: str, key: str = RESIDENT_APP_KEY) -> httpx.Response:
        return await self.client.get(f"/requests/{case_id}.json", params={"api_key": key})

    def handled(self) -> float:
        registry = self.app.state.intake.runtime.registry
        labels = {"topic": CASES_LIFECYCLE.name, "outcome": "ok"}
        return registry.get_sample_value("gridflow_consumer_records_total", labels) or 0.0


@pytest.fixture
async def open311(
    isolation: Isolation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Open311Stack]:
    for name, key in OPEN311_KEYS.items():
        monkeypatch.setenv(name, key)
    settings = make_intake_settings(
        isolation,
        attachments_dir=tmp_path / "attachments",
        status_consumer_group=f"{isolation.token}-intake-status",
    )
    app = create_app(settings)
    publisher = Publisher(
        bootstrap_servers=isolation.kafka_bootstrap,
        names=TopicNames(isolation.topic_prefix),
        source="tests",
    )
    async with (
        http_server(app) as base_url,
        httpx.AsyncClient(base_url=f"{base_url}/open311/v2") as client,
    ):
        await publisher.start()
        try:
            yield Open311Stack(app, base_url, client, publisher)
        finally:
            await publisher.stop()


async def _request(geo: GeoReport, case_id: str) -> dict[str, Any]:
    found: dict[str, Any] = await asyncio.to_thread(geo.get_service_request, case_id)
    return found


async def test_a_client_library_lists_defines_and_follows_a_request_to_closure(
    open311: Open311Stack,
) -> None:
    geo = open311.georeport()
    services = {s["service_code"]: s for s in await asyncio.to_thread(geo.get_service_list)}
    assert services["city.garbage"] == {
        "service_code": "city.garbage",
        "service_name": "暴露垃圾",
        "description": "道路、空地、河岸等处暴露堆放的垃圾",
        "metadata": False,
        "type": "realtime",
        "keywords": "垃圾,卫生,脏乱",
        "group": "市容环境",
    }
    assert services["safety.hazard"]["metadata"] is True
    assert "service.household" not in services  # proxy services are for grid workers only
    definition = await asyncio.to_thread(geo.get_service_definition, "safety.hazard")
    assert definition["service_code"] == "safety.hazard"
    level, hazard_type, people = definition["attributes"]
    assert level.pop("values") == [
        {"key": "general", "name": "一般隐患"},
        {"key": "major", "name": "重大隐患"},
    ]
    assert level == {
        "variable": True,
        "code": "level",
        "datatype": "singlevaluelist",
        "required": True,
        "datatype_description": "从列表中选择一项",
        "order": 1,
        "description": "隐患等级",
    }
    assert (hazard_type["code"], hazard_type["datatype"], hazard_type["required"]) == (
        "hazard_type",
        "string",
        True,
    )
    assert (people["code"], people["datatype"], people["required"]) == (
        "people_at_risk",
        "number",
        False,
    )

    case_id = await open311.submit(
        service_code="safety.hazard",
        description="小区 3 栋楼道里堆放了几个液化气罐，旁边有人吸烟。",
        media_url="https://img.example.com/photos/0001.jpg",
        **{
            "attribute[level]": "major",
            "attribute[hazard_type]": "gas",
            "attribute[people_at_risk]": "12",
        },
    )
    before = await _request(geo, case_id)
    assert before == {
        "service_request_id": case_id,
        "status": "open",
        "status_notes": "已受理",
        "service_name": "安全隐患",
        "service_code": "safety.hazard",
        "description": "小区 3 栋楼道里堆放了几个液化气罐，旁边有人吸烟。",
        "agency_responsible": None,
        "service_notice": before["service_notice"],
        "requested_datetime": before["requested_datetime"],
        "updated_datetime": before["requested_datetime"],
        "address": "人民路 12 号旁",
        "address_id": None,
        "lat": 27.7035,
        "long": 113.305,
        "media_url": "https://img.example.com/photos/0001.jpg",
    }
    assert datetime.fromisoformat(before["requested_datetime"]).tzinfo is not None

    [row] = await outbox_rows(open311.app)
    case = CaseSubmitted.model_validate(row.data)
    assert (case.case_id, case.source, case.location.unit_grid) == (case_id, "open311", UNIT_GRID)
    assert case.external_ref is not None
    assert (case.external_ref.system, case.external_ref.id) == ("open311.resident-app", case_id)
    assert case.title.startswith("安全隐患：小区 3 栋楼道里")
    assert (case.reporter.kind, case.reporter.name, case.reporter.phone) == (
        "resident",
        "李秀英",
        "13800138000",
    )
    assert case.hazard is not None
    assert (case.hazard.level, case.hazard.hazard_type, case.hazard.people_at_risk) == (
        "major",
        "gas",
        12,
    )

    await open311.lifecycle(case_id, 1, CaseState.REPORTED, transition=Transition.RECEIVED)
    await open311.lifecycle(case_id, 2, CaseState.ASSIGNED, department="chengguan")

    async def assigned() -> bool:
        return bool((await _request(geo, case_id))["agency_responsible"] == CHENGGUAN)

    await until(assigned)
    now = await _request(geo, case_id)
    assert (now["status"], now["status_notes"]) == ("open", "已派发至城管")

    # dispatch has no closing move yet: the event borrows `assigned`; the status reads to_state
    await open311.lifecycle(case_id, 3, CaseState.CLOSED, department="chengguan")

    async def closed() -> bool:
        return bool((await _request(geo, case_id))["status"] == "closed")

    await until(closed)
    final = await _request(geo, case_id)
    assert (final["status_notes"], final["agency_responsible"]) == ("已办结", CHENGGUAN)
    updated, requested = (
        datetime.fromisoformat(final[name]) for name in ("updated_datetime", "requested_datetime")
    )
    assert updated > requested
    listed = await asyncio.to_thread(geo.get_service_requests, status="closed")
    assert [r["service_request_id"] for r in listed] == [case_id]
    assert await asyncio.to_thread(geo.get_service_requests, status="open") == []


@pytest.mark.parametrize(
    ("path", "changes", "status", "description"),
    [
        ("/requests.json", {"api_key": None}, 401, "api_key missing or unknown"),
        ("/requests.json", {"api_key": "not-a-key-of-anyone"}, 401, "api_key missing or unknown"),
        (
            "/requests.json",
            {"service_code": "city.nothing"},
            400,
            "service_code: not a service offered here (see services.json)",
        ),
        ("/requests.json", OUTSIDE_CITY, 400, "lat/long: outside the city"),
        ("/requests.json", {"lat": None, "long": None}, 400, "lat and long are required"),
        ("/requests.json", {"lat": "95"}, 400, "lat: Input should be less than or equal to 90"),
        ("/requests.json", {"description": None}, 400, "description: required"),
        ("/requests.json", {"description": "x" * 4001}, 400, "description: String should"),
        (
            "/requests.json",
            {"service_code": "safety.hazard", "attribute[hazard_type]": "gas"},
            400,
            "attribute[level]: required",
        ),
        (
            "/requests.json",
            {
                "service_code": "safety.hazard",
                "attribute[level]": "huge",
                "attribute[hazard_type]": "gas",
            },
            400,
            "attribute[level]: must be one of general, major",
        ),
        (
            "/requests.json",
            {"attribute[level]": "major"},
            400,
            "attribute[level]: not an attribute of this service",
        ),
        ("/requests.json", {"phone": "call me"}, 400, "phone: String should match pattern"),
        (  # PostgreSQL cannot store it: it failed the commit of every request batched with it
            "/requests.json",
            {"description": "垃圾三天没有清运\x00"},
            400,
            "description: text must not contain the NUL character",
        ),
        (
            "/requests.xml",
            {},
            400,
            "format: only json is supported (end the path in .json)",
        ),
    ],
)
async def test_refused_requests_answer_in_the_spec_format_and_stage_nothing(
    open311: Open311Stack,
    path: str,
    changes: dict[str, str | None],
    status: int,
    description: str,
) -> None:
    response = await open311.client.post(path, data=make_open311_request(**changes))
    assert response.status_code == status, response.text
    [error] = response.json()
    assert error["code"] == status
    assert error["description"].startswith(description)
    assert await outbox_rows(open311.app) == []


async def test_every_endpoint_needs_a_known_key_and_the_rest_of_intake_keeps_its_errors(
    open311: Open311Stack,
) -> None:
    client = open311.client
    case_id = new_case_id(datetime.now(UTC))
    for path in (
        "/services.json",
        "/services/city.garbage.json",
        "/requests.json",
        f"/requests/{case_id}.json",
    ):
        response = await client.get(path)
        assert response.status_code == 401, path
        assert response.json() == [{"code": 401, "description": "api_key missing or unknown"}]
        assert response.headers["www-authenticate"].startswith("Basic")
        wrong = await client.get(path, auth=("resident-app", "not-a-key-of-anyone"))
        assert wrong.status_code == 401, path
    ok = await client.get("/services.json", params={"api_key": VIDEO_AI_KEY})
    assert ok.status_code == 200
    unknown = await client.get("/services/city.nothing.json", auth=("any", RESIDENT_APP_KEY))
    assert unknown.status_code == 404
    assert unknown.json() == [
        {"code": 404, "description": "service_code: not a service offered here"}
    ]
    nowhere = await client.get("/nothing.json")
    assert nowhere.json() == [{"code": 404, "description": "not found"}]
    wrong_method = await client.delete("/services.json")
    assert wrong_method.status_code == 405
    assert wrong_method.json() == [{"code": 405, "description": "method not allowed"}]
    assert wrong_method.headers["allow"] == "GET"
    bad_key = await client.post(
        "/requests.json", data=make_open311_request(), headers={"Idempotency-Key": "has spaces"}
    )
    assert bad_key.status_code == 400
    assert bad_key.json() == [
        {"code": 400, "description": "Idempotency-Key: 1 to 200 visible ASCII characters"}
    ]
    other = await client.get(f"{open311.base_url}/v1/nothing")
    assert other.status_code == 404
    assert other.json() == {"error": "not_found", "detail": [{"reason": "Not Found"}]}
    worker = await client.post(f"{open311.base_url}/v1/reports", json=make_report())
    assert worker.status_code == 401
    assert worker.json()["error"] == "unauthenticated"
    assert await outbox_rows(open311.app) == []


async def test_a_client_sees_only_its_own_requests(open311: Open311Stack) -> None:
    case_id = await open311.submit()
    assert (await open311.read(case_id)).status_code == 200
    foreign = await open311.read(case_id, key=VIDEO_AI_KEY)
    assert foreign.status_code == 404
    assert foreign.json() == [{"code": 404, "description": "service_request_id: not found"}]
    for key, expected in ((VIDEO_AI_KEY, []), (RESIDENT_APP_KEY, [case_id])):
        for params in ({}, {"service_request_id": case_id}):
            listed = await open311.client.get("/requests.json", params={"api_key": key, **params})
            assert [r["service_request_id"] for r in listed.json()] == expected, (key, params)


async def test_a_retry_with_the_idempotency_key_gets_the_same_request(
    open311: Open311Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = make_open311_request()
    headers = {"Idempotency-Key": "retry-0001"}
    first = await open311.client.post("/requests.json", data=body, headers=headers)
    again = await open311.client.post("/requests.json", data=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert len(await outbox_rows(open311.app)) == 1
    changed = make_open311_request(description="另一件事")
    conflict = await open311.client.post("/requests.json", data=changed, headers=headers)
    assert conflict.status_code == 409
    assert conflict.json() == [
        {"code": 409, "description": "Idempotency-Key: already used for a different request"}
    ]
    # the key is the client's own: another client using the same key makes its own request
    other = make_open311_request(api_key=VIDEO_AI_KEY)
    theirs = await open311.client.post("/requests.json", data=other, headers=headers)
    assert theirs.status_code == 201
    assert theirs.json()[0]["service_request_id"] != first.json()[0]["service_request_id"]
    assert len(await outbox_rows(open311.app)) == 2
    # gridflow's own logs (aiokafka's DEBUG lines show records; logs.py keeps it at WARNING)
    ours = "\n".join(
        r.getMessage() for r in caplog.records if r.name.startswith(("services.", "libs."))
    )
    for personal in ("13800138000", "李", "秀英", "resident@example.com", RESIDENT_APP_KEY):
        assert personal not in ours


async def test_a_json_body_with_the_same_keys_is_accepted(open311: Open311Stack) -> None:
    body: dict[str, Any] = {
        "api_key": RESIDENT_APP_KEY,
        "service_code": "safety.fire",
        "lat": 27.7035,
        "long": 113.305,
        "description": "楼道里有电动车在充电，电线从窗户拉出来。",
        "address_id": "addr-0042",
        "attribute": {"level": "general", "hazard_type": "electrical"},
        "attribute[people_at_risk]": 30,
    }
    response = await open311.client.post("/requests.json", json=body)
    assert response.status_code == 201, response.text
    [answer] = response.json()
    assert set(answer) == {"service_request_id", "service_notice", "account_id"}
    [row] = await outbox_rows(open311.app)
    case = CaseSubmitted.model_validate(row.data)
    assert case.hazard is not None
    assert (case.hazard.level, case.hazard.people_at_risk) == ("general", 30)
    assert case.reporter.anonymous and case.reporter.name is None
    [request] = (await open311.read(answer["service_request_id"])).json()
    assert (request["address_id"], request["address"], request["media_url"]) == (
        "addr-0042",
        None,
        None,
    )


async def test_before_its_row_exists_a_request_is_read_from_the_outbox_and_restored(
    open311: Open311Stack,
) -> None:
    case_id = await open311.submit()
    # as if intake had stopped between accepting the request and recording it
    async with open311.app.state.intake.runtime.sessions() as session, session.begin():
        await session.execute(sa.delete(open311_requests))
    [fallback] = (await open311.read(case_id)).json()
    assert (fallback["status"], fallback["status_notes"]) == ("open", "已受理")
    assert fallback["lat"] == 27.7035
    assert (await open311.read(case_id, key=VIDEO_AI_KEY)).status_code == 404

    await open311.lifecycle(case_id, 1, CaseState.REPORTED, transition=Transition.RECEIVED)
    await open311.lifecycle(case_id, 2, CaseState.ASSIGNED, department="chengguan")

    async def listed() -> bool:
        found = await open311.client.get("/requests.json", params={"api_key": RESIDENT_APP_KEY})
        return [r["status_notes"] for r in found.json()] == ["已派发至城管"]

    await until(listed)


async def test_stale_and_foreign_lifecycle_events_change_nothing(open311: Open311Stack) -> None:
    case_id = await open311.submit()
    await open311.lifecycle(case_id, 1, CaseState.REPORTED, transition=Transition.RECEIVED)
    await open311.lifecycle(case_id, 2, CaseState.ASSIGNED, department="chengguan")

    async def assigned() -> bool:
        return bool((await open311.read(case_id)).json()[0]["status_notes"] == "已派发至城管")

    await until(assigned)
    foreign = new_case_id(datetime.now(UTC))  # a case that did not come through Open311
    await open311.lifecycle(foreign, 1, CaseState.REPORTED, transition=Transition.RECEIVED)
    await open311.lifecycle(case_id, 1, CaseState.REPORTED, transition=Transition.RECEIVED)
    await open311.lifecycle(case_id, 2, CaseState.TRIAGE, transition=Transition.TRIAGED)

    async def all_handled() -> bool:  # the five events published here
        return open311.handled() >= 5

    await until(all_handled)
    [request] = (await open311.read(case_id)).json()
    assert (request["status_notes"], request["agency_responsible"]) == ("已派发至城管", CHENGGUAN)
    async with open311.app.state.intake.runtime.sessions() as session:
        rows = (await session.execute(sa.select(open311_requests.c.case_id))).scalars().all()
    assert rows == [case_id]


def _deliveries(events: list[CaseLifecycleEvent]) -> list[Delivery]:
    """The events as the consumer loop hands a fetched batch to its handler."""
    return [
        Delivery(
            build_envelope(CASES_LIFECYCLE, e, source="tests", key=e.case_id, now=e.at),
            e,
            CASES_LIFECYCLE.name,
            0,
            offset,
        )
        for offset, e in enumerate(events)
    ]


async def test_a_fetched_batch_changes_the_read_model_as_its_events_one_by_one_would(
    open311: Open311Stack, isolation: Isolation
) -> None:
    runtime = open311.app.state.intake.runtime
    shown, restored = await open311.submit(), await open311.submit()
    async with runtime.sessions() as session, session.begin():  # as if intake stopped after 202
        await session.execute(sa.delete(open311_requests).where(_REQUEST.case_id == restored))
    foreign = new_case_id(datetime.now(UTC))  # a case that did not come through Open311
    now, received, assigned = datetime.now(UTC), Transition.RECEIVED, Transition.ASSIGNED
    events = [
        lifecycle(shown, 1, received, CaseState.REPORTED, now, department=None),
        lifecycle(foreign, 1, received, CaseState.REPORTED, now, department=None),
        lifecycle(restored, 1, received, CaseState.REPORTED, now, department=None),
        lifecycle(shown, 2, assigned, CaseState.ASSIGNED, now),
        lifecycle(foreign, 2, assigned, CaseState.ASSIGNED, now),
        lifecycle(restored, 2, assigned, CaseState.ASSIGNED, now),
        lifecycle(shown, 1, received, CaseState.REPORTED, now, department=None),  # stale
    ]
    deliveries = _deliveries(events)
    handler = RequestStatuses(runtime=runtime, consumer=f"{isolation.token}-batch")
    await handler.handle_batch(deliveries)
    await handler.handle_batch(deliveries)  # fetched again after a rebalance: nothing changes

    for case_id in (shown, restored):
        [request] = (await open311.read(case_id)).json()
        assert (request["status_notes"], request["agency_responsible"]) == (
            "已派发至城管",
            CHENGGUAN,
        )
    async with runtime.sessions() as session:
        rows = await session.execute(sa.select(_REQUEST.case_id, _REQUEST.version))
        assert sorted(tuple(row) for row in rows) == sorted([(shown, 2), (restored, 2)])


async def test_a_batch_without_open311_requests_ends_at_its_one_lookup(
    open311: Open311Stack, isolation: Isolation, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = open311.app.state.intake.runtime
    shown = await open311.submit()
    now = datetime.now(UTC)
    foreign = [new_case_id(now) for _ in range(3)]  # cases that did not come through Open311
    events = [
        lifecycle(case_id, 1, Transition.RECEIVED, CaseState.REPORTED, now, department=None)
        for case_id in foreign
    ]

    opened: list[str] = []
    sessions = runtime.sessions

    def counted() -> Any:
        opened.append("session")
        return sessions()

    monkeypatch.setattr(runtime, "sessions", counted)
    handler = RequestStatuses(runtime=runtime, consumer=f"{isolation.token}-foreign")
    await handler.handle_batch(_deliveries(events))
    assert opened == []  # no session, no transaction: nothing of the batch is intake's
    ours = lifecycle(shown, 2, Transition.ASSIGNED, CaseState.ASSIGNED, now)
    await handler.handle_batch(_deliveries([*events, ours]))
    assert opened == ["session"]  # one Open311 request among them: its status is applied
    [request] = (await open311.read(shown)).json()
    assert request["status_notes"] == "已派发至城管"


@pytest.mark.parametrize(
    ("params", "description"),
    [
        ({"status": "pending"}, "status: must be open or closed (comma-separated)"),
        ({"start_date": "2026-11-01T00:00:00"}, "start_date: needs a time zone"),
        ({"end_date": "yesterday"}, "end_date: not a W3C date-time"),
        (
            {"start_date": "2026-01-01T00:00:00Z", "end_date": "2026-06-01T00:00:00Z"},
            "end_date: at most 90 days after start_date",
        ),
    ],
)
async def test_bad_filters_are_refused(
    open311: Open311Stack, params: dict[str, str], description: str
) -> None:
    response = await open311.client.get(
        "/requests.json", params={"api_key": RESIDENT_APP_KEY, **params}
    )
    assert response.status_code == 400
    [error] = response.json()
    assert error["description"].startswith(description)


async def test_a_date_window_and_service_filter_select_requests(open311: Open311Stack) -> None:
    garbage = await open311.submit()
    parking = await open311.submit(service_code="city.illegal_parking")

    async def ids(**params: str) -> list[str]:
        query = {"api_key": RESIDENT_APP_KEY, **params}
        response = await open311.client.get("/requests.json", params=query)
        assert response.status_code == 200, response.text
        return [r["service_request_id"] for r in response.json()]

    assert await ids() == [parking, garbage]  # newest first
    assert await ids(service_code="city.garbage") == [garbage]
    assert await ids(start_date="2020-01-01T00:00:00Z") == []
    assert await ids(end_date="2099-01-01T00:00:00+08:00") == []
    assert await ids(service_request_id=f"{garbage},nonsense") == [garbage]


async def test_intake_refuses_to_start_without_a_client_key_and_names_it(
    isolation: Isolation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRIDFLOW_OPEN311_KEY_RESIDENT_APP", RESIDENT_APP_KEY)
    monkeypatch.delenv("GRIDFLOW_OPEN311_KEY_VIDEO_AI", raising=False)
    app = create_app(make_intake_settings(isolation, attachments_dir=tmp_path / "attachments"))
    with pytest.raises(MissingKeyError, match="GRIDFLOW_OPEN311_KEY_VIDEO_AI"):
        async with running(app):
            pass
