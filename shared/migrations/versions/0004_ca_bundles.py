"""CA bundles: certfleet's own bundle, the audit of its tests and updates, the bundle version each
device holds, and batches that push a bundle to devices (they name no enrollment object).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("device", sa.Column("bundle_version", sa.String(length=32), nullable=False, server_default=""))
    op.create_index("ix_device_bundle_version", "device", ["bundle_version"], unique=False)

    # No other table references batch, so SQLite may rebuild it to drop the NOT NULL.
    with op.batch_alter_table("batch") as table:
        table.alter_column("enrollment_object_id", existing_type=sa.Uuid(), nullable=True)

    op.create_table(
        "ca_bundle",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("pem", sa.String(), nullable=False),
        sa.Column("certificates", sa.Integer(), nullable=False),
        sa.Column("source_url", sa.String(length=512), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_modified", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "ca_bundle_update",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(length=255), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("forced", sa.Boolean(), nullable=False),
        sa.Column("old_version", sa.String(length=32), nullable=False),
        sa.Column("new_version", sa.String(length=32), nullable=False),
        sa.Column("failed_servers", sa.JSON(), nullable=False),
        sa.Column("detail", sa.String(length=2048), nullable=False),
        sa.Column("batch_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_ca_bundle_update_created_at", "ca_bundle_update", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_ca_bundle_update_created_at", table_name="ca_bundle_update")
    op.drop_table("ca_bundle_update")
    op.drop_table("ca_bundle")
    with op.batch_alter_table("batch") as table:
        table.alter_column("enrollment_object_id", existing_type=sa.Uuid(), nullable=False)
    op.drop_index("ix_device_bundle_version", table_name="device")
    op.drop_column("device", "bundle_version")
