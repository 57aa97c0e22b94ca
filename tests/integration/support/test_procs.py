"""The helpers that run certfleet services as processes for the end-to-end tests leave nothing
running behind them: a stack that fails half-way up stops what it had started, and a process
a test forgot to stop ends when the test process exits. A leaked worker would go on taking
messages from a Redis database a later test uses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.support.procs import ROOT, Stack, answers_200, session_members

#: A database no test publishes to: the stack's services here never get to consume from it.
REDIS_URL = "redis://127.0.0.1:6379/6"


def left_running(pids: list[int]) -> list[int]:
    """Processes still alive in the sessions these commands started (each Proc leads its own)."""
    return [member for pid in pids for member in session_members(pid)]


def test_a_stack_whose_third_process_fails_to_start_stops_the_two_before_it(tmp_path):
    # certfleet worker --threads 0 is a usage error: the worker exits at once with status 2.
    stack = Stack(database_url=f"sqlite:///{tmp_path / 'stack.db'}", broker_url=REDIS_URL, log_dir=tmp_path,
                  devices=2, workers=1, threads=0)
    with pytest.raises(RuntimeError, match=r"worker-0 exited with 2 before it was ready"), stack:
        pytest.fail("the stack came up with a worker that cannot run")
    assert [p.name for p in stack.procs] == ["device-sim", "controller", "worker-0"]
    assert "--processes and --threads must be at least 1" in stack.procs[2].output()
    assert left_running([p.popen.pid for p in stack.procs]) == []
    assert all(p.popen.returncode is not None for p in stack.procs)
    assert not answers_200(f"{stack.sim_url}/api/inventory") and not answers_200(f"{stack.api_url}/healthz")


FORGETFUL = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from tests.support.procs import Proc
    sim = Proc("device-sim", ["device-sim", "--devices", "1", "--port", "0"], dict(os.environ), Path(sys.argv[1]))
    url = sim.wait_for_line(r"device-sim ready: (\\S+)").group(1)
    print(sim.popen.pid, url, flush=True)
    # exits without sim.stop()
""")


def test_a_process_a_test_forgot_to_stop_ends_with_the_test_process(tmp_path):
    done = subprocess.run([sys.executable, "-c", FORGETFUL, str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    pid, url = done.stdout.split()
    leaked = left_running([int(pid)])
    for member in leaked:  # this test must not leak what it is about
        os.kill(member, signal.SIGKILL)
    assert leaked == []
    assert not answers_200(f"{url}/api/inventory")
