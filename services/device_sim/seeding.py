"""Seeded, order-independent random draws.

A draw depends only on (seed, stream, key parts), not on how many draws came before, so
device FTD-000042's fate is the same whatever else the fleet did, and two runs with one
seed repeat each other exactly.
"""

from __future__ import annotations

from hashlib import blake2b

_SCALE = float(1 << 64)


def fraction(seed: int, stream: str, *parts: object) -> float:
    """A uniform number in [0, 1) fixed by its arguments."""
    text = ":".join((str(seed), stream, *map(str, parts)))
    return int.from_bytes(blake2b(text.encode(), digest_size=8).digest(), "big") / _SCALE
