"""The audit log: ``audit_entry`` records every change asked through the API (made or refused) and
the commands that change the database directly. It replaces ``export_audit``: every export row
becomes an entry of action ``export_certificate``, keeping its time, domain, device, trustpoint,
format, requester and outcome; then ``export_audit`` goes.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

#: The export route, as the audit log names it (a revision keeps its own copy).
EXPORT_ACTION = "export_certificate"
EXPORT_PATH = "/api/v1/domains/{domain_id}/devices/{device_id}/trustpoints/{name}/export"
#: A failed export was the device's failure, answered 502.
FAILED_EXPORT_STATUS = 502
_COPY_PAGE = 1000


def _ts(name: str, *, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _audit_entry_columns() -> list[sa.Column]:
    return [
        sa.Column("id", sa.Uuid(), nullable=False),
        _ts("at"),
        sa.Column("domain_id", sa.Uuid(), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("token_id", sa.Uuid(), nullable=True),
        sa.Column("token_name", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("home_domain_id", sa.Uuid(), nullable=True),
        sa.Column("operator", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("path", sa.String(length=255), nullable=False),
        sa.Column("targets", sa.JSON(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=True),
        sa.Column("target_id", sa.Uuid(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=8), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
    ]


def _export_audit_columns() -> list[sa.Column]:
    return [
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("domain_id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("device_name", sa.String(length=128), nullable=False),
        sa.Column("trustpoint_id", sa.Uuid(), nullable=False),
        sa.Column("trustpoint_name", sa.String(length=255), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        _ts("created_at"),
    ]


def _clause(name: str, columns: list[sa.Column]) -> sa.TableClause:
    """A table to read or write rows of, without binding the column definitions to it."""
    return sa.table(name, *(sa.column(column.name, column.type) for column in columns))


def _token_name(requested_by: str, role: str) -> str:
    """The export recorded "NAME (role)"; the entry keeps the name and the role apart."""
    suffix = f" ({role})"
    return (requested_by[: -len(suffix)] if role and requested_by.endswith(suffix) else requested_by)[:128]


def _entry_of_export(row) -> dict:
    failed = row.outcome != "succeeded"
    return {
        "id": row.id, "at": row.created_at, "domain_id": row.domain_id, "channel": "api", "token_id": None,
        "token_name": _token_name(row.requested_by, row.role), "role": row.role, "home_domain_id": None,
        "operator": "", "action": EXPORT_ACTION, "method": "POST", "path": EXPORT_PATH,
        "targets": {"domain_id": str(row.domain_id), "device_id": str(row.device_id), "name": row.trustpoint_name},
        "device_id": row.device_id, "target_id": row.device_id,
        "details": {"format": row.format, "device_name": row.device_name, "trustpoint_id": str(row.trustpoint_id)},
        "status": FAILED_EXPORT_STATUS if failed else 200, "outcome": "failed" if failed else "ok",
        "error_code": row.error_code,
    }


def upgrade() -> None:
    entries = op.create_table("audit_entry", *_audit_entry_columns(), sa.PrimaryKeyConstraint("id"))
    op.create_index("ix_audit_entry_domain_at", "audit_entry", ["domain_id", "at"], unique=False)
    op.create_index("ix_audit_entry_at", "audit_entry", ["at"], unique=False)
    op.create_index("ix_audit_entry_device_id", "audit_entry", ["device_id"], unique=False)
    op.create_index("ix_audit_entry_target_id", "audit_entry", ["target_id"], unique=False)

    exports = _clause("export_audit", _export_audit_columns())
    connection = op.get_bind()
    last = None
    while True:  # a page at a time: the export log of a large installation need not fit in memory
        query = sa.select(exports).order_by(exports.c.id).limit(_COPY_PAGE)
        if last is not None:
            query = query.where(exports.c.id > last)
        rows = connection.execute(query).all()
        if not rows:
            break
        connection.execute(entries.insert(), [_entry_of_export(row) for row in rows])
        last = rows[-1].id
    op.drop_index("ix_export_audit_created_at", table_name="export_audit")
    op.drop_index("ix_export_audit_domain_id", table_name="export_audit")
    op.drop_table("export_audit")


def downgrade() -> None:
    """Back to the export log: the exports' entries go back to ``export_audit``; every other
    entry is lost with ``audit_entry``."""
    exports = op.create_table("export_audit", *_export_audit_columns(), sa.PrimaryKeyConstraint("id"))
    op.create_index("ix_export_audit_created_at", "export_audit", ["created_at"], unique=False)
    op.create_index("ix_export_audit_domain_id", "export_audit", ["domain_id"], unique=False)
    entries = _clause("audit_entry", _audit_entry_columns())
    connection = op.get_bind()
    rows = connection.execute(sa.select(entries).where(entries.c.action == EXPORT_ACTION,
                                                       entries.c.device_id.is_not(None))).all()
    if rows:
        connection.execute(exports.insert(), [{
            "id": row.id, "domain_id": row.domain_id, "device_id": row.device_id,
            "device_name": str(row.details.get("device_name", ""))[:128],
            "trustpoint_id": uuid.UUID(row.details.get("trustpoint_id") or str(uuid.UUID(int=0))),
            "trustpoint_name": str(row.targets.get("name", ""))[:255],
            "format": str(row.details.get("format", ""))[:16],
            "requested_by": f"{row.token_name} ({row.role})"[:255], "role": row.role,
            "outcome": "succeeded" if row.outcome == "ok" else "failed", "error_code": row.error_code,
            "created_at": row.at,
        } for row in rows])
    for name in ("ix_audit_entry_target_id", "ix_audit_entry_device_id", "ix_audit_entry_at",
                 "ix_audit_entry_domain_at"):
        op.drop_index(name, table_name="audit_entry")
    op.drop_table("audit_entry")
