"""Revocation and validation settings on enrollment objects (CRL, OCSP, their order, valid when
unreachable, validation usage, skipping the CA-flag check, ignoring the IPsec key usage), and
the revocation the scan finds on a trustpoint. Existing objects keep checking nothing, as before.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_FLAGS = (("revocation_crl", "0"), ("crl_use_distribution_point", "1"), ("revocation_ocsp", "0"),
          ("valid_if_unreachable", "0"), ("skip_ca_flag_check", "0"), ("ignore_ipsec_key_usage", "0"))


def upgrade() -> None:
    for name, default in _FLAGS:
        op.add_column("enrollment_object", sa.Column(name, sa.Boolean(), nullable=False, server_default=default))
    op.add_column("enrollment_object", sa.Column("revocation_order", sa.String(length=16), nullable=False,
                                                 server_default="crl_first"))
    op.add_column("enrollment_object", sa.Column("validation_usage", sa.JSON(), nullable=False,
                                                 server_default='["ipsec_client", "ssl_client"]'))
    op.add_column("trustpoint", sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("trustpoint", sa.Column("revocation_reason", sa.String(length=32), nullable=True))


def downgrade() -> None:
    for name in ("revocation_reason", "revoked_at"):
        op.drop_column("trustpoint", name)
    for name in ("validation_usage", "revocation_order", *(flag for flag, _ in _FLAGS)):
        op.drop_column("enrollment_object", name)
