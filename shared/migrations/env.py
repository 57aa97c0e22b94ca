"""Alembic's environment: runs the revisions on the connection :mod:`shared.schema` passes in
``config.attributes["connection"]``, inside that connection's transaction."""

from alembic import context
from sqlmodel import SQLModel

import shared.models  # noqa: F401  registers the tables on SQLModel.metadata for comparisons

if context.is_offline_mode():
    raise RuntimeError("certfleet runs its migrations on a live connection only (no --sql mode)")

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=SQLModel.metadata,
)
with context.begin_transaction():
    context.run_migrations()
