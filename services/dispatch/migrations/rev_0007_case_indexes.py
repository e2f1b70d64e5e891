"""dispatch: cases keep only indexes their queries can use — each case is inserted and then
updated at every transition, and such an update writes a new entry into every index of the table

- `ix_cases_department` is dropped: `cases_department_updated` (department, updated_at,
  case_id) serves every lookup by department.
- `cases_merged_into` becomes partial (`merged_into IS NOT NULL`): only a merged case (并案)
  is looked up by the case it follows, and most cases follow none.
- `ix_cases_unit_grid` becomes `cases_unit_grid_prefix` with `text_pattern_ops`: operators
  scope cases by grid prefix (`unit_grid LIKE '3301020%'`), which a plain b-tree serves only
  under the "C" collation (not under C.UTF-8 or a language's), so it was never used.

Revision ID: dispatch_0007
Revises: dispatch_0006
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "dispatch_0007"
down_revision = "dispatch_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_cases_department", "cases")
    op.drop_index("cases_merged_into", "cases")
    op.create_index(
        "cases_merged_into",
        "cases",
        ["merged_into"],
        postgresql_where=sa.text("merged_into IS NOT NULL"),
    )
    op.drop_index("ix_cases_unit_grid", "cases")
    op.create_index(
        "cases_unit_grid_prefix",
        "cases",
        ["unit_grid"],
        postgresql_ops={"unit_grid": "text_pattern_ops"},
    )


def downgrade() -> None:
    op.drop_index("cases_unit_grid_prefix", "cases")
    op.create_index("ix_cases_unit_grid", "cases", ["unit_grid"])
    op.drop_index("cases_merged_into", "cases")
    op.create_index("cases_merged_into", "cases", ["merged_into"])
    op.create_index("ix_cases_department", "cases", ["department"])
