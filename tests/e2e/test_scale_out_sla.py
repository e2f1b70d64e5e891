"""Two sla processes fire the same timers: one is killed (SIGKILL) while signals are being sent,
and every signal point of every clock still goes out exactly once. Real time, short clocks: a
policy of 6-second wall-clock limits (warning at half, breach, an escalation rung 6 s after)."""

from __future__ import annotations

import os
import shutil
import signal
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest

from libs.common.events import CaseState, SlaSignal, Transition
from libs.common.ids import new_case_id
from libs.common.kafka import Publisher, TopicNames
from libs.common.topics import SLA_SIGNALS
from tests.e2e.test_scale_out import instances
from tests.factories import DISPATCH_SECRET, METRICS_TOKEN, Isolation
from tests.harness import WAIT_SECONDS, TopicWatcher
from tests.services.sla.test_flow import lifecycle, publish

REPO = Path(__file__).resolve().parents[2]
CASES = 60
POINTS = 3  # the 50 % warning, the breach, one escalation rung
QUICK = """\
version: 1
office_hours:
  hours: ["08:30-12:00", "14:00-17:30"]
  timezone: Asia/Shanghai
defaults:
  warnings: [0.5]
  escalation:
    - {after: 0.1m, to: town}
  on_rework: restart
policies:
  - id: quick
    clock: wall
    stages: {sign: 0.1m, handle: 0.1m, verify: 0.1m}
"""


def sla_environ(isolation: Isolation, config: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("GRIDFLOW_")},
        "DATABASE_URL": isolation.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": isolation.kafka_bootstrap,
        "GRIDFLOW_DB_SCHEMA": isolation.schema("sla"),
        "GRIDFLOW_TOPIC_PREFIX": isolation.topic_prefix,
        "GRIDFLOW_CONSUMER_GROUP": f"{isolation.token}-sla",
        "GRIDFLOW_API_JWT_SECRET": DISPATCH_SECRET,
        "GRIDFLOW_METRICS_TOKEN": METRICS_TOKEN,
        "GRIDFLOW_CONFIG_DIR": str(config),
        "GRIDFLOW_KAFKA_SESSION_TIMEOUT_MS": "2000",
        "GRIDFLOW_KAFKA_HEARTBEAT_INTERVAL_MS": "200",
        "GRIDFLOW_FIRE_POLL_SECONDS": "0.05",
        "GRIDFLOW_FIRE_BATCH": "7",  # many small claims: the two instances interleave
        "GRIDFLOW_LOG_LEVEL": "INFO",
    }


@pytest.mark.embedded
async def test_two_sla_instances_one_killed_while_firing_send_each_signal_once(
    isolation: Isolation, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    shutil.copytree(REPO / "config", config)
    (config / "sla.yaml").write_text(QUICK, encoding="utf-8")
    names = TopicNames(isolation.topic_prefix)
    publisher = Publisher(bootstrap_servers=isolation.kafka_bootstrap, names=names, source="tests")
    watcher = TopicWatcher(
        bootstrap=isolation.kafka_bootstrap,
        topic=SLA_SIGNALS,
        name=names(SLA_SIGNALS),
        group=f"{isolation.token}-watch",
    )
    cases = [new_case_id(datetime.now(UTC)) for _ in range(CASES)]

    def seen() -> list[SlaSignal]:
        return [p for _, p in watcher.seen if isinstance(p, SlaSignal) and p.case_id in cases]

    def points() -> set[tuple[str, str, datetime]]:
        return {(s.case_id, s.kind.value, s.at) for s in seen()}

    environ = sla_environ(isolation, config)
    async with watcher, instances(environ, 2, tmp_path, service="sla") as (first, second):
        await publisher.start()
        try:
            for case_id in cases:
                now = datetime.now(UTC)
                await publish(
                    publisher, lifecycle(case_id, 2, Transition.ASSIGNED, CaseState.ASSIGNED, now)
                )
        finally:
            await publisher.stop()
        # the warnings are going out: one instance dies with its claims in hand
        await watcher.wait_for(lambda _, __: len(seen()) >= CASES // 2, within=WAIT_SECONDS * 2)
        assert await second.stop(signal.SIGKILL) == -signal.SIGKILL
        await watcher.wait_for(
            lambda _, __: len(points()) >= POINTS * CASES, within=WAIT_SECONDS * 4
        )
        assert first.process.returncode is None

    # each point decided once: one event id (the relay of the killed instance may have published
    # a staged event without marking it; the survivor publishes it again with the same id, which
    # consumers drop: ce_id is their idempotency key)
    ids: dict[tuple[str, str, datetime], set[str]] = defaultdict(set)
    for envelope, payload in watcher.seen:
        if isinstance(payload, SlaSignal) and payload.case_id in cases:
            ids[(payload.case_id, payload.kind.value, payload.at)].add(envelope.id)
    assert all(len(event_ids) == 1 for event_ids in ids.values()), ids
    assert Counter(case_id for case_id, _, _ in points()) == dict.fromkeys(cases, POINTS)
    assert Counter(kind for _, kind, _ in points()) == {
        "warning": CASES,
        "breach": CASES,
        "escalation": CASES,
    }
