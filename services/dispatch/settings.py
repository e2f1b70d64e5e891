from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr, field_validator

from libs.common.auth import check_secret
from libs.common.settings import ServiceSettings


class DispatchSettings(ServiceSettings):
    service_name: ClassVar[str] = "dispatch"
    default_port: ClassVar[int] = 8002

    api_jwt_secret: SecretStr = Field(
        description="HS256 key that departments' and operators' bearer tokens are signed with"
    )
    gauges_seconds: float = Field(
        default=15.0, gt=0, description="how often the open-case gauges are read from the database"
    )
    routing_reload_seconds: float = Field(
        default=10.0, gt=0, description="how often routing.yaml is checked for a change"
    )
    consumer_group: str = Field(default="dispatch", description="Kafka consumer group of dispatch")
    delivery_max_attempts: int = Field(
        default=17, ge=1, le=100, description="webhook attempts before a delivery is dead-lettered"
    )
    delivery_base_delay_seconds: float = Field(
        default=2.0, gt=0, description="first retry delay; doubles per attempt, with jitter"
    )
    delivery_max_delay_seconds: float = Field(
        default=86400.0, gt=0, description="cap of the delay between two attempts (a day)"
    )
    delivery_timeout_seconds: float = Field(
        default=10.0, gt=0, le=120, description="how long a receiver may take to answer"
    )
    delivery_concurrency: int = Field(
        default=64, ge=1, le=512, description="deliveries attempted at once per instance"
    )
    delivery_concurrency_per_department: int = Field(
        default=8, ge=1, le=64, description="attempts in flight at once per department endpoint"
    )
    delivery_breaker_failures: int = Field(
        default=5, ge=1, le=1000, description="consecutive failures that open a breaker"
    )
    delivery_breaker_cooldown_seconds: float = Field(
        default=60.0, gt=0, description="how long an opened breaker stays open at first"
    )
    delivery_breaker_max_cooldown_seconds: float = Field(
        default=3600.0, gt=0, description="cap of the cooldown, which doubles per failed probe"
    )
    delivery_poll_seconds: float = Field(
        default=1.0, gt=0, description="how often due retries are looked for when idle"
    )
    duplicate_distance_meters: float = Field(
        default=50.0,
        ge=0,
        le=5000,
        description="a new case this near an open case of the same category is merged into it "
        "(并案); 0 turns merging off",
    )
    duplicate_window_hours: float = Field(
        default=24.0,
        gt=0,
        le=720,
        description="how recent that open case must be (created within this many hours)",
    )

    @property
    def delivery_lease_seconds(self) -> float:
        """How long a claimed delivery is held for its attempt: the timeout and a margin."""
        return self.delivery_timeout_seconds + 30.0

    @field_validator("api_jwt_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        check_secret(value.get_secret_value())
        return value
