"""drop the unused scope_settings.extra column

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode: SQLite drops a column by copying the table.
    with op.batch_alter_table("scope_settings", schema=None) as batch_op:
        batch_op.drop_column("extra")


def downgrade() -> None:
    with op.batch_alter_table("scope_settings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("extra", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
