"""The fault suite's accounting (bench/faults.py): accepted, delivered, lost, duplicated as
docs/reliability.md defines them, and its table written between the document's markers. The
suite itself starts the whole stack per scenario and takes minutes (`make faults`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.faults import TABLE_END, TABLE_START, account, markdown_table, write_doc


def _row(**overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "scenario": "kill-intake",
        "load": "100/s for 10 s",
        "answers": {1: 202, 2: 202, 3: 202},
        "delivered": {1, 2, 3},
        "repeats": 0,
        "retries": 0,
    }
    return account(**(arguments | overrides))


def test_every_accepted_report_delivered_once_is_ok() -> None:
    row = _row()
    assert (row["accepted"], row["delivered"], row["lost"], row["duplicated"]) == (3, 3, 0, 0)
    assert row["ok"]


def test_an_accepted_report_never_delivered_is_lost() -> None:
    row = _row(delivered={1, 3})
    assert (row["accepted"], row["delivered"], row["lost"]) == (3, 2, 1)
    assert not row["ok"]


def test_another_webhook_id_for_a_delivered_case_is_a_duplicate() -> None:
    row = _row(repeats=2)
    assert row["duplicated"] == 2
    assert not row["ok"]


def test_the_same_webhook_id_again_is_only_a_retry() -> None:
    row = _row(retries=5)
    assert (row["duplicated"], row["retries"]) == (0, 5)
    assert row["ok"]


def test_refused_reports_are_not_owed_a_delivery() -> None:
    row = _row(answers={1: 202, 2: 503, 3: 503}, delivered={1})
    assert (row["accepted"], row["refused"], row["lost"]) == (1, 2, 0)
    assert row["ok"]


def test_unanswered_reports_delivered_anyway_are_neither_lost_nor_duplicated() -> None:
    row = _row(answers={1: 202, 2: None, 3: None}, delivered={1, 2})
    assert (row["accepted"], row["unanswered"], row["unanswered_delivered"]) == (1, 2, 1)
    assert (row["lost"], row["duplicated"]) == (0, 0)
    assert row["ok"]


def test_a_delivery_of_a_report_never_sent_fails_the_scenario() -> None:
    row = _row(delivered={1, 2, 3, 99})
    assert row["unknown_delivered"] == 1
    assert not row["ok"]


def test_the_table_replaces_only_what_is_between_the_markers(tmp_path: Path) -> None:
    doc = tmp_path / "reliability.md"
    doc.write_text(f"# head\n{TABLE_START}\nold\n{TABLE_END}\ntail\n", encoding="utf-8")
    report = {
        "run_at": "2026-11-27T16:00:00+00:00",
        "machine": {"nproc": 2, "cpu_model": "a CPU", "python": "3.11.7"},
        "results": [_row(delivered={1, 2})],
    }
    write_doc(report, doc)
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# head\n") and text.endswith("tail\n")
    assert "old" not in text
    assert "| kill-intake | 100/s for 10 s | 3 | 2 | 1 | 0 |" in markdown_table(report)
    assert markdown_table(report) in text
