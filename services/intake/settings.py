from __future__ import annotations

from pathlib import Path
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

    attachments_dir: Path = Field(
        default=Path("data/attachments"), description="folder of the content-addressed file store"
    )
    attachment_max_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, description="largest attachment accepted"
    )
    attachment_types: frozenset[str] = Field(
        default=frozenset(
            {"image/jpeg", "image/png", "image/webp", "application/pdf", "video/mp4"}
        ),
        description="media types accepted for attachments (JSON list)",
    )
    batch_max_items: int = Field(
        default=500, ge=1, le=5000, description="items in one offline batch"
    )
    commit_batch_max: int = Field(
        default=2000, ge=1, description="submissions committed together in one transaction at most"
    )
    committers: int = Field(
        default=2, ge=1, le=16, description="concurrent group-commit transactions"
    )
    status_consumer_group: str = Field(
        default="intake-status",
        min_length=1,
        description="Kafka consumer group that follows cases.lifecycle for Open311 statuses",
    )

    @field_validator("worker_jwt_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        check_secret(value.get_secret_value())
        return value
