"""The pure parts of `make contract` (bench/contract.py): which credentials a path gets, what a
service's result counts, and the table in docs/reliability.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.contract import (
    TABLE_END,
    TABLE_START,
    Credentials,
    ServiceResult,
    SignedBody,
    markdown_table,
    write_doc,
)

SECRET = "whsec_" + "dGVzdC1zZWNyZXQtMDEyMzQ1Njc4OWFiY2RlZg=="


def test_each_path_gets_the_token_of_its_caller_and_metrics_the_metrics_token() -> None:
    creds = Credentials(
        bearer={"/v1/department/": "dept", "/v1/operator/": "op"}, metrics_token="m"
    )
    assert creds.headers("/v1/department/cases") == {"Authorization": "Bearer dept"}
    assert creds.headers("/v1/operator/cases/{case_id}") == {"Authorization": "Bearer op"}
    assert creds.headers("/metrics") == {"Authorization": "Bearer m"}
    assert creds.headers("/healthz") == {}


def test_the_first_signer_whose_prefix_matches_signs() -> None:
    delivery, push = SignedBody(SECRET), SignedBody(SECRET)
    creds = Credentials(signers={"/v1/citycare/deliveries": delivery, "/v1/": push})
    assert creds.signer("/v1/citycare/deliveries") is delivery
    assert creds.signer("/v1/citycare/events") is push
    assert creds.signer("/readyz") is None


def test_a_result_with_a_finding_a_skipped_operation_or_no_answer_is_not_ok() -> None:
    assert ServiceResult("sla").ok
    found = ServiceResult("sla")
    found.record("not_a_server_error", "GET /x [positive]", AssertionError("500"))
    found.record("not_a_server_error", "GET /x [positive]", AssertionError("500 again"))
    assert not found.ok
    assert found.failures["not_a_server_error"] == 2
    assert found.findings["not_a_server_error: GET /x [positive]"] == (2, "AssertionError: 500")
    assert not ServiceResult("sla", skipped=["GET /y"]).ok
    assert not ServiceResult("sla", errors=["GET /y: ConnectionError"]).ok


def _report() -> dict[str, Any]:
    return {
        "started": "2026-11-27T18:00:00+00:00",
        "schemathesis": "4.32.5",
        "seed": 8,
        "examples": 25,
        "servers": "configured PostgreSQL, embedded broker",
        "machine": {"nproc": 2},
        "seconds_taken": 80.0,
        "results": [
            {
                "service": "dispatch",
                "operations": 37,
                "requests": 1752,
                "statuses": {"200": 160, "404": 1590, "500": 2},
                "failures": {"not_a_server_error": 2, "status_code_conformance": 2},
                "skipped": [],
                "errors": [],
                "ok": False,
            }
        ],
    }


def test_the_table_replaces_only_what_is_between_the_markers(tmp_path: Path) -> None:
    doc = tmp_path / "reliability.md"
    doc.write_text(f"# head\n{TABLE_START}\nold\n{TABLE_END}\ntail\n", encoding="utf-8")
    report = _report()
    write_doc(report, doc)
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# head\n") and text.endswith("tail\n")
    assert "old" not in text
    assert "| dispatch | 37 | 1,752 | 160 / 1,590 / 2 | 2 | 0 | 2 | 0 | FAILED |" in text
    assert markdown_table(report) in text
