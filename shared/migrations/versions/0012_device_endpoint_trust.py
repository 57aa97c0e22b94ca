"""Device endpoint trust: each device records the admin approval of its management URL (who, when,
for which URL) and its sealed endpoint credential; ``management_endpoint`` is the installation's
allow-list of management endpoints.

Devices registered before this revision have neither: no secret goes to them until an admin
approves them with their credential (``POST …/devices/{id}/trust``) or allow-lists their
management network and gives the credential.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("device") as table:
        table.add_column(sa.Column("endpoint_approved_url", sa.String(length=512), nullable=True))
        table.add_column(sa.Column("endpoint_approved_by", sa.String(length=255), nullable=True))
        table.add_column(sa.Column("endpoint_approved_at", sa.DateTime(timezone=True), nullable=True))
        table.add_column(sa.Column("endpoint_credential_blob", sa.LargeBinary(), nullable=True))
    op.create_table(
        "management_endpoint",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("scheme", sa.String(length=8), nullable=False),
        sa.Column("host", sa.String(length=253), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("scheme", "host", "port"),
    )


def downgrade() -> None:
    op.drop_table("management_endpoint")
    with op.batch_alter_table("device") as table:
        for column in ("endpoint_credential_blob", "endpoint_approved_at", "endpoint_approved_by",
                       "endpoint_approved_url"):
            table.drop_column(column)
