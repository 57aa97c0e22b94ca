"""Enrollment objects' field limits as the API checks them: a fingerprint of up to 200
characters (a SHA-512 fingerprint written with colons is 191) and a CA certificate PEM of up
to 64 KiB.

SQLite does not enforce a VARCHAR's declared length, so only PostgreSQL's columns change;
rebuilding SQLite's table for a length it ignores would risk the rows for nothing.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column("enrollment_object", "fingerprint", type_=sa.String(length=200),
                    existing_type=sa.String(length=128), existing_nullable=False)
    op.alter_column("enrollment_object", "ca_certificate_pem", type_=sa.String(length=65536),
                    existing_type=sa.String(), existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column("enrollment_object", "ca_certificate_pem", type_=sa.String(),
                    existing_type=sa.String(length=65536), existing_nullable=False)
    op.alter_column("enrollment_object", "fingerprint", type_=sa.String(length=128),
                    existing_type=sa.String(length=200), existing_nullable=False)
