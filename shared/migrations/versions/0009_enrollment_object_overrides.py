"""Child-domain overrides of enrollment objects: ``enrollment_object.allow_overrides`` (off for
every existing object, as before) and the ``enrollment_override`` table, one row per (object,
descendant domain) with the overridden values and the override's own sealed secret; removed with
its object or its domain.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("enrollment_object", sa.Column("allow_overrides", sa.Boolean(), nullable=False,
                                                 server_default="0"))
    op.create_table(
        "enrollment_override",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("enrollment_object_id", sa.Uuid(), nullable=False),
        sa.Column("domain_id", sa.Uuid(), nullable=False),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.Column("secret_blob", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["enrollment_object_id"], ["enrollment_object.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["domain_id"], ["domain.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("enrollment_object_id", "domain_id"),
    )
    op.create_index("ix_enrollment_override_enrollment_object_id", "enrollment_override", ["enrollment_object_id"],
                    unique=False)
    op.create_index("ix_enrollment_override_domain_id", "enrollment_override", ["domain_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_enrollment_override_domain_id", table_name="enrollment_override")
    op.drop_index("ix_enrollment_override_enrollment_object_id", table_name="enrollment_override")
    op.drop_table("enrollment_override")
    with op.batch_alter_table("enrollment_object") as table:
        table.drop_column("allow_overrides")
