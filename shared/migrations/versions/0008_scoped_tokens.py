"""Domain-scoped API tokens that expire and can be revoked: ``api_token`` gets its home domain,
its expiry, when it was revoked and when it was last used.

Tokens made before this revision acted on every domain: they are homed at Global (so they keep
reaching everything) and expire 90 days after the upgrade, the default lifetime of a new token,
which leaves time to replace them.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

#: The Global domain's fixed id (as shared.domains has it; a revision keeps its own copy).
GLOBAL_DOMAIN_ID = uuid.UUID("e276abec-e0f2-11e3-8169-6d9ed49b625f")
EXISTING_TOKENS_LIFETIME = timedelta(days=90)


def upgrade() -> None:
    with op.batch_alter_table("api_token") as table:
        table.add_column(sa.Column("domain_id", sa.Uuid(), nullable=True))
        table.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        table.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
        table.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
    tokens = sa.table("api_token", sa.column("domain_id", sa.Uuid()),
                      sa.column("expires_at", sa.DateTime(timezone=True)))
    op.execute(tokens.update().values(domain_id=GLOBAL_DOMAIN_ID,
                                      expires_at=datetime.now(UTC) + EXISTING_TOKENS_LIFETIME))
    with op.batch_alter_table("api_token") as table:
        table.alter_column("domain_id", existing_type=sa.Uuid(), nullable=False)
        table.alter_column("expires_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        table.create_foreign_key("fk_api_token_domain_id_domain", "domain", ["domain_id"], ["id"])
        table.create_index("ix_api_token_domain_id", ["domain_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("api_token") as table:
        table.drop_index("ix_api_token_domain_id")
        table.drop_constraint("fk_api_token_domain_id_domain", type_="foreignkey")
        for column in ("last_used_at", "revoked_at", "expires_at", "domain_id"):
            table.drop_column(column)
