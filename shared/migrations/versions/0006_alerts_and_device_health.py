"""Health alerts: the alerts themselves, their change events (the outbox the relay moves to the
Redis stream and to webhooks), domains' webhooks and their delivery log; each device's default
keyring as the last health check read it; the per-domain policy that regenerates expired keyrings;
an index for the alert pass's read of trustpoints whose renewal failed.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _ts(name: str, *, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "alert",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("description", sa.String(length=1024), nullable=False),
        sa.Column("domain_id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=True),
        sa.Column("device_name", sa.String(length=128), nullable=False),
        sa.Column("trustpoint_id", sa.Uuid(), nullable=True),
        sa.Column("trustpoint_name", sa.String(length=255), nullable=False),
        sa.Column("resource", sa.String(length=512), nullable=False),
        sa.Column("condition_key", sa.String(length=700), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        _ts("first_seen"),
        _ts("last_seen"),
        sa.Column("acknowledged_by", sa.String(length=255), nullable=False),
        _ts("acknowledged_at", nullable=True),
        _ts("cleared_at", nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("condition_key"),
    )
    for column in ("code", "device_id", "domain_id", "state"):
        op.create_index(f"ix_alert_{column}", "alert", [column], unique=False)

    op.create_table(
        "alert_event",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("alert_id", sa.Uuid(), nullable=False),
        sa.Column("domain_id", sa.Uuid(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        _ts("time"),
        sa.Column("cloudevent", sa.JSON(), nullable=False),
        _ts("relayed_at", nullable=True),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
    )
    op.create_index("ix_alert_event_alert_id", "alert_event", ["alert_id"], unique=False)
    op.create_index("ix_alert_event_relayed_at", "alert_event", ["relayed_at"], unique=False)

    op.create_table(
        "webhook",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("domain_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("url", sa.String(length=512), nullable=False),
        sa.Column("codes", sa.JSON(), nullable=False),
        sa.Column("severities", sa.JSON(), nullable=False),
        sa.Column("secret_blob", sa.LargeBinary(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        _ts("created_at"),
        sa.ForeignKeyConstraint(["domain_id"], ["domain.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_webhook_domain_id", "webhook", ["domain_id"], unique=False)

    op.create_table(
        "webhook_delivery",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("webhook_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("event_seq", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("alert_id", sa.Uuid(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ts("next_attempt_at"),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=512), nullable=False),
        _ts("created_at"),
        _ts("delivered_at", nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("webhook_id", "event_id"),
    )
    op.create_index("ix_webhook_delivery_due", "webhook_delivery", ["state", "next_attempt_at"], unique=False)
    op.create_index("ix_webhook_delivery_webhook_id", "webhook_delivery", ["webhook_id"], unique=False)

    op.add_column("device", sa.Column("keyring_valid", sa.Boolean(), nullable=True))
    op.add_column("device", sa.Column("keyring_reason", sa.String(length=64), nullable=True))
    op.add_column("device", _ts("keyring_not_after", nullable=True))
    op.add_column("device", _ts("health_checked_at", nullable=True))
    op.add_column("device", sa.Column("health_error", sa.String(length=512), nullable=True))
    op.create_index("ix_device_keyring_valid", "device", ["keyring_valid"], unique=False)
    op.add_column("domain", sa.Column("auto_regenerate_keyring", sa.Boolean(), nullable=True))
    op.create_index("ix_trustpoint_renewal_failed", "trustpoint", ["renewal_failures"], unique=False,
                    sqlite_where=sa.text("renewal_failures > 0"), postgresql_where=sa.text("renewal_failures > 0"))


def downgrade() -> None:
    op.drop_index("ix_trustpoint_renewal_failed", table_name="trustpoint")
    op.drop_column("domain", "auto_regenerate_keyring")
    op.drop_index("ix_device_keyring_valid", table_name="device")
    for column in ("health_error", "health_checked_at", "keyring_not_after", "keyring_reason", "keyring_valid"):
        op.drop_column("device", column)
    op.drop_table("webhook_delivery")
    op.drop_table("webhook")
    op.drop_table("alert_event")
    op.drop_table("alert")
