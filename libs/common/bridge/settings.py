"""The settings every bridge has, on top of a service's; a bridge service extends this class."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from libs.common.settings import ServiceSettings
from libs.common.signing import validate_secret

HTTP_URL = r"^https?://[^\s/]+(/[^\s]*)?$"


class BridgeSettings(ServiceSettings):
    partner_url: str = Field(
        pattern=HTTP_URL, description="base URL of the partner platform's API (no trailing /)"
    )
    partner_mode: Literal["push", "poll"] = Field(
        default="push",
        description="push: the partner posts its events to the bridge; poll: the bridge reads "
        "the partner's event feed after a persisted cursor",
    )
    partner_poll_seconds: float = Field(
        default=5.0, gt=0, description="pause between two polls when the feed had nothing new"
    )
    partner_inbound_secret: SecretStr = Field(
        description="Standard Webhooks secret (whsec_…) the partner signs its pushes with"
    )
    partner_inbound_secret_next: SecretStr | None = Field(
        default=None, description="the next inbound secret during a rotation (either is accepted)"
    )
    partner_outbound_secret: SecretStr = Field(
        description="Standard Webhooks secret (whsec_…) the bridge signs its calls to the partner "
        "with"
    )
    partner_timeout_seconds: float = Field(
        default=10.0, gt=0, le=120, description="how long the partner may take to answer a call"
    )
    dispatch_url: str = Field(
        pattern=HTTP_URL, description="base URL of dispatch (its partner API, /v1/partner)"
    )
    dispatch_token: SecretStr = Field(
        description="the bridge's bearer token for dispatch's partner API (role partner, sub = "
        "the partner's system name, scopes cases:read cases:decide)"
    )
    outbound_base_delay_seconds: float = Field(
        default=1.0, gt=0, description="first retry delay of a queued message; doubles per attempt"
    )
    outbound_max_delay_seconds: float = Field(
        default=600.0, gt=0, description="cap of the delay between two attempts"
    )
    outbound_poll_seconds: float = Field(
        default=1.0, gt=0, description="how often due retries are looked for when idle"
    )
    lifecycle_consumer_group: str = Field(
        default="", description="Kafka consumer group on cases.lifecycle; default: the service name"
    )

    @field_validator("partner_inbound_secret", "partner_outbound_secret")
    @classmethod
    def _usable(cls, value: SecretStr) -> SecretStr:
        validate_secret(value.get_secret_value())
        return value

    @property
    def inbound_secrets(self) -> list[str]:
        secrets = [self.partner_inbound_secret, self.partner_inbound_secret_next]
        return [s.get_secret_value() for s in secrets if s is not None]

    @property
    def consumer_group(self) -> str:
        return self.lifecycle_consumer_group or self.service_name

    @property
    def outbound_lease_seconds(self) -> float:
        return self.partner_timeout_seconds + 30.0
