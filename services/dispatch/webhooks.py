"""dispatch's HTTP-out shell: signed webhook deliveries with retries, a circuit breaker and a
concurrency limit per department, and the assignment a delivery causes.

A round leases due deliveries in one short transaction (`FOR UPDATE SKIP LOCKED`, the lease
pushed into `leased_until`/`next_attempt_at`), commits, and POSTs outside any transaction; the
answers are recorded by one recorder, all answers that came in meanwhile in one transaction, while
the next attempts go on: a slow receiver holds neither a row lock nor a connection, and a crashed
instance's leases simply run out and the deliveries are due again. An answered delivery keeps its
lease until its answer is recorded, so it still counts against its department's limit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import aiohttp
import asyncpg
import sqlalchemy as sa
from prometheus_client import Counter, Histogram
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import HeldConnection, Write, execute_writes
from libs.common.events import CaseState, RoutingSnapshot, Urgency
from libs.common.logs import log_context
from libs.common.refdata import ReferenceData, WebhookReceiver
from libs.common.runtime import Runtime
from libs.common.signing import SignatureError, signed_headers, validate_secret
from services.dispatch.consumer import record_transitions
from services.dispatch.delivery import (
    Breaker,
    BreakerPhase,
    DeliveryStatus,
    Outcome,
    breaker_after,
    breaker_phase,
    breaker_probing,
    classify,
    next_attempt_at,
    retry_after_seconds,
)
from services.dispatch.lifecycle import TransitionRefusedError, assign
from services.dispatch.models import CaseRow, DeliveryRow, ReceiverRow
from services.dispatch.settings import DispatchSettings

log = logging.getLogger(__name__)
_D = DeliveryRow.__table__.c  # type: ignore[attr-defined]  # SQLModel leaves __table__ untyped
_R = ReceiverRow.__table__.c  # type: ignore[attr-defined]
_C = CaseRow.__table__.c  # type: ignore[attr-defined]
# case queued → delivered: seconds for a healthy receiver, up to days through retries
_ANSWER_READ_LIMIT = 64 * 1024
RECORD_RETRY_SECONDS = 1.0  # between rounds of recording while the database is away
LATENCY_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 86400, 3 * 86400)


class MissingSecretError(RuntimeError):
    pass


def webhook_secrets(refdata: ReferenceData, environ: Mapping[str, str]) -> dict[str, list[str]]:
    """Per webhook department its secrets, current first (during a rotation also the next one),
    read from the variables its receiver names; refuses to start naming any variable that is
    unset or holds no usable secret (never the value)."""
    secrets: dict[str, list[str]] = {}
    problems = []
    for code, department in refdata.departments.items():
        receiver = department.receiver
        if not isinstance(receiver, WebhookReceiver):
            continue
        values = []
        for name in receiver.secret_envs:
            value = environ.get(name)
            if not value:
                problems.append(f"{name} is not set (department {code})")
                continue
            try:
                validate_secret(value)
            except SignatureError as exc:
                problems.append(f"{name} is not a usable secret (department {code}): {exc}")
                continue
            values.append(value)
        secrets[code] = values
    if problems:
        raise MissingSecretError("webhook secrets: " + "; ".join(problems))
    return secrets


@dataclass(frozen=True)
class Attempt:
    status_code: int | None
    error: str | None
    seconds: float
    retry_after: str | None = None


@dataclass(frozen=True)
class Leased:
    """A delivery taken for one attempt: what the attempt needs, copied out of its row."""

    delivery_id: str
    case_id: str
    department: str
    url: str
    body: str  # the webhook's JSON, as stored: signed and sent as it is
    leased_until: datetime | None = None  # after it, the delivery may be taken again elsewhere


class DeliveryMetrics:
    def __init__(self, runtime: Runtime) -> None:
        self.attempts = Counter(
            "gridflow_delivery_attempts_total",
            "Webhook delivery attempts by department and outcome",
            ["department", "outcome"],
            registry=runtime.registry,
        )
        self.seconds = Histogram(
            "gridflow_delivery_seconds",
            "Time a department's receiver took to answer",
            ["department"],
            registry=runtime.registry,
        )
        self.latency = Histogram(
            "gridflow_delivery_latency_seconds",
            "Time from a case queued for a department to its delivery",
            ["department"],
            registry=runtime.registry,
            buckets=LATENCY_BUCKETS,
        )
        self.dead_lettered = Counter(
            "gridflow_delivery_dead_lettered_total",
            "Deliveries that became dead letters after their last attempt",
            ["department"],
            registry=runtime.registry,
        )


@dataclass
class _Answered:
    """The columns of a delivery its answer changes (or reads), locked while it is recorded."""

    delivery_id: str
    case_id: str
    department: str
    status: str
    attempts: int
    created_at: datetime
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    leased_until: datetime | None


class _Assigning(NamedTuple):
    """The columns of a case its assignment reads."""

    case_id: str
    state: str
    version: int
    category: str
    unit_grid: str | None
    routing: str | None  # JSON text
    urgency: str


@dataclass
class _Receiver:
    """A receivers row (the columns of `ReceiverRow`), locked while a round reads or moves it."""

    department: str
    disabled: bool
    disabled_at: datetime | None
    reason: str | None
    consecutive_failures: int
    open_until: datetime | None
    cooldown_seconds: float
    probing: bool
    updated_at: datetime


# The hot statements of the delivery loop, run straight through asyncpg on connections the loop
# holds (libs.common.db.HeldConnection).
_RECEIVER_COLUMNS = (
    "department, disabled, disabled_at, reason, consecutive_failures, open_until,"
    " cooldown_seconds, probing, updated_at"
)
_RECEIVERS = f"""
    SELECT {_RECEIVER_COLUMNS} FROM receivers
    WHERE department = ANY($1::text[]) ORDER BY department FOR UPDATE
"""  # noqa: S608  # constant column names
# read only: a round of successes leaves a closed breaker as it is (see Deliverer._record)
_RECEIVERS_UNLOCKED = _RECEIVERS.replace("FOR UPDATE", "")
_ENSURE_RECEIVERS = """
    INSERT INTO receivers (department, updated_at) SELECT unnest($1::text[]), $2
    ON CONFLICT DO NOTHING
"""
_STORE_RECEIVERS = """
    UPDATE receivers SET disabled = $2, disabled_at = $3, reason = $4,
        consecutive_failures = $5, open_until = $6, cooldown_seconds = $7, probing = $8,
        updated_at = $9
    WHERE department = $1
"""
# A lease round's first statement: of these departments, those with a delivery due (an index
# probe each, deliveries_due, not a count of the backlog), their receiver rows locked (another
# instance leasing for a department holds its row: it is skipped, not waited for), and each
# one's attempts in flight.
# - Due: a LATERAL subquery with LIMIT 1, which PostgreSQL runs once per department. Written as
#   EXISTS it became a semi-join, and the generic plan of the prepared statement (a table of a
#   few thousand deliveries) read every due delivery and sorted them by department: ~1,000
#   buffers and 3-5 ms a round while a backlog was delivered. A probe reads a few buffers per
#   department, whatever the backlog (tests/services/dispatch/test_schema.py).
# - In flight: attempts this instance has had answered but not yet recorded ($3) are no longer
#   in flight at the receiver, so a department's window refills as answers come, not as they
#   are recorded.
# - Counted up to the department's window ($4), row by row on deliveries_leased (only a delivery
#   in flight has leased_until: an answer clears it). Each lease leaves a dead entry in that
#   index until a vacuum: a plain index scan marks them dead once and then skips them, whereas a
#   grouped count was planned as a bitmap scan that read them all again every round (2-4 ms a
#   round under load; tests/services/dispatch/test_schema.py).
_DUE_RECEIVERS = f"""
    SELECT {", ".join("r." + c.strip() for c in _RECEIVER_COLUMNS.split(","))}, (
        SELECT count(*) FROM (
            SELECT 1 FROM deliveries d
            WHERE d.department = w.department AND d.leased_until > $2
                AND d.delivery_id <> ALL($3::text[])
            LIMIT w.cap
        ) AS leased
    ) AS in_flight
    FROM unnest($1::text[], $4::int[]) AS w(department, cap)
    CROSS JOIN LATERAL (
        SELECT 1 FROM deliveries d
        WHERE d.status = 'pending' AND d.department = w.department AND d.next_attempt_at <= $2
        LIMIT 1
    ) AS due
    JOIN receivers r ON r.department = w.department
    ORDER BY r.department
    FOR UPDATE OF r SKIP LOCKED
"""  # noqa: S608  # constant column names
# per department its oldest due deliveries up to its free slots, locked and leased at once
_PICK = """
    WITH picked AS (
        SELECT p.delivery_id, p.next_attempt_at
        FROM unnest($1::text[], $2::int[]) AS w(department, slots)
        CROSS JOIN LATERAL (
            SELECT d.delivery_id, d.next_attempt_at FROM deliveries d
            WHERE d.status = 'pending' AND d.department = w.department
              AND d.next_attempt_at <= $3
            ORDER BY d.next_attempt_at LIMIT w.slots
            FOR UPDATE SKIP LOCKED
        ) AS p
    )
    UPDATE deliveries AS d SET leased_until = $4, next_attempt_at = $4
    FROM picked WHERE d.delivery_id = picked.delivery_id
    RETURNING d.delivery_id, d.case_id, d.department, d.url, d.payload::text AS body,
        picked.next_attempt_at AS next_due
"""
_ANSWERED = f"""
    SELECT {", ".join(_Answered.__dataclass_fields__)} FROM deliveries
    WHERE delivery_id = ANY($1::text[]) ORDER BY delivery_id FOR UPDATE
"""  # noqa: S608  # constant column names
# the answers of a round written in one statement of arrays
_RECORD = """
    UPDATE deliveries AS d
    SET status = a.status, attempts = a.attempts, last_status_code = a.code,
        last_error = a.error, next_attempt_at = a.next_at, delivered_at = a.delivered_at,
        leased_until = a.leased_until
    FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::text[],
                $6::timestamptz[], $7::timestamptz[], $8::timestamptz[])
         AS a(id, status, attempts, code, error, next_at, delivered_at, leased_until)
    WHERE d.delivery_id = a.id
"""
_ASSIGNING = f"""
    SELECT {", ".join(_Assigning._fields).replace("routing", "routing::text")} FROM cases
    WHERE case_id = ANY($1::text[]) ORDER BY case_id FOR UPDATE
"""  # noqa: S608  # constant column names
_ASSIGNED = """
    UPDATE cases AS c
    SET state = a.state, version = a.version, department = a.department, updated_at = a.at
    FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::timestamptz[])
         AS a(id, state, version, department, at)
    WHERE c.case_id = a.id
"""


def _record_columns(rows: Iterable[_Answered]) -> tuple[list[Any], ...]:
    rows = list(rows)
    return (
        [r.delivery_id for r in rows],
        [r.status for r in rows],
        [r.attempts for r in rows],
        [r.last_status_code for r in rows],
        [r.last_error for r in rows],
        [r.next_attempt_at for r in rows],
        [r.delivered_at for r in rows],
        [r.leased_until for r in rows],
    )


async def _store_receivers(driver: asyncpg.Connection, receivers: Sequence[_Receiver]) -> None:
    if receivers:
        await driver.executemany(
            _STORE_RECEIVERS,
            [
                (
                    r.department,
                    r.disabled,
                    r.disabled_at,
                    r.reason,
                    r.consecutive_failures,
                    r.open_until,
                    r.cooldown_seconds,
                    r.probing,
                    r.updated_at,
                )
                for r in receivers
            ],
        )


def breaker_of(row: ReceiverRow | _Receiver) -> Breaker:
    return Breaker(row.consecutive_failures, row.open_until, row.cooldown_seconds, row.probing)


def _keep(row: ReceiverRow | _Receiver, breaker: Breaker, now: datetime) -> None:
    row.consecutive_failures = breaker.failures
    row.open_until = breaker.open_until
    row.cooldown_seconds = breaker.cooldown_seconds
    row.probing = breaker.probing
    row.updated_at = now


async def ensure_receivers(
    session: AsyncSession, departments: Sequence[str], now: datetime
) -> None:
    """A receivers row per department (they are made on first need)."""
    if departments:
        await session.execute(
            insert(ReceiverRow.__table__)  # type: ignore[attr-defined]
            .values([{"department": code, "updated_at": now} for code in departments])
            .on_conflict_do_nothing()
        )


def _counts(rows: Sequence[sa.Row[str, int]]) -> dict[str, int]:
    """(department, count) rows as a mapping."""
    return dict(rows)


class Deliverer:
    def __init__(
        self,
        *,
        runtime: Runtime,
        settings: DispatchSettings,
        secrets: Mapping[str, Sequence[str]],
        client: aiohttp.ClientSession,
    ) -> None:
        self._runtime = runtime
        self._settings = settings
        self._secrets = secrets
        self._client = client
        self.metrics = DeliveryMetrics(runtime)
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._random = random.Random()  # noqa: S311  # jitter, not security
        self._inflight: set[asyncio.Task[None]] = set()
        self._answered: list[tuple[Leased, Attempt]] = []  # attempts not yet recorded
        self._recording_now: list[tuple[Leased, Attempt]] = []  # the recorder's current round
        self._to_record = asyncio.Event()
        self._locked_in_round = False  # the recorder's current round locked receivers
        # whether the last lease round left due deliveries waiting for a free slot: only then
        # does a finished attempt wake the loop (new cases wake it through `wake`)
        self._short_of_slots = True
        # the lease loop and the recorder each keep a connection: no pool round trip per round
        self._leasing = HeldConnection(runtime.engine)
        self._departments = sorted(secrets)
        self._receivers_made = False  # a receivers row per department (made at the first round)
        self._recording = HeldConnection(runtime.engine)

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        recorder = asyncio.create_task(self._recorder(), name="delivery-recorder")
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    await self.start_due()
                except Exception as exc:  # database away: keep going, the rows are still there
                    log.warning("delivery round failed: %s", type(exc).__name__)
                    self._receivers_made = False  # a database restored meanwhile: made again
                    await asyncio.sleep(1)
                # a round leases every due delivery its free slots allow: another round right
                # away would find nothing (three round trips for it). What can change that wakes
                # the loop, also during the round: a new case, and a freed slot or a recorded
                # answer while due deliveries wait for a slot; retries falling due, the poll
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._wake.wait(), timeout=self._settings.delivery_poll_seconds
                    )
        finally:
            for task in self._inflight:
                task.cancel()  # its lease runs out and the delivery is due again
            await asyncio.gather(*self._inflight, return_exceptions=True)
            recorder.cancel()  # what it had not recorded is tried again when the leases run out
            await asyncio.gather(recorder, return_exceptions=True)
            await self._leasing.close()
            await self._recording.close()

    async def _recorder(self) -> None:
        """Records the answers: each round, all of them that came in since the last one."""
        while True:
            await self._to_record.wait()
            self._to_record.clear()
            answered, self._answered = self._answered, []
            if not answered:
                continue
            self._recording_now = answered
            self._locked_in_round = False
            try:
                await self._record(answered)
            except Exception as exc:  # the database away: keep the answers while leases hold
                kept = self._keep_unrecorded(answered)
                log.warning(
                    "%d delivery answers not recorded (%d kept for the next round): %s",
                    len(answered),
                    len(kept),
                    type(exc).__name__,
                )
                if kept:
                    self._answered[:0] = kept  # before the newer ones: answers stay in order
                    self._to_record.set()
                    await asyncio.sleep(RECORD_RETRY_SECONDS)
            finally:
                self._recording_now = []
            self._runtime.relay.wake()
            if self._short_of_slots or self._locked_in_round:
                # a retry or a breaker may have changed what may go now; a lease round that
                # met the receivers this round locked skipped their departments
                self._wake.set()

    def _keep_unrecorded(
        self, answered: Sequence[tuple[Leased, Attempt]]
    ) -> list[tuple[Leased, Attempt]]:
        """The answers still worth recording later: those whose lease still holds, so that the
        delivery cannot have been taken again; the others are left to their next attempt (the
        same webhook-id again)."""
        now = self._runtime.clock.now()
        return [
            (delivery, attempt)
            for delivery, attempt in answered
            if delivery.leased_until is not None and delivery.leased_until > now
        ]

    async def start_due(self) -> int:
        """Lease what is due and may go now, and start an attempt for each; returns how many."""
        capacity = self._settings.delivery_concurrency - len(self._inflight)
        if capacity <= 0:
            self._short_of_slots = True
            return 0
        leased = await self._lease(capacity)
        for delivery in leased:
            task = asyncio.create_task(self._deliver(delivery), name=delivery.delivery_id)
            self._inflight.add(task)
            task.add_done_callback(self._finished)
        return len(leased)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if self._short_of_slots:
            self._wake.set()  # its slot is free, and a due delivery waits for one

    async def _lease(self, capacity: int) -> list[Leased]:
        """One transaction of two statements whatever the number of departments: the webhook
        departments with a delivery due, their receivers locked and their attempts in flight;
        then per department its oldest due deliveries up to its free slots, locked and leased."""
        settings = self._settings
        now = self._runtime.clock.now()
        until = now + timedelta(seconds=settings.delivery_lease_seconds)
        if not self._receivers_made:  # once: the lease statement finds receivers, not makes them
            departments = self._departments
            await self._leasing.autocommit(
                lambda driver: driver.execute(_ENSURE_RECEIVERS, departments, now)
            )
            self._receivers_made = True
        async with self._leasing.transaction() as driver:
            # only webhook departments: another's deliveries wait (they are not lost)
            answered = [d.delivery_id for d, _ in (*self._recording_now, *self._answered)]
            windows = [self._window(department) for department in self._departments]
            found = await driver.fetch(_DUE_RECEIVERS, self._departments, now, answered, windows)
            self._short_of_slots = bool(found)  # until this round shows every due one leased
            if not found:
                return []
            due = [row["department"] for row in found]
            in_flight = {row["department"]: row["in_flight"] for row in found}
            usable = [r for r in (_Receiver(*row[:-1]) for row in found) if not r.disabled]
            slots: dict[str, int] = {}
            for receiver in usable:
                free = self._slots(receiver, now, capacity, in_flight[receiver.department])
                if free > 0:
                    slots[receiver.department] = free
                    capacity -= free
                if capacity <= 0:
                    break
            if not slots:
                return []
            rows = await driver.fetch(_PICK, list(slots), list(slots.values()), now, until)
            leasing = collections.Counter(row["department"] for row in rows)
            # a department without slots, or with each of them taken, may have more due
            self._short_of_slots = any(
                leasing[department] >= slots.get(department, 0) for department in due
            )
            probes = []
            for receiver in usable:
                breaker = breaker_of(receiver)
                if receiver.department in leasing and (
                    breaker_phase(breaker, now=now) is BreakerPhase.HALF_OPEN
                ):
                    probe = breaker_probing(
                        breaker, now=now, lease_seconds=settings.delivery_lease_seconds
                    )
                    _keep(receiver, probe, now)
                    probes.append(receiver)
            await _store_receivers(driver, probes)
        # in the order they were due
        return [
            Leased(
                row["delivery_id"],
                row["case_id"],
                row["department"],
                row["url"],
                row["body"],
                until,
            )
            for row in sorted(rows, key=lambda row: row["next_due"])
        ]

    async def _locked_receivers(
        self, driver: asyncpg.Connection, departments: Sequence[str], now: datetime
    ) -> list[_Receiver]:
        """The departments' receiver rows, locked (made on first need)."""
        rows = await driver.fetch(_RECEIVERS, departments)
        if len(rows) < len(departments):  # a department's first delivery: make its row
            await driver.execute(_ENSURE_RECEIVERS, departments, now)
            rows = await driver.fetch(_RECEIVERS, departments)
        return [_Receiver(*row) for row in rows]

    def _slots(self, receiver: _Receiver, now: datetime, capacity: int, in_flight: int) -> int:
        """How many attempts may start now for this department's endpoint."""
        if receiver.department not in self._secrets:
            return 0  # no longer a webhook department: its deliveries wait, they are not lost
        phase = breaker_phase(breaker_of(receiver), now=now)
        if phase is BreakerPhase.OPEN:
            return 0
        if phase is BreakerPhase.HALF_OPEN:
            return 1 if not in_flight else 0
        return min(capacity, self._window(receiver.department) - in_flight)

    def _window(self, department: str) -> int:
        """Attempts allowed in flight at once to the department's endpoint: its receiver's
        `concurrency` (reference data as now loaded), else the deployment's default."""
        known = self._runtime.refdata.departments.get(department)
        receiver = known.receiver if known is not None else None
        if isinstance(receiver, WebhookReceiver) and receiver.concurrency is not None:
            return receiver.concurrency
        return self._settings.delivery_concurrency_per_department

    async def _deliver(self, delivery: Leased) -> None:
        attempt = await self._attempt(delivery)
        self._answered.append((delivery, attempt))
        self._to_record.set()

    async def _attempt(self, delivery: Leased) -> Attempt:
        body = delivery.body.encode()
        current, *following = self._secrets[delivery.department]
        headers = signed_headers(
            secret=current,
            also=following,
            msg_id=delivery.delivery_id,
            now=self._runtime.clock.now(),
            body=body,
        )
        headers["content-type"] = "application/json"
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with self._client.post(
                delivery.url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self._settings.delivery_timeout_seconds),
            ) as response:
                # read what a department answers (small), so the connection is kept alive; a
                # large answer is left unread and its connection closed
                if (response.content_length or 0) <= _ANSWER_READ_LIMIT:
                    await response.content.read(_ANSWER_READ_LIMIT)
                status = response.status
                retry_after = response.headers.get("retry-after")
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return Attempt(None, error[:500], loop.time() - started)
        return Attempt(
            status,
            None if 200 <= status < 300 else f"HTTP {status}",
            loop.time() - started,
            retry_after,
        )

    async def _record(self, answered: Sequence[tuple[Leased, Attempt]]) -> None:
        """The answers in one transaction, in the order they came (each receiver's breaker
        follows them in turn); a delivery finished meanwhile (its lease ran out and it was taken
        again elsewhere) is left alone."""
        metrics = self.metrics
        now = self._runtime.clock.now()
        labels: list[tuple[str, str]] = []
        for delivery, attempt in answered:
            metrics.seconds.labels(delivery.department).observe(attempt.seconds)
        async with self._recording.transaction() as driver:
            rows = {
                row["delivery_id"]: _Answered(*row)
                for row in await driver.fetch(_ANSWERED, [d.delivery_id for d, _ in answered])
            }
            departments = sorted({d.department for d, _ in answered})
            receivers = await self._answering_receivers(driver, departments, answered, now)
            before = {code: dataclasses.replace(r) for code, r in receivers.items()}
            delivered = []
            changed: dict[str, _Answered] = {}
            for delivery, attempt in answered:
                row = rows.get(delivery.delivery_id)
                if row is None or row.status != DeliveryStatus.PENDING.value:
                    continue
                with log_context(case_id=row.case_id):
                    label = self._outcome(row, receivers[row.department], attempt, now)
                changed[row.delivery_id] = row
                labels.append((row.department, label))
                if label == DeliveryStatus.DELIVERED.value:
                    delivered.append(row)
            await _store_receivers(
                driver, [r for code, r in receivers.items() if r != before[code]]
            )
            # the answers' writes and the assignments' in one statement
            writes: list[Write] = [(_RECORD, _record_columns(changed.values()))] if changed else []
            await self._assign(driver, delivered, writes=writes)
        for department, label in labels:
            metrics.attempts.labels(department, label).inc()

    async def _answering_receivers(
        self,
        driver: asyncpg.Connection,
        departments: Sequence[str],
        answered: Sequence[tuple[Leased, Attempt]],
        now: datetime,
    ) -> dict[str, _Receiver]:
        """The receivers of a round's answers, locked when the round may change one. A round of
        successes for receivers whose breakers are closed and clean changes none of them, so
        they are only read: the lease loop, which skips receivers locked elsewhere, then goes
        on leasing for them meanwhile instead of waiting for the round's commit. (Another
        instance's failure recorded in between stands: as if this round came first.)"""
        if all(classify(attempt.status_code) is Outcome.DELIVERED for _, attempt in answered):
            rows = [_Receiver(*row) for row in await driver.fetch(_RECEIVERS_UNLOCKED, departments)]
            if len(rows) == len(departments) and all(breaker_of(r) == Breaker() for r in rows):
                return {r.department: r for r in rows}
        self._locked_in_round = True  # the lease loop skips them meanwhile
        locked = await self._locked_receivers(driver, departments, now)
        return {r.department: r for r in locked}

    def _outcome(self, row: _Answered, receiver: _Receiver, attempt: Attempt, now: datetime) -> str:
        """One answer applied to its delivery and its receiver; returns the outcome's label."""
        settings = self._settings
        metrics = self.metrics
        outcome = classify(attempt.status_code)
        department = row.department
        row.attempts += 1
        row.last_status_code = attempt.status_code
        row.last_error = attempt.error
        row.leased_until = None
        label = outcome.value
        if outcome is Outcome.GONE:
            self._disable(receiver, row, now)
        else:
            self._breaker(receiver, succeeded=outcome is Outcome.DELIVERED, now=now)
        if outcome is Outcome.DELIVERED:
            row.status = DeliveryStatus.DELIVERED.value
            row.delivered_at = now
            row.next_attempt_at = None
            latency = (now - row.created_at).total_seconds()
            metrics.latency.labels(department).observe(max(0.0, latency))
        elif outcome is Outcome.RETRY and row.attempts >= settings.delivery_max_attempts:
            row.status = DeliveryStatus.DEAD.value
            row.next_attempt_at = None
            label = DeliveryStatus.DEAD.value
            metrics.dead_lettered.labels(department).inc()
            log.error(
                "delivery %s to %s is a dead letter after %d attempts: %s",
                row.delivery_id,
                department,
                row.attempts,
                attempt.error,
            )
        elif outcome is Outcome.RETRY:
            row.next_attempt_at = next_attempt_at(
                attempts=row.attempts,
                now=now,
                base_seconds=settings.delivery_base_delay_seconds,
                max_seconds=settings.delivery_max_delay_seconds,
                jitter=self._random.random(),
                retry_after=retry_after_seconds(attempt.status_code, attempt.retry_after, now=now),
            )
            log.warning(
                "delivery %s to %s failed (attempt %d): %s",
                row.delivery_id,
                department,
                row.attempts,
                attempt.error,
            )
        return label

    def _disable(self, receiver: _Receiver, row: _Answered, now: datetime) -> None:
        """410 Gone: the endpoint is gone for every delivery; they wait for an operator."""
        row.next_attempt_at = now  # due again as soon as the receiver is enabled
        if not receiver.disabled:
            receiver.disabled = True
            receiver.disabled_at = now
            receiver.reason = f"HTTP 410 Gone answering delivery {row.delivery_id}"
            receiver.updated_at = now
            log.error("receiver of %s disabled: it answered 410 Gone", row.department)

    def _breaker(self, receiver: _Receiver, *, succeeded: bool, now: datetime) -> None:
        settings = self._settings
        before = breaker_of(receiver)
        after = breaker_after(
            before,
            succeeded=succeeded,
            now=now,
            threshold=settings.delivery_breaker_failures,
            cooldown_seconds=settings.delivery_breaker_cooldown_seconds,
            max_cooldown_seconds=settings.delivery_breaker_max_cooldown_seconds,
        )
        if after != before:
            _keep(receiver, after, now)
        if after.open_until is not None and after.open_until != before.open_until:
            log.warning(
                "circuit of %s open for %.0f s after %d consecutive failures",
                receiver.department,
                after.cooldown_seconds,
                after.failures,
            )

    async def _assign(
        self, driver: asyncpg.Connection, delivered: Sequence[_Answered], *, writes: Sequence[Write]
    ) -> None:
        """The cases of these deliveries are their departments' now (each one's transition from
        its state at that moment: one that moved on meanwhile is left as it is), written in one
        statement with `writes`."""
        if not delivered:
            if writes:
                await execute_writes(driver, writes)
            return
        cases = {
            row["case_id"]: _Assigning(*row)
            for row in await driver.fetch(_ASSIGNING, sorted({row.case_id for row in delivered}))
        }
        events = []
        now = self._runtime.clock.now()
        for row in delivered:
            case = cases.get(row.case_id)
            if case is None:
                continue
            try:
                event = assign(
                    case_id=case.case_id,
                    state=CaseState(case.state),
                    version=case.version,
                    category=case.category,
                    unit_grid=case.unit_grid,
                    department=row.department,
                    routing=(
                        RoutingSnapshot.model_validate_json(case.routing) if case.routing else None
                    ),
                    now=now,
                    urgency=Urgency(case.urgency),
                )
            except TransitionRefusedError as exc:
                with log_context(case_id=case.case_id):
                    log.info("delivered, but the case moved on meanwhile: %s", exc)
                continue
            # a second delivery of the same case in this batch sees the state it left
            cases[case.case_id] = case._replace(state=event.to_state.value, version=event.version)
            events.append(event)
        if events:
            assigned = [
                [e.case_id for e in events],
                [e.to_state.value for e in events],
                [e.version for e in events],
                [e.department for e in events],
                [e.at for e in events],
            ]
            writes = [*writes, (_ASSIGNED, assigned)]
        await record_transitions(driver, events=events, runtime=self._runtime, writes=writes)
