"""How a simulated fleet is set up: its size, seed, latency, injected faults, how its devices reach
CA servers (trust anchors, timeouts, the length of a SCEP retry minute) and the key their endpoint
credentials derive from.

Validated on construction, so a bad option fails at start with a message naming it
instead of surfacing as odd behaviour under load.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.errors import ConfigurationError

#: Serials are FTD-000001 … FTD-999999; beyond 100,000 devices one simulator is the wrong tool.
MAX_DEVICES = 100_000
#: Serving processes of one simulator: more than the machine has cores only adds switching.
MAX_PROCESSES = 64
MAX_LATENCY_MS = 60_000.0


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    devices: int = 100
    seed: int = 1
    host: str = "127.0.0.1"
    #: 0 picks a free port. With several processes, the first one's; the others take free ports.
    port: int = 0
    #: Serving processes; device FTD-n belongs to process (n - 1) % processes (see partition.py).
    processes: int = 1
    #: Fixed latency per device request; or a uniform range with latency_min_ms/latency_max_ms.
    latency_ms: float = 0.0
    latency_min_ms: float | None = None
    latency_max_ms: float | None = None
    #: Fraction of device requests answered 500 {"code": "device_error"}.
    error_rate: float = 0.0
    #: Fraction of device requests held for hang_seconds, then answered 504.
    timeout_rate: float = 0.0
    #: Fraction of devices (chosen by seed) that answer every request 503.
    unreachable_rate: float = 0.0
    #: Fraction of devices (chosen by seed) whose default keyring certificate has expired.
    expired_keyrings: float = 0.0
    #: How long a "timed out" request is held: longer than any sane client timeout.
    hang_seconds: float = 30.0
    #: The URL workers reach the simulator at, when it differs from the listening address
    #: (a container listening on 0.0.0.0 is reached as http://device-sim:8400); with several
    #: processes, one URL per process, comma-separated, in order.
    public_url: str | None = None
    #: PEM files of the certificates every device trusts for HTTPS CA servers (EST), e.g. the CA
    #: simulator's DIR/tls-ca.pem. Without one, EST needs a fingerprint or ignored validation.
    trust_anchors: tuple[str, ...] = ()
    #: How long one enrollment keeps asking a CA that holds its request (EST 202) before it
    #: reports the identity certificate pending; keep it below the workers' device timeout.
    ca_wait_seconds: float = 4.0
    #: Connect and read timeout of one request from a device to a CA.
    ca_timeout_seconds: float = 5.0
    #: Seconds in one minute of a SCEP retry period: 60, or less so that tests need not wait
    #: minutes between a device's polls of a request its CA holds.
    scep_minute_seconds: float = 60.0
    #: The fleet-wide key each device's endpoint credential is derived from (see credentials.py);
    #: empty: a random key made at start.
    credential_key: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.devices, int) or not 1 <= self.devices <= MAX_DEVICES:
            raise ConfigurationError(f"devices must be 1 to {MAX_DEVICES:,}, not {self.devices!r}")
        if not isinstance(self.seed, int):
            raise ConfigurationError(f"seed must be an integer, not {self.seed!r}")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ConfigurationError(f"port must be 0 to 65535 (0 picks a free one), not {self.port!r}")
        if not isinstance(self.processes, int) or not 1 <= self.processes <= min(MAX_PROCESSES, self.devices):
            raise ConfigurationError(f"processes must be 1 to {MAX_PROCESSES} and at most the number of devices "
                                     f"({self.devices}), not {self.processes!r}")
        if self.public_url is not None:
            urls = self.public_urls
            if len(urls) != self.processes:
                raise ConfigurationError(f"public_url must name one URL per process ({self.processes}, comma-"
                                         f"separated, in order), not {len(urls)}: {self.public_url!r}")
            for url in urls:
                if not url.startswith(("http://", "https://")):
                    raise ConfigurationError(f"public_url must be an http(s) URL, not {url!r}")
        for name in ("error_rate", "timeout_rate", "unreachable_rate", "expired_keyrings"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigurationError(f"{name} is a fraction from 0 to 1, not {value!r}")
        if self.error_rate + self.timeout_rate > 1.0:
            raise ConfigurationError(
                f"error_rate + timeout_rate may not exceed 1 (got {self.error_rate} + {self.timeout_rate})"
            )
        if not 0.0 < self.hang_seconds <= 3600:
            raise ConfigurationError(
                f"hang_seconds must be above 0 and at most 3600, not {self.hang_seconds!r}"
            )
        if isinstance(self.trust_anchors, str) or not all(isinstance(p, str) for p in self.trust_anchors):
            raise ConfigurationError(
                f"trust_anchors must be a tuple of file paths, not {self.trust_anchors!r}"
            )
        object.__setattr__(self, "trust_anchors", tuple(self.trust_anchors))
        if not 0.0 <= self.ca_wait_seconds <= 60:
            raise ConfigurationError(f"ca_wait_seconds must be 0 to 60, not {self.ca_wait_seconds!r}")
        if not 0.0 < self.ca_timeout_seconds <= 120:
            raise ConfigurationError(
                f"ca_timeout_seconds must be above 0 and at most 120, not {self.ca_timeout_seconds!r}"
            )
        if not 0.0 < self.scep_minute_seconds <= 60:
            raise ConfigurationError(
                f"scep_minute_seconds must be above 0 and at most 60, not {self.scep_minute_seconds!r}"
            )
        if not isinstance(self.credential_key, str):
            raise ConfigurationError("credential_key must be a string")
        ranged = (self.latency_min_ms, self.latency_max_ms)
        if (ranged[0] is None) != (ranged[1] is None):
            raise ConfigurationError("give both latency_min_ms and latency_max_ms for a latency range")
        if ranged[0] is not None and self.latency_ms:
            raise ConfigurationError(
                "give either a fixed latency_ms or a latency_min_ms..latency_max_ms range, not both"
            )
        low, high = self.latency_range_ms
        if not 0.0 <= low <= high <= MAX_LATENCY_MS:
            raise ConfigurationError(
                f"latency must satisfy 0 <= min <= max <= {MAX_LATENCY_MS:g} ms, not {low:g}..{high:g} ms"
            )

    @property
    def public_urls(self) -> tuple[str, ...]:
        """Each process's public base URL, in order; () when none was given."""
        if self.public_url is None:
            return ()
        return tuple(url.strip().rstrip("/") for url in self.public_url.split(","))

    @property
    def latency_range_ms(self) -> tuple[float, float]:
        if self.latency_min_ms is not None and self.latency_max_ms is not None:
            return float(self.latency_min_ms), float(self.latency_max_ms)
        return float(self.latency_ms), float(self.latency_ms)
