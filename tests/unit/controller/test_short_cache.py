"""The controller's short memory for big aggregates: fresh for a moment, then counted again;
small results never remembered."""

from __future__ import annotations

from services.controller.short_cache import ShortCache


def test_a_big_result_is_remembered_for_its_moment_then_counted_again():
    now = [0.0]
    cache = ShortCache(1.0, clock=lambda: now[0])
    counted = []

    def count() -> int:
        counted.append(1)
        return 50_000 + len(counted)

    assert cache.get("list", count, keep=lambda n: n >= 10_000) == 50_001
    now[0] = 0.9
    assert cache.get("list", count, keep=lambda n: n >= 10_000) == 50_001
    now[0] = 1.0
    assert cache.get("list", count, keep=lambda n: n >= 10_000) == 50_002
    assert len(counted) == 2


def test_a_small_result_is_always_counted_afresh():
    cache = ShortCache(60.0)
    values = iter([5, 6, 7])
    assert [cache.get("batch", lambda: next(values), keep=lambda n: n >= 1000) for _ in range(3)] == [5, 6, 7]


def test_it_stays_bounded():
    now = [0.0]
    cache = ShortCache(10.0, max_entries=3, clock=lambda: now[0])
    for key in range(10):
        cache.get(key, lambda: 1, keep=lambda _: True)
    assert len(cache._entries) <= 3
