"""Devices' default keyrings: regenerating them, one device at a time or in batches (F0853's fix)."""
