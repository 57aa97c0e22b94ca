"""The API's wire models: ``XCreate``/``XUpdate`` for input (unknown fields refused),
``XPublic`` for output (never a table model, never a secret)."""
