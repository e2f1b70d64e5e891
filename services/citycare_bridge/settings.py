from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr, field_validator

from libs.common.bridge.settings import BridgeSettings
from libs.common.signing import validate_secret


class CitycareSettings(BridgeSettings):
    """The 数字城管 bridge: a bridge's settings (libs.common.bridge.settings), plus what it needs
    as the receiver of the platform's department entry (gridflow's cases it files on the
    platform)."""

    service_name: ClassVar[str] = "citycare_bridge"
    default_port: ClassVar[int] = 8005

    department_webhook_secret: SecretStr = Field(
        description="Standard Webhooks secret (whsec_…) dispatch signs its deliveries to the "
        "platform's department entry with: the value of the variable that entry's receiver "
        "names in departments.yaml (secret_env)"
    )
    department_webhook_secret_next: SecretStr | None = Field(
        default=None, description="the next delivery secret during a rotation (either is accepted)"
    )
    department_token: SecretStr = Field(
        description="bearer token for dispatch's department API as the platform's department "
        "entry (role department, sub = its short code, scopes cases:read cases:write)"
    )

    @field_validator("department_webhook_secret")
    @classmethod
    def _usable_webhook_secret(cls, value: SecretStr) -> SecretStr:
        validate_secret(value.get_secret_value())
        return value

    @property
    def delivery_secrets(self) -> list[str]:
        secrets = [self.department_webhook_secret, self.department_webhook_secret_next]
        return [s.get_secret_value() for s in secrets if s is not None]
