"""Which management endpoints are trusted with secrets: allow-list entries (names, IPv4 and IPv6
networks, ports, schemes), an admin's approval that holds for the URL approved only, and the
proof a device gives of its credential."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from shared.device_auth import proof, proof_matches
from shared.endpoint_trust import Endpoint, EndpointRule, TrustBasis, normalise_host, normalise_scheme, trust_basis
from shared.errors import ValidationError


@dataclass
class Row:
    management_url: str
    endpoint_approved_url: str | None = None


def rule(scheme: str, host: str, port: int = 0) -> EndpointRule:
    return EndpointRule(scheme=normalise_scheme(scheme), host=normalise_host(host), port=port)


@pytest.mark.parametrize(("entry", "url", "trusted"), [
    (rule("https", "10.20.0.0/16"), "https://10.20.3.4/api/devices/FTD-1", True),
    (rule("https", "10.20.0.0/16"), "https://10.21.0.1/api/devices/FTD-1", False),
    (rule("https", "10.20.0.0/16"), "http://10.20.3.4/api/devices/FTD-1", False),  # another scheme
    (rule("https", "10.20.0.0/16"), "https://[::ffff:10.20.3.4]:8443/x", True),  # IPv4 written as IPv6
    (rule("https", "10.20.3.4"), "https://10.20.3.4:8443/x", True),  # a lone address, any port
    (rule("https", "10.20.3.4", 8443), "https://10.20.3.4/x", False),  # 443 is not 8443
    (rule("https", "10.20.3.4", 443), "https://10.20.3.4/x", True),  # the scheme's default port
    (rule("http", "2001:db8:40::/48"), "http://[2001:db8:40::7]:8400/api/devices/FTD-1", True),
    (rule("http", "2001:db8:40::/48"), "http://[2001:db8:41::7]:8400/api/devices/FTD-1", False),
    (rule("http", "[2001:db8:40::7]"), "http://[2001:db8:40::7]/x", True),
    (rule("https", "FW-Mgmt.Example.NET."), "https://fw-mgmt.example.net/api", True),  # case, root dot
    (rule("https", "fw-mgmt.example.net"), "https://evil-fw-mgmt.example.net/api", False),  # exact names only
    (rule("https", "fw-mgmt.example.net"), "https://fw-mgmt.example.net.evil.com/api", False),
    (rule("https", "10.0.0.0/8"), "https://10.1.2.3.nip.io/api", False),  # a name is never read as an address
    (rule("http", "127.0.0.0/8"), "http://127.0.0.1:9/api/devices/x", True),
])
def test_an_allow_list_entry_matches_scheme_host_and_port(entry, url, trusted):
    assert (trust_basis(Row(url), [entry]) is TrustBasis.ALLOW_LIST) is trusted


def test_an_approval_holds_for_the_url_approved_only():
    url = "http://198.51.100.7/api/devices/FTD-1"
    assert trust_basis(Row(url, endpoint_approved_url=url), []) is TrustBasis.APPROVED
    assert trust_basis(Row("http://203.0.113.9/api/devices/FTD-1", endpoint_approved_url=url), []) is None
    assert trust_basis(Row(url), []) is None
    # An approval wins over the allow-list when both hold: it says more (who, when).
    assert trust_basis(Row(url, endpoint_approved_url=url), [rule("http", "198.51.100.0/24")]) is TrustBasis.APPROVED


def test_urls_certfleet_would_not_connect_to_match_nothing():
    everything = [rule("http", "0.0.0.0/0"), rule("https", "0.0.0.0/0"), rule("http", "::/0")]
    for url in ("ftp://10.0.0.1/", "not a url", "http:///path-only", ""):
        assert Endpoint.of(url) is None
        assert trust_basis(Row(url), everything) is None


@pytest.mark.parametrize(("host", "stored"), [
    ("10.20.0.0/16", "10.20.0.0/16"), ("10.20.3.4", "10.20.3.4/32"), (" 2001:DB8:40::/48 ", "2001:db8:40::/48"),
    ("[2001:db8::1]", "2001:db8::1/128"), ("Fw-01.Example.net.", "fw-01.example.net"),
])
def test_entry_hosts_are_stored_normalised(host, stored):
    assert normalise_host(host) == stored


@pytest.mark.parametrize(("host", "says"), [
    ("10.20.3.4/16", "did you mean 10.20.0.0/16?"),  # host bits set: not silently widened
    ("10.20.300.0/24", "not an IP address or network"),
    ("fw mgmt.example.net", "not a host name"),
    ("*.example.net", "not a host name"),
    ("", "must be a host name"),
])
def test_a_bad_host_is_refused_saying_why(host, says):
    with pytest.raises(ValidationError, match=says) as refused:
        normalise_host(host)
    assert refused.value.code == "invalid_endpoint"


def test_only_http_and_https_are_schemes():
    assert normalise_scheme(" HTTPS ") == "https"
    with pytest.raises(ValidationError, match="use http or https"):
        normalise_scheme("ssh")


def test_a_proof_is_bound_to_the_credential_the_nonce_and_the_serial():
    nonce = os.urandom(32)
    answer = proof("device-credential-0001", nonce, "FTD-000001")
    assert proof_matches("device-credential-0001", nonce, "FTD-000001", answer)
    assert proof_matches("device-credential-0001", nonce, "FTD-000001", answer.upper())  # hex in either case
    assert not proof_matches("device-credential-0002", nonce, "FTD-000001", answer)
    assert not proof_matches("device-credential-0001", os.urandom(32), "FTD-000001", answer)  # no replay
    assert not proof_matches("device-credential-0001", nonce, "FTD-000002", answer)
    assert not proof_matches("device-credential-0001", nonce, "FTD-000001", "")
