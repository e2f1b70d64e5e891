from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr, field_validator

from libs.common.auth import check_secret
from libs.common.settings import ServiceSettings


class IntakeSettings(ServiceSettings):
    service_name: ClassVar[str] = "intake"
    default_port: ClassVar[int] = 8001

    worker_jwt_secret: SecretStr = Field(
        description="HS256 key that grid workers' bearer tokens are signed with (≥ 32 bytes)"
    )
    clock_skew_seconds: int = Field(
        default=300, ge=0, description="how far in the future an occurred_at may lie"
    )

    @field_validator("worker_jwt_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        check_secret(value.get_secret_value())
        return value
