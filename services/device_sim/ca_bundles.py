"""A device's CA bundle: the CA certificates certfleet pushes to it, trusted for HTTPS CA servers
(EST) on top of the device's trust anchors. No HTTP here.

Cheap for 50,000 devices: a bundle is parsed once, when the first device receives it, and every
device holding the same certificates under the same version shares one :class:`DeviceBundle`
(its CA-client settings with the combined anchors included, so the TLS context built from them
is built once too, see :func:`services.device_sim.ca_client.trust.client_context`). A device
keeps only a reference.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.device_sim.tasks import CaClientSettings
from shared.errors import ValidationError
from shared.protocols.ca_bundle import sha256_hex

#: Largest PUT body the device reads; a bundle of a few hundred CA certificates fits well within.
MAX_BODY_BYTES = 4 * 1024 * 1024
#: As long as certfleet records a device's bundle version.
MAX_VERSION_LENGTH = 32
#: Distinct bundles remembered for sharing. Devices keep theirs whatever is forgotten here; a
#: forgotten one received again is parsed again.
KEEP = 16

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceBundle:
    version: str
    #: Hex SHA-256 of the PEM text as received.
    sha256: str
    certificates: int
    #: How a device holding this bundle reaches CA servers: the fleet's settings, trusting the
    #: fleet's anchors and these certificates.
    ca: CaClientSettings


class BundleLibrary:
    """The bundles the fleet's devices hold, parsed once each (used on the event loop's thread only)."""

    def __init__(self, fleet_ca: CaClientSettings, *, keep: int = KEEP) -> None:
        self.fleet_ca, self.keep = fleet_ca, keep
        self._bundles: OrderedDict[tuple[str, str], DeviceBundle] = OrderedDict()
        #: sha256 -> (certificate count, the certificates re-encoded as plain PEM).
        self._parsed: OrderedDict[str, tuple[int, str]] = OrderedDict()
        #: Bundles parsed so far (for tests and statistics).
        self.parses = 0

    def receive(self, version: str, pem: str) -> DeviceBundle:
        """The bundle ``version`` with the certificates ``pem``; ValidationError when the version is
        not a short label or the PEM holds no readable certificate."""
        _check_version(version)
        sha256 = sha256_hex(pem)
        key = (version, sha256)
        bundle = _recall(self._bundles, key)
        if bundle is None:
            count, plain = self._parse(pem, sha256)
            ca = replace(self.fleet_ca, trust_anchors_pem=self.fleet_ca.trust_anchors_pem + plain,
                         bundle_version=version, bundle_certificates=count)
            bundle = DeviceBundle(version=version, sha256=sha256, certificates=count, ca=ca)
            _remember(self._bundles, key, bundle, self.keep)
        return bundle

    def _parse(self, pem: str, sha256: str) -> tuple[int, str]:
        parsed = _recall(self._parsed, sha256)
        if parsed is None:
            try:
                certificates = x509.load_pem_x509_certificates(pem.encode())
            except ValueError:
                raise ValidationError(
                    "the CA bundle holds no readable PEM certificate; send the CA certificates as PEM "
                    "(-----BEGIN CERTIFICATE----- blocks)",
                    code="invalid_ca_bundle",
                ) from None
            self.parses += 1
            # Re-encoded: whatever text surrounded the blocks stays out of the TLS trust store.
            plain = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates)
            parsed = (len(certificates), plain)
            _remember(self._parsed, sha256, parsed, self.keep)
        return parsed


def _check_version(version: str) -> None:
    if not 0 < len(version) <= MAX_VERSION_LENGTH or not version.isprintable() or version != version.strip():
        raise ValidationError(
            f"a CA bundle version is 1 to {MAX_VERSION_LENGTH} printable characters without surrounding "
            f"spaces, not {version[:40]!r}",
            code="invalid_ca_bundle_version",
        )


def _recall(cache: OrderedDict[K, V], key: K) -> V | None:
    value = cache.get(key)
    if value is not None:
        cache.move_to_end(key)
    return value


def _remember(cache: OrderedDict[K, V], key: K, value: V, keep: int) -> None:
    cache[key] = value
    while len(cache) > keep:
        cache.popitem(last=False)
