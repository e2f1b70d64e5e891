"""Small factories for test data and per-test settings."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from deploy.embedded import EMBEDDED_FETCH_MAX_WAIT_MS
from libs.common.auth import mint_token
from services.dispatch.settings import DispatchSettings
from services.intake.settings import IntakeSettings
from services.sla.settings import SlaSettings

WORKER_SECRET = "test-worker-secret-0123456789abcdef"  # a test key, ≥ 32 bytes
DISPATCH_SECRET = "test-dispatch-secret-0123456789abcdef"  # departments' and operators' tokens
METRICS_TOKEN = "test-metrics-token"
UNIT_GRID = "430281001001001"
REPO_CONFIG = Path(__file__).resolve().parents[1] / "config"


@dataclass
class Isolation:
    """Per-test names: a topic prefix and schema names nobody else uses."""

    token: str
    database_url: str
    kafka_bootstrap: str
    schemas: list[str] = field(default_factory=list)

    @property
    def topic_prefix(self) -> str:
        return f"{self.token}."

    def schema(self, service: str) -> str:
        name = f"{self.token}_{service}"
        if name not in self.schemas:
            self.schemas.append(name)
        return name

    def common(self, service: str) -> dict[str, Any]:
        return {
            "database_url": self.database_url,
            "kafka_bootstrap_servers": self.kafka_bootstrap,
            "db_schema": self.schema(service),
            "topic_prefix": self.topic_prefix,
            "metrics_token": METRICS_TOKEN,
            "kafka_session_timeout_ms": 2000,
            "kafka_heartbeat_interval_ms": 200,
            "kafka_fetch_max_wait_ms": EMBEDDED_FETCH_MAX_WAIT_MS,
            "kafka_background_fetch_max_wait_ms": EMBEDDED_FETCH_MAX_WAIT_MS,
            "kafka_retry_backoff_ms": 10,
        }


def make_sla_settings(iso: Isolation, **overrides: Any) -> SlaSettings:
    values = {
        **iso.common("sla"),
        "consumer_group": f"{iso.token}-sla",
        "api_jwt_secret": DISPATCH_SECRET,
        "fire_poll_seconds": 0.05,
        **overrides,
    }
    return SlaSettings.model_validate(values)


def make_intake_settings(iso: Isolation, **overrides: Any) -> IntakeSettings:
    values = {**iso.common("intake"), "worker_jwt_secret": WORKER_SECRET, **overrides}
    return IntakeSettings.model_validate(values)


def make_dispatch_settings(iso: Isolation, **overrides: Any) -> DispatchSettings:
    values = {
        **iso.common("dispatch"),
        "consumer_group": f"{iso.token}-dispatch",
        "api_jwt_secret": DISPATCH_SECRET,
        "delivery_base_delay_seconds": 0.05,
        "delivery_poll_seconds": 0.05,
        # most tests file several alike cases at one place; the duplicate tests turn merging on
        "duplicate_distance_meters": 0,
        **overrides,
    }
    return DispatchSettings.model_validate(values)


def make_config_dir(tmp_path: Path, *, receiver_base: str) -> Path:
    """A copy of the shipped reference data whose departments point at a test receiver."""
    target = tmp_path / "config"
    shutil.copytree(REPO_CONFIG, target)
    departments = target / "departments.yaml"
    text = re.sub(r"http://127\.0\.0\.1:8090", receiver_base, departments.read_text())
    departments.write_text(text)
    return target


def make_worker_token(
    *,
    subject: str = "W0001",
    grids: list[str] | None = None,
    scopes: list[str] | None = None,
    secret: str = WORKER_SECRET,
    ttl: timedelta = timedelta(hours=1),
    now: datetime | None = None,
) -> str:
    return mint_token(
        secret=secret,
        subject=subject,
        role="grid_worker",
        scopes=["reports:write"] if scopes is None else scopes,
        grids=[UNIT_GRID] if grids is None else grids,
        now=now or datetime.now(UTC),
        ttl=ttl,
    )


def make_report(**overrides: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "category": "city.garbage",
        "urgency": "routine",
        "title": "路边暴露垃圾",
        "description": "人民路与解放路交叉口东北角有一堆生活垃圾未清运。",
        "location": {"unit_grid": UNIT_GRID, "address": "人民路 12 号旁"},
        "occurred_at": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
    }
    report.update(overrides)
    return report


def department_secret(short_code: str) -> str:
    """A deterministic Standard Webhooks secret per department for tests."""
    import base64  # noqa: PLC0415

    return "whsec_" + base64.b64encode(f"test-secret-{short_code}".ljust(32, "!").encode()).decode()


# --- Open311 ------------------------------------------------------------------------------------

RESIDENT_APP_KEY = "test-open311-key-resident-app"  # a test key, ≥ 16 characters
VIDEO_AI_KEY = "test-open311-key-video-ai-000"
OPEN311_KEYS = {  # the variables config/open311.yaml names, with test keys
    "GRIDFLOW_OPEN311_KEY_RESIDENT_APP": RESIDENT_APP_KEY,
    "GRIDFLOW_OPEN311_KEY_VIDEO_AI": VIDEO_AI_KEY,
}
INSIDE_UNIT_GRID = {"lat": "27.7035", "long": "113.305"}  # in UNIT_GRID's polygon
OUTSIDE_CITY = {"lat": "31.2304", "long": "121.4737"}


def make_open311_request(**overrides: str | None) -> dict[str, str]:
    """A GeoReport v2 POST body (form fields) from resident-app; a None override drops a field."""
    request = {
        "api_key": RESIDENT_APP_KEY,
        "service_code": "city.garbage",
        **INSIDE_UNIT_GRID,
        "address_string": "人民路 12 号旁",
        "description": "人民路与解放路交叉口东北角有一堆生活垃圾，已经放了三天。",
        "first_name": "秀英",
        "last_name": "李",
        "phone": "13800138000",
        "email": "resident@example.com",
        "device_id": "device-0001",
    }
    for name, value in overrides.items():
        if value is None:
            request.pop(name, None)
        else:
            request[name] = value
    return request


def make_department_token(
    department: str = "chengguan",
    *,
    scopes: list[str] | None = None,
    role: str = "department",
    secret: str = DISPATCH_SECRET,
    now: datetime | None = None,
) -> str:
    return mint_token(
        secret=secret,
        subject=department,
        role=role,
        scopes=["cases:read", "cases:write"] if scopes is None else scopes,
        grids=[],
        now=now or datetime.now(UTC),
        ttl=timedelta(hours=1),
    )


def make_operator_token(
    grids: list[str],
    *,
    subject: str = "OP01",
    scopes: list[str] | None = None,
    secret: str = DISPATCH_SECRET,
    now: datetime | None = None,
) -> str:
    return mint_token(
        secret=secret,
        subject=subject,
        role="operator",
        scopes=["cases:read", "cases:manage"] if scopes is None else scopes,
        grids=grids,
        now=now or datetime.now(UTC),
        ttl=timedelta(hours=1),
    )
