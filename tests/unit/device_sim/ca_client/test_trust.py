"""How a device decides to trust a CA's HTTPS server, with certificates made here and real TLS
handshakes on loopback: trust anchors read from files, a server that chains to an anchor and
names the host (a DNS name or an IPv4 or IPv6 address) is trusted and any other is not, SNI
carries DNS names only, a pinned issuing CA is trusted on its own (no root needed), ignoring
validation trusts anything, and a renewing device presents its current certificate.
Fingerprints are read as operators write them, and the CA chain a server sends as a set comes
out ordered from the issuing CA to the root."""

from __future__ import annotations

import asyncio
import hashlib
import random
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from services.device_sim.ca_client.https import exchange, request_bytes
from services.device_sim.ca_client.network import CaFailure
from services.device_sim.ca_client.tls import TlsConnection
from services.device_sim.ca_client.trust import (
    client_context,
    configured_fingerprint,
    fingerprint,
    issued_by,
    load_trust_anchors,
    order_ca_chain,
    pinned_certificate,
    refuse_without_ca_flag,
)
from services.device_sim.tasks import CurrentIdentity
from shared.errors import ConfigurationError
from tests.support.revocation_ca import TestCa
from tests.support.tls import TlsHandler, https_server, ipv6_loopback, make_ca, make_leaf, pem


@pytest.fixture(scope="module")
def pki():
    """root -> intermediate -> issuing -> the CA's TLS server; and an unrelated root."""
    root = make_ca("Test Root CA")
    intermediate = make_ca("Test Intermediate CA", issuer=root)
    issuing = make_ca("Test Issuing CA", issuer=intermediate)
    return {"root": root, "intermediate": intermediate, "issuing": issuing, "server": make_leaf(issuing),
            "other_root": make_ca("Another Root CA")}


def der(issued) -> bytes:
    return issued.cert.public_bytes(serialization.Encoding.DER)


# --- trust anchors --------------------------------------------------------------------------------

def test_anchors_are_every_certificate_of_every_file_in_order(pki, tmp_path: Path):
    both = tmp_path / "chain.pem"
    both.write_text("a comment before the certificates\n" + pem(pki["root"], pki["intermediate"]))
    other = tmp_path / "other.pem"
    other.write_text(pki["other_root"].pem)
    assert load_trust_anchors([both, str(other)]) == pem(pki["root"], pki["intermediate"], pki["other_root"])
    assert load_trust_anchors([]) == ""


def test_an_anchor_file_that_is_missing_or_holds_no_certificate_is_a_configuration_error(tmp_path: Path):
    (tmp_path / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigurationError, match=r"key\.pem holds no PEM certificate; give a file such as"):
        load_trust_anchors([tmp_path / "key.pem"])
    with pytest.raises(ConfigurationError, match=r"missing\.pem: cannot read it \(No such file or directory\)"):
        load_trust_anchors([tmp_path / "missing.pem"])


# --- fingerprints -----------------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", ["md5", "sha1", "sha256", "sha384", "sha512"])
def test_a_fingerprint_picks_the_certificate_whatever_hash_its_length_says(pki, algorithm):
    chain = [pki["issuing"].cert, pki["intermediate"].cert, pki["root"].cert]
    digest = hashlib.new(algorithm, der(pki["intermediate"])).hexdigest()
    assert fingerprint(pki["intermediate"].cert, length=len(digest)) == digest
    colons = ":".join(digest[i:i + 2] for i in range(0, len(digest), 2)).upper()
    assert configured_fingerprint(f" {colons} ", code="invalid_est_configuration") == digest
    assert pinned_certificate(chain, colons) == pki["intermediate"].cert
    assert pinned_certificate([pki["issuing"].cert, pki["root"].cert], colons) is None


@pytest.mark.parametrize("typed", ["ab" * 31, "ab" * 33, "zz" * 32, "sha256:" + "ab" * 32])
def test_a_fingerprint_that_is_no_digest_is_refused_with_the_callers_code(typed):
    with pytest.raises(CaFailure) as refused:
        configured_fingerprint(typed, code="invalid_scep_configuration")
    assert refused.value.code == "invalid_scep_configuration"
    assert refused.value.message.startswith(f"fingerprint {typed!r} is not a hex digest; give the SHA-256")


def test_no_fingerprint_configured_is_empty():
    assert configured_fingerprint("", code="x") == "" and configured_fingerprint(" : ", code="x") == ""


# --- the CA chain a server sends ----------------------------------------------------------------------

def test_the_ca_chain_is_ordered_from_the_issuing_ca_up_whatever_order_it_came_in(pki):
    expected = [pki["issuing"].cert, pki["intermediate"].cert, pki["root"].cert]
    shuffled = list(expected)
    random.Random(3).shuffle(shuffled)
    assert order_ca_chain(shuffled) == expected
    assert order_ca_chain(list(reversed(expected))) == expected
    # A server that does not send its root: the chain ends at the highest CA it has.
    assert order_ca_chain([pki["intermediate"].cert, pki["issuing"].cert]) == expected[:2]
    assert order_ca_chain([pki["root"].cert]) == [pki["root"].cert]


def test_a_ca_chain_that_is_not_one_chain_is_refused_saying_why(pki):
    with pytest.raises(ValueError, match="serves no CA certificate"):
        order_ca_chain([])
    with pytest.raises(ValueError, match=r"do not form one chain \(lowest: CN=Test Issuing CA, CN=Another Root CA\)"):
        order_ca_chain([pki["issuing"].cert, pki["intermediate"].cert, pki["other_root"].cert])
    # A root of the same name and another key: the names link up, the signature does not.
    impostor = make_ca("Test Intermediate CA")
    with pytest.raises(ValueError, match="CN=Test Issuing CA is not signed by CN=Test Intermediate CA"):
        order_ca_chain([impostor.cert, pki["issuing"].cert])


def test_issued_by_checks_the_signature_not_the_names(pki):
    assert issued_by(pki["server"].cert, pki["issuing"].cert)
    assert not issued_by(pki["server"].cert, pki["intermediate"].cert)
    assert not issued_by(pki["server"].cert, make_ca("Test Issuing CA").cert)


# --- TLS: what the device accepts as its CA's server ------------------------------------------------

class Hello(TlsHandler):
    def do_GET(self) -> None:
        peer = self.connection.getpeercert(binary_form=True)
        self.server.client_certificates.append(peer)
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")


def talk(server, context: SSL.Context, host: str = "127.0.0.1") -> bytes:
    """GET / over ``context`` as the device's EST client connects; the body, or the ssl error raised."""
    async def get() -> bytes:
        tls = await TlsConnection.open(host, server.server_address[1], context, timeout=5)
        try:
            request = request_bytes("GET", "/", host="ca", headers={}, body=None)
            return (await exchange(tls, request, limit=1024)).body
        finally:
            tls.close()

    return asyncio.run(get())


@contextmanager
def serving(leaf, chain=(), client_cas=(), host: str = "127.0.0.1") -> Iterator:
    with https_server(Hello, leaf=leaf, chain=chain, client_cas=client_cas, host=host) as server:
        server.client_certificates = []
        yield server


@pytest.fixture
def ca_server(pki):
    """The CA's server: sends its chain up to the intermediate CA, accepts the CA's own certificates."""
    ca = [pki["issuing"], pki["intermediate"]]
    with serving(pki["server"], chain=ca, client_cas=[*ca, pki["root"]]) as server:
        yield server


@pytest.mark.parametrize("anchor", ["root", "intermediate", "issuing"])
def test_a_server_chaining_to_any_anchor_is_trusted(pki, ca_server, anchor):
    # An anchor below the root (a pinned issuing CA) is enough: no need to reach a self-signed root.
    assert talk(ca_server, client_context(verify=True, anchors_pem=pki[anchor].pem)) == b"hello"


@pytest.mark.parametrize("anchors", ["other_root", ""])
def test_a_server_chaining_to_no_anchor_is_not_trusted(pki, ca_server, anchors):
    context = client_context(verify=True, anchors_pem=pki[anchors].pem if anchors else "")
    with pytest.raises(ssl.SSLCertVerificationError) as refused:
        talk(ca_server, context)
    assert refused.value.verify_message == "unable to get local issuer certificate"
    assert ca_server.handshakes == 0


needs_ipv6 = pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")


@pytest.mark.parametrize(("listen", "host", "says"), [
    ("127.0.0.1", "127.0.0.1", "IP address mismatch, certificate is not valid for '127.0.0.1'."),
    ("127.0.0.1", "localhost", "Hostname mismatch, certificate is not valid for 'localhost'."),
    pytest.param("::1", "::1", "IP address mismatch, certificate is not valid for '::1'.", marks=needs_ipv6),
])
def test_a_trusted_server_must_also_name_the_host_the_device_asked_for(pki, listen, host, says):
    elsewhere = make_leaf(pki["issuing"], hosts=["ca.example.com", "192.0.2.7"])
    device = make_leaf(pki["issuing"], hosts=["ftd-000001.fleet.example"], client=True)
    renewing = CurrentIdentity(certificate=device.cert, private_key=device.key)
    for identity in (None, renewing):
        context = client_context(verify=True, anchors_pem=pki["root"].pem, identity=identity)
        with serving(elsewhere, chain=[pki["issuing"], pki["intermediate"]], host=listen) as server:
            with pytest.raises(ssl.SSLCertVerificationError) as refused:
                talk(server, context, host=host)
        assert refused.value.verify_message == says
        # Refused within the handshake: a renewing device showed its certificate to no such server.
        assert server.handshakes == 0


@pytest.mark.parametrize(("listen", "names", "host", "sni"), [
    ("127.0.0.1", ["localhost"], "localhost", "localhost"),
    ("127.0.0.1", ["LocalHost"], "localhost", "localhost"),  # DNS names compare without case
    ("127.0.0.1", ["127.0.0.1"], "127.0.0.1", None),  # no IP address in SNI
    pytest.param("::1", ["::1"], "::1", None, marks=needs_ipv6),
    pytest.param("::1", ["0:0:0:0:0:0:0:1"], "::1", None, marks=needs_ipv6),  # the address, however written
])
def test_a_server_naming_the_host_is_trusted_and_sni_carries_dns_names_only(pki, listen, names, host, sni):
    leaf = make_leaf(pki["issuing"], hosts=names)
    with serving(leaf, chain=[pki["issuing"], pki["intermediate"]], host=listen) as server:
        assert talk(server, client_context(verify=True, anchors_pem=pki["root"].pem), host=host) == b"hello"
    assert server.server_names == [sni]


def test_without_verification_the_host_is_not_checked_either(pki):
    stranger = make_leaf(pki["issuing"], hosts=["ca.example.com"])
    with serving(stranger, chain=[pki["issuing"]]) as server:
        assert talk(server, client_context(verify=False)) == b"hello"


def test_ignoring_validation_talks_to_any_server(pki):
    stranger = make_leaf(make_ca("Lab CA"), hosts=["lab.invalid"])
    with serving(stranger) as server:
        assert talk(server, client_context(verify=False)) == b"hello"


def test_a_renewing_device_presents_its_current_certificate(pki, ca_server):
    device = make_leaf(pki["issuing"], hosts=["ftd-000001.fleet.example"], client=True)
    identity = CurrentIdentity(certificate=device.cert, private_key=device.key)
    context = client_context(verify=True, anchors_pem=pki["root"].pem, identity=identity)
    assert talk(ca_server, context) == b"hello"
    assert talk(ca_server, client_context(verify=True, anchors_pem=pki["root"].pem)) == b"hello"
    # The first request came with the device's certificate, the one without an identity with none.
    assert ca_server.client_certificates == [der(device), None]


def test_a_served_ca_certificate_without_the_ca_flag_is_refused_naming_the_setting():
    refuse_without_ca_flag([TestCa("Proper CA").cert], url="https://ca.example.com/")
    with pytest.raises(CaFailure) as refused:
        refuse_without_ca_flag([TestCa("Flagless CA", ca_flag=False).cert], url="https://ca.example.com/")
    assert refused.value.code == "not_a_ca_certificate"
    assert "CN=Flagless CA" in refused.value.message and "skip_ca_flag_check" in refused.value.message
