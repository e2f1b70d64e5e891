"""dispatch: what the full lifecycle keeps per case, richer audit rows, command idempotency keys

Revision ID: dispatch_0002
Revises: dispatch_0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "dispatch_0002"
down_revision = "dispatch_0001"
branch_labels = None
depends_on = None

_TZ = sa.DateTime(timezone=True)
_FALSE = sa.text("false")
_EMPTY = sa.text("'[]'::jsonb")


def upgrade() -> None:
    op.add_column("cases", sa.Column("owner_node", sa.String))
    op.add_column("cases", sa.Column("co_handling", JSONB, nullable=False, server_default=_EMPTY))
    op.add_column("cases", sa.Column("returned_by", JSONB, nullable=False, server_default=_EMPTY))
    for name in ("return_count", "rework_count"):
        op.add_column(
            "cases", sa.Column(name, sa.Integer, nullable=False, server_default=sa.text("0"))
        )
    for name in ("suspended", "extension_pending", "verified", "supervised"):
        op.add_column("cases", sa.Column(name, sa.Boolean, nullable=False, server_default=_FALSE))
    op.add_column("cases", sa.Column("extension_requested_until", _TZ))
    op.create_index("cases_department_updated", "cases", ["department", "updated_at", "case_id"])
    op.add_column("case_history", sa.Column("reason_code", sa.String))
    op.add_column("case_history", sa.Column("note", sa.String))
    op.create_table(
        "command_keys",
        sa.Column("scope", sa.Text, primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("response", JSONB, nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("command_keys")
    op.drop_column("case_history", "note")
    op.drop_column("case_history", "reason_code")
    op.drop_index("cases_department_updated", "cases")
    for name in (
        "extension_requested_until",
        "supervised",
        "verified",
        "extension_pending",
        "suspended",
        "rework_count",
        "return_count",
        "returned_by",
        "co_handling",
        "owner_node",
    ):
        op.drop_column("cases", name)
