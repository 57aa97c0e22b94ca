"""Domain-wide operations: deleting a leaf domain."""
