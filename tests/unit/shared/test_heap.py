"""A service settles its heap once started: what start-up made is frozen out of every later
collection, young objects are collected every 50,000 allocations rather than 700, and garbage
cycles made afterwards are still reclaimed without anyone asking."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from shared.heap import OLDER_PASS_EVERY, YOUNG_PASS_EVERY, settle_heap


@pytest.fixture
def collector() -> Iterator[None]:
    """The test process's own collector settings, as they were, afterwards."""
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


class Node:
    """An object that can refer to itself: a cycle only the collector can reclaim."""

    def __init__(self) -> None:
        self.me = self


def test_start_up_objects_are_frozen_and_young_passes_are_rarer(collector):
    held_since_start_up = [[] for _ in range(1_000)]
    frozen = gc.get_freeze_count()

    settle_heap()

    assert gc.get_freeze_count() >= frozen + len(held_since_start_up)
    assert gc.get_threshold() == (YOUNG_PASS_EVERY, OLDER_PASS_EVERY, OLDER_PASS_EVERY)
    assert YOUNG_PASS_EVERY > 700  # CPython's default


def test_a_cycle_made_afterwards_is_reclaimed_once_enough_was_allocated(collector):
    settle_heap()
    node = Node()
    gone = weakref.ref(node)
    del node
    assert gone() is not None  # nothing has collected it yet: a few allocations since the last pass

    allocated = [[] for _ in range(YOUNG_PASS_EVERY + 1_000)]

    assert gone() is None, "a young pass ran while the allocations went on, and reclaimed the cycle"
    del allocated
