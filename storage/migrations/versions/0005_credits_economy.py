"""credits economy: purchases, budget holds and alerts, jobs awaiting confirmation, per-scope image caps

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-12 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_text = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "purchases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("platform", _text(length=16), nullable=False),
        sa.Column("charge_id", _text(length=128), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("credits", sa.Integer(), nullable=False),
        sa.Column("price", sa.Integer(), nullable=False),
        sa.Column("currency", _text(length=16), nullable=False),
        sa.Column("product", _text(length=64), nullable=False),
        sa.Column("provider_charge_id", _text(length=128), nullable=False),
        sa.Column("state", _text(length=16), nullable=False),
        sa.Column("credits_removed", sa.Integer(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("refunded_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("platform", "charge_id", name="uq_purchases_charge"),
    )
    op.create_index("ix_purchases_user", "purchases", ["user_id", "at"])
    op.create_index("ix_purchases_at", "purchases", ["at"])
    op.create_table(
        "budget_holds",
        sa.Column("job_id", _text(length=128), nullable=False),
        sa.Column("backend", _text(length=32), nullable=False),
        sa.Column("estimate_usd", sa.Float(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("job_id"),
    )
    op.create_index("ix_budget_holds_backend", "budget_holds", ["backend"])
    op.create_table(
        "budget_alerts",
        sa.Column("day", _text(length=10), nullable=False),
        sa.Column("budget", _text(length=32), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("used_usd", sa.Float(), nullable=False),
        sa.Column("limit_usd", sa.Float(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("sent_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("day", "budget", "threshold"),
    )
    op.create_table(
        "pending_jobs",
        sa.Column("id", _text(length=128), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("cost", sa.Integer(), nullable=False),
        sa.Column("job", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_pending_jobs_user_id"), "pending_jobs", ["user_id"])
    op.create_table(
        "scope_days",
        sa.Column("scope", _text(length=96), nullable=False),
        sa.Column("day", _text(length=10), nullable=False),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "day"),
    )
    with op.batch_alter_table("scope_settings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("daily_images", sa.Integer(), nullable=True))
    op.create_index("ix_jobs_spend", "jobs", ["backend", "finished_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_spend", table_name="jobs")
    with op.batch_alter_table("scope_settings", schema=None) as batch_op:
        batch_op.drop_column("daily_images")
    op.drop_table("scope_days")
    op.drop_index(op.f("ix_pending_jobs_user_id"), table_name="pending_jobs")
    op.drop_table("pending_jobs")
    op.drop_table("budget_alerts")
    op.drop_index("ix_budget_holds_backend", table_name="budget_holds")
    op.drop_table("budget_holds")
    op.drop_index("ix_purchases_at", table_name="purchases")
    op.drop_index("ix_purchases_user", table_name="purchases")
    op.drop_table("purchases")
