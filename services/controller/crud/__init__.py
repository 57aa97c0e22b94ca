"""Keyword-only functions over the database, one module per resource. They take the
session, raise :mod:`shared.errors` on bad requests and leave committing to the caller."""
