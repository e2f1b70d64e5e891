"""dispatch against its own OpenAPI document: what `make contract` (bench/contract.py) found —
refusals undocumented or in another shape, a 500."""

from __future__ import annotations

import base64

from tests.factories import make_operator_token
from tests.services.dispatch.conftest import DispatchStack

CITY = "430281"
OPERATOR_SCOPES = ["cases:read", "cases:manage", "deliveries:read", "deliveries:manage"]


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
