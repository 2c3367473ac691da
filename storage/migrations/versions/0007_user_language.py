"""user language: the language a user chose with /language, and the one their platform last reported

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-14 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_text = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("language", _text(length=16), nullable=True))
        batch_op.add_column(sa.Column("locale", _text(length=16), nullable=True))


def downgrade() -> None:
    # Not in batch mode: on SQLite that copies the table, which the foreign keys into users refuse; SQLite
    # 3.35 and later drop a column in place.
    op.drop_column("users", "locale")
    op.drop_column("users", "language")
