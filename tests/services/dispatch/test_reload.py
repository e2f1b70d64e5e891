"""Routing rules change without a restart; a broken change is refused and the old rules stay."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry

from libs.common.topics import CASES_SUBMITTED
from services.dispatch.reload import RoutingReloader
from tests.harness import WAIT_SECONDS, until
from tests.services.dispatch.conftest import DispatchStack
from tests.services.dispatch.test_flow import make_case


def _routing_file(stack: DispatchStack) -> Path:
    path: Path = stack.app.state.runtime.settings.config_dir / "routing.yaml"
    return path


async def test_a_valid_change_applies_and_a_broken_one_is_refused(
    dispatch_stack: DispatchStack,
) -> None:
    stack = dispatch_stack
    runtime = stack.app.state.runtime
    path = _routing_file(stack)
    before = runtime.refdata.routing.version
    original = path.read_text()
    path.write_text(original.replace("department: chengguan", "department: minzheng", 1))
    assert stack.app.state.reloader.reload() is True
    changed = runtime.refdata.routing.version
    assert changed != before

    case = make_case("city.garbage")
    await stack.publisher.publish(CASES_SUBMITTED, case, key=case.case_id, now=datetime.now(UTC))
    received = await asyncio.wait_for(stack.receiver.received.get(), WAIT_SECONDS)
    assert (received.department, received.body["case"]["case_id"]) == ("minzheng", case.case_id)

    path.write_text(original.replace("department: chengguan", "department: nobody", 1))
    assert stack.app.state.reloader.reload() is False
    assert runtime.refdata.routing.version == changed


async def test_the_watcher_notices_a_changed_file(dispatch_stack: DispatchStack) -> None:
    runtime = dispatch_stack.app.state.runtime
    path = _routing_file(dispatch_stack)
    watcher = RoutingReloader(
        runtime=runtime, path=path, interval=0.02, registry=CollectorRegistry()
    )
    task = asyncio.create_task(watcher.run())
    try:
        before = runtime.refdata.routing.version
        path.write_text(path.read_text() + "\n# a comment changes the version\n")

        async def changed() -> bool:
            return bool(runtime.refdata.routing.version != before)

        await until(changed)
    finally:
        watcher.stop()
        await task
