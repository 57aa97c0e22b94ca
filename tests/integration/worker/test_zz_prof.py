import cProfile
import pstats
import time

import pytest

from services.worker.batch import run_jobs
from tests.integration.worker.test_batch import jobs_for, sim, world  # noqa: F401


@pytest.mark.parametrize("db_engine", ["postgres"], indirect=True)
def test_prof(world):
    batches = []
    for b in range(15):
        serials = [f"FTD-{i:06d}" for i in range(1 + 20 * b, 21 + 20 * b)]
        _, _, jobs = jobs_for(world, serials, name=f"vpn{b}")
        batches.append(jobs)
    run_jobs(world.ctx, batches[0])
    t = time.thread_time()
    for jobs in batches[1:8]:
        run_jobs(world.ctx, jobs)
    print("thread CPU per job (no profiler)", (time.thread_time() - t) / 140 * 1e6, "us")
    prof = cProfile.Profile(time.thread_time)
    prof.enable()
    for jobs in batches[8:]:
        run_jobs(world.ctx, jobs)
    prof.disable()
    s = pstats.Stats(prof)
    s.sort_stats("tottime").print_stats(40)
