"""Short pauses of the garbage collector in long-running services.

Before it serves anything, a certfleet service holds hundreds of thousands of objects that
live as long as it does: FastAPI, SQLAlchemy, pydantic and cryptography, a simulated fleet.
CPython's full collection walks all of them each time it runs. In the controller that was a
150–250 ms pause under load, and a request caught in it waited as long: the slowest trustpoint
list polls during a bulk enrollment were exactly those. Moving what exists once a service is
ready into the permanent generation takes it out of every later pass; objects made afterwards
are collected as usual.
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Collect what start-up left behind, then keep the survivors out of future collections."""
    gc.collect()
    gc.freeze()
