"""dispatch: where a case is (for finding duplicates) and which case a duplicate is merged into

Revision ID: dispatch_0003
Revises: dispatch_0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "dispatch_0003"
down_revision = "dispatch_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("cases", sa.Column("lat", sa.Float))
    op.add_column("cases", sa.Column("lon", sa.Float))
    op.add_column("cases", sa.Column("merged_into", sa.String))
    op.create_index("cases_merged_into", "cases", ["merged_into"])
    # duplicate candidates: same category, recent, open, not merged themselves
    op.create_index(
        "cases_duplicate_candidates",
        "cases",
        ["category", "created_at"],
        postgresql_where=sa.text("merged_into IS NULL AND state NOT IN ('closed', 'cancelled')"),
    )


def downgrade() -> None:
    op.drop_index("cases_duplicate_candidates", "cases")
    op.drop_index("cases_merged_into", "cases")
    for name in ("merged_into", "lon", "lat"):
        op.drop_column("cases", name)
