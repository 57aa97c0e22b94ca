"""How a fleet is shared between the simulator's serving processes (``--processes N``).

Device FTD-n (index n, from 1) belongs to process (n - 1) % N: FTD-000001 to the first, and
consecutive devices to different processes, so any slice of the inventory, and any batch of
enrollments, spreads evenly. Only the owner holds a device's state and answers its requests;
every process can list the whole fleet, since a device's identity follows from its index.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Partition:
    """This process's share of the fleet, and where every process of the simulator is."""

    #: This process, from 0.
    position: int = 0
    #: Serving processes in all; 1: the whole fleet is here.
    count: int = 1
    #: Each process's base URL as devices report it (their management URLs), in order.
    urls: tuple[str, ...] = ()
    #: Each process's base URL as the processes reach each other (their listening addresses).
    peer_urls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.position < self.count:
            raise ValueError(f"process {self.position} of {self.count}")
        if self.count > 1 and not len(self.urls) == len(self.peer_urls) == self.count:
            raise ValueError("a partition of several processes names every process's URLs")

    @property
    def shared(self) -> bool:
        """Whether other processes serve part of the fleet."""
        return self.count > 1

    def owner(self, index: int) -> int:
        return (index - 1) % self.count

    def owns(self, index: int) -> bool:
        return (index - 1) % self.count == self.position

    def others(self) -> list[int]:
        return [p for p in range(self.count) if p != self.position]

    def describe(self, position: int) -> str:
        """How a message names process ``position``: "simulator process 2 of 4 (http://…)"."""
        where = f" ({self.urls[position]})" if self.urls else ""
        return f"simulator process {position + 1} of {self.count}{where}"
