"""The fault suite's accounting (bench/faults.py): accepted, delivered, lost, duplicated as
docs/reliability.md defines them, the deadline signals owed and fired, the bench's sla.yaml and
compressed delivery timings, and its table written between the document's markers. The suite
itself starts the whole stack per scenario and takes minutes (`make faults`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.dispatch import Servers
from bench.e2e_receiver import CASE_NUMBER
from bench.faults import (
    BRIDGE_SCENARIOS,
    CITYCARE,
    ESCALATION_AFTER,
    FAST_CATEGORY,
    FIRE_GRACE,
    HOTLINE,
    ORDER_BASE,
    SIGN_LIMIT,
    TABLE_END,
    TABLE_START,
    SignalKey,
    Stack,
    account,
    account_signals,
    account_updates,
    bench_policies,
    clocked_cases,
    compressed_delivery,
    markdown_table,
    on_fast_policy,
    signal_points,
    signals_ok,
    write_doc,
)
from libs.common.events import Actor, CaseLifecycleEvent, CaseState, Transition, Urgency
from services.sla.policies import load_policies

ASSIGNED_AT = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


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


# --- deadline signals ---------------------------------------------------------------------------


def _event(
    case_id: str, version: int, transition: Transition, *, category: str = FAST_CATEGORY
) -> CaseLifecycleEvent:
    return CaseLifecycleEvent(
        case_id=case_id,
        version=version,
        transition=transition,
        from_state=None,
        to_state=CaseState.ASSIGNED,
        at=ASSIGNED_AT + timedelta(seconds=version),
        actor=Actor(kind="system", id="dispatch"),
        category=category,
    )


CASE, OTHER, STRANGER, MOVED = (f"C{n:026d}" for n in range(1, 5))


def _fired(keys: list[SignalKey], *, ids: list[str] | None = None) -> list[tuple[SignalKey, str]]:
    return list(zip(keys, ids or [f"evt-{n}" for n in range(len(keys))], strict=True))


def _signals(**overrides: Any) -> dict[str, Any]:
    points = signal_points({CASE: ASSIGNED_AT})
    arguments: dict[str, Any] = {
        "points": points,
        "fired": _fired(list(points)),
        "checked_at": ASSIGNED_AT + timedelta(minutes=5),
    }
    return account_signals(**(arguments | overrides))


def test_the_bench_policy_is_valid_and_owes_a_warning_a_breach_and_an_escalation(
    tmp_path: Path,
) -> None:
    (tmp_path / "sla.yaml").write_text(bench_policies(), encoding="utf-8")
    policies = load_policies(tmp_path / "sla.yaml")
    fast = policies.select(FAST_CATEGORY, Urgency.ROUTINE)
    assert fast.id == "faults-fast"
    assert policies.select("power.outage", Urgency.ROUTINE).id == "faults-calm"
    points = signal_points({CASE: ASSIGNED_AT})
    assert sorted((kind, due - ASSIGNED_AT) for (_, _, kind, _), due in points.items()) == [
        ("breach", SIGN_LIMIT),
        ("escalation", SIGN_LIMIT + ESCALATION_AFTER),
        ("warning", SIGN_LIMIT / 2),
    ]
    assert all(stage == "sign" and at == due for (_, stage, _, at), due in points.items())


def test_every_owed_signal_fired_once_is_ok() -> None:
    row = _signals()
    assert (row["signals_owed"], row["signals"], row["signals_missing"]) == (3, 3, 0)
    assert (row["signals_duplicated"], row["signals_unexpected"]) == (0, 0)
    assert signals_ok(row)


def test_an_owed_signal_that_never_fired_is_missing() -> None:
    points = signal_points({CASE: ASSIGNED_AT})
    row = _signals(fired=_fired(list(points)[:2]))
    assert (row["signals"], row["signals_missing"]) == (2, 1)
    assert not signals_ok(row)


def test_a_point_not_yet_due_at_the_check_is_not_owed() -> None:
    # checked just after the breach: the escalation (6 s later) is not owed, nor missing
    row = _signals(fired=[], checked_at=ASSIGNED_AT + SIGN_LIMIT + FIRE_GRACE)
    assert (row["signals_owed"], row["signals_missing"]) == (2, 2)


def test_the_same_signal_under_another_event_id_is_a_duplicate_the_same_id_is_not() -> None:
    points = list(signal_points({CASE: ASSIGNED_AT}))
    twice = _signals(fired=_fired([*points, points[0]], ids=["a", "b", "c", "d"]))
    assert (twice["signals_duplicated"], twice["signals_republished"]) == (1, 0)
    assert not signals_ok(twice)
    again = _signals(fired=_fired([*points, points[0]], ids=["a", "b", "c", "a"]))
    assert (again["signals_duplicated"], again["signals_republished"]) == (0, 1)
    assert signals_ok(again)


def test_a_signal_the_policy_does_not_owe_a_counted_case_is_unexpected() -> None:
    points = signal_points({CASE: ASSIGNED_AT})
    stray: SignalKey = (CASE, "sign", "warning", ASSIGNED_AT + timedelta(seconds=1))
    row = _signals(fired=_fired([*points, stray]))
    assert row["signals_unexpected"] == 1
    assert not signals_ok(row)


def test_signals_of_cases_not_counted_are_left_out() -> None:
    stray: SignalKey = (OTHER, "sign", "breach", ASSIGNED_AT)
    row = _signals(fired=_fired([*signal_points({CASE: ASSIGNED_AT}), stray]))
    assert (row["signals"], row["signals_unexpected"]) == (3, 0)


def test_counted_cases_are_accepted_fast_ones_whose_clock_ran_from_one_assignment() -> None:
    events = [
        _event(CASE, 1, Transition.RECEIVED),
        _event(CASE, 2, Transition.ASSIGNED),
        _event(CASE, 3, Transition.SUPERVISED),
        _event(CASE, 3, Transition.SUPERVISED),  # published again: the same version
        _event(CASE, 4, Transition.ESCALATED),
        _event(OTHER, 1, Transition.ASSIGNED, category="power.outage"),  # not on the fast policy
        _event(STRANGER, 1, Transition.ASSIGNED),  # not accepted
        _event(MOVED, 1, Transition.ASSIGNED),
        _event(MOVED, 2, Transition.REASSIGNED),  # its clock started again
    ]
    accepted = {CASE, OTHER, MOVED}
    counted, skipped = clocked_cases(events, accepted)
    assert counted == {CASE: ASSIGNED_AT + timedelta(seconds=2)}
    assert skipped == 1
    assert not signals_ok(_signals(skipped=skipped))


# --- receiver down: compressed delivery timings ---------------------------------------------------


def test_receiver_down_divides_dispatch_s_delivery_timings_by_the_time_scale() -> None:
    assert compressed_delivery(10) == {
        "GRIDFLOW_DELIVERY_BASE_DELAY_SECONDS": "0.2",
        "GRIDFLOW_DELIVERY_MAX_DELAY_SECONDS": "8640",
        "GRIDFLOW_DELIVERY_BREAKER_COOLDOWN_SECONDS": "6",
        "GRIDFLOW_DELIVERY_BREAKER_MAX_COOLDOWN_SECONDS": "360",
    }


# --- the document ---------------------------------------------------------------------------------


def test_the_table_replaces_only_what_is_between_the_markers(tmp_path: Path) -> None:
    doc = tmp_path / "reliability.md"
    doc.write_text(f"# head\n{TABLE_START}\nold\n{TABLE_END}\ntail\n", encoding="utf-8")
    report = {
        "run_at": "2026-11-27T16:00:00+00:00",
        "machine": {"nproc": 2, "cpu_model": "a CPU", "python": "3.11.7"},
        "results": [_row(delivered={1, 2}) | _signals()],
    }
    write_doc(report, doc)
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# head\n") and text.endswith("tail\n")
    assert "old" not in text
    assert "| kill-intake | 100/s for 10 s | 3 | 2 | 1 | 0 |" in markdown_table(report)
    assert "| 3 (3) | 0 | 0 | None / None | FAILED |" in markdown_table(report)
    assert markdown_table(report) in text


# --- the bridge scenarios -------------------------------------------------------------------------


def test_each_matter_delivered_is_owed_one_assignment_status_back() -> None:
    updates = {
        "GD1": ["assigned", "supervised"],
        "GD2": ["assigned", "assigned"],  # two webhook-ids for one assignment: a duplicate
        "GD3": [],
        "GD4": ["assigned"],  # not delivered: not owed
    }
    row = account_updates(updates, {"GD1", "GD2", "GD3"}, status="assigned")
    assert row == {"updates_owed": 3, "updates_missing": 1, "updates_duplicated": 1}


def test_the_platforms_matters_carry_their_number_for_the_receiver() -> None:
    for partner, text in ((HOTLINE, "content"), (CITYCARE, "description")):
        body = partner.file_body(ORDER_BASE + 7)
        found = CASE_NUMBER.search(body[text])
        assert found is not None and int(found.group(1)) == ORDER_BASE + 7
    assert HOTLINE.file_body(ORDER_BASE)["classification"]["code"] == "0101"  # city.garbage
    assert CITYCARE.file_body(ORDER_BASE)["sample"] == 0  # 暴露垃圾: city.garbage


def test_the_fast_policy_gets_one_report_in_five_and_a_platforms_first_kind() -> None:
    reports = [n for n in range(10**9, 10**9 + 10) if on_fast_policy(n, None)]
    assert len(reports) == 2
    assert on_fast_policy(ORDER_BASE + 4, HOTLINE) and not on_fast_policy(ORDER_BASE + 4, CITYCARE)


# --- the bridges in the stack -------------------------------------------------------------------


def _bridge_services(scenario: str, tmp_path: Path) -> tuple[dict[str, str], list[str]]:
    partner = BRIDGE_SCENARIOS[scenario]
    stack = Stack("faultstest", tmp_path, partner=partner)
    found = Servers("postgresql+asyncpg://postgres@127.0.0.1/test", "127.0.0.1:9092", None, "x")
    services = stack._bridge(partner, found, tmp_path, dispatch_port=8101)
    bridge, simulator = (
        services[f"{partner.name}{suffix}"] for suffix in ("_bridge", "-simulator")
    )
    return bridge.env, simulator.argv


def test_a_poll_scenario_s_bridge_reads_the_feed_and_its_simulator_pushes_nothing(
    tmp_path: Path,
) -> None:
    for scenario in ("kill-hotline-bridge-poll", "kill-citycare-bridge-poll"):
        env, argv = _bridge_services(scenario, tmp_path)
        assert env["GRIDFLOW_PARTNER_MODE"] == "poll"
        assert float(env["GRIDFLOW_PARTNER_POLL_SECONDS"]) <= 1.0
        assert "--bridge" not in argv  # without it the simulator only serves its feed


def test_a_push_scenario_s_simulator_pushes_to_its_bridge(tmp_path: Path) -> None:
    for scenario in ("kill-hotline-bridge", "kill-citycare-bridge"):
        env, argv = _bridge_services(scenario, tmp_path)
        assert "GRIDFLOW_PARTNER_MODE" not in env  # the default: push
        assert argv[argv.index("--bridge") + 1].startswith("http://127.0.0.1:")
