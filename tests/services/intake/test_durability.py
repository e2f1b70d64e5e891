"""Durable acceptance: with the broker paused, intake keeps answering 202 from its outbox; when
the broker is back, every accepted item is published exactly once, in order per key. With the
database away, nothing can be accepted: intake answers 503 with Retry-After, and a retry after
the database is back is accepted once."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from prometheus_client import CollectorRegistry

from deploy.embedded import EmbeddedBroker, EmbeddedPostgres, start_broker, start_postgres
from libs.common.events import CaseSubmitted, VisitRecorded
from libs.common.runtime import Runtime
from libs.common.topics import CASES_SUBMITTED, VISITS_RECORDED
from services.intake.acceptance import Acceptor, Staged
from services.intake.app import create_app
from tests.factories import Isolation, make_intake_settings, make_open311_request, make_report
from tests.harness import WAIT_SECONDS, TopicWatcher, running, until
from tests.libs.common.test_kafka import make_case_submitted
from tests.services.intake.conftest import auth, outbox_rows
from tests.services.intake.test_worker_api import make_visit


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of this test's own: pausing the session's shared broker would hurt other tests."""
    broker = start_broker(log_path=tmp_path / "broker.log")
    try:
        yield broker
    finally:
        broker.process.send_signal(signal.SIGCONT)
        broker.stop()


async def test_reports_accepted_while_the_broker_is_paused_are_published_once_after(
    isolation: Isolation, own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = make_intake_settings(
        isolation,
        kafka_bootstrap_servers=own_broker.bootstrap_servers,
        attachments_dir=tmp_path / "files",
    )
    app = create_app(settings)
    async with running(app) as client:
        accepted: list[str] = []

        async def report() -> None:
            response = await client.post("/v1/reports", json=make_report(), headers=auth())
            assert response.status_code == 202, response.text
            accepted.append(response.json()["case_id"])

        async def visit(note: str) -> None:
            body = make_visit(resident_id="KR-ORDER-1", note=note)
            response = await client.post("/v1/visits", json=body, headers=auth())
            assert response.status_code == 202, response.text

        for _ in range(5):
            await report()
        await visit("before")
        own_broker.process.send_signal(signal.SIGSTOP)
        try:
            for index in range(20):
                await report()
                await visit(f"during {index}")
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text  # the outbox keeps intake ready
            assert ready.json()["checks"]["broker"] is False

            # the relay waits on the paused broker; the gauges still tell the backlog
            async def backlog_shows() -> bool:
                depth = app.state.runtime.registry.get_sample_value("gridflow_outbox_depth")
                return bool(depth is not None and depth >= 40)

            await until(backlog_shows)
        finally:
            own_broker.process.send_signal(signal.SIGCONT)
        await visit("after")

        cases = TopicWatcher(
            bootstrap=own_broker.bootstrap_servers,
            topic=CASES_SUBMITTED,
            name=settings.topic_prefix + CASES_SUBMITTED.name,
            group=f"{isolation.token}-cases",
        )
        visits = TopicWatcher(
            bootstrap=own_broker.bootstrap_servers,
            topic=VISITS_RECORDED,
            name=settings.topic_prefix + VISITS_RECORDED.name,
            group=f"{isolation.token}-visits",
        )
        async with cases, visits:
            last = accepted[-1]
            await cases.wait_for(lambda _, p: isinstance(p, CaseSubmitted) and p.case_id == last)
            await visits.wait_for(lambda _, p: isinstance(p, VisitRecorded) and p.note == "after")
            # a marker published after everything else shows nothing more is in flight
            await report()
            marker = accepted[-1]
            await cases.wait_for(lambda _, p: isinstance(p, CaseSubmitted) and p.case_id == marker)

        published = Counter(p.case_id for _, p in cases.seen if isinstance(p, CaseSubmitted))
        assert set(published) == set(accepted)
        assert set(published.values()) == {1}
        notes = [p.note for _, p in visits.seen if isinstance(p, VisitRecorded)]
        assert notes == ["before", *(f"during {i}" for i in range(20)), "after"]


REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def own_postgres(isolation: Isolation) -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server of this test's own, to stop and start again (outside pytest's temp
    folders: the server runs as its own OS user when the tests run as root)."""
    folder = REPO / ".run" / f"outage-postgres-{isolation.token}"
    server = start_postgres(folder / "data")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


async def test_with_the_database_away_intake_answers_503_and_a_retry_after_is_accepted_once(
    isolation: Isolation, own_postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    own = dataclasses.replace(isolation, database_url=own_postgres.url)
    app = create_app(make_intake_settings(own, attachments_dir=tmp_path / "files"))
    async with running(app) as client:
        first = await client.post("/v1/reports", json=make_report(), headers=auth())
        assert first.status_code == 202, first.text

        await asyncio.to_thread(own_postgres.stop)
        report, key = make_report(), {"Idempotency-Key": "outage-report-1"}
        refused = await client.post("/v1/reports", json=report, headers=auth() | key)
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "5"
        keyless = await client.post("/v1/reports", json=make_report(), headers=auth())
        assert keyless.status_code == 503, keyless.text  # the one-statement commit: refused too
        assert refused.json() == {
            "error": "unavailable",
            "detail": [{"reason": "the service cannot reach its database or broker; retry later"}],
        }
        # Open311 clients get the spec's error list
        open311 = await client.post("/open311/v2/requests.json", data=make_open311_request())
        assert open311.status_code == 503, open311.text
        assert open311.json() == [{"code": 503, "description": "service unavailable: retry later"}]
        assert open311.headers["Retry-After"] == "5"

        restarted = await asyncio.to_thread(start_postgres, own_postgres.data_dir)
        assert restarted.url == own_postgres.url
        accepted: list[str] = []

        async def retried() -> bool:  # the server may refuse a moment longer while it starts
            response = await client.post("/v1/reports", json=report, headers=auth() | key)
            assert response.status_code in (202, 503), response.text
            if response.status_code == 202:
                accepted.append(response.json()["case_id"])
            return bool(accepted)

        await until(retried)
        again = await client.post("/v1/reports", json=report, headers=auth() | key)
        assert again.status_code == 202, again.text
        assert again.json()["case_id"] == accepted[0]  # the first answer, not a second case
        # reports without a key: each accepted at once, whichever committer takes it (one
        # committer's connection may not have been used since the restart)
        after = [
            await client.post("/v1/reports", json=make_report(), headers=auth()) for _ in range(4)
        ]
        assert [response.status_code for response in after] == [202] * 4
        rows = await outbox_rows(app)
    submitted = [row.key for row in rows if row.topic.endswith(CASES_SUBMITTED.name)]
    # the first report, the retried one once, the four after: nothing of the 503s
    assert submitted == [
        first.json()["case_id"],
        accepted[0],
        *(response.json()["case_id"] for response in after),
    ]


async def test_a_stopping_acceptor_commits_what_waits_and_refuses_what_comes_after(
    isolation: Isolation, tmp_path: Path
) -> None:
    """Shutdown: submissions already waiting for a commit are committed before the committers
    return (their callers get their 202); one that comes after stop() is refused."""
    app = create_app(make_intake_settings(isolation, attachments_dir=tmp_path / "files"))
    async with running(app):
        runtime = app.state.intake.runtime
        before = len(await outbox_rows(app))
        # a second acceptor on the app's database and relay, its metrics apart from the app's
        own = SimpleNamespace(
            engine=runtime.engine,
            clock=runtime.clock,
            source=runtime.source,
            relay=runtime.relay,
            registry=CollectorRegistry(),
        )
        acceptor = Acceptor(runtime=cast(Runtime, own))  # not running yet: submissions wait
        cases = [make_case_submitted() for _ in range(3)]
        waiting = [
            asyncio.create_task(acceptor.submit([Staged(CASES_SUBMITTED, c, c.case_id)], None))
            for c in cases
        ]
        await asyncio.sleep(0)  # each task runs up to its wait for the commit
        acceptor.stop()
        await asyncio.wait_for(acceptor.run(), WAIT_SECONDS)
        assert [task.result() for task in waiting] == [None, None, None]  # all accepted
        keys = [row.key for row in await outbox_rows(app)][before:]
        assert keys == [c.case_id for c in cases]
        with pytest.raises(RuntimeError, match="shutting down"):
            await acceptor.submit([Staged(CASES_SUBMITTED, cases[0], cases[0].case_id)], None)
