"""Room for the keyring regeneration's job kind and batch action (``regenerate_keyring``, 18
characters) in ``job.kind`` and ``batch.action``: 32 characters instead of 16.

SQLite does not enforce a VARCHAR's declared length, so only PostgreSQL's columns change.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COLUMNS = (("job", "kind"), ("batch", "action"))


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, column in COLUMNS:
        op.alter_column(table, column, type_=sa.String(length=32), existing_type=sa.String(length=16),
                        existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, column in COLUMNS:
        op.alter_column(table, column, type_=sa.String(length=16), existing_type=sa.String(length=32),
                        existing_nullable=False)
