"""Reliable delivery against the real broker, database and department receivers over HTTP:
retries, Retry-After, 410 Gone, the circuit breaker, the concurrency limit, dead letters and
replay, secret rotation, what each department may see of the reporter, and pull departments."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from deploy.embedded import free_port
from libs.common.events import (
    CaseLifecycleEvent,
    CaseSubmitted,
    Reporter,
    Transition,
)
from libs.common.topics import CASES_SUBMITTED
from services.dispatch.delivery import WebhookPayload
from services.dispatch.models import CaseHistoryRow, DeliveryRow, ReceiverRow
from tests.factories import (
    METRICS_TOKEN,
    Isolation,
    department_secret,
    make_department_token,
    make_operator_token,
)
from tests.harness import WAIT_SECONDS, http_server, until
from tests.services.dispatch.conftest import DispatchStack, dispatch_stack_with
from tests.services.dispatch.test_flow import make_case

CITY = "430281"
MANAGE = ["deliveries:read", "deliveries:manage"]


def edit_receiver(department: str, *lines: str) -> Callable[[str], str]:
    """An edit of departments.yaml that replaces `department`'s receiver block by `lines`."""

    def edit(text: str) -> str:
        pattern = rf"(short_code: {department}\n    receiver:\n)((?:      .*\n)+?)(?=  - code:|\Z)"
        block = "".join(f"      {line}\n" for line in lines)
        changed, count = re.subn(pattern, lambda m: m.group(1) + block, text)
        assert count == 1
        return changed

    return edit


def add_to_receiver(department: str, *lines: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        pattern = rf"(short_code: {department}\n    receiver:\n(?:      .*\n)+?)(?=  - code:|\Z)"
        extra = "".join(f"      {line}\n" for line in lines)
        changed, count = re.subn(pattern, lambda m: m.group(1) + extra, text)
        assert count == 1
        return changed

    return edit


async def publish(stack: DispatchStack, case: CaseSubmitted) -> None:
    await stack.publisher.publish(CASES_SUBMITTED, case, key=case.case_id, now=datetime.now(UTC))


def _is(case_id: str, transition: Transition) -> Any:
    def match(_: object, payload: object) -> bool:
        return (
            isinstance(payload, CaseLifecycleEvent)
            and payload.case_id == case_id
            and payload.transition is transition
        )

    return match


async def deliveries_of(stack: DispatchStack, case_id: str) -> list[DeliveryRow]:
    async with stack.app.state.runtime.sessions() as session:
        query = sa.select(DeliveryRow).where(DeliveryRow.case_id == case_id)  # type: ignore[arg-type]
        return list((await session.scalars(query)).all())


async def receiver_row(stack: DispatchStack, department: str) -> ReceiverRow | None:
    async with stack.app.state.runtime.sessions() as session:
        row: ReceiverRow | None = await session.get(ReceiverRow, department)
        return row


async def wait_status(
    stack: DispatchStack, case_id: str, status: str, attempts: int
) -> DeliveryRow:
    async def reached() -> bool:
        rows = await deliveries_of(stack, case_id)
        return bool(rows) and rows[0].status == status and rows[0].attempts >= attempts

    await until(reached)
    [row] = await deliveries_of(stack, case_id)
    return row


def operator(grids: list[str] | None = None, scopes: list[str] | None = None) -> dict[str, str]:
    token = make_operator_token([CITY] if grids is None else grids, scopes=scopes or MANAGE)
    return {"Authorization": f"Bearer {token}"}


async def metrics(stack: DispatchStack) -> str:
    headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    return (await stack.client.get("/metrics", headers=headers)).text


# --- retries --------------------------------------------------------------------------------------


async def test_a_failing_receiver_that_recovers_gets_the_case_assigned_exactly_once(
    dispatch_stack: DispatchStack,
) -> None:
    stack = dispatch_stack
    stack.receiver.fail_next("chengguan", 500, 500, 500)
    case = make_case()
    await publish(stack, case)
    received = await asyncio.wait_for(stack.receiver.received.get(), WAIT_SECONDS)
    await stack.lifecycle.wait_for(_is(case.case_id, Transition.ASSIGNED))
    row = await wait_status(stack, case.case_id, "delivered", 4)
    assert (row.attempts, row.last_status_code, row.delivery_id) == (4, 200, received.webhook_id)
    assert row.leased_until is None and row.next_attempt_at is None
    async with stack.app.state.runtime.sessions() as session:
        assigned = (
            await session.scalars(
                sa.select(CaseHistoryRow).where(
                    CaseHistoryRow.case_id == case.case_id,  # type: ignore[arg-type]
                    CaseHistoryRow.transition == Transition.ASSIGNED.value,  # type: ignore[arg-type]
                )
            )
        ).all()
    assert len(assigned) == 1
    assert stack.receiver.received.empty()
    WebhookPayload.model_validate(received.body)  # the body the department got fits the schema
    text = await metrics(stack)
    assert 'gridflow_delivery_attempts_total{department="chengguan",outcome="retry"} 3.0' in text
    assert (
        'gridflow_delivery_attempts_total{department="chengguan",outcome="delivered"} 1.0' in text
    )
    assert 'gridflow_delivery_latency_seconds_count{department="chengguan"} 1.0' in text


async def test_an_unreachable_and_a_silent_receiver_are_retried_with_the_reason(
    isolation: Isolation, tmp_path: Path
) -> None:
    """No answer at all is a failed attempt like a 500: a refused connection and a receiver that
    accepts the request but never answers (the timeout) are retried, the error kept."""
    closed = free_port()  # nothing listens there

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # holds the connection until the client gives up
        writer.close()

    silent = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    silent_port = silent.sockets[0].getsockname()[1]

    def point(department: str, url: str) -> Callable[[str], str]:
        return lambda text: re.sub(
            rf"(short_code: {department}\n(?:    .*\n)*?      url: )\S+", rf"\g<1>{url}", text
        )

    def edit(text: str) -> str:
        text = point("chengguan", f"http://127.0.0.1:{closed}/hook")(text)
        return point("yingji", f"http://127.0.0.1:{silent_port}/hook")(text)

    try:
        async with dispatch_stack_with(
            isolation, tmp_path, departments=edit, delivery_timeout_seconds=0.3
        ) as stack:
            refused, ignored = make_case(), make_case("safety.hazard")
            await publish(stack, refused)
            await publish(stack, ignored)
            unreachable = await wait_status(stack, refused.case_id, "pending", 2)
            timed_out = await wait_status(stack, ignored.case_id, "pending", 2)
    finally:
        silent.close()
    assert unreachable.department == "chengguan" and timed_out.department == "yingji"
    assert unreachable.last_status_code is None and timed_out.last_status_code is None
    assert "Connect" in (unreachable.last_error or ""), unreachable.last_error
    assert "Timeout" in (timed_out.last_error or ""), timed_out.last_error


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_sets_the_next_attempt(
    isolation: Isolation, tmp_path: Path, status: int
) -> None:
    async with dispatch_stack_with(isolation, tmp_path) as stack:
        stack.receiver.fail_next("chengguan", status, retry_after="120")
        case = make_case()
        before = datetime.now(UTC)
        await publish(stack, case)

        async def answered() -> bool:
            rows = await deliveries_of(stack, case.case_id)
            return bool(rows) and rows[0].attempts == 1 and rows[0].leased_until is None

        await until(answered)
        after = datetime.now(UTC)
        [row] = await deliveries_of(stack, case.case_id)
        assert row.status == "pending" and row.last_status_code == status
        assert row.next_attempt_at is not None
        # 120 s after the answer, not the 0.05 s backoff the test settings give
        assert before + timedelta(seconds=120) <= row.next_attempt_at
        assert row.next_attempt_at <= after + timedelta(seconds=120)


# --- 410 Gone -------------------------------------------------------------------------------------


async def test_gone_disables_the_receiver_keeps_cases_pending_and_enable_delivers_them(
    dispatch_stack: DispatchStack,
) -> None:
    stack = dispatch_stack
    stack.receiver.fail_next("chengguan", 410)
    first = make_case()
    await publish(stack, first)

    async def disabled() -> bool:
        row = await receiver_row(stack, "chengguan")
        return row is not None and row.disabled

    await until(disabled)
    receiver = await receiver_row(stack, "chengguan")
    assert receiver is not None and "410" in (receiver.reason or "")
    [row] = await deliveries_of(stack, first.case_id)
    assert row.status == "pending"  # not lost

    later = make_case()
    await publish(stack, later)
    await stack.lifecycle.wait_for(_is(later.case_id, Transition.RECEIVED))
    assert await stack.app.state.deliverer.start_due() == 0  # nothing may go to chengguan
    [waiting] = await deliveries_of(stack, later.case_id)
    assert (waiting.status, waiting.attempts) == ("pending", 0)
    assert stack.receiver.attempts["chengguan"] == 1

    listed = await stack.client.get("/v1/operator/deliveries/receivers", headers=operator())
    chengguan = next(r for r in listed.json()["receivers"] if r["department"] == "chengguan")
    assert chengguan["disabled"] is True and chengguan["pending"] == 2
    await stack.app.state.gauges.measure()
    assert 'gridflow_delivery_receiver_disabled{department="chengguan"} 1.0' in await metrics(stack)

    enabled = await stack.client.post(
        "/v1/operator/deliveries/receivers/chengguan/enable", headers=operator()
    )
    assert enabled.status_code == 200, enabled.text
    await stack.lifecycle.wait_for(_is(first.case_id, Transition.ASSIGNED))
    await stack.lifecycle.wait_for(_is(later.case_id, Transition.ASSIGNED))
    assert (await wait_status(stack, later.case_id, "delivered", 1)).attempts == 1


# --- circuit breaker and concurrency --------------------------------------------------------------


async def test_the_breaker_opens_after_n_failures_and_a_probe_closes_it(
    isolation: Isolation, tmp_path: Path
) -> None:
    async with dispatch_stack_with(
        isolation,
        tmp_path,
        delivery_breaker_failures=3,
        delivery_breaker_cooldown_seconds=3600,
    ) as stack:
        stack.receiver.fail_next("chengguan", 500, 500, 500)
        case = make_case()
        await publish(stack, case)

        async def opened() -> bool:
            row = await receiver_row(stack, "chengguan")
            return row is not None and row.open_until is not None

        await until(opened)
        row = await receiver_row(stack, "chengguan")
        assert row is not None and row.consecutive_failures == 3

        async def due() -> bool:
            [delivery] = await deliveries_of(stack, case.case_id)
            moment = delivery.next_attempt_at
            return moment is not None and moment <= datetime.now(UTC)

        await until(due)  # the delivery is due, but the breaker holds it back
        assert await stack.app.state.deliverer.start_due() == 0
        assert stack.receiver.attempts["chengguan"] == 3
        listed = await stack.client.get("/v1/operator/deliveries/receivers", headers=operator())
        chengguan = next(r for r in listed.json()["receivers"] if r["department"] == "chengguan")
        assert chengguan["breaker"]["state"] == "open"
        await stack.app.state.gauges.measure()
        assert 'gridflow_delivery_circuit_open{department="chengguan"} 1.0' in await metrics(stack)

        # the cooldown passes (moved into the past rather than waited for): one probe goes
        async with stack.app.state.runtime.sessions() as session, session.begin():
            receiver = await session.get(ReceiverRow, "chengguan")
            assert receiver is not None
            receiver.open_until = datetime.now(UTC) - timedelta(seconds=1)
        stack.app.state.deliverer.wake()
        await stack.lifecycle.wait_for(_is(case.case_id, Transition.ASSIGNED))
        closed = await receiver_row(stack, "chengguan")
        assert closed is not None
        assert (closed.open_until, closed.consecutive_failures) == (None, 0)


class SlowDepartment:
    """A receiver that holds every request until released, and counts how many it held at once."""

    def __init__(self) -> None:
        self.held = 0
        self.most = 0
        self.received = 0
        self.changed = asyncio.Condition()
        self.release = asyncio.Event()

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/departments/{code}", self._receive, methods=["POST"])])

    async def _receive(self, _: Request) -> JSONResponse:
        async with self.changed:
            self.held += 1
            self.received += 1
            self.most = max(self.most, self.held)
            self.changed.notify_all()
        await self.release.wait()
        async with self.changed:
            self.held -= 1
            self.changed.notify_all()
        return JSONResponse({"ok": True})

    async def wait_held(self, count: int) -> None:
        async with asyncio.timeout(WAIT_SECONDS), self.changed:
            await self.changed.wait_for(lambda: self.held >= count)

    async def wait_received(self, count: int) -> None:
        async with asyncio.timeout(WAIT_SECONDS), self.changed:
            await self.changed.wait_for(lambda: self.received >= count)


def chengguan_at(base_url: str) -> Callable[[str], str]:
    """An edit of departments.yaml that points chengguan's receiver at `base_url`."""
    return lambda text: re.sub(
        r"http://127\.0\.0\.1:\d+/departments/chengguan", f"{base_url}/departments/chengguan", text
    )


@pytest.fixture
async def slow_department() -> AsyncIterator[tuple[SlowDepartment, str]]:
    slow = SlowDepartment()
    async with http_server(slow.app()) as base_url:
        try:
            yield slow, base_url
        finally:
            slow.release.set()


async def test_at_most_n_attempts_per_department_and_none_holds_a_row_lock(
    isolation: Isolation,
    tmp_path: Path,
    slow_department: tuple[SlowDepartment, str],
) -> None:
    slow, base_url = slow_department

    async with dispatch_stack_with(
        isolation,
        tmp_path,
        departments=chengguan_at(base_url),
        delivery_concurrency_per_department=2,
        delivery_poll_seconds=600,  # no round by the clock: a freed slot must wake the loop
    ) as stack:
        cases = [make_case() for _ in range(5)]
        for case in cases:
            await publish(stack, case)
        for case in cases:
            await stack.lifecycle.wait_for(_is(case.case_id, Transition.RECEIVED))
        await slow.wait_held(2)
        assert await stack.app.state.deliverer.start_due() == 0  # the department is at its limit
        async with stack.app.state.runtime.sessions() as session, session.begin():
            leased = (
                await session.scalars(
                    sa.select(DeliveryRow)
                    .where(DeliveryRow.leased_until.is_not(None))  # type: ignore[union-attr]
                    .with_for_update(nowait=True)  # fails if an attempt held a row lock
                )
            ).all()
        assert len(leased) == 2
        slow.release.set()
        for case in cases:
            await stack.lifecycle.wait_for(_is(case.case_id, Transition.ASSIGNED))
        assert slow.most == 2


async def test_a_lease_round_that_took_every_due_delivery_is_not_followed_by_an_empty_one(
    isolation: Isolation,
    tmp_path: Path,
    slow_department: tuple[SlowDepartment, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each round leases what is due up to the free slots; the loop then waits for a wake (a new
    case, or a slot freed while a delivery waits for one) instead of asking again at once."""
    slow, base_url = slow_department
    slow.release.set()  # answers at once

    async with dispatch_stack_with(
        isolation,
        tmp_path,
        departments=chengguan_at(base_url),
        delivery_poll_seconds=600,  # no round by the clock
    ) as stack:
        deliverer = stack.app.state.deliverer
        rounds: list[int] = []
        start_due = deliverer.start_due

        async def counted() -> int:
            leased: int = await start_due()
            rounds.append(leased)
            return leased

        monkeypatch.setattr(deliverer, "start_due", counted)
        for _ in range(3):  # one at a time: each case's round cannot see the next case
            case = make_case()
            await publish(stack, case)
            await stack.lifecycle.wait_for(_is(case.case_id, Transition.ASSIGNED))
        assert rounds == [1, 1, 1]


async def test_a_department_window_refills_as_answers_come_not_as_they_are_recorded(
    isolation: Isolation,
    tmp_path: Path,
    slow_department: tuple[SlowDepartment, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With one attempt allowed at a time and the recorder held back, the department's next
    deliveries still go out one after another: an answered attempt is no longer in flight."""
    slow, base_url = slow_department

    async with dispatch_stack_with(
        isolation,
        tmp_path,
        departments=chengguan_at(base_url),
        delivery_concurrency_per_department=1,
        delivery_poll_seconds=600,  # no round by the clock: a freed slot must wake the loop
    ) as stack:
        deliverer = stack.app.state.deliverer
        recording = asyncio.Event()
        record = deliverer._record

        async def held_back(answered: Any) -> None:
            await recording.wait()
            await record(answered)

        monkeypatch.setattr(deliverer, "_record", held_back)
        cases = [make_case() for _ in range(3)]
        for case in cases:
            await publish(stack, case)
        await slow.wait_held(1)
        slow.release.set()
        await slow.wait_received(3)  # none of them recorded yet
        assert slow.most == 1
        recording.set()
        for case in cases:
            await stack.lifecycle.wait_for(_is(case.case_id, Transition.ASSIGNED))


async def test_a_receiver_s_own_concurrency_overrides_the_deployment_s(
    isolation: Isolation,
    tmp_path: Path,
    slow_department: tuple[SlowDepartment, str],
) -> None:
    slow, base_url = slow_department

    async with dispatch_stack_with(
        isolation,
        tmp_path,
        departments=lambda text: add_to_receiver("chengguan", "concurrency: 1")(
            chengguan_at(base_url)(text)
        ),
        delivery_concurrency_per_department=4,
    ) as stack:
        cases = [make_case() for _ in range(3)]
        for case in cases:
            await publish(stack, case)
        for case in cases:
            await stack.lifecycle.wait_for(_is(case.case_id, Transition.RECEIVED))
        await slow.wait_held(1)
        assert await stack.app.state.deliverer.start_due() == 0  # its own limit, not 4
        slow.release.set()
        for case in cases:
            await stack.lifecycle.wait_for(_is(case.case_id, Transition.ASSIGNED))
        assert slow.most == 1


def hold_recording_rounds(
    deliverer: Any, monkeypatch: pytest.MonkeyPatch
) -> tuple[asyncio.Event, asyncio.Event]:
    """Each recording round stops inside its transaction, its receivers read or locked, until
    released: (set when a round is inside, set to let it go on)."""
    inside, release = asyncio.Event(), asyncio.Event()
    assign = deliverer._assign

    async def held_inside_the_round(driver: Any, delivered: Any, **writes: Any) -> None:
        inside.set()
        await release.wait()
        await assign(driver, delivered, **writes)

    monkeypatch.setattr(deliverer, "_assign", held_inside_the_round)
    return inside, release


@pytest.mark.parametrize("answer", [200, 500])
async def test_a_round_of_successes_leaves_its_receivers_unlocked_for_leasing_a_failure_locks(
    isolation: Isolation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: int
) -> None:
    """The lease loop skips receivers locked elsewhere: a round recording only successes on a
    closed breaker changes no receiver, so it must not lock one (leasing for that department
    would wait for its commit); a round with a failure moves the breaker, so it locks."""
    async with dispatch_stack_with(isolation, tmp_path, delivery_breaker_failures=100) as stack:
        deliverer = stack.app.state.deliverer
        inside, release = hold_recording_rounds(deliverer, monkeypatch)
        if answer != 200:
            stack.receiver.fail_next("chengguan", answer)
        case = make_case()
        await publish(stack, case)
        await asyncio.wait_for(inside.wait(), WAIT_SECONDS)
        try:
            async with stack.app.state.runtime.sessions() as session, session.begin():
                lock = sa.text(
                    "SELECT department FROM receivers WHERE department = 'chengguan'"
                    " FOR UPDATE SKIP LOCKED"
                )
                free = (await session.execute(lock)).scalars().all()
        finally:
            release.set()
        assert free == (["chengguan"] if answer == 200 else [])
        if answer == 200:
            await stack.lifecycle.wait_for(_is(case.case_id, Transition.ASSIGNED))


async def test_a_lease_round_that_met_receivers_locked_by_the_recorder_goes_again_after_it(
    isolation: Isolation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recording round with a failure locks its receivers; a lease round meanwhile skips
    their departments, as it skips those another instance holds. The recorder then wakes the
    lease loop, so a case that came meanwhile goes at once, not at the next poll (an hour
    here) or the next case."""
    async with dispatch_stack_with(
        isolation,
        tmp_path,
        delivery_breaker_failures=100,
        delivery_poll_seconds=3600,
        delivery_base_delay_seconds=3600,
    ) as stack:
        deliverer = stack.app.state.deliverer
        inside, release = hold_recording_rounds(deliverer, monkeypatch)
        stack.receiver.fail_next("chengguan", 500)
        failing, waiting = make_case(), make_case()
        await publish(stack, failing)
        await asyncio.wait_for(inside.wait(), WAIT_SECONDS)
        lease = deliverer._lease
        rounds: list[int] = []

        async def counted(capacity: int) -> Any:
            leased = await lease(capacity)
            rounds.append(len(leased))
            if not release.is_set():
                release.set()  # the round that met the lock is over: let the recorder commit
            return leased

        monkeypatch.setattr(deliverer, "_lease", counted)
        await publish(stack, waiting)  # its commit wakes the lease loop
        await stack.lifecycle.wait_for(_is(waiting.case_id, Transition.ASSIGNED))
        assert rounds[0] == 0  # chengguan's receiver was locked: nothing leased
        assert sum(stack.receiver.attempts.values()) == 2  # the failure, then the waiting case


async def test_answers_that_could_not_be_recorded_are_recorded_in_a_later_round(
    isolation: Isolation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database away when an answer comes in: the answer is kept and recorded once it is
    back, while its lease holds, instead of the delivery waiting out its lease (tens of seconds)
    to be attempted again."""
    async with dispatch_stack_with(isolation, tmp_path) as stack:
        deliverer = stack.app.state.deliverer
        record = deliverer._record
        failures: list[int] = []

        async def database_away_once(answered: Any) -> None:
            if not failures:
                failures.append(len(answered))
                raise ConnectionResetError("the database went away")
            await record(answered)

        monkeypatch.setattr(deliverer, "_record", database_away_once)
        case = make_case()
        await publish(stack, case)
        await stack.lifecycle.wait_for(_is(case.case_id, Transition.ASSIGNED))
        assert failures == [1]
        assert sum(stack.receiver.attempts.values()) == 1  # recorded, not attempted again


# --- dead letters and replay ----------------------------------------------------------------------


async def test_dead_letters_are_visible_and_replayed_by_case_time_range_and_department(
    isolation: Isolation, tmp_path: Path
) -> None:
    async with dispatch_stack_with(
        isolation, tmp_path, delivery_max_attempts=2, delivery_breaker_failures=100
    ) as stack:
        cases = [make_case() for _ in range(3)]
        rows = []
        for case in cases:
            stack.receiver.fail_next("chengguan", 500, 500)
            await publish(stack, case)
            rows.append(await wait_status(stack, case.case_id, "dead", 2))
        first, second, third = cases

        dead = await stack.client.get("/v1/operator/deliveries/dead", headers=operator())
        assert dead.status_code == 200, dead.text
        assert [d["case_id"] for d in dead.json()["deliveries"]] == [c.case_id for c in cases]
        assert "payload" not in dead.json()["deliveries"][0]
        await stack.app.state.gauges.measure()
        text = await metrics(stack)
        assert 'gridflow_delivery_dead_letters{department="chengguan"} 3.0' in text
        assert 'gridflow_delivery_dead_lettered_total{department="chengguan"} 3.0' in text

        async def replay(body: dict[str, Any]) -> int:
            answer = await stack.client.post(
                "/v1/operator/deliveries/replay", json=body, headers=operator()
            )
            assert answer.status_code == 200, answer.text
            return int(answer.json()["requeued"])

        assert await replay({"case_id": first.case_id}) == 1
        await stack.lifecycle.wait_for(_is(first.case_id, Transition.ASSIGNED))
        window = {
            "since": rows[1].created_at.isoformat(),
            "until": rows[2].created_at.isoformat(),
        }
        assert await replay(window) == 1  # only the second was created in that window
        await stack.lifecycle.wait_for(_is(second.case_id, Transition.ASSIGNED))
        assert await replay({"department": "chengguan"}) == 1  # the third is the last dead one
        await stack.lifecycle.wait_for(_is(third.case_id, Transition.ASSIGNED))
        replayed = await wait_status(stack, third.case_id, "delivered", 1)
        assert replayed.attempts == 1  # counted from 0 again
        assert await replay({"department": "chengguan"}) == 0


# --- secrets and personal information -------------------------------------------------------------


async def test_a_rotation_signs_twice_and_a_receiver_knowing_only_the_new_secret_accepts(
    isolation: Isolation, tmp_path: Path
) -> None:
    rotate = add_to_receiver("chengguan", "secret_env_next: GRIDFLOW_WEBHOOK_SECRET_CHENGGUAN_NEXT")
    async with dispatch_stack_with(isolation, tmp_path, departments=rotate) as stack:
        stack.receiver.secrets = {"chengguan": [department_secret("chengguan-next")]}
        case = make_case()
        await publish(stack, case)
        received = await asyncio.wait_for(stack.receiver.received.get(), WAIT_SECONDS)
        assert received.body["case"]["case_id"] == case.case_id
        assert len(received.signature.split(" ")) == 2
        assert all(part.startswith("v1,") for part in received.signature.split(" "))


def _personal_case(category: str) -> CaseSubmitted:
    return make_case(category).model_copy(
        update={
            "reporter": Reporter(kind="resident", name="李秀英", phone="13800138000"),
            "beneficiary": Reporter(kind="resident", name="王建国", phone="13900139000"),
        }
    )


async def test_each_receiver_gets_the_reporter_full_masked_or_not_at_all(
    isolation: Isolation, tmp_path: Path
) -> None:
    def sharing(text: str) -> str:
        text = add_to_receiver("chengguan", "reporter: full")(text)
        return add_to_receiver("minzheng", "reporter: none")(text)

    async with dispatch_stack_with(isolation, tmp_path, departments=sharing) as stack:
        bodies = {}
        for category in ("city.garbage", "civil.assistance", "power.outage"):
            await publish(stack, _personal_case(category))
            received = await asyncio.wait_for(stack.receiver.received.get(), WAIT_SECONDS)
            bodies[received.department] = received.body["case"]
    assert bodies["chengguan"]["reporter"]["phone"] == "13800138000"
    assert bodies["chengguan"]["beneficiary"]["name"] == "王建国"
    assert "reporter" not in bodies["minzheng"] and "beneficiary" not in bodies["minzheng"]
    assert bodies["gongdian"]["reporter"]["phone"] == "138****8000"  # the default: masked
    assert bodies["gongdian"]["beneficiary"]["name"] == "王**"


# --- pull departments -----------------------------------------------------------------------------


async def test_a_pull_department_gets_the_case_assigned_at_once_in_its_inbox(
    isolation: Isolation, tmp_path: Path
) -> None:
    pull = edit_receiver("chengguan", "kind: pull", "reporter: full")
    async with dispatch_stack_with(isolation, tmp_path, departments=pull) as stack:
        case = _personal_case("city.garbage")
        await publish(stack, case)
        _, event = await stack.lifecycle.wait_for(_is(case.case_id, Transition.ASSIGNED))
        assert isinstance(event, CaseLifecycleEvent)
        assert event.department == "chengguan" and event.version == 2
        assert await deliveries_of(stack, case.case_id) == []
        headers = {"Authorization": f"Bearer {make_department_token('chengguan')}"}
        inbox = (await stack.client.get("/v1/department/cases", headers=headers)).json()
        assert [c["case_id"] for c in inbox["cases"]] == [case.case_id]
        assert inbox["cases"][0]["state"] == "assigned"
        detail = (
            await stack.client.get(f"/v1/department/cases/{case.case_id}", headers=headers)
        ).json()
        assert detail["case"]["reporter"]["phone"] == "13800138000"  # its setting: full
        listed = await stack.client.get("/v1/operator/deliveries/receivers", headers=operator())
        kinds = {r["department"]: r["kind"] for r in listed.json()["receivers"]}
        assert kinds["chengguan"] == "pull" and kinds["yingji"] == "webhook"


# --- the operator API -----------------------------------------------------------------------------


async def test_operators_see_only_their_subtree_and_need_the_delivery_scopes(
    dispatch_stack: DispatchStack,
) -> None:
    stack = dispatch_stack
    here = make_case()  # town 430281001
    there = make_case().model_copy(
        update={"location": here.location.model_copy(update={"unit_grid": "430281002001001"})}
    )
    for case in (here, there):
        await publish(stack, case)
        await stack.lifecycle.wait_for(_is(case.case_id, Transition.ASSIGNED))
    path = "/v1/operator/deliveries"

    town = await stack.client.get(path, headers=operator(["430281001"]))
    assert town.status_code == 200, town.text
    assert {d["case_id"] for d in town.json()["deliveries"]} == {here.case_id}
    city = await stack.client.get(path, headers=operator(), params={"status": "delivered"})
    assert {d["case_id"] for d in city.json()["deliveries"]} >= {here.case_id, there.case_id}
    other = await stack.client.get(
        path, headers=operator(["430281001"]), params={"case_id": there.case_id}
    )
    assert other.json()["deliveries"] == []

    paged = await stack.client.get(path, headers=operator(), params={"limit": 1})
    cursor = paged.json()["next_cursor"]
    assert cursor is not None
    rest = await stack.client.get(path, headers=operator(), params={"cursor": cursor})
    assert paged.json()["deliveries"][0] not in rest.json()["deliveries"]

    no_scope = await stack.client.get(path, headers=operator(scopes=["cases:read"]))
    assert no_scope.status_code == 403
    read_only = operator(scopes=["deliveries:read"])
    refused = await stack.client.post(
        f"{path}/replay", json={"department": "chengguan"}, headers=read_only
    )
    assert refused.status_code == 403
    town_disable = await stack.client.post(
        f"{path}/receivers/chengguan/disable",
        json={"reason": "maintenance"},
        headers=operator(["430281001"]),
    )
    assert town_disable.status_code == 403

    empty = await stack.client.post(f"{path}/replay", json={}, headers=operator())
    assert empty.status_code == 422
    assert empty.json()["detail"][0]["path"] == "body"
    bad = await stack.client.post(
        f"{path}/replay", json={"department": "Not A Code"}, headers=operator()
    )
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["path"] == "body.department"
    bad_status = await stack.client.get(path, headers=operator(), params={"status": "lost"})
    assert bad_status.json()["detail"][0]["path"] == "query.status"

    disabled = await stack.client.post(
        f"{path}/receivers/chengguan/disable", json={"reason": "maintenance"}, headers=operator()
    )
    assert disabled.status_code == 200, disabled.text
    receiver = await receiver_row(stack, "chengguan")
    assert receiver is not None and receiver.disabled
    assert receiver.reason == "operator OP01: maintenance"
    unknown = await stack.client.post(f"{path}/receivers/nobody/enable", headers=operator())
    assert unknown.status_code == 404
