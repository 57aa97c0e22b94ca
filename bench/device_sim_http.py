"""The device simulator's CPU per request on the endpoints a fleet run calls most, measured in
the simulator's own process (started as the tests start it, with start_in_thread) while a lean
client in this process drives it over one keep-alive connection: enroll of a self-signed
trustpoint (ECDSA P-256, its configuration in the request), GET trustpoint, GET
keyring/default, PUT and GET ca-bundle.

Not part of `make test` nor `make bench`: a quick check of the simulator's HTTP overhead. It
prints one JSON line per endpoint (and source tree) with the median over the rounds, in
microseconds of the simulator process's CPU (user + system, every thread) per request, and with
several trees the median of each round's ratio to the first tree's.

On a shared machine the figures drift by tens of percent from minute to minute, so to compare
two versions give both source trees: their simulators run side by side and take turns, round by
round, which exposes them to the same drift:

    python bench/device_sim_http.py --tree /path/to/checkout/of/main --tree .
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parents[1]
TRUSTPOINT = "bench-tls"
CONFIGURATION = {
    "name": TRUSTPOINT, "enrollment_type": "self_signed", "key_type": "ecdsa", "key_size": 256,
    "subject": {"common_name": "bench.example.com", "organization": "Example Corp", "country": "US"},
    "include_fqdn": True, "validity_days": 30, "options": {},
}
#: A nonce as certfleet sends it (base64 of 32 bytes); the simulator only decodes and MACs it.


def serve(tree: str, devices: int, pipe: Connection) -> None:
    """The simulator's process, from the source tree ``tree``: serve, and answer each message on
    ``pipe`` with the CPU the process has used so far."""
    sys.path.insert(0, tree)
    import services
    from services.device_sim.config import SimConfig
    from services.device_sim.server import start_in_thread

    with start_in_thread(SimConfig(devices=devices, seed=1)) as running:
        pipe.send((running.url, services.__file__))
        while pipe.recv() != "stop":
            pipe.send(time.process_time())


class Simulator:
    """A simulator process and one keep-alive HTTP/1.1 connection to it."""

    def __init__(self, tree: str, devices: int) -> None:
        self.tree = tree
        self.pipe, theirs = multiprocessing.Pipe()
        self.process = multiprocessing.get_context("spawn").Process(
            target=serve, args=(tree, devices, theirs), daemon=True)
        self.process.start()
        url, source = self.pipe.recv()
        if not Path(source).is_relative_to(tree):
            raise RuntimeError(f"the simulator for {tree} runs the code in {source}")
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port)

    def cpu(self) -> float:
        self.pipe.send("cpu")
        return self.pipe.recv()

    def call(self, method: str, path: str, body: bytes | None = None) -> bytes:
        """The answer's body, read in full; anything but 200 stops the run. As certfleet's device
        client (shared/device_http.py) does, the head and the body go in one write."""
        self.connection.putrequest(method, path, skip_accept_encoding=True)
        if body is not None:
            self.connection.putheader("content-type", "application/json")
            self.connection.putheader("content-length", str(len(body)))
        self.connection.endheaders(body)
        response = self.connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: {response.status} {answer[:200]!r}")
        return answer

    def stop(self) -> None:
        self.connection.close()
        self.pipe.send("stop")
        self.process.join(10)


def device(number: int) -> str:
    return f"/api/devices/FTD-{number:06d}"


def endpoints(sim: Simulator, spare: int) -> dict[str, Callable[[int], object]]:
    """Each measured endpoint as a call on device ``n``; a round enrolls its devices first. The
    CA bundle pushed is the certificate device ``spare`` (measured on no endpoint) enrolls."""
    enroll_body = json.dumps({"mode": "enroll", "configuration": CONFIGURATION}).encode()
    enrolled = json.loads(sim.call("POST", f"{device(spare)}/trustpoints/{TRUSTPOINT}/enroll", enroll_body))
    bundle_body = json.dumps({"version": "1", "pem": enrolled["certificates"][0]["pem"]}).encode()
    return {
        "enroll_self_signed": lambda n: sim.call("POST", f"{device(n)}/trustpoints/{TRUSTPOINT}/enroll", enroll_body),
        "get_trustpoint": lambda n: sim.call("GET", f"{device(n)}/trustpoints/{TRUSTPOINT}"),
        "get_keyring": lambda n: sim.call("GET", f"{device(n)}/keyring/default"),
        "put_ca_bundle": lambda n: sim.call("PUT", f"{device(n)}/ca-bundle", bundle_body),
        "get_ca_bundle": lambda n: sim.call("GET", f"{device(n)}/ca-bundle"),
    }


def measure(sim: Simulator, call: Callable[[int], object], numbers: range) -> float:
    """The simulator's CPU per call, in microseconds."""
    before = sim.cpu()
    for n in numbers:
        call(n)
    return (sim.cpu() - before) / len(numbers) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per endpoint and round (default 1000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each on fresh devices (default 5)")
    parser.add_argument("--tree", action="append", help="source tree whose simulator to measure (repeatable; "
                        "default: this one)")
    args = parser.parse_args()
    trees = [str(Path(t).resolve()) for t in args.tree or [HERE]]
    spare = args.requests * args.rounds + 1
    sims = [Simulator(tree, spare) for tree in trees]
    calls = {sim.tree: endpoints(sim, spare) for sim in sims}
    names = list(calls[trees[0]])
    figures: dict[tuple[str, str], list[float]] = {(tree, name): [] for tree in trees for name in names}
    try:
        for round_ in range(args.rounds):
            # Fresh devices each round: their enrollment makes a new key pair, as in a fleet run.
            first = 1 + round_ * args.requests
            numbers = range(first, first + args.requests)
            for name in names:
                for sim in sims:
                    call = calls[sim.tree][name]
                    if name == "get_keyring":  # a device makes its keyring on first access: not measured
                        for n in numbers:
                            call(n)
                    figures[(sim.tree, name)].append(measure(sim, call, numbers))
    finally:
        for sim in sims:
            sim.stop()
    for (tree, name), rounds in figures.items():
        line = {"benchmark": "device_sim_http", "endpoint": name, "requests": args.requests,
                "sim_cpu_us_per_request": round(statistics.median(rounds), 1),
                "rounds_us": [round(f, 1) for f in rounds]}
        if len(trees) > 1:
            # Round by round against the first tree's simulator, which ran beside it.
            first = figures[(trees[0], name)]
            line["tree"] = tree
            ratios = [ours / theirs for ours, theirs in zip(rounds, first, strict=True)]
            line["ratio_to_first_tree"] = round(statistics.median(ratios), 3)
        print(json.dumps(line))


if __name__ == "__main__":
    main()
