"""The grid workers' API beyond plain reports: forms per category, coordinates, proxy services,
visits, attachments, idempotency and offline batches — against the real database."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from libs.common.events import CaseSubmitted, VisitRecorded
from tests.factories import UNIT_GRID, make_report
from tests.services.intake.conftest import Intake, auth, outbox_rows

JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + bytes(range(256)) * 4
INSIDE_FIRST_GRID = {"lat": 27.7035, "lon": 113.305}


def make_visit(**overrides: Any) -> dict[str, Any]:
    visit: dict[str, Any] = {
        "resident_id": "KR-000117",
        "unit_grid": UNIT_GRID,
        "visited_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "outcome": "met",
        "follow_up_needed": True,
        "note": "老人腿脚不便，需协调上门送药。",
    }
    visit.update(overrides)
    return visit


def make_proxy(**overrides: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "item": "resident_pension_enrolment",
        "resident": {"name": "李秀英", "phone": "13800138000", "id_number": "430281195003030021"},
        "location": {"unit_grid": UNIT_GRID},
        "collected_documents": ["居民身份证"],
    }
    request.update(overrides)
    return request


def client_id() -> str:
    return str(uuid.uuid4())


async def test_a_hazard_category_needs_its_hazard_block(intake: Intake) -> None:
    app, client = intake
    missing = await client.post(
        "/v1/reports", json=make_report(category="safety.hazard"), headers=auth()
    )
    assert missing.status_code == 422
    assert missing.json()["detail"] == [
        {"path": "body.hazard", "reason": "required for a safety-hazard category"}
    ]
    hazard = {"level": "major", "hazard_type": "gas", "people_at_risk": 12}
    ok = await client.post(
        "/v1/reports", json=make_report(category="safety.hazard", hazard=hazard), headers=auth()
    )
    assert ok.status_code == 202, ok.text
    [row] = await outbox_rows(app)
    case = CaseSubmitted.model_validate(row.data)
    assert case.hazard is not None and case.hazard.level == "major"


async def test_a_dispute_needs_its_dispute_block_and_others_may_not_carry_one(
    intake: Intake,
) -> None:
    _, client = intake
    dispute = {"dispute_type": "neighbour", "parties": 2, "mediation": "in_progress"}
    wrong = await client.post("/v1/reports", json=make_report(dispute=dispute), headers=auth())
    assert wrong.status_code == 422
    assert wrong.json()["detail"][0]["path"] == "body.dispute"
    ok = await client.post(
        "/v1/reports",
        json=make_report(category="dispute.neighbour", dispute=dispute),
        headers=auth(),
    )
    assert ok.status_code == 202, ok.text


async def test_coordinates_alone_find_the_unit_grid(intake: Intake) -> None:
    app, client = intake
    report = make_report(location={"coordinates": INSIDE_FIRST_GRID})
    response = await client.post("/v1/reports", json=report, headers=auth())
    assert response.status_code == 202, response.text
    [row] = await outbox_rows(app)
    assert row.data["location"]["unit_grid"] == UNIT_GRID


@pytest.mark.parametrize(
    ("location", "status", "path", "reason"),
    [
        (
            {"coordinates": {"lat": 39.9, "lon": 116.4}},
            422,
            "body.location.coordinates",
            "outside the city",
        ),
        (
            {"coordinates": {"lat": 28.09, "lon": 113.79}},
            403,
            "body.location.unit_grid",
            "does not serve",
        ),
        ({"address": "人民路"}, 422, "body.location.unit_grid", "coordinates are required"),
    ],
)
async def test_unusable_locations_are_refused(
    intake: Intake, location: dict[str, Any], status: int, path: str, reason: str
) -> None:
    app, client = intake
    response = await client.post("/v1/reports", json=make_report(location=location), headers=auth())
    assert response.status_code == status, response.text
    [detail] = response.json()["detail"]
    assert detail["path"] == path and reason in detail["reason"]
    assert await outbox_rows(app) == []


async def test_proxy_service_becomes_a_case_for_the_items_category(intake: Intake) -> None:
    app, client = intake
    response = await client.post("/v1/proxy-services", json=make_proxy(), headers=auth())
    assert response.status_code == 202, response.text
    [row] = await outbox_rows(app)
    case = CaseSubmitted.model_validate(row.data)
    assert case.category.code == "service.social_security"
    assert case.service is not None and case.service.item == "resident_pension_enrolment"
    assert case.beneficiary is not None and case.beneficiary.name == "李秀英"
    assert "户口簿" in case.description  # a document still to collect is named
    unknown = await client.post(
        "/v1/proxy-services", json=make_proxy(item="no_such_item"), headers=auth()
    )
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["path"] == "body.item"


async def test_a_service_category_is_not_an_incident(intake: Intake) -> None:
    _, client = intake
    response = await client.post(
        "/v1/reports", json=make_report(category="service.social_security"), headers=auth()
    )
    assert response.status_code == 422
    assert "proxy-services" in response.json()["detail"][0]["reason"]


async def test_visit_is_staged_for_visits_recorded_keyed_by_resident(intake: Intake) -> None:
    app, client = intake
    response = await client.post("/v1/visits", json=make_visit(), headers=auth())
    assert response.status_code == 202, response.text
    [row] = await outbox_rows(app)
    assert (row.topic, row.key, row.event_type) == (
        "visits.recorded",
        "KR-000117",
        "gridflow.visit.recorded",
    )
    visit = VisitRecorded.model_validate(row.data)
    assert visit.visit_id == response.json()["visit_id"]
    assert visit.worker_id == "W0001"
    elsewhere = await client.post(
        "/v1/visits", json=make_visit(unit_grid="430281001001002"), headers=auth()
    )
    assert elsewhere.status_code == 403


async def test_attachments_are_content_addressed_and_type_checked(intake: Intake) -> None:
    app, client = intake
    headers = {**auth(), "content-type": "image/jpeg"}
    first = await client.put("/v1/attachments", content=JPEG, headers=headers)
    assert first.status_code == 201, first.text
    again = await client.put("/v1/attachments", content=JPEG, headers=headers)
    assert again.status_code == 200 and again.json() == first.json()
    ref = first.json()
    assert ref["size"] == len(JPEG) and ref["media_type"] == "image/jpeg"

    lying = await client.put("/v1/attachments", content=b"%PDF-1.7 ...", headers=headers)
    assert lying.status_code == 415
    exe = await client.put(
        "/v1/attachments",
        content=b"MZ\x90\x00",
        headers={**auth(), "content-type": "application/x-msdownload"},
    )
    assert exe.status_code == 415 and exe.json()["detail"][0]["path"] == "header.content-type"
    assert (await client.put("/v1/attachments", content=JPEG)).status_code == 401

    ok = await client.post("/v1/reports", json=make_report(attachments=[ref]), headers=auth())
    assert ok.status_code == 202, ok.text
    forged = {**ref, "sha256": "0" * 64}
    refused = await client.post(
        "/v1/reports", json=make_report(attachments=[forged]), headers=auth()
    )
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["path"] == "body.attachments.0"
    assert len(await outbox_rows(app)) == 1


async def test_an_attachment_over_the_limit_is_refused(intake: Intake) -> None:
    app, client = intake
    limit = app.state.intake.store.max_bytes
    big = JPEG + b"\x00" * limit
    response = await client.put(
        "/v1/attachments", content=big, headers={**auth(), "content-type": "image/jpeg"}
    )
    assert response.status_code == 413


async def test_idempotency_key_returns_the_first_answer_and_refuses_another_body(
    intake: Intake,
) -> None:
    app, client = intake
    headers = {**auth(), "Idempotency-Key": "order-7f3a-0001"}
    report = make_report()
    first = await client.post("/v1/reports", json=report, headers=headers)
    again = await client.post("/v1/reports", json=report, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    other = await client.post("/v1/reports", json=make_report(title="另一件事"), headers=headers)
    assert other.status_code == 409
    assert other.json()["detail"][0]["path"] == "header.Idempotency-Key"
    assert len(await outbox_rows(app)) == 1


async def test_concurrent_retries_with_one_client_id_create_one_case(intake: Intake) -> None:
    app, client = intake
    report = make_report(client_id=client_id())
    answers = await asyncio.gather(
        *(client.post("/v1/reports", json=report, headers=auth()) for _ in range(10))
    )
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["case_id"] for a in answers}) == 1
    assert len(await outbox_rows(app)) == 1


async def test_idempotency_keys_belong_to_one_worker(intake: Intake) -> None:
    app, client = intake
    from tests.factories import make_worker_token  # noqa: PLC0415

    report = make_report(client_id="shared-client-id-1")
    mine = await client.post("/v1/reports", json=report, headers=auth())
    theirs = await client.post(
        "/v1/reports", json=report, headers=auth(make_worker_token(subject="W0002"))
    )
    assert mine.json()["case_id"] != theirs.json()["case_id"]
    assert len(await outbox_rows(app)) == 2


async def test_batch_gives_each_item_its_result_and_a_retry_creates_nothing(
    intake: Intake,
) -> None:
    app, client = intake
    items = [
        {"kind": "report", **make_report(client_id=client_id())},
        {"kind": "visit", **make_visit(client_id=client_id())},
        {"kind": "proxy_service", **make_proxy(client_id=client_id())},
        {"kind": "report", **make_report(client_id=client_id(), category="city.nope")},
        {"kind": "report", **make_report()},  # no client_id
        {"kind": "telegram", "client_id": client_id()},
        {"kind": "report", **make_report(client_id=client_id(), title="")},
    ]
    first = await client.post("/v1/batch", json={"items": items}, headers=auth())
    assert first.status_code == 200, first.text
    body = first.json()
    assert [r["status"] for r in body["results"]] == [
        "accepted",
        "accepted",
        "accepted",
        "refused",
        "refused",
        "refused",
        "refused",
    ]
    assert (body["accepted"], body["refused"]) == (3, 4)
    assert body["results"][3]["errors"] == [
        {"path": "body.items.3.category", "reason": "unknown category"}
    ]
    assert body["results"][4]["errors"][0]["path"] == "body.items.4.client_id"
    assert body["results"][5]["errors"][0]["path"] == "body.items.5.kind"
    assert body["results"][6]["errors"][0]["path"] == "body.items.6.title"
    assert len(await outbox_rows(app)) == 3

    retry = await client.post("/v1/batch", json={"items": items}, headers=auth())
    results = retry.json()["results"]
    assert [r["status"] for r in results[:3]] == ["replayed"] * 3
    assert [r.get("case_id") for r in results[:3]] == [
        r.get("case_id") for r in body["results"][:3]
    ]
    assert results[1]["visit_id"] == body["results"][1]["visit_id"]
    assert len(await outbox_rows(app)) == 3


async def test_a_batch_item_and_the_same_item_sent_alone_are_one_request(intake: Intake) -> None:
    """An all-valid batch is validated in one pass (typed items that carry `kind`); its items
    must still fingerprint as the same item sent to its own endpoint, both ways round."""
    app, client = intake
    report, visit, proxy = (
        make_report(client_id=client_id()),
        make_visit(client_id=client_id()),
        make_proxy(client_id=client_id()),
    )
    alone = await client.post("/v1/reports", json=report, headers=auth())
    assert alone.status_code == 202, alone.text
    items = [
        {"kind": "report", **report},
        {"kind": "visit", **visit},
        {"kind": "proxy_service", **proxy},
        {"kind": "visit", **make_visit()},  # valid, but a batch needs the client_id
    ]
    batch = (await client.post("/v1/batch", json={"items": items}, headers=auth())).json()
    assert [r["status"] for r in batch["results"]] == [
        "replayed",
        "accepted",
        "accepted",
        "refused",
    ]
    assert batch["results"][0]["case_id"] == alone.json()["case_id"]
    assert batch["results"][3]["errors"] == [
        {"path": "body.items.3.client_id", "reason": "required in a batch (it makes retries safe)"}
    ]
    again = await client.post("/v1/visits", json=visit, headers=auth())
    assert again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["visit_id"] == batch["results"][1]["visit_id"]
    proxy_again = await client.post("/v1/proxy-services", json=proxy, headers=auth())
    assert proxy_again.json()["case_id"] == batch["results"][2]["case_id"]
    assert len(await outbox_rows(app)) == 3


async def test_a_batch_reusing_a_client_id_for_another_item_gets_conflict(intake: Intake) -> None:
    _, client = intake
    cid = client_id()
    items = [
        {"kind": "report", **make_report(client_id=cid)},
        {"kind": "report", **make_report(client_id=cid, title="不同的事")},
    ]
    results = (await client.post("/v1/batch", json={"items": items}, headers=auth())).json()
    assert [r["status"] for r in results["results"]] == ["accepted", "conflict"]


async def test_batch_size_is_capped(intake: Intake) -> None:
    app, client = intake
    limit = app.state.intake.settings.batch_max_items
    items = [{"kind": "visit", **make_visit(client_id=client_id())} for _ in range(limit + 1)]
    response = await client.post("/v1/batch", json={"items": items}, headers=auth())
    assert response.status_code == 422
    assert response.json()["detail"][0]["path"] == "body.items"
    assert await outbox_rows(app) == []


async def test_a_nul_in_a_text_is_refused_and_fails_no_report_committed_with_it(
    intake: Intake,
) -> None:
    # found beside make contract's NUL finding: PostgreSQL refuses a NUL in the outbox's jsonb,
    # and the group commit failed every report batched with the one that carried it
    app, client = intake
    with_nul, good = await asyncio.gather(
        client.post("/v1/reports", json=make_report(description="垃圾\x00未清运"), headers=auth()),
        client.post("/v1/reports", json=make_report(), headers=auth()),
    )
    assert with_nul.status_code == 422, with_nul.text
    assert with_nul.json()["detail"][0]["path"] == "body.description"
    assert good.status_code == 202, good.text
    batch = {
        "items": [{"kind": "report", "client_id": str(uuid.uuid4()), **make_report(title="\x00")}]
    }
    refused = await client.post("/v1/batch", json=batch, headers=auth())
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"][0]["path"] == "body.items.0.title"
    assert len(await outbox_rows(app)) == 1
