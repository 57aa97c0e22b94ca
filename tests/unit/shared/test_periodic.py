"""The periodic loop: the first pass at once, the wait after each pass chosen from its result, an
error logged and followed by another pass."""

from __future__ import annotations

import threading

from shared.periodic import Periodic


class Counting(Periodic):
    thread_name = "test-periodic"

    def __init__(self, passes: int) -> None:
        super().__init__(every_seconds=0.0)  # after the failed pass: the next at once
        self.passes, self.results, self.waits, self.done = passes, [], [], threading.Event()

    def run_once(self) -> int:
        number = len(self.results) + 1
        if number == 2:
            self.results.append("failed")
            raise RuntimeError("a database hiccup")
        self.results.append(number)
        return number

    def wait_after(self, result: object) -> float:
        self.waits.append(result)
        if len(self.results) >= self.passes:
            self.done.set()
            return 30.0
        return 0.0  # the next pass at once: nothing here waits on the clock


def test_each_wait_is_chosen_from_its_pass_and_a_failed_pass_is_followed_by_another():
    loop = Counting(passes=4).start()
    try:
        assert loop.done.wait(10)
    finally:
        loop.stop()
    assert loop.results == [1, "failed", 3, 4]
    # Asked after every pass that returned; the failed one waits the regular interval instead.
    assert loop.waits == [1, 3, 4]
