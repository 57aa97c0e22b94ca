"""What a simulator process asks the other processes of its simulator (``--processes N``), so that
the fleet-wide answers, the inventory, the statistics and the devices taken offline, are the same
whichever process is asked. They talk over HTTP on the processes' own listening addresses,
under ``/api/partition/``, which exists only in a simulator of several processes.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx

from services.device_sim.partition import Partition
from shared.errors import CertfleetError

DEVICE_STATES = "/api/partition/device-states"
STATS = "/api/partition/stats"
OFFLINE = "/api/partition/offline"
#: The processes share a machine: an answer slower than this means the process is stuck or gone.
TIMEOUT_SECONDS = 10.0


class PeerUnreachable(CertfleetError):
    status = 502
    code = "simulator_process_unreachable"


class Peers:
    """The other processes of this simulator, asked all at once."""

    def __init__(self, partition: Partition) -> None:
        self.partition = partition
        self._http: httpx.AsyncClient | None = None

    async def open(self) -> None:
        self._http = httpx.AsyncClient(timeout=TIMEOUT_SECONDS)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def device_states(self, *, offset: int, limit: int) -> dict[str, dict[str, Any]]:
        """What the other processes' devices listed from ``offset`` have changed (weak crypto, CA bundle
        version), by serial; a device not named is as it started."""
        answers = await self._ask_all("GET", DEVICE_STATES, params={"offset": offset, "limit": limit})
        return {serial: state for answer in answers for serial, state in answer["states"].items()}

    async def stats(self) -> list[dict[str, Any]]:
        """Each other process's own statistics, in process order."""
        return await self._ask_all("GET", STATS)

    async def set_offline(self, serials: list[str]) -> None:
        await self._ask_all("PUT", OFFLINE, json={"serials": serials})

    async def _ask_all(self, method: str, path: str, **request: Any) -> list[Any]:
        assert self._http is not None, "open() first"
        return list(await asyncio.gather(*(self._ask(p, method, path, request) for p in self.partition.others())))

    async def _ask(self, position: int, method: str, path: str, request: dict[str, Any]) -> Any:
        assert self._http is not None
        try:
            answer = await self._http.request(method, self.partition.peer_urls[position] + path, **request)
            answer.raise_for_status()
            return answer.json() if answer.content else None
        except (httpx.HTTPError, ValueError) as exc:
            raise PeerUnreachable(f"{self.partition.describe(position)} did not answer {method} {path}: "
                                  f"{exc or type(exc).__name__}; the fleet-wide answer needs every process") from None


def merged_stats(partition: Partition, per_process: list[dict[str, Any]]) -> dict[str, Any]:
    """The statistics of the whole simulator from each process's own (in process order): the sums,
    and each process's figures under ``by_process`` with its URL."""
    requests: Counter[str] = Counter()
    faults: Counter[str] = Counter()
    for stats in per_process:
        requests.update(stats["requests"])
        faults.update(stats["faults"])
    return {
        "devices": sum(s["devices"] for s in per_process),
        "requests": dict(requests),
        "faults": dict(faults),
        "enrollments_in_flight": sum(s["enrollments_in_flight"] for s in per_process),
        "processes": partition.count,
        "by_process": [{"url": url, **stats} for url, stats in zip(partition.urls, per_process, strict=True)],
    }
