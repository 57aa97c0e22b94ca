"""Stopping a benchmark cleanly: SIGTERM unwinds a run as Ctrl-C does, so every process it
started is stopped (and its throwaway database dropped) on the way out.

    sys.exit(stoppable(main))
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path


class Stopped(BaseException):
    """SIGTERM arrived. A BaseException, like KeyboardInterrupt: no ``except Exception`` stops
    it on its way up through the clean-ups."""


def _stop_on_signal(signum: int, frame) -> None:
    # Once is enough: a second signal must not break off the clean-up the first one started.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Stopped(signum)


def stoppable(main: Callable[[], int]) -> int:
    """Run ``main``; on SIGTERM or SIGINT, say so on stderr and return 128 + the signal's number
    once its clean-ups have run. Any child process still running after them is stopped too."""
    signal.signal(signal.SIGTERM, _stop_on_signal)
    try:
        return main()
    except (Stopped, KeyboardInterrupt) as exc:
        signum = exc.args[0] if isinstance(exc, Stopped) else signal.SIGINT
        print(f"bench: stopped by {signal.Signals(signum).name}; every process it started is stopped",
              file=sys.stderr, flush=True)
        return 128 + signum
    finally:
        stop_leftovers()


def child_processes(pid: int) -> list[int]:
    pids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            pids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return pids


def stop_leftovers(grace_s: float = 10.0) -> None:
    """Stop every child still running, with its process group (each command runs in its own
    session): what an interruption between starting a process and registering its clean-up
    would leave behind."""
    children = child_processes(os.getpid())
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in children:
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace_s
        while children and time.monotonic() < deadline:
            children = [pid for pid in children if _running(pid)]
            time.sleep(0.05)
        if not children:
            return


def _running(pid: int) -> bool:
    """Still running; one that has exited is reaped here."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return done == 0
