"""A grid worker's report travels intake → cases.submitted → dispatch → signed webhook, and the
assignment is published on cases.lifecycle — against the real broker and the real database."""

from __future__ import annotations

import asyncio
from pathlib import Path

from deploy.demo_department import DepartmentReceiver
from libs.common.events import CaseLifecycleEvent, CaseState, Transition
from libs.common.topics import CASES_LIFECYCLE
from services.dispatch.app import create_app as create_dispatch
from services.intake.app import create_app as create_intake
from tests.factories import (
    UNIT_GRID,
    Isolation,
    department_secret,
    make_config_dir,
    make_dispatch_settings,
    make_intake_settings,
    make_report,
    make_worker_token,
)
from tests.harness import WAIT_SECONDS, TopicWatcher, http_server, running


def _secrets_env(config: Path) -> dict[str, str]:
    from libs.common.refdata import load_reference_data  # noqa: PLC0415

    refdata = load_reference_data(config)
    return {
        d.receiver.secret_env: department_secret(code)
        for code, d in refdata.departments.items()
        if d.receiver.kind == "webhook"
    }


async def test_report_reaches_department_and_assignment_is_published(
    isolation: Isolation, tmp_path: Path
) -> None:
    receiver = DepartmentReceiver(secrets={})
    async with http_server(receiver.app()) as base_url:
        config = make_config_dir(tmp_path, receiver_base=base_url)
        environ = _secrets_env(config)
        receiver.secrets = {code: [department_secret(code)] for code in _codes(config)}
        intake = create_intake(make_intake_settings(isolation, config_dir=config))
        dispatch = create_dispatch(
            make_dispatch_settings(isolation, config_dir=config), environ=environ
        )
        async with running(intake) as intake_client, running(dispatch) as dispatch_client:
            lifecycle = TopicWatcher(
                bootstrap=isolation.kafka_bootstrap,
                topic=CASES_LIFECYCLE,
                name=isolation.topic_prefix + CASES_LIFECYCLE.name,
                group=f"{isolation.token}-watch",
            )
            async with lifecycle:
                response = await intake_client.post(
                    "/v1/reports",
                    json=make_report(),
                    headers={"Authorization": f"Bearer {make_worker_token()}"},
                )
                assert response.status_code == 202, response.text
                case_id = response.json()["case_id"]

                received = await asyncio.wait_for(receiver.received.get(), WAIT_SECONDS)
                assert received.department == "chengguan"
                assert received.body["case"]["case_id"] == case_id
                assert received.body["case"]["location"]["unit_grid"] == UNIT_GRID
                assert received.webhook_id.startswith("msg_")

                _, event = await lifecycle.wait_for(
                    lambda _, p: (
                        isinstance(p, CaseLifecycleEvent)
                        and p.case_id == case_id
                        and p.transition is Transition.ASSIGNED
                    )
                )
                assert isinstance(event, CaseLifecycleEvent)
                assert event.version == 2
                assert event.from_state is CaseState.REPORTED
                assert event.to_state is CaseState.ASSIGNED
                assert event.department == "chengguan"
                assert event.routing is not None and event.routing.rule_id is not None
                versions = [
                    p.version
                    for _, p in lifecycle.seen
                    if isinstance(p, CaseLifecycleEvent) and p.case_id == case_id
                ]
                assert versions == [1, 2]

            ready = await dispatch_client.get("/readyz")
            assert ready.status_code == 200, ready.text


def _codes(config: Path) -> list[str]:
    from libs.common.refdata import load_reference_data  # noqa: PLC0415

    return list(load_reference_data(config).departments)
