"""sla: which timers an extension moved, and which assessment periods were published

Revision ID: sla_0003
Revises: sla_0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "sla_0003"
down_revision = "sla_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "sla_timers",
        sa.Column("extended", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("sla_timers_stopped", "sla_timers", ["stopped_at"])
    op.create_index("sla_timers_due_at", "sla_timers", ["due_at"])
    op.create_table(
        "sla_assessment_runs",
        sa.Column("period", sa.String, primary_key=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("events", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sla_assessment_runs")
    op.drop_index("sla_timers_due_at", "sla_timers")
    op.drop_index("sla_timers_stopped", "sla_timers")
    op.drop_column("sla_timers", "extended")
