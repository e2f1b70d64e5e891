"""dispatch: fewer indexes on deliveries — each row is updated twice (leased, then answered), and
an update that changes an indexed column writes a new entry into every index of the table

The single-column indexes on department, status and next_attempt_at are dropped: the hot
queries use the partial indexes (deliveries_due for what is pending, deliveries_leased for the
attempts in flight), and the in-flight count, planned as a bitmap AND of the status index and
deliveries_leased, read every entry of both — dead versions included — until a vacuum. What
remains to be found by status is the dead letters (operators' listing and replay, the gauges),
which get a partial index of their own.

Revision ID: dispatch_0006
Revises: dispatch_0005
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "dispatch_0006"
down_revision = "dispatch_0005"
branch_labels = None
depends_on = None

_DROPPED = ("department", "status", "next_attempt_at")


def upgrade() -> None:
    for column in _DROPPED:
        op.drop_index(f"ix_deliveries_{column}", "deliveries")
    op.create_index(
        "deliveries_dead",
        "deliveries",
        ["department", "created_at"],
        postgresql_where=sa.text("status = 'dead'"),
    )


def downgrade() -> None:
    op.drop_index("deliveries_dead", "deliveries")
    for column in _DROPPED:
        op.create_index(f"ix_deliveries_{column}", "deliveries", [column])
