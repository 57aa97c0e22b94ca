"""A device validating a peer's certificate with a trustpoint's CA (``POST …/trustpoints/{name}/validate``),
as it would a VPN peer: over the simulator's HTTP API on loopback, with a test CA serving its CRL
and OCSP answers from a loopback server, and the simulator's clock in the test's hands."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from services.device_sim.ca_client.ipsec_eku import IPSEC_END_SYSTEM, IPSEC_IKE_INTERMEDIATE
from services.device_sim.config import SimConfig
from services.device_sim.server import RunningSim, start_in_thread
from tests.support.clock import START, ManualClock
from tests.support.procs import free_port
from tests.support.revocation_ca import RevocationServer, TestCa, ipv6_loopback, pem, revocation_server

CRL = {"revocation_crl": True, "crl_use_distribution_point": True}
OCSP = {"revocation_ocsp": True}


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="module")
def sim(clock) -> Iterator[RunningSim]:
    with start_in_thread(SimConfig(devices=40, seed=11), clock=clock) as running:
        yield running


@pytest.fixture
def http(sim) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{sim.url}/api/devices", timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def server() -> Iterator[RevocationServer]:
    with revocation_server("::1" if ipv6_loopback() else "127.0.0.1") as running:
        yield running


@pytest.fixture(scope="module")
def ca(clock, server) -> TestCa:
    ca = TestCa("Peer CA", clock=clock)
    server.serve_ca(ca)
    return ca


@pytest.fixture(autouse=True)
def forget_revocation(sim):
    sim.sim.revocation.forget()


def install_ca(http: httpx.Client, device: str, name: str, ca_pem: str, **validation) -> httpx.Response:
    """A CA-only manual trustpoint holding ``ca_pem``, with the validation settings given."""
    body = {"name": name, "enrollment_type": "manual", "key_type": "ecdsa", "key_size": 256,
            "options": {"ca_certificate_pem": ca_pem, "ca_only": True, "validation": validation}}
    configured = http.put(f"{device}/trustpoints/{name}", json=body)
    assert configured.status_code == 200, configured.text
    return http.post(f"{device}/trustpoints/{name}/enroll", json={"mode": "enroll"})


def trustpoint(http: httpx.Client, device: str, name: str, ca: TestCa, **validation) -> str:
    answer = install_ca(http, device, name, pem(ca.cert), **validation)
    assert answer.status_code == 200 and answer.json()["ca_status"] == "available", answer.text
    return name


def validate(http: httpx.Client, device: str, name: str, cert: x509.Certificate, **extra) -> dict:
    answer = http.post(f"{device}/trustpoints/{name}/validate", json={"certificate_pem": pem(cert), **extra})
    assert answer.status_code == 200, answer.text
    return answer.json()


# --- revocation ---------------------------------------------------------------------------------

def test_many_validations_across_the_fleet_fetch_the_crl_once(http, ca, server):
    crl_url = server.url("/ca.crl")
    assert crl_url.startswith(("http://[::1]:", "http://127.0.0.1:"))
    good, revoked = ca.issue("good.example.com", crl_urls=[crl_url]), ca.issue("bad.example.com", crl_urls=[crl_url])
    ca.revoke(revoked, at=START - timedelta(minutes=30))
    devices = [f"FTD-{i:06d}" for i in range(1, 31)]
    for device in devices:
        trustpoint(http, device, "peers-crl", ca, **CRL)
    before = server.hits["/ca.crl"]
    verdicts = [validate(http, device, "peers-crl", cert)["verdict"]
                for device in devices for cert in (good, revoked) for _ in range(5)]
    assert verdicts.count("valid") == verdicts.count("revoked") == 150
    assert server.hits["/ca.crl"] - before == 1
    answer = validate(http, devices[0], "peers-crl", revoked)
    assert answer == {"verdict": "revoked", "reason": "keyCompromise",
                      "revoked_at": (START - timedelta(minutes=30)).isoformat().replace("+00:00", "Z"),
                      "source": "crl", "detail": answer["detail"]}
    assert crl_url in answer["detail"]


def test_ocsp_answers_revocation_at_once(http, ca, server, clock):
    ca.ocsp_lifetime = None
    peer = ca.issue("ocsp-peer.example.com", ocsp_urls=[server.url("/ocsp")])
    name = trustpoint(http, "FTD-000031", "peers-ocsp", ca, **OCSP)
    assert validate(http, "FTD-000031", name, peer)["verdict"] == "valid"
    ca.revoke(peer, reason=x509.ReasonFlags.cessation_of_operation)
    answer = validate(http, "FTD-000031", name, peer)
    assert (answer["verdict"], answer["source"], answer["reason"]) == ("revoked", "ocsp", "cessationOfOperation")


def test_an_unreachable_server_is_unknown_unless_valid_if_unreachable(http, ca):
    dead = f"http://127.0.0.1:{free_port()}/ca.crl"
    peer = ca.issue("lonely.example.com", crl_urls=[dead])
    strict = validate(http, "FTD-000032", trustpoint(http, "FTD-000032", "strict", ca, **CRL), peer)
    assert (strict["verdict"], strict["reason"], strict["source"]) == ("unknown", "unreachable", "crl")
    assert f"CRL server {dead} unreachable: connection refused" in strict["detail"]
    lenient = validate(http, "FTD-000032", trustpoint(http, "FTD-000032", "lenient", ca, **CRL,
                                                      valid_if_unreachable=True), peer)
    assert (lenient["verdict"], lenient["reason"], lenient["source"]) == ("valid", "unreachable", None)
    assert "valid_if_unreachable" in lenient["detail"]


# --- the chain ----------------------------------------------------------------------------------

def test_the_peer_must_chain_to_the_trustpoint_ca(http, clock):
    root = TestCa("Root CA", clock=clock)
    issuing = TestCa("Issuing CA", clock=clock, parent=root)
    peer = issuing.issue("chained.example.com")
    name = trustpoint(http, "FTD-000033", "root", root)
    missing = validate(http, "FTD-000033", name, peer)
    assert (missing["verdict"], missing["reason"]) == ("invalid", "untrusted_chain")
    assert "send the intermediate CA certificates in chain_pem" in missing["detail"]
    answer = validate(http, "FTD-000033", name, peer, chain_pem=pem(issuing.cert))
    assert (answer["verdict"], answer["reason"], answer["source"]) == ("valid", "not_checked", None)
    assert "CN=chained.example.com chains to the trustpoint's CA certificate CN=Root CA" in answer["detail"]
    stranger = TestCa("Stranger CA", clock=clock).issue("stranger.example.com")
    assert validate(http, "FTD-000033", name, stranger)["reason"] == "untrusted_chain"
    expired = issuing.issue("old.example.com", not_before=START - timedelta(days=30),
                            not_after=START - timedelta(days=1))
    answer = validate(http, "FTD-000033", name, expired, chain_pem=pem(issuing.cert))
    assert (answer["verdict"], answer["reason"]) == ("invalid", "certificate_expired")


def test_a_revoked_intermediate_makes_the_peer_revoked(http, clock, server):
    root = TestCa("Revoking Root", clock=clock)
    server.crls["/root.crl"] = root.crl
    issuing = TestCa("Revoked Issuing CA", clock=clock, parent=root)
    root.revoke(issuing.cert, reason=x509.ReasonFlags.ca_compromise)
    peer = issuing.issue("under-revoked.example.com")
    name = trustpoint(http, "FTD-000034", "root-crl", root, revocation_crl=True, crl_use_distribution_point=False,
                      crl_urls=[server.url("/root.crl")], valid_if_unreachable=True)
    answer = validate(http, "FTD-000034", name, peer, chain_pem=pem(issuing.cert))
    assert (answer["verdict"], answer["reason"], answer["source"]) == ("revoked", "cACompromise", "crl")
    assert "its intermediate CA CN=Revoked Issuing CA" in answer["detail"]


# --- validation usage, CA flag, IPsec key usage -------------------------------------------------

def test_a_use_the_trustpoint_does_not_allow_is_invalid_naming_the_setting(http, ca):
    name = trustpoint(http, "FTD-000035", "ipsec-only", ca, validation_usage=["ipsec_client"])
    peer = ca.issue("tls.example.com", ekus=[ExtendedKeyUsageOID.CLIENT_AUTH])
    assert validate(http, "FTD-000035", name, peer, usage="ipsec_client")["verdict"] == "valid"
    answer = validate(http, "FTD-000035", name, peer, usage="ssl_server")
    assert (answer["verdict"], answer["reason"]) == ("invalid", "usage_not_allowed")
    assert "validation usage (validation_usage) allows ipsec_client; add ssl_server to it" in answer["detail"]
    name = trustpoint(http, "FTD-000035", "tls", ca, validation_usage=["ssl_client", "ssl_server"])
    assert validate(http, "FTD-000035", name, peer, usage="ssl_client")["verdict"] == "valid"
    answer = validate(http, "FTD-000035", name, peer, usage="ssl_server")
    assert (answer["verdict"], answer["reason"]) == ("invalid", "key_usage_mismatch")


def test_ignore_ipsec_key_usage_accepts_an_ike_intermediate_peer(http, ca):
    peer = ca.issue("ms2012.example.com", ekus=[IPSEC_IKE_INTERMEDIATE])
    strict = validate(http, "FTD-000036", trustpoint(http, "FTD-000036", "strict", ca), peer, usage="ipsec_client")
    assert (strict["verdict"], strict["reason"]) == ("invalid", "ipsec_eku_rejected")
    assert "'IP security IKE intermediate'" in strict["detail"] and "ignore_ipsec_key_usage" in strict["detail"]
    name = trustpoint(http, "FTD-000036", "lenient", ca, ignore_ipsec_key_usage=True)
    assert validate(http, "FTD-000036", name, peer, usage="ipsec_client")["verdict"] == "valid"
    end_system = ca.issue("endsystem.example.com", ekus=[IPSEC_END_SYSTEM])
    assert validate(http, "FTD-000036", "strict", end_system, usage="ipsec_client")["verdict"] == "valid"


def test_skip_ca_flag_check_accepts_a_ca_certificate_without_the_flag(http, clock):
    flagless = TestCa("Flagless CA", clock=clock, ca_flag=False)
    refused = install_ca(http, "FTD-000037", "strict", pem(flagless.cert))
    assert refused.status_code == 200
    assert (refused.json()["ca_status"], refused.json()["error_code"]) == ("failed", "not_a_ca_certificate")
    assert "skip_ca_flag_check" in refused.json()["error_message"]
    name = trustpoint(http, "FTD-000037", "lenient", flagless, skip_ca_flag_check=True)
    assert validate(http, "FTD-000037", name, flagless.issue())["verdict"] == "valid"


def test_a_flagless_ca_installed_while_skipping_the_check_stops_validating_once_the_setting_is_off(http, clock):
    flagless = TestCa("Flagless Legacy CA", clock=clock, ca_flag=False)
    name = trustpoint(http, "FTD-000038", "legacy", flagless, skip_ca_flag_check=True)
    # The enrollment object changed: the new configuration reaches the device, the CA stays installed.
    body = {"name": name, "enrollment_type": "manual", "key_type": "ecdsa", "key_size": 256,
            "options": {"ca_certificate_pem": pem(flagless.cert), "ca_only": True,
                        "validation": {"skip_ca_flag_check": False}}}
    assert http.put(f"FTD-000038/trustpoints/{name}", json=body).status_code == 200
    answer = validate(http, "FTD-000038", name, flagless.issue())
    assert (answer["verdict"], answer["reason"]) == ("invalid", "ca_flag_missing")
    assert "skip_ca_flag_check" in answer["detail"]


# --- bad requests -------------------------------------------------------------------------------

def test_bad_requests_are_refused_with_a_code(http, ca):
    name = trustpoint(http, "FTD-000039", "peers", ca)
    url = f"FTD-000039/trustpoints/{name}/validate"

    def code(response: httpx.Response) -> tuple[int, str]:
        return response.status_code, response.json()["code"]

    assert code(http.post(url, json={"certificate_pem": "x" * (65 * 1024)})) == (413, "payload_too_large")
    assert code(http.post(url, json={"certificate_pem": "not a certificate"})) == (422, "invalid_certificate")
    assert code(http.post(url, json={"certificate_pem": pem(ca.issue()), "usage": "ftp"})) == (422, "invalid_request")
    assert code(http.post(url, content=b"{")) == (422, "invalid_json")
    assert code(http.post("FTD-000039/trustpoints/nope/validate", json={"certificate_pem": pem(ca.issue())})) == (
        404, "trustpoint_not_found")
    body = {"name": "waiting", "enrollment_type": "manual", "key_type": "ecdsa", "key_size": 256}
    assert http.put("FTD-000039/trustpoints/waiting", json=body).status_code == 200
    assert http.post("FTD-000039/trustpoints/waiting/enroll", json={}).status_code == 200
    assert code(http.post("FTD-000039/trustpoints/waiting/validate", json={"certificate_pem": pem(ca.issue())})) == (
        409, "no_ca_certificate")
    bad = {**body, "options": {"validation": {"revocation_crl": "yes"}}}
    assert code(http.put("FTD-000039/trustpoints/waiting", json=bad)) == (422, "invalid_configuration")
