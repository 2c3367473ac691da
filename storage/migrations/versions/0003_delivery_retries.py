"""delivery retries: the next try's time, the first failure, and the reply's messages already posted

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-09 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("delivery_parts", sa.Integer(), nullable=False, server_default=sa.text("0")))
        batch_op.add_column(sa.Column("delivery_next_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("delivery_failing_since", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("delivery_failing_since")
        batch_op.drop_column("delivery_next_at")
        batch_op.drop_column("delivery_parts")
