"""dispatch against its own OpenAPI document: the refusals `make contract` (bench/contract.py)
found undocumented or in another shape."""

from __future__ import annotations

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
