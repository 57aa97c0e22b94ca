"""Pure checks of single values a client sends: URLs, addresses, host names, fingerprints.

Each returns the (normalised) value or raises :class:`shared.errors.ValidationError` with
a stable code and a message that says how to fix it.

A URL is stored as sent, returned by the API and written to logs, so it may not carry a user
name or password (``https://user:secret@host/``): such a URL is refused, and the message
shows it with that part cut out, never the secret itself.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from shared.errors import ValidationError

_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?$")
_HEX = re.compile(r"^[0-9a-fA-F]+$")
#: MD5, SHA-1, SHA-256, SHA-384, SHA-512 digests, in hex digits.
_FINGERPRINT_LENGTHS = (32, 40, 64, 96, 128)
#: A URL's start up to the end of its authority: the optional ``scheme:`` and ``//``, then
#: everything before the first ``/``, ``?`` or ``#``; userinfo is what precedes its last ``@``.
_AUTHORITY = re.compile(r"^(?P<lead>(?:[A-Za-z][A-Za-z0-9+.-]*:)?//)?(?P<authority>[^/?#]*)")
#: Where the credentials a URL may not carry belong instead, by field.
_CREDENTIALS_GO = {
    "enrollment_url": "an EST CA's user name and password go in the enrollment object's username and "
                      "password fields (SCEP uses challenge_password)",
}


# The URLs check_http_url takes, as the OpenAPI document states them (a JSON Schema pattern):
# http(s), a host name whose last label starts with a letter, an IPv4 address or an IPv6 one in
# brackets, an optional port, then printable ASCII. Every URL it matches passes the check (a test
# generates them); the check stays the authority and keeps its codes and messages.
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?"
#: A host name's last label starts with a letter (all digits would be an address).
_LAST = r"[A-Za-z](?:[A-Za-z0-9-]{0,29}[A-Za-z0-9])?"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_H16 = r"[0-9A-Fa-f]{1,4}"
_IPV6 = (rf"(?:(?:{_H16}:){{7}}{_H16}|(?:{_H16}:){{1,3}}:(?:{_H16}(?::{_H16}){{0,3}})?"
         rf"|::(?:{_H16}(?::{_H16}){{0,6}})?)")
_HOST = rf"(?:(?:{_NAME}\.){{0,4}}{_LAST}|{_OCTET}(?:\.{_OCTET}){{3}}|\[{_IPV6}\])"
_PORT = r"(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?"
_PATH = r"[-A-Za-z0-9._~%!$&'()*+,;=:@/]"
_QUERY = r"[-A-Za-z0-9._~%!$&'()*+,;=:@/?]"


def url_pattern(*, schemes: str = "https?", query: bool = True) -> str:
    """The JSON Schema pattern of the URLs :func:`check_http_url` takes: ``schemes`` a regular
    expression of the schemes allowed (``http``, ``https``), ``query`` whether ``?…`` and ``#…``
    may follow the path."""
    tail = rf"(?:/{_PATH}*)?" + (rf"(?:\?{_QUERY}*)?(?:#{_QUERY}*)?" if query else "")
    return rf"^(?:{schemes})://{_HOST}{_PORT}{tail}$"


#: An http:// or https:// URL, as the OpenAPI document states it.
HTTP_URL_PATTERN = url_pattern()
#: A host name as check_fqdn takes it, or nothing.
FQDN_PATTERN = rf"^(?:(?:{_NAME}\.){{0,4}}{_LAST})?$"
#: An allow-list entry's host: a DNS name, or an IPv4 or IPv6 address (in brackets or not) with an
#: optional /prefix length. Whether the prefix fits and leaves no host bits is checked beyond it.
HOST_OR_NETWORK_PATTERN = (rf"^(?:(?:{_NAME}\.){{0,4}}{_LAST}\.?|(?:{_OCTET}(?:\.{_OCTET}){{3}}"
                           rf"|\[?{_IPV6}\]?)(?:/[0-9]{{1,3}})?)$")
#: An IPv4 or IPv6 address as check_ip_address takes it, or nothing.
IP_ADDRESS_PATTERN = rf"^(?:{_OCTET}(?:\.{_OCTET}){{3}}|{_IPV6})?$"


def check_http_url(value: str, *, field: str) -> str:
    """An http(s) URL with a host and no user:password@; IPv6 literals must be in brackets
    (https://[2001:db8::5]/)."""
    value = value.strip()
    _refuse_credentials(value, field=field)
    problem = f"{field} {value!r} is not a valid http(s) URL"
    try:
        parts = urlsplit(value)
    except ValueError as exc:  # e.g. brackets around something that is not an IP address
        raise ValidationError(f"{problem}: {exc}", code="invalid_url") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValidationError(f"{problem}: expected http://host[:port]/path or https://…", code="invalid_url")
    try:
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        hint = (
            "an IPv6 address must be enclosed in square brackets, e.g. https://[2001:db8::5]:8443/"
            if parts.netloc.count(":") > 1 and "[" not in parts.netloc
            else "the port must be a number from 0 to 65535"
        )
        raise ValidationError(f"{problem}: {hint}", code="invalid_url") from None
    host = parts.hostname or ""
    if "[" in parts.netloc:
        try:
            ipaddress.IPv6Address(host.split("%")[0])
        except ValueError:
            raise ValidationError(f"{problem}: {host!r} in brackets is not an IPv6 address",
                                  code="invalid_url") from None
    elif not host or not (_is_ipv4(host) or _is_hostname(host)):
        raise ValidationError(f"{problem}: {host!r} is not a host name or IP address", code="invalid_url")
    if any(ch.isspace() for ch in value):
        raise ValidationError(f"{problem}: it contains white space", code="invalid_url")
    return value


def _refuse_credentials(value: str, *, field: str) -> None:
    """ValidationError url_credentials_not_allowed when ``value`` has userinfo before its host."""
    start = _AUTHORITY.match(value)  # always matches, if only the empty string
    if "@" not in start["authority"]:
        return
    lead, host, rest = start["lead"] or "", start["authority"].rsplit("@", 1)[1], value[start.end():]
    where = _CREDENTIALS_GO.get(field)
    raise ValidationError(
        f"{field} {lead + '…@' + host + rest!r} carries a user name or password before the host, and a URL is "
        f"stored and shown as sent: send {lead + host + rest!r} instead{f'; {where}' if where else ''}",
        code="url_credentials_not_allowed",
    )


def _is_hostname(value: str) -> bool:
    """A DNS name; its last label is never all digits, so 300.1.1.1 is a bad address, not a name."""
    return bool(_HOSTNAME.match(value)) and not value.rstrip(".").rsplit(".", 1)[-1].isdigit()


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def check_ip_address(value: str) -> str:
    value = value.strip()
    if value:
        try:
            value = str(ipaddress.ip_address(value))
        except ValueError:
            raise ValidationError(f"ip_address {value!r} is not an IPv4 or IPv6 address",
                                  code="invalid_ip_address") from None
    return value


def check_fqdn(value: str) -> str:
    value = value.strip()
    if value and not _is_hostname(value):
        raise ValidationError(f"fqdn {value!r} is not a host name such as fw1.example.com",
                              code="invalid_fqdn")
    return value


def check_fingerprint(value: str) -> str:
    """A certificate fingerprint in hex, colons allowed; stored lower-case without colons."""
    digits = value.strip().replace(":", "")
    if not digits:
        return ""
    if not _HEX.match(digits) or len(digits) not in _FINGERPRINT_LENGTHS:
        raise ValidationError(
            f"fingerprint {value!r} must be a hex digest (SHA-256: 64 hex digits; colons allowed)",
            code="invalid_fingerprint",
        )
    return digits.lower()
