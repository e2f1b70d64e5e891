"""sla: timers (the clock history of every case), case standing, outbox, processed events

Revision ID: sla_0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from libs.common.db import create_plumbing_tables_v1

revision = "sla_0001"
down_revision = None
branch_labels = None
depends_on = None

_TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    create_plumbing_tables_v1()
    op.create_table(
        "sla_timers",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("case_id", sa.String, nullable=False),
        sa.Column("stage", sa.String, nullable=False),
        sa.Column("name", sa.String),
        sa.Column("department", sa.String),
        sa.Column("policy", sa.String, nullable=False),
        sa.Column("clock", sa.String, nullable=False),
        sa.Column("limit_seconds", sa.Float, nullable=False),
        sa.Column("warnings", JSONB, nullable=False),
        sa.Column("escalation", JSONB, nullable=False),
        sa.Column("started_at", _TZ, nullable=False),
        sa.Column("anchor", _TZ, nullable=False),
        sa.Column("used_seconds", sa.Float, nullable=False),
        sa.Column("due_at", _TZ, nullable=False),
        sa.Column("provisional", sa.Boolean, nullable=False),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("fired", sa.Integer, nullable=False),
        sa.Column("next_fire_at", _TZ),
        sa.Column("stopped_at", _TZ),
        sa.Column("outcome", sa.String),
        sa.Column("unit_grid", sa.String),
        sa.Column("case_version", sa.Integer, nullable=False),
    )
    op.create_index("sla_timers_case", "sla_timers", ["case_id", "id"])
    # the firing loop's only query: due points of running timers, oldest first
    op.create_index(
        "sla_timers_due",
        "sla_timers",
        ["next_fire_at"],
        postgresql_where=sa.text("next_fire_at IS NOT NULL"),
    )
    op.create_index(
        "sla_timers_provisional",
        "sla_timers",
        ["id"],
        postgresql_where=sa.text("provisional AND status <> 'stopped'"),
    )
    op.create_table(
        "sla_cases",
        sa.Column("case_id", sa.String, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("state", sa.String, nullable=False),
        sa.Column("category", sa.String, nullable=False),
        sa.Column("urgency", sa.String, nullable=False),
        sa.Column("unit_grid", sa.String),
        sa.Column("department", sa.String),
        sa.Column("updated_at", _TZ, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sla_cases")
    op.drop_table("sla_timers")
    op.drop_table("processed_events")
    op.drop_table("outbox")
