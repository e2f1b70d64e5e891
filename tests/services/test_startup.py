"""A service with bad settings or bad reference data refuses to start and says why."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import REPO_CONFIG, WORKER_SECRET

REPO = Path(__file__).resolve().parents[2]


def _run(module: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GRIDFLOW_")}
    return subprocess.run(  # noqa: S603  # our own module
        [sys.executable, "-m", module],
        cwd=REPO,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "module", ["services.intake", "services.dispatch", "services.citycare_bridge"]
)
def test_missing_settings_stop_the_service_naming_the_variable(module: str) -> None:
    result = _run(
        module,
        {"DATABASE_URL": "mysql://nope", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"},
    )
    assert result.returncode == 2
    assert "configuration: DATABASE_URL: Value error, must be a postgresql+asyncpg:// URL" in (
        result.stderr
    )
    if module == "services.intake":
        assert "configuration: GRIDFLOW_WORKER_JWT_SECRET: Field required" in result.stderr
    if module == "services.citycare_bridge":
        for name in ("GRIDFLOW_DEPARTMENT_TOKEN", "GRIDFLOW_DEPARTMENT_WEBHOOK_SECRET"):
            assert f"configuration: {name}: Field required" in result.stderr


def test_bad_reference_data_stops_the_service_with_the_check_message(
    tmp_path: Path, database_url: str
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    for name in (
        "grid.yaml",
        "grid_polygons.geojson",
        "departments.yaml",
        "categories.yaml",
        "service_items.yaml",
        "open311.yaml",
    ):
        (config / name).write_text((REPO_CONFIG / name).read_text())
    (config / "routing.yaml").write_text(
        "version: 1\nroute:\n  id: root\n  routes:\n    - id: broken\n      department: nobody\n"
    )
    result = _run(
        "services.intake",
        {
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
            "GRIDFLOW_WORKER_JWT_SECRET": WORKER_SECRET,
            "GRIDFLOW_CONFIG_DIR": str(config),
        },
    )
    assert result.returncode != 0
    expected = "routing.yaml:6: route.routes[0].department: unknown department 'nobody'"
    assert f"configuration: {config}/{expected}" in result.stderr
