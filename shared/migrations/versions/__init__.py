"""Schema revisions, oldest first; Alembic reads them as files (this one it skips)."""
