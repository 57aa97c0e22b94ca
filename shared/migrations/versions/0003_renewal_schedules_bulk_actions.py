"""Certificates over time: renewal state on trustpoints, renewal settings on enrollment
objects, the reason a job exists, bulk actions as batches, the scheduler's schedules and its
leader lease.

New columns have server defaults, so rows written before this revision read as they did: every
enrollment object renews automatically with the default window, every job was an operator's,
every batch a bulk enrollment. Existing trustpoints get their renewal time when their
certificate is next installed or refreshed.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _timestamp(name: str, *, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    # Plain ADD COLUMNs with constant defaults: SQLite adds them in place, with no table rebuild
    # (a rebuild of a table others reference would trip their foreign keys).
    op.add_column("enrollment_object", sa.Column("auto_renew", sa.Boolean(), nullable=False, server_default="1"))
    op.add_column("enrollment_object", sa.Column("renew_before_fraction", sa.Float(), nullable=True))
    op.add_column("enrollment_object", sa.Column("renew_before_days", sa.Integer(), nullable=True))

    op.add_column("trustpoint", _timestamp("renewal_due_at"))
    op.add_column("trustpoint", sa.Column("renewal_failures", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("trustpoint", _timestamp("last_renewal_at"))
    op.add_column("trustpoint", sa.Column("renewal_error_code", sa.String(length=64), nullable=True))
    op.add_column("trustpoint", sa.Column("renewal_error_message", sa.String(length=2048), nullable=True))
    op.create_index("ix_trustpoint_renewal", "trustpoint", ["enrollment_type", "renewal_due_at"], unique=False)

    op.add_column("job", sa.Column("reason", sa.String(length=16), nullable=False, server_default="operator"))
    op.add_column("batch", sa.Column("action", sa.String(length=16), nullable=False, server_default="enroll"))

    op.create_table(
        "schedule",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("cron", sa.String(length=128), nullable=False),
        sa.Column("interval_seconds", sa.Integer(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        _timestamp("next_run_at", nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=True),
        _timestamp("run_started_at"),
        _timestamp("last_run_at"),
        _timestamp("last_finished_at"),
        sa.Column("last_outcome", sa.String(length=16), nullable=False),
        sa.Column("last_detail", sa.String(length=2048), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_index("ix_schedule_next_run_at", "schedule", ["next_run_at"], unique=False)

    op.create_table(
        "leader_lease",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("token", sa.Integer(), nullable=False),
        _timestamp("expires_at", nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("leader_lease")
    op.drop_index("ix_schedule_next_run_at", table_name="schedule")
    op.drop_table("schedule")
    with op.batch_alter_table("batch") as table:
        table.drop_column("action")
    with op.batch_alter_table("job") as table:
        table.drop_column("reason")
    op.drop_index("ix_trustpoint_renewal", table_name="trustpoint")
    with op.batch_alter_table("trustpoint") as table:
        for column in ("renewal_error_message", "renewal_error_code", "last_renewal_at", "renewal_failures",
                       "renewal_due_at"):
            table.drop_column(column)
    with op.batch_alter_table("enrollment_object") as table:
        for column in ("renew_before_days", "renew_before_fraction", "auto_renew"):
            table.drop_column(column)
