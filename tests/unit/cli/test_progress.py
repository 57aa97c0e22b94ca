"""Several bulk enrollments followed as one: counts added up, the ETA of the slowest, the
failures merged by error code; the bar drawn once per read of the batches."""

from __future__ import annotations

import io
import threading

from rich.console import Console

from services.cli.progress import combined, eta_text, failure_groups, follow


def batch(**fields) -> dict:
    base = {"total": 10, "succeeded": 0, "failed": 0, "queued": 10, "running": 0, "finished": False,
            "eta_seconds": None, "failures": []}
    return base | fields


def test_counts_add_up_and_the_slowest_batch_sets_the_eta():
    now = combined([batch(succeeded=4, queued=4, running=2, eta_seconds=12.0),
                    batch(total=5, succeeded=1, failed=1, queued=2, running=1, eta_seconds=30.0),
                    batch(total=3, succeeded=3, queued=0, finished=True, eta_seconds=0.0)])
    assert now == {"total": 18, "succeeded": 8, "failed": 1, "queued": 6, "running": 3, "finished": False,
                   "eta_seconds": 30.0}


def test_no_eta_until_every_running_batch_has_one_and_finished_when_all_are():
    assert combined([batch(eta_seconds=5.0), batch()])["eta_seconds"] is None
    done = combined([batch(succeeded=10, queued=0, finished=True), batch(failed=10, queued=0, finished=True)])
    assert done["finished"] and done["eta_seconds"] is None


def test_failures_are_merged_by_code_the_commonest_first():
    groups = failure_groups([
        batch(failures=[{"error_code": "device_unreachable", "count": 2, "example_message": "FTD-1 unreachable"},
                        {"error_code": "ca_rejected", "count": 1, "example_message": "badRequest"}]),
        batch(failures=[{"error_code": "ca_rejected", "count": 3, "example_message": "badMessageCheck"}]),
    ])
    assert groups == [("ca_rejected", 4, "badRequest"), ("device_unreachable", 2, "FTD-1 unreachable")]


def test_eta_reads_as_minutes_and_seconds():
    assert eta_text(None) == "ETA -"
    assert eta_text(75.4) == "ETA 1:15"


def test_the_bar_is_drawn_once_per_read_and_not_on_a_timer():
    states = iter([batch(succeeded=3, queued=5, running=2), batch(succeeded=7, queued=1, running=2),
                   batch(succeeded=9, failed=1, queued=0, finished=True)])
    timers: list[str] = []
    already = set(threading.enumerate())  # other tests' threads in this process

    def fetch(_batch_id, *, domain_id):
        # A redraw timer would be a thread of its own, drawing whether or not anything changed.
        timers.extend(t.name for t in threading.enumerate() if t not in already)
        return next(states) | {"id": "b1"}

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160)
    last = follow(None, [batch(id="b1")], domain_id="d", console=console, interval=0.5,  # type: ignore[arg-type]
                  sleep=lambda _seconds: None, fetch=fetch)
    assert last[0]["finished"] and timers == []
    text = out.getvalue()
    assert "9 succeeded" in text and "1 failed" in text
    assert text.count("enrolling") <= 6  # on start, the first state, one per read (3), on stop
