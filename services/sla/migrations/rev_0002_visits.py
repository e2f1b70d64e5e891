"""sla: key residents' visit obligations (四必访) and the periods that ended

Revision ID: sla_0002
Revises: sla_0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "sla_0002"
down_revision = "sla_0001"
branch_labels = None
depends_on = None

_TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sla_visit_obligations",
        sa.Column("resident_id", sa.String, primary_key=True),
        sa.Column("category", sa.String, nullable=False),
        sa.Column("frequency", sa.String, nullable=False),
        sa.Column("unit_grid", sa.String, nullable=False),
        sa.Column("worker_id", sa.String, nullable=False),
        sa.Column("period_start", _TZ, nullable=False),
        sa.Column("period_end", _TZ, nullable=False),
        sa.Column("last_visit_at", _TZ),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    )
    op.create_index(
        "sla_visit_obligations_due",
        "sla_visit_obligations",
        ["period_end"],
        postgresql_where=sa.text("active"),
    )

    op.create_table(
        "sla_visit_periods",
        sa.Column("resident_id", sa.String, primary_key=True),
        sa.Column("period_start", _TZ, primary_key=True),
        sa.Column("period_end", _TZ, nullable=False),
        sa.Column("category", sa.String, nullable=False),
        sa.Column("unit_grid", sa.String, nullable=False),
        sa.Column("worker_id", sa.String, nullable=False),
        sa.Column("fulfilled", sa.Boolean, nullable=False),
    )
    op.create_index("sla_visit_periods_end", "sla_visit_periods", ["period_end"])


def downgrade() -> None:
    op.drop_table("sla_visit_periods")
    op.drop_table("sla_visit_obligations")
