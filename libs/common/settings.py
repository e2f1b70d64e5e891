"""Typed settings shared by every service; each service extends `ServiceSettings`.

Every variable is documented in docs/configuration.md (a test keeps the two in step).
Nothing is read at import time: `__main__` builds the settings and hands them to `create_app`.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRIDFLOW_", frozen=True, extra="ignore")

    service_name: ClassVar[str] = "gridflow"
    default_port: ClassVar[int] = 8000

    database_url: str = Field(
        validation_alias="DATABASE_URL",
        description="PostgreSQL URL for SQLAlchemy with asyncpg, e.g. "
        "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
    )
    kafka_bootstrap_servers: str = Field(
        validation_alias="KAFKA_BOOTSTRAP_SERVERS",
        description="comma-separated host:port list of the Kafka brokers",
    )
    db_schema: str | None = Field(
        default=None,
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="PostgreSQL schema the service owns; defaults to the service name",
    )
    topic_prefix: str = Field(
        default="",
        pattern=r"^[a-zA-Z0-9._-]*$",
        description="prefix for every topic name (isolates stacks sharing one broker)",
    )
    config_dir: Path = Field(default=Path("config"), description="reference-data folder")
    http_host: str = Field(default="127.0.0.1", description="address the HTTP server binds")
    http_port: int | None = Field(
        default=None, ge=1, le=65535, description="HTTP port; defaults to the service's own port"
    )
    log_level: str = Field(
        default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$", description="log threshold"
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="bearer token Prometheus must present at /metrics; unset = /metrics refused",
    )
    kafka_session_timeout_ms: int = Field(
        default=10_000, ge=1000, description="consumer group session timeout (Kafka's default)"
    )
    kafka_heartbeat_interval_ms: int = Field(
        default=3_000, ge=100, description="consumer heartbeat interval (Kafka's default)"
    )
    kafka_fetch_max_wait_ms: int = Field(
        default=500,
        ge=10,
        le=10_000,
        description="longest a consumer's fetch waits at the broker for new records (Kafka's"
        " default; Kafka answers as soon as records arrive, the embedded broker only at the end)",
    )
    kafka_background_fetch_max_wait_ms: int = Field(
        default=500,
        ge=10,
        le=10_000,
        description="the same for consumers off a case's way to its department (read models,"
        " deadline signals, partner feedback), which may lag a fetch more",
    )
    kafka_handler_attempts: int = Field(
        default=5, ge=1, le=50, description="tries per message before it is dead-lettered"
    )
    kafka_retry_backoff_ms: int = Field(
        default=200, ge=0, description="pause before retry n of a failing record: n × this"
    )
    kafka_request_timeout_ms: int = Field(
        default=120_000,
        ge=1000,
        description="how long a produce request waits for the broker before it is retried",
    )
    kafka_batch_linger_ms: int = Field(
        default=20,
        ge=0,
        le=1000,
        description="least time between the starts of two batches of a consumer that handles"
        " a fetched batch at once (one transaction each)",
    )
    outbox_linger_ms: int = Field(
        default=20,
        ge=0,
        le=1000,
        description="least time between the starts of two drains of the outbox relay",
    )
    kafka_partitions: int = Field(
        default=4, ge=1, description="partitions of topics created at start"
    )
    kafka_replication_factor: int = Field(
        default=1, ge=1, description="replication factor of topics created at start"
    )

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, value: str) -> str:
        if not value.startswith("postgresql+asyncpg://"):
            raise ValueError("must be a postgresql+asyncpg:// URL (PostgreSQL is the only engine)")
        return value

    @property
    def schema_name(self) -> str:
        return self.db_schema or self.service_name

    @property
    def port(self) -> int:
        return self.http_port or self.default_port
