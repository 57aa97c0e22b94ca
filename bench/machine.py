"""What the benchmarks read about the machine and their processes from /proc: CPU spent (by a
process tree, by the whole machine) and peak memory. Linux only, like the benchmarks."""

from __future__ import annotations

import os
from pathlib import Path

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return pids


def peak_rss_mib(pid: int) -> float:
    """Largest VmHWM among the process and its children (dramatiq forks its workers)."""
    peak = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
    return round(peak / 1024, 1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process and its children (live and reaped) so far."""
    ticks = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
        except OSError:
            pass
    return ticks / TICKS_PER_SECOND


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy so far (every process: PostgreSQL and Redis too)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / TICKS_PER_SECOND


def database_backends_cpu(database: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend serving ``database`` on this machine, by pid:
    a backend's process title names its database (``postgres: [CLUSTER: ]USER DATABASE HOST STATE``),
    so a run's share of the server is told apart from other databases' on a shared machine."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            title = Path(entry.path, "cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace").split()
            if title[:1] == ["postgres:"] and database in title:
                fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
                found[int(entry.name)] = sum(int(x) for x in fields[11:13]) / TICKS_PER_SECOND  # utime, stime
        except OSError:  # gone meanwhile
            continue
    return found
