"""The garbage collector in long-running services: short pauses, few passes.

Before it serves anything, a certfleet service holds hundreds of thousands of objects that
live as long as it does: FastAPI, SQLAlchemy, pydantic and cryptography, a simulated fleet.
CPython's full collection walks all of them each time it runs. In the controller that was a
150–250 ms pause under load, and a request caught in it waited as long: the slowest trustpoint
list polls during a bulk enrollment were exactly those. Moving what exists once a service is
ready into the permanent generation takes it out of every later pass.

Objects made afterwards are collected as usual, only less often. CPython examines its youngest
generation every 700 net container allocations, and what a pass costs is the objects still alive:
a worker's 16 threads each hold a batch of jobs' rows, reports and step logs, so most of what a
pass finds is alive and moves on to be examined again in the older generations. Measured in a
fleet run of 10,000 EST enrollments, the worker spent 1.0 s of its 17 s of CPU collecting (1,600
young passes, 14 full ones), the controller 0.46 of 5.6 s, the device simulator 0.25 of 19 s.
A young pass every 50,000 allocations (and the older ones after 20 of those, not 10) brought
them to 0.22–0.32, 0.20 and 0.13–0.17 s, most of which is the collection at start-up. The price:
up to that many unreachable objects wait longer (the worker's peak RSS went from 126 to 140 MiB),
and a young pass, now rarer, takes 10–30 ms instead of a fraction of one. Garbage cycles are
still reclaimed; nothing turns the collector off.
"""

from __future__ import annotations

import gc

#: Net container allocations between two passes over the youngest generation.
YOUNG_PASS_EVERY = 50_000
#: Passes over a generation before the next older one is examined too.
OLDER_PASS_EVERY = 20


def settle_heap() -> None:
    """For a service that has started and is about to serve: collect what start-up left behind,
    keep the survivors out of future collections, and collect young objects less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_PASS_EVERY, OLDER_PASS_EVERY, OLDER_PASS_EVERY)
