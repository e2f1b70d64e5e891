"""intake's grid-worker API against the real database: accepted reports land in the outbox;
refused ones get 401/403/422 with the field path and reason, and nothing is written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from libs.common.events import CaseSubmitted
from tests.factories import (
    METRICS_TOKEN,
    UNIT_GRID,
    make_report,
    make_worker_token,
)
from tests.services.intake.conftest import Intake, auth, outbox_rows


async def test_accepted_report_is_staged_as_a_case(
    intake: Intake,
) -> None:
    app, client = intake
    response = await client.post("/v1/reports", json=make_report(), headers=auth())
    assert response.status_code == 202
    body = response.json()
    rows = await outbox_rows(app)
    assert [row.key for row in rows] == [body["case_id"]]
    case = CaseSubmitted.model_validate(rows[0].data)
    assert case.reporter.worker_id == "W0001"
    assert case.location.unit_grid == UNIT_GRID
    assert case.source == "grid_worker"


async def test_a_town_worker_may_report_in_any_grid_of_the_town(
    intake: Intake,
) -> None:
    _, client = intake
    town = UNIT_GRID[:9]
    response = await client.post(
        "/v1/reports", json=make_report(), headers=auth(make_worker_token(grids=[town]))
    )
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    ("headers", "status", "reason"),
    [
        ({}, 401, "missing bearer token"),
        ({"Authorization": "Bearer not-a-jwt"}, 401, "invalid token"),
        ({"Authorization": "Basic dXNlcjpwdw=="}, 401, "missing bearer token"),
        (
            auth(make_worker_token(secret="another-secret-that-is-long-enough!!")),
            401,
            "invalid token",
        ),
        (
            auth(make_worker_token(now=datetime.now(UTC) - timedelta(hours=3))),
            401,
            "expired",
        ),
        (auth(make_worker_token(scopes=["cases:read"])), 403, "lacks scope"),
        (auth(make_worker_token(grids=["430281001001002"])), 403, "does not serve this grid"),
    ],
)
async def test_unauthenticated_or_unauthorised_reports_change_nothing(
    intake: Intake, headers: dict[str, str], status: int, reason: str
) -> None:
    app, client = intake
    response = await client.post("/v1/reports", json=make_report(), headers=headers)
    assert response.status_code == status, response.text
    assert reason in response.json()["detail"][0]["reason"]
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert await outbox_rows(app) == []


@pytest.mark.parametrize(
    ("change", "path", "reason"),
    [
        ({"category": "city.unknown_thing"}, "body.category", "unknown category"),
        ({"category": "NOT A CODE"}, "body.category", "String should match pattern"),
        ({"title": "   "}, "body.title", "at least 1 character"),
        ({"description": "x" * 4001}, "body.description", "at most 4000"),
        (
            {"location": {"unit_grid": "430281999999999"}},
            "body.location.unit_grid",
            "unknown unit grid",
        ),
        (
            {"location": {"unit_grid": "12"}},
            "body.location.unit_grid",
            "String should match pattern",
        ),
        ({"location": {}}, "body.location", "needs a unit_grid"),
        ({"occurred_at": "2026-11-27T08:00:00"}, "body.occurred_at", "timezone"),
        (
            {"occurred_at": (datetime.now(UTC) + timedelta(days=1)).isoformat()},
            "body.occurred_at",
            "future",
        ),
        ({"urgency": "whenever"}, "body.urgency", "Input should be"),
        ({"colour": "red"}, "body.colour", "Extra inputs are not permitted"),
        ({"title": None}, "body.title", "valid string"),
    ],
)
async def test_invalid_reports_get_422_with_path_and_reason_and_change_nothing(
    intake: Intake, change: dict[str, Any], path: str, reason: str
) -> None:
    app, client = intake
    response = await client.post("/v1/reports", json=make_report(**change), headers=auth())
    assert response.status_code == 422, response.text
    details = response.json()["detail"]
    assert any(d["path"] == path and reason in d["reason"] for d in details), details
    assert await outbox_rows(app) == []


async def test_missing_fields_are_named(intake: Intake) -> None:
    _, client = intake
    response = await client.post("/v1/reports", json={}, headers=auth())
    assert response.status_code == 422
    paths = {d["path"] for d in response.json()["detail"]}
    assert {"body.category", "body.title", "body.description", "body.location"} <= paths


async def test_malformed_json_is_refused(intake: Intake) -> None:
    app, client = intake
    response = await client.post(
        "/v1/reports",
        content=b"{not json",
        headers={**auth(), "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert await outbox_rows(app) == []


async def test_metrics_need_the_token_and_count_outcomes(
    intake: Intake,
) -> None:
    _, client = intake
    await client.post("/v1/reports", json=make_report(), headers=auth())
    await client.post("/v1/reports", json=make_report(category="city.nope"), headers=auth())
    await client.post("/v1/reports", json=make_report(title=""), headers=auth())
    await client.post("/v1/reports", json=make_report())
    await client.post(
        "/v1/reports",
        json=make_report(),
        headers=auth(make_worker_token(grids=["430281001001002"])),
    )
    assert (await client.get("/metrics")).status_code == 401
    wrong = await client.get("/metrics", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401
    metrics = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert metrics.status_code == 200
    text = metrics.text
    assert 'gridflow_intake_submissions_total{outcome="accepted",source="grid_worker"} 1.0' in text
    for outcome in (
        "invalid_request:category",
        "invalid_request:title",
        "unauthenticated",
        "forbidden:location.unit_grid",
    ):
        line = f'gridflow_intake_submissions_total{{outcome="{outcome}",source="grid_worker"}} 1.0'
        assert line in text
    assert (
        'gridflow_http_requests_total{method="POST",route="/v1/reports",status="202"} 1.0' in text
    )


async def test_health_and_readiness(intake: Intake) -> None:
    _, client = intake
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    checks = ready.json()["checks"]
    assert {k: checks[k] for k in ("database", "broker", "workers")} == {
        "database": True,
        "broker": True,
        "workers": True,
    }
    assert "status_consumer" in checks  # reported; not required (intake accepts without Kafka)
