"""dispatch against its own OpenAPI document: what `make contract` (bench/contract.py) checks for
every service, here for dispatch in-process with the test database and broker, bounded (a few
examples per operation, a fixed seed), and the refusals it found undocumented."""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import UTC, datetime, timedelta

import pytest

from bench.contract import Credentials, check_service
from libs.common.auth import mint_token
from tests.factories import (
    DISPATCH_SECRET,
    METRICS_TOKEN,
    make_department_token,
    make_operator_token,
)
from tests.harness import http_server
from tests.services.dispatch.conftest import DispatchStack

CITY = "430281"
OPERATOR_SCOPES = ["cases:read", "cases:manage", "deliveries:read", "deliveries:manage"]


def _partner_token() -> str:
    return mint_token(
        secret=DISPATCH_SECRET,
        subject="hotline12345",
        role="partner",
        scopes=["cases:read", "cases:decide"],
        grids=[],
        now=datetime.now(UTC),
        ttl=timedelta(hours=1),
    )


async def test_a_json_body_that_is_not_utf8_is_refused_in_the_documented_shape(
    dispatch_stack: DispatchStack,
) -> None:
    # found by make contract: FastAPI answered {"detail": "There was an error parsing the body"}
    # with a 400 that neither the OpenAPI nor the platform's error shape had
    token = make_operator_token([CITY], scopes=OPERATOR_SCOPES)
    answer = await dispatch_stack.client.post(
        "/v1/operator/deliveries/replay",
        content=b"\xff",
        headers={"Authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "bad_request",
        "detail": [{"reason": "There was an error parsing the body"}],
    }
    operation = dispatch_stack.app.openapi()["paths"]["/v1/operator/deliveries/replay"]["post"]
    documented = operation["responses"]["400"]["content"]["application/json"]["schema"]
    assert documented == {"$ref": "#/components/schemas/ErrorBody"}


async def test_every_refusal_is_documented_in_the_error_shape(
    dispatch_stack: DispatchStack,
) -> None:
    spec = dispatch_stack.app.openapi()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    case = spec["paths"]["/v1/department/cases/{case_id}"]["get"]["responses"]
    assert {"200", "401", "403", "404", "422"} <= case.keys()
    metrics = spec["paths"]["/metrics"]["get"]["responses"]
    assert list(metrics["200"]["content"]) == ["text/plain"]


# schemathesis 4.32's own strategies draw from `random` (its warning, not ours)
@pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)
async def test_dispatch_answers_as_its_openapi_document_says(
    dispatch_stack: DispatchStack,
) -> None:
    """No 5xx, and every answer's status, content type and body as documented, for generated
    valid and invalid requests to every operation (3 of each per operation, seed 8)."""
    creds = Credentials(
        bearer={
            "/v1/department/": make_department_token("chengguan"),
            "/v1/operator/": make_operator_token([CITY], scopes=OPERATOR_SCOPES),
            "/v1/partner/": _partner_token(),
        },
        metrics_token=METRICS_TOKEN,
    )
    async with http_server(dispatch_stack.app, lifespan="off") as base_url:
        result = await asyncio.to_thread(
            check_service,
            service="dispatch",
            base_url=base_url,
            creds=creds,
            examples=3,
            seed_value=8,
            deadline=time.monotonic() + 300,  # a bound, not a target: ~10 s here
        )
    assert result.operations >= 37
    assert not result.errors
    assert not result.skipped
    assert result.findings == {}


async def test_a_nul_in_a_filter_is_refused_not_a_server_error(
    dispatch_stack: DispatchStack,
) -> None:
    # found by make contract: a case id with a NUL character reached PostgreSQL, which refuses
    # it with an error (invalid byte sequence for encoding "UTF8": 0x00), answered 500
    headers = {"Authorization": f"Bearer {make_operator_token([CITY], scopes=OPERATOR_SCOPES)}"}
    client = dispatch_stack.client
    listed = await client.get("/v1/operator/deliveries?case_id=%00", headers=headers)
    assert listed.status_code == 422, listed.text
    assert listed.json()["detail"][0]["path"] == "query.case_id"
    replayed = await client.post(
        "/v1/operator/deliveries/replay", json={"case_id": "C\x00"}, headers=headers
    )
    assert replayed.status_code == 422, replayed.text
    assert replayed.json()["detail"][0]["path"] == "body.case_id"
    searched = await client.get("/v1/operator/cases?category=city%00", headers=headers)
    assert searched.status_code == 422, searched.text
    cursor = base64.urlsafe_b64encode(b"2026-11-27T18:00:00+00:00|D\x00").decode()
    paged = await client.get(f"/v1/operator/deliveries?cursor={cursor}", headers=headers)
    assert paged.status_code == 422, paged.text
    assert paged.json()["detail"][0]["path"] == "query.cursor"
    department = {"Authorization": f"Bearer {make_department_token('chengguan')}"}
    for method, path, who in (  # a case id in the path: was a 500 the same way
        ("GET", "/v1/operator/cases/C%00", headers),
        ("GET", "/v1/department/cases/C%00", department),
        ("POST", "/v1/department/cases/C%00/sign", department),
        ("GET", "/v1/partner/cases/C%00", {"Authorization": f"Bearer {_partner_token()}"}),
    ):
        answer = await client.request(method, path, headers=who, json={})
        assert answer.status_code == 422, (path, answer.text)
        assert answer.json()["detail"][0]["path"] == "path.case_id"
