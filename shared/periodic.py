"""A pass run again and again in a daemon thread, as the controller's reconciler and scheduler do.

The first pass runs at once (after a restart nothing need wait an interval); an error in a pass
is logged and the next pass tries again, so a database hiccup never ends the loop.
"""

from __future__ import annotations

import threading

from shared.logging import get_logger

log = get_logger(__name__)


class Periodic:
    """Subclasses define :meth:`run_once`, the seconds between passes and the thread's name."""

    thread_name = "certfleet-periodic"

    def __init__(self, *, every_seconds: float) -> None:
        self.every_seconds = every_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> object:
        raise NotImplementedError

    def pass_failed(self) -> None:
        """Called after a pass raised (and was logged): forget what the pass left half-known."""

    def wait_after(self, result: object) -> float:
        """Seconds to wait after a pass that returned ``result``; a subclass may slow down when
        its passes find nothing to do."""
        return self.every_seconds

    def start(self):
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while True:
            wait = self.every_seconds
            try:
                wait = self.wait_after(self.run_once())
            except Exception:  # the next pass retries
                log.error(f"{self.thread_name} pass failed", exc_info=True)
                self.pass_failed()
            if self._stop.wait(wait):
                return
