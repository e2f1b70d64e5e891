"""dispatch: reliable delivery — receivers (disabled, circuit breaker) and delivery leases

Revision ID: dispatch_0004
Revises: dispatch_0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "dispatch_0004"
down_revision = "dispatch_0003"
branch_labels = None
depends_on = None

_TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "receivers",
        sa.Column("department", sa.String, primary_key=True),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("disabled_at", _TZ),
        sa.Column("reason", sa.String),
        sa.Column("consecutive_failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("open_until", _TZ),
        sa.Column("cooldown_seconds", sa.Float, nullable=False, server_default="0"),
        sa.Column("probing", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("updated_at", _TZ, nullable=False),
    )
    # an attempt in flight holds its delivery until then (the HTTP call runs outside transactions)
    op.add_column("deliveries", sa.Column("leased_until", _TZ))
    op.create_index(
        "deliveries_due",
        "deliveries",
        ["department", "next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index("deliveries_created_at", "deliveries", ["created_at"])


def downgrade() -> None:
    op.drop_index("deliveries_created_at", "deliveries")
    op.drop_index("deliveries_due", "deliveries")
    op.drop_column("deliveries", "leased_until")
    op.drop_table("receivers")
