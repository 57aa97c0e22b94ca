"""The schema certfleet had when it started recording revisions.

Every table, index and constraint is spelled out rather than taken from the models, so this
revision stays what it is when the models change. A database certfleet made before it kept
revisions has these tables; ``certfleet db upgrade`` records it as this revision.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _id() -> sa.Column:
    return sa.Column("id", sa.Uuid(), nullable=False)


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _text(name: str, length: int | None = None, *, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.String(length=length), nullable=nullable)


def _index(table: str, *columns: str, name: str | None = None) -> None:
    op.create_index(name or f"ix_{table}_{columns[0]}", table, list(columns), unique=False)


def upgrade() -> None:
    op.create_table(
        "domain",
        _id(),
        _text("name", 128),
        sa.Column("parent_id", sa.Uuid(), nullable=True),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["parent_id"], ["domain.id"]),
        sa.UniqueConstraint("parent_id", "name"),
    )
    _index("domain", "parent_id")

    op.create_table(
        "device",
        _id(),
        sa.Column("domain_id", sa.Uuid(), nullable=False),
        _text("name", 128),
        _text("model", 64),
        _text("serial", 64),
        _text("ip_address", 64),
        _text("fqdn", 255),
        _text("management_url", 512),
        sa.Column("weak_crypto", sa.Boolean(), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["domain_id"], ["domain.id"]),
        sa.UniqueConstraint("serial"),
    )
    _index("device", "domain_id")
    _index("device", "name")

    op.create_table(
        "enrollment_object",
        _id(),
        sa.Column("domain_id", sa.Uuid(), nullable=False),
        _text("name", 64),
        _text("description", 1024),
        _text("enrollment_type", 16),
        _text("key_type", 8),
        sa.Column("key_size", sa.Integer(), nullable=False),
        _text("common_name", 64),
        _text("organization", 64),
        _text("organizational_unit", 64),
        _text("locality", 128),
        _text("state", 128),
        _text("country", 2),
        _text("email", 128),
        sa.Column("include_fqdn", sa.Boolean(), nullable=False),
        sa.Column("include_device_ip", sa.Boolean(), nullable=False),
        sa.Column("include_serial_number", sa.Boolean(), nullable=False),
        sa.Column("validity_days", sa.Integer(), nullable=False),
        _text("enrollment_url", 512),
        _text("username", 128),
        _text("fingerprint", 128),
        sa.Column("ignore_server_validation", sa.Boolean(), nullable=False),
        sa.Column("retry_period_minutes", sa.Integer(), nullable=False),
        sa.Column("retry_count", sa.Integer(), nullable=False),
        sa.Column("ca_concurrency_limit", sa.Integer(), nullable=True),
        sa.Column("ca_rate_limit", sa.Float(), nullable=True),
        _text("ca_certificate_pem"),
        sa.Column("ca_only", sa.Boolean(), nullable=False),
        _text("ocsp_url", 512),
        sa.Column("crl_urls", sa.JSON(), nullable=False),
        sa.Column("secret_blob", sa.LargeBinary(), nullable=True),
        sa.Column("pkcs12_blob", sa.LargeBinary(), nullable=True),
        _text("pkcs12_filename", 255),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["domain_id"], ["domain.id"]),
        sa.UniqueConstraint("domain_id", "name"),
    )
    _index("enrollment_object", "domain_id")

    op.create_table(
        "trustpoint",
        _id(),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("domain_id", sa.Uuid(), nullable=False),
        sa.Column("enrollment_object_id", sa.Uuid(), nullable=False),
        _text("name", 255),
        _text("enrollment_type", 16),
        _text("ca_status", 16),
        _text("identity_status", 16),
        _text("error_code", 64, nullable=True),
        _text("error_message", 2048, nullable=True),
        _text("csr_pem", nullable=True),
        _text("pending_identity_pem", nullable=True),
        _text("pending_ca_pem", nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        _timestamp("status_changed_at", nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["device_id"], ["device.id"]),
        sa.ForeignKeyConstraint(["domain_id"], ["domain.id"]),
        sa.ForeignKeyConstraint(["enrollment_object_id"], ["enrollment_object.id"]),
        sa.UniqueConstraint("device_id", "name"),
    )
    _index("trustpoint", "device_id")
    _index("trustpoint", "domain_id")
    _index("trustpoint", "enrollment_object_id")
    _index("trustpoint", "ca_status", "identity_status", name="ix_trustpoint_statuses")

    op.create_table(
        "certificate",
        _id(),
        sa.Column("trustpoint_id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        _text("role", 16),
        sa.Column("chain_position", sa.Integer(), nullable=False),
        _text("pem"),
        _text("subject", 1024),
        _text("issuer", 1024),
        _text("serial_number", 64),
        _timestamp("not_before"),
        _timestamp("not_after"),
        _text("key_algorithm", 32),
        sa.Column("key_size", sa.Integer(), nullable=False),
        _text("signature_algorithm", 64),
        _text("fingerprint_sha256", 64),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["trustpoint_id"], ["trustpoint.id"]),
        sa.UniqueConstraint("trustpoint_id", "role", "chain_position"),
    )
    _index("certificate", "not_after")
    _index("certificate", "trustpoint_id")

    # No foreign keys: a job outlives the trustpoint and device it was about.
    op.create_table(
        "job",
        _id(),
        _text("kind", 16),
        sa.Column("trustpoint_id", sa.Uuid(), nullable=True),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("domain_id", sa.Uuid(), nullable=False),
        _text("trustpoint_name", 255),
        _text("state", 16),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("ca_waits", sa.Integer(), nullable=False),
        _timestamp("lease_expires_at", nullable=True),
        _timestamp("next_attempt_at", nullable=True),
        _text("error_code", 64, nullable=True),
        _text("error_message", 2048, nullable=True),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("batch_id", sa.Uuid(), nullable=True),
        _timestamp("created_at"),
        _timestamp("started_at", nullable=True),
        _timestamp("finished_at", nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    _index("job", "batch_id")
    _index("job", "device_id")
    _index("job", "lease_expires_at")
    _index("job", "state")
    _index("job", "trustpoint_id")

    op.create_table(
        "batch",
        _id(),
        sa.Column("domain_id", sa.Uuid(), nullable=False),
        sa.Column("enrollment_object_id", sa.Uuid(), nullable=False),
        _text("trustpoint_name", 255),
        sa.Column("selection", sa.JSON(), nullable=False),
        sa.Column("selected", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        _text("requested_by", 255),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["domain_id"], ["domain.id"]),
        sa.ForeignKeyConstraint(["enrollment_object_id"], ["enrollment_object.id"]),
    )
    _index("batch", "domain_id")

    # No foreign keys either: the record outlives what it names.
    op.create_table(
        "export_audit",
        _id(),
        sa.Column("domain_id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        _text("device_name", 128),
        sa.Column("trustpoint_id", sa.Uuid(), nullable=False),
        _text("trustpoint_name", 255),
        _text("format", 16),
        _text("requested_by", 255),
        _text("role", 16),
        _text("outcome", 16),
        _text("error_code", 64, nullable=True),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id"),
    )
    _index("export_audit", "created_at")
    _index("export_audit", "domain_id")

    op.create_table(
        "api_token",
        _id(),
        _text("token_hash", 64),
        _text("role", 16),
        _text("name", 128),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )


def downgrade() -> None:
    for table in ("api_token", "export_audit", "batch", "job", "certificate", "trustpoint",
                  "enrollment_object", "device", "domain"):
        op.drop_table(table)
