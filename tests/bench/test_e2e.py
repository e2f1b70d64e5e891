"""The end-to-end benchmark's accounting (bench/e2e.py, bench/e2e_receiver.py): the receiver counts
each case once, tells retries from repeats, refuses bad signatures; the report factory numbers
its reports; rows, ratios and medians are computed as documented. The whole harness starts
intake, dispatch and the servers and takes minutes, so it is not run here (`make bench`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import httpx
import psutil
import pytest

from bench.dispatch import department_secret, machine_busy, postgres_cpu
from bench.e2e import (
    CASE_PATH,
    PHASE_STRIDE,
    REPORT_CATEGORIES,
    SATURATION,
    STAGES,
    Deliveries,
    MachineCpu,
    Reports,
    add_ratios,
    cpu_budget,
    e2e_row,
    print_details,
    summarise,
)
from bench.e2e_receiver import CASE_NUMBER, TimedReceiver
from bench.loadgen import Stats
from deploy.embedded import free_port
from libs.common.signing import signed_headers
from tests.harness import until


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[TimedReceiver, str]]:
    timed = TimedReceiver(secrets={c: department_secret(c) for c in ("chengguan", "gongan")})
    timed.released.set()
    port = free_port()
    server = await timed.start(port)
    try:
        yield timed, f"http://127.0.0.1:{port}"
    finally:
        server.close()


def _webhook(number: int | None, msg_id: str, *, secret: str) -> tuple[bytes, dict[str, str]]:
    description = "no number" if number is None else f"垃圾未清运（第 {number} 次）。"
    body = json.dumps({"case": {"description": description}}, ensure_ascii=False).encode()
    headers = signed_headers(secret=secret, msg_id=msg_id, now=datetime.now(UTC), body=body)
    return body, headers


async def test_each_case_is_counted_once(receiver: tuple[TimedReceiver, str]) -> None:
    timed, url = receiver
    secret, other = department_secret("chengguan"), department_secret("gongan")
    sent = [
        (PHASE_STRIDE + 7, "msg_a", secret, "chengguan"),  # first delivery of case 7 of phase 1
        (PHASE_STRIDE + 7, "msg_a", secret, "chengguan"),  # the same webhook again: a retry
        (PHASE_STRIDE + 7, "msg_b", secret, "chengguan"),  # the same transition again: a repeat
        (PHASE_STRIDE + 7, "msg_f", other, "gongan"),  # reassigned: a further transition
        (2 * PHASE_STRIDE + 8, "msg_c", secret, "chengguan"),
        (None, "msg_d", secret, "chengguan"),  # valid, without a case number
        (9, "msg_e", department_secret("other"), "chengguan"),  # wrong secret
    ]
    deliveries = Deliveries(url)
    async with httpx.AsyncClient() as client:
        statuses = []
        for number, msg_id, key, department in sent:
            body, headers = _webhook(number, msg_id, secret=key)
            answer = await client.post(
                f"{url}/departments/{department}", content=body, headers=headers
            )
            statuses.append(answer.status_code)
        await deliveries.poll()
        await deliveries.poll()  # fresh records are handed over once
        await deliveries.aclose()
    assert statuses == [200, 200, 200, 200, 200, 200, 401]
    assert set(deliveries.first) == {PHASE_STRIDE + 7, 2 * PHASE_STRIDE + 8}
    assert deliveries.per_phase == {1: 1, 2: 1}
    assert deliveries.counters == {
        "accepted": 6,
        "refused": 1,
        "cases": 2,
        "retries": 1,
        "repeats": 1,
        "transitions": 3,
        "unnumbered": 1,
        "unavailable": 0,
    }
    assert deliveries.first[PHASE_STRIDE + 7] == timed.first[PHASE_STRIDE + 7]


async def test_hold_and_release(receiver: tuple[TimedReceiver, str]) -> None:
    timed, url = receiver
    deliveries = Deliveries(url)
    await deliveries.control("hold")
    assert not timed.released.is_set()
    await deliveries.control("release")
    await deliveries.aclose()
    assert timed.released.is_set()


async def test_down_answers_every_webhook_503_and_counts_no_delivery_until_up(
    receiver: tuple[TimedReceiver, str],
) -> None:
    """bench/faults.py's receiver-down scenario: a department system that is down."""
    timed, url = receiver
    body, headers = _webhook(PHASE_STRIDE + 1, "msg_down", secret=department_secret("chengguan"))
    deliveries = Deliveries(url)
    async with httpx.AsyncClient() as client:
        post = f"{url}/departments/chengguan"
        await deliveries.control("down")
        refused = (await client.post(post, content=body, headers=headers)).status_code
        await deliveries.control("up")
        answered = (await client.post(post, content=body, headers=headers)).status_code
        await deliveries.poll()
        await deliveries.aclose()
    assert (refused, answered) == (503, 200)
    assert set(deliveries.first) == {PHASE_STRIDE + 1}
    assert (deliveries.counters["unavailable"], deliveries.counters["retries"]) == (1, 0)
    assert not timed.down


def test_reports_are_numbered_and_valid() -> None:
    reports = Reports(3 * PHASE_STRIDE, {"authorization": "Bearer x"})
    raw = [reports(index) for index in range(len(REPORT_CATEGORIES) + 1)]
    bodies = [json.loads(r.split(b"\r\n\r\n", 1)[1]) for r in raw]
    numbers = [int(CASE_NUMBER.search(b["description"]).group(1)) for b in bodies]  # type: ignore[union-attr]
    assert numbers == [3 * PHASE_STRIDE + i for i in range(len(raw))]
    assert {b["category"] for b in bodies} == set(REPORT_CATEGORIES)
    assert set(reports.sent) == set(numbers)
    assert raw[0].startswith(b"POST /v1/reports HTTP/1.1\r\n")


def test_rows_ratios_and_medians() -> None:
    stats = Stats(started=0.0, finished=10.0, latencies=[0.01] * 100, statuses={202: 100})
    deliveries = Deliveries("http://unused")
    sent_at = {n: n * 0.1 for n in range(100)}
    deliveries.first = {n: n * 0.1 + 0.2 for n in range(98)}  # two never delivered
    row = e2e_row(
        "e2e saturation: delivered/s (sustained)",
        stats=stats,
        sent_at=sent_at,
        deliveries=deliveries,
        ended=10.2,
        drained_in=0.0,
    )
    assert (row["delivered"], row["undelivered"], row["unexpected"]) == (98, 2, 0)
    assert row["p50_ms"] == pytest.approx(200.0)
    assert row["p99_ms"] is None  # falls among the undelivered cases
    rounds = []
    for trivial in (1000.0, 2000.0, 3000.0):
        rows = [
            {"phase": "ceiling: trivial FastAPI endpoint (requests/s)", "per_second": trivial},
            {**row, "per_second": trivial / 4},
        ]
        add_ratios(rows)
        rounds.append(rows)
    summary = summarise(rounds)
    assert summary[1]["ratio_to_ceiling"] == 0.25
    assert summary[1]["per_second"] == 500.0
    assert summary[1]["undelivered"] == 6
    assert (summary[1]["target"], summary[1]["met"]) == ("≥ 2,000/s", False)


def test_cpu_per_case_is_summed_along_a_cases_path() -> None:
    rows = [
        {"phase": "ceiling: trivial FastAPI endpoint (requests/s)", "cpu_ms": 0.4},
        {"phase": "ceiling: raw aiohttp POSTs to the receiver (/s)", "cpu_ms": 0.2},
        {"phase": "ceiling: raw broker consume+produce (records/s)", "cpu_ms": 0.1},
        {"phase": "ceiling: raw broker produce (records/s)", "cpu_ms": 9.0},  # not on the path
        {"phase": STAGES[0], "cpu_ms": 0.5},
        {"phase": STAGES[1], "cpu_ms": 0.25},
        {"phase": STAGES[2], "cpu_ms": 0.75},
        {"phase": SATURATION, "cpu_ms": 2.5},
    ]
    assert [times for _, times in CASE_PATH] == [1, 1, 3]
    budget = {line["measure"].split(":")[0]: line for line in cpu_budget(rows, cores=2)}
    assert budget["ceilings on a case's path"]["cpu_ms_per_case"] == pytest.approx(0.9)
    assert budget["ceilings on a case's path"]["cases_per_second_at_most"] == 2222
    assert budget["stages alone"]["cpu_ms_per_case"] == pytest.approx(1.5)
    assert budget["stages alone"]["cases_per_second_at_most"] == 1333
    assert budget["end to end at saturation, load and drain"]["cases_per_second_at_most"] == 800
    # a measure with a part missing (a phase not run, or no operation done) is left out
    partial = cpu_budget(
        [{**row, "cpu_ms": None} if row["phase"] == STAGES[1] else row for row in rows], cores=2
    )
    assert [line["measure"].split(":")[0] for line in partial] == [
        "ceilings on a case's path",
        "end to end at saturation, load and drain",
    ]


def test_details_give_cpu_per_process_for_stages_and_end_to_end_phases(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cpu = {"intake": 20.0, "dispatch": 60.5, "machine (all processes)": 90.0}
    rows = [
        {"phase": "ceiling: trivial FastAPI endpoint (requests/s)", "cpu_ms": 0.4},
        {"phase": STAGES[2], "cpu_percent": cpu},
        {
            "phase": SATURATION,
            "cpu_percent": {**cpu, "machine (all processes)": 85.0},
            "intake_accepted_per_second": 900.0,
            "intake_p99_ms": 12.0,
            "delivered": 10,
            "accepted": 10,
            "drain_seconds": 0.5,
            "stages_ms": {"intake commit → relay published": (1.0, 2.0)},
        },
    ]
    print_details({"rounds_measured": [rows], "rounds_details": [{"receiver": {"cases": 10}}]})
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:] == [
        "round 1: receiver {'cases': 10}",
        f"  {STAGES[2]}:",
        "    CPU % of a core: intake 20.0, dispatch 60.5, rest of the machine 9.5",
        f"  {SATURATION}: intake accepted 900.0/s (p99 12.0 ms), 10 of 10 delivered,"
        " drained in 0.5 s",
        "    CPU % of a core: intake 20.0, dispatch 60.5, rest of the machine 4.5",
        "    p50/p99 ms: intake commit → relay published 1.0/2.0",
    ]


def test_machine_cpu_per_operation() -> None:
    cpu = MachineCpu()
    assert cpu.ms_per(0) is None
    before = machine_busy()
    while machine_busy() - before < 0.05:  # work until the machine has counted 50 ms of CPU
        sum(range(10_000))
    per_operation = cpu.ms_per(10)
    assert per_operation is not None
    assert per_operation >= 5.0  # at least 50 ms over 10 operations


async def test_postgres_cpu_keeps_the_time_of_a_backend_that_exited(database_url: str) -> None:
    url = database_url.replace("postgresql+asyncpg://", "postgresql://")
    before = postgres_cpu()
    connection = await asyncpg.connect(url)
    backend = await connection.fetchval("SELECT pg_backend_pid()")
    if not psutil.pid_exists(backend):
        pytest.skip("the PostgreSQL server runs on another machine")
    burnt = 0.0
    while burnt < 0.3:  # work in the backend until it has used 0.3 s of CPU
        await connection.fetchval("SELECT count(*) FROM generate_series(1, 300000)")
        times = psutil.Process(backend).cpu_times()
        burnt = times.user + times.system
    await connection.close()

    async def reaped() -> bool:
        return not psutil.pid_exists(backend)

    await until(reaped)
    assert postgres_cpu() - before >= 0.25  # its time is still counted after it is gone
