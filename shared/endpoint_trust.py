"""Which device management endpoints certfleet trusts with secrets. Pure: no database, no network.

A device's management endpoint is trusted when an admin vouched for it (registered the device,
imported it, or approved it later), for the very management URL it has now, or when that URL
matches an entry of the installation's allow-list of management endpoints. An entry is a scheme,
a host and an optional port: the host is an exact name (``fw-mgmt.example.net``) or an IP network
in CIDR notation (``10.20.0.0/16``, ``2001:db8:40::/48``; a lone address is its own network). Names
are never resolved to match a network: DNS answers are not the admin's word.

URLs are read with httpx's parser, the one the workers connect with, so the host matched is the
host contacted.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import httpx

from shared.errors import ValidationError

SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
#: The host length an entry stores (a DNS name's most).
MAX_HOST = 253
_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")


class TrustBasis(StrEnum):
    """Why an endpoint is trusted."""

    APPROVED = "approved"  # an admin registered, imported or approved the device at this URL
    ALLOW_LIST = "allow_list"  # its URL matches an entry of the allow-list


@dataclass(frozen=True)
class Endpoint:
    """Where a management URL points: scheme, host (lower case; an IP address without brackets) and port."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Endpoint | None:
        """The endpoint ``url`` names, or None when it names none certfleet would connect to."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError):
            return None
        scheme = parsed.scheme.lower()
        if scheme not in SCHEMES or not parsed.host:
            return None
        return cls(scheme=scheme, host=parsed.host.lower().rstrip("."), port=parsed.port or DEFAULT_PORTS[scheme])

    @property
    def address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        try:
            address = ipaddress.ip_address(self.host.split("%", 1)[0])
        except ValueError:
            return None
        # An IPv4 address written as IPv6 (::ffff:10.0.0.1) is that IPv4 address.
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return address.ipv4_mapped
        return address


@dataclass(frozen=True)
class EndpointRule:
    """One allow-list entry. ``host`` is normalised (see :func:`normalise_host`); ``port`` 0 is any port."""

    scheme: str
    host: str
    port: int = 0

    def matches(self, endpoint: Endpoint) -> bool:
        if endpoint.scheme != self.scheme or (self.port and endpoint.port != self.port):
            return False
        network = _network(self.host)
        if network is None:
            return endpoint.host == self.host
        address = endpoint.address
        return address is not None and address.version == network.version and address in network


def _network(host: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(host, strict=True)
    except ValueError:
        return None


def normalise_scheme(scheme: str) -> str:
    value = scheme.strip().lower()
    if value not in SCHEMES:
        raise ValidationError(f"scheme {scheme!r} is not one certfleet manages devices over: use http or https",
                              code="invalid_endpoint")
    return value


def normalise_host(host: str) -> str:
    """An entry's host as stored: a network in CIDR form (a lone address gets /32 or /128), or a
    lower-case DNS name. A network with host bits set is refused rather than silently widened or
    narrowed, saying which network was probably meant."""
    value = host.strip().lower().rstrip(".")
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    if not value or len(value) > MAX_HOST:
        raise ValidationError(f"host {host!r} must be a host name, an IP address or a network in CIDR notation "
                              f"(e.g. 10.20.0.0/16), at most {MAX_HOST} characters", code="invalid_endpoint")
    if "/" in value or ":" in value or _looks_numeric(value):
        try:
            return str(ipaddress.ip_network(value, strict=True))
        except ValueError as exc:
            hint = ""
            try:
                hint = f"; did you mean {ipaddress.ip_network(value, strict=False)}?"
            except ValueError:
                pass
            raise ValidationError(f"host {host!r} is not an IP address or network: {exc}{hint}",
                                  code="invalid_endpoint") from None
    if not _HOSTNAME.match(value):
        raise ValidationError(f"host {host!r} is not a host name, an IP address or a network in CIDR notation "
                              "(e.g. fw-mgmt.example.net, 10.20.0.0/16, 2001:db8:40::/48)", code="invalid_endpoint")
    return value


def _looks_numeric(value: str) -> bool:
    return all(part.isdigit() for part in value.split("."))


class ApprovedDevice(Protocol):
    """What the trust decision reads of a device: ``shared.models.Device`` has it."""

    management_url: str
    endpoint_approved_url: str | None


def trust_basis(device: ApprovedDevice, rules: list[EndpointRule] | tuple[EndpointRule, ...]) -> TrustBasis | None:
    """Why the device's management endpoint is trusted now, or None when it is not. An approval
    holds for the URL approved only: a device whose URL changed since needs approving again."""
    if device.endpoint_approved_url and device.endpoint_approved_url == device.management_url:
        return TrustBasis.APPROVED
    if not rules:
        return None
    endpoint = Endpoint.of(device.management_url)
    if endpoint is not None and any(rule.matches(endpoint) for rule in rules):
        return TrustBasis.ALLOW_LIST
    return None
