"""intake: Open311 requests and their status (the read model fed by cases.lifecycle)

Also a partial index on the outbox over Open311 case submissions only: the status consumer and
GET by id look a case up there by its id (see services/intake/open311.py); grid workers' reports
and visits are not indexed, so their hot insert path pays nothing.

Revision ID: intake_0003
Revises: intake_0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "intake_0003"
down_revision = "intake_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "open311_requests",
        sa.Column("case_id", sa.Text, primary_key=True),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("service_code", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("lat", sa.Float, nullable=False),
        sa.Column("lon", sa.Float, nullable=False),
        sa.Column("address", sa.Text),
        sa.Column("address_id", sa.Text),
        sa.Column("media_url", sa.Text),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("department", sa.Text),
        sa.Column("status_notes", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "open311_requests_by_client",
        "open311_requests",
        ["client_id", sa.text("requested_at DESC")],
    )
    op.create_index(
        "outbox_open311_cases",
        "outbox",
        ["key"],
        postgresql_where=sa.text(
            "event_type = 'gridflow.case.submitted' AND (data ->> 'source') = 'open311'"
        ),
    )


def downgrade() -> None:
    op.drop_index("outbox_open311_cases", table_name="outbox")
    op.drop_table("open311_requests")
