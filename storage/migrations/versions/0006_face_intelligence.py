"""face intelligence: face embeddings, each image's likeness and judge, privacy consent, scope safety policies

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-13 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_text = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "face_embeddings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner", _text(length=160), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("judge", _text(length=32), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("face_embeddings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_face_embeddings_owner"), ["owner"], unique=False)
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("likeness", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("judge", _text(length=32), nullable=True))
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("privacy_accepted_at", sa.Float(), nullable=True))
    with op.batch_alter_table("scope_settings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("safety_policy", _text(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scope_settings", schema=None) as batch_op:
        batch_op.drop_column("safety_policy")
    # Not in batch mode: on SQLite that copies the table, which the foreign keys into users refuse; SQLite
    # 3.35 and later drop a column in place.
    op.drop_column("users", "privacy_accepted_at")
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("judge")
        batch_op.drop_column("likeness")
    with op.batch_alter_table("face_embeddings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_face_embeddings_owner"))
    op.drop_table("face_embeddings")
