"""dispatch: cases, case history, deliveries, outbox, processed events

Revision ID: dispatch_0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from libs.common.db import create_plumbing_tables_v1

revision = "dispatch_0001"
down_revision = None
branch_labels = None
depends_on = None

_TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    create_plumbing_tables_v1()
    op.create_table(
        "cases",
        sa.Column("case_id", sa.String, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("state", sa.String, nullable=False, index=True),
        sa.Column("source", sa.String, nullable=False),
        sa.Column("category", sa.String, nullable=False),
        sa.Column("urgency", sa.String, nullable=False),
        sa.Column("unit_grid", sa.String, index=True),
        sa.Column("department", sa.String, index=True),
        sa.Column("routing", JSONB),
        sa.Column("submitted", JSONB, nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
        sa.Column("updated_at", _TZ, nullable=False),
    )
    op.create_table(
        "case_history",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("case_id", sa.String, nullable=False, index=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("transition", sa.String, nullable=False),
        sa.Column("from_state", sa.String),
        sa.Column("to_state", sa.String, nullable=False),
        sa.Column("at", _TZ, nullable=False),
        sa.Column("actor_kind", sa.String, nullable=False),
        sa.Column("actor_id", sa.String, nullable=False),
        sa.Column("department", sa.String),
        sa.Column("reason", sa.String),
        sa.Column("event_id", sa.String, nullable=False),
        sa.UniqueConstraint("case_id", "version"),
    )
    op.create_table(
        "deliveries",
        sa.Column("delivery_id", sa.String, primary_key=True),
        sa.Column("case_id", sa.String, nullable=False, index=True),
        sa.Column("department", sa.String, nullable=False, index=True),
        sa.Column("url", sa.String, nullable=False),
        sa.Column("status", sa.String, nullable=False, index=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", _TZ, index=True),
        sa.Column("last_error", sa.String),
        sa.Column("last_status_code", sa.Integer),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
        sa.Column("delivered_at", _TZ),
    )


def downgrade() -> None:
    for table in ("deliveries", "case_history", "cases", "processed_events", "outbox"):
        op.drop_table(table)
