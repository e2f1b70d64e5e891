"""The Prometheus side of operations: the alert rules are valid and behave as their unit tests
say (promtool), they only name metrics the services export, and every service's /metrics passes
`promtool check metrics`. promtool comes from Debian's `prometheus` package (.ci/run installs
it); without it the promtool tests are skipped, saying so."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fastapi import FastAPI

from services.dispatch.app import create_app as create_dispatch
from services.intake.app import create_app as create_intake
from services.sla.app import create_app as create_sla
from tests.factories import (
    METRICS_TOKEN,
    REPO_CONFIG,
    Isolation,
    department_secret,
    make_dispatch_settings,
    make_intake_settings,
    make_sla_settings,
)
from tests.harness import running

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (apt-get install prometheus; CI does)"
)


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(  # noqa: S603  # our own arguments
        [PROMTOOL, *args], input=stdin, capture_output=True, text=True, cwd=RULES, check=False
    )


@needs_promtool
def test_the_rules_are_valid_and_pass_their_unit_tests() -> None:
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def exported_metric_names() -> set[str]:
    names: set[str] = set()
    for path in [*(REPO / "libs").rglob("*.py"), *(REPO / "services").rglob("*.py")]:
        names |= set(re.findall(r'"(gridflow_[a-z_]+)"', path.read_text(encoding="utf-8")))
    return names


def test_the_rules_name_only_metrics_the_services_export() -> None:
    text = (RULES / "alerts.yml").read_text(encoding="utf-8")
    used = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for name in re.findall(r"\b(gridflow_[a-z_]+)", text)
    }
    exported = exported_metric_names()
    assert used, "the rules name no gridflow metric"
    assert used <= exported, f"not exported: {sorted(used - exported)}"


def _webhook_environ() -> dict[str, str]:
    from libs.common.refdata import WebhookReceiver, load_reference_data  # noqa: PLC0415

    environ: dict[str, str] = {}
    for code, department in load_reference_data(REPO_CONFIG).departments.items():
        if isinstance(department.receiver, WebhookReceiver):
            environ[department.receiver.secret_env] = department_secret(code)
    return environ


@needs_promtool
async def test_every_service_exposition_passes_promtool(isolation: Isolation) -> None:
    apps: dict[str, FastAPI] = {
        "intake": create_intake(make_intake_settings(isolation)),
        "dispatch": create_dispatch(make_dispatch_settings(isolation), environ=_webhook_environ()),
        "sla": create_sla(make_sla_settings(isolation)),
    }
    for name, app in apps.items():
        async with running(app) as client:
            response = await client.get(
                "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
            )
            assert response.status_code == 200, name
            checked = promtool("check", "metrics", stdin=response.text)
            assert checked.returncode == 0, f"{name}: {checked.stdout}{checked.stderr}"
            assert "gridflow_" in response.text
