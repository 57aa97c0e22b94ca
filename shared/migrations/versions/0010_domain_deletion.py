"""Leaf-domain deletion: ``domain`` records a deletion under way (when and by whom it was asked,
where the devices go, the batch of delete jobs of its latest attempt).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("domain") as table:
        table.add_column(sa.Column("deletion_requested_at", sa.DateTime(timezone=True), nullable=True))
        table.add_column(sa.Column("deletion_requested_by", sa.String(length=255), nullable=False,
                                   server_default=""))
        table.add_column(sa.Column("deletion_target_id", sa.Uuid(), nullable=True))
        table.add_column(sa.Column("deletion_batch_id", sa.Uuid(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("domain") as table:
        for column in ("deletion_batch_id", "deletion_target_id", "deletion_requested_by", "deletion_requested_at"):
            table.drop_column(column)
