"""dispatch: an index of the leased deliveries (the attempts in flight, counted every round)

Revision ID: dispatch_0005
Revises: dispatch_0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "dispatch_0005"
down_revision = "dispatch_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a lease is cleared when its answer is recorded: few rows, whatever the backlog
    op.create_index(
        "deliveries_leased",
        "deliveries",
        ["department", "leased_until"],
        postgresql_where=sa.text("leased_until IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("deliveries_leased", "deliveries")
