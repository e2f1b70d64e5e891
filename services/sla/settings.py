from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr, field_validator

from libs.common.auth import check_secret
from libs.common.settings import ServiceSettings


class SlaSettings(ServiceSettings):
    service_name: ClassVar[str] = "sla"
    default_port: ClassVar[int] = 8003

    api_jwt_secret: SecretStr = Field(
        description="HS256 key that departments' and operators' bearer tokens are signed with"
    )
    consumer_group: str = Field(default="sla", description="Kafka consumer group of sla")
    fire_batch: int = Field(
        default=500, ge=1, le=10_000, description="due timers claimed per firing transaction"
    )
    fire_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="longest sleep of the firing loop (it wakes earlier for the next due point)",
    )
    config_reload_seconds: float = Field(
        default=10.0,
        gt=0,
        description="how often sla.yaml and calendar.yaml are checked for a change",
    )

    assessment_seconds: float = Field(
        default=300.0,
        gt=0,
        description="how often this month's KPI gauges are recomputed and ended periods published",
    )

    @field_validator("api_jwt_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        check_secret(value.get_secret_value())
        return value
