"""intake: the outbox and the processed-event ledger

Revision ID: intake_0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

from libs.common.db import create_plumbing_tables_v1

revision = "intake_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_plumbing_tables_v1()


def downgrade() -> None:
    op.drop_table("processed_events")
    op.drop_table("outbox")
