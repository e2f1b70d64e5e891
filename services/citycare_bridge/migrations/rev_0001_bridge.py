"""citycare_bridge: the outbox, the processed-event ledger, links, the poll cursor and the queue

Revision ID: citycare_bridge_0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

from libs.common.bridge.tables import create_bridge_tables_v1
from libs.common.db import create_plumbing_tables_v1

revision = "citycare_bridge_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_plumbing_tables_v1()
    create_bridge_tables_v1()


def downgrade() -> None:
    for table in ("queue", "cursors", "links", "processed_events", "outbox"):
        op.drop_table(table)
