"""dispatch's own tables: cases, their audit timeline, and deliveries to departments."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel


def _when(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=nullable, index=index))


def _json(*, nullable: bool = False) -> Any:
    return Field(sa_column=sa.Column(JSONB, nullable=nullable))


def _json_list() -> Any:
    return Field(default_factory=list, sa_column=sa.Column(JSONB, nullable=False))


class CommandKeyRow(SQLModel, table=True):
    """The first answer to a department's or operator's Idempotency-Key."""

    __tablename__ = "command_keys"

    scope: str = Field(primary_key=True)
    key: str = Field(primary_key=True)
    fingerprint: str
    status: int
    response: dict[str, Any] = _json()
    created_at: datetime = _when()


class CaseRow(SQLModel, table=True):
    __tablename__ = "cases"

    case_id: str = Field(primary_key=True)
    version: int
    state: str = Field(index=True)
    source: str
    category: str
    urgency: str
    unit_grid: str | None = None  # indexed for prefix search by the migrations
    department: str | None = None  # indexed with updated_at by the migrations
    routing: dict[str, Any] | None = _json(nullable=True)
    submitted: dict[str, Any] = _json()
    created_at: datetime = _when()
    updated_at: datetime = _when()
    owner_node: str | None = None
    co_handling: list[str] = _json_list()
    returned_by: list[str] = _json_list()
    return_count: int = 0
    rework_count: int = 0
    suspended: bool = False
    extension_pending: bool = False
    extension_requested_until: datetime | None = _when(nullable=True)
    verified: bool = False
    supervised: bool = False
    lat: float | None = None  # WGS-84: the report's coordinates, else its unit grid's centre
    lon: float | None = None
    merged_into: str | None = None  # 并案: the case this one follows (indexed by the migration)


class CaseHistoryRow(SQLModel, table=True):
    """One row per transition: who, when, what, why (the case's audit timeline)."""

    __tablename__ = "case_history"
    __table_args__ = (sa.UniqueConstraint("case_id", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(index=True)
    version: int
    transition: str
    from_state: str | None = None
    to_state: str
    at: datetime = _when()
    actor_kind: str
    actor_id: str
    department: str | None = None
    reason: str | None = None
    event_id: str
    reason_code: str | None = None
    note: str | None = None


class DeliveryRow(SQLModel, table=True):
    """A case handed to a department's receiver; `delivery_id` is the webhook-id of every attempt."""

    __tablename__ = "deliveries"

    delivery_id: str = Field(primary_key=True)
    case_id: str = Field(index=True)
    department: str  # indexed with status or time in partial indexes (migrations)
    url: str
    status: str
    attempts: int = 0
    next_attempt_at: datetime | None = _when(nullable=True)
    last_error: str | None = None
    last_status_code: int | None = None
    payload: dict[str, Any] = _json()
    created_at: datetime = _when()
    delivered_at: datetime | None = _when(nullable=True)
    leased_until: datetime | None = _when(nullable=True)  # an attempt is in flight until then


class ReceiverRow(SQLModel, table=True):
    """The state of a department's receiver: disabled (410 Gone, or an operator), and its breaker."""

    __tablename__ = "receivers"

    department: str = Field(primary_key=True)
    disabled: bool = False
    disabled_at: datetime | None = _when(nullable=True)
    reason: str | None = None
    consecutive_failures: int = 0
    open_until: datetime | None = _when(nullable=True)
    cooldown_seconds: float = 0.0
    probing: bool = False
    updated_at: datetime = _when()
