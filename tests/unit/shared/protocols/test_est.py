"""The pure EST codec: request bodies in, certs-only PKCS#7 and CSR attributes out."""

from __future__ import annotations

import base64
import subprocess
import textwrap
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import SignatureAlgorithmOID

from shared.protocols import est as est_codec
from shared.protocols.est import EstError
from tests.support.ca_peers import p256_csr


@pytest.fixture(scope="module")
def csr():
    return p256_csr("fw1.example.net", sans=["fw1.example.net"])[1]


def der(csr) -> bytes:
    return csr.public_bytes(serialization.Encoding.DER)


def test_request_body_in_every_shape_clients_send(csr):
    one_line = base64.b64encode(der(csr))
    wrapped = "\r\n".join(textwrap.wrap(one_line.decode(), 64)).encode() + b"\r\n"
    unpadded = one_line.rstrip(b"=")
    pem = csr.public_bytes(serialization.Encoding.PEM)
    for body in (one_line, wrapped, unpadded, pem):
        assert est_codec.decode_csr(body) == csr


@pytest.mark.parametrize(("body", "code"), [
    (b"", "empty_body"),
    (b"  \r\n", "empty_body"),
    (b"this is not base64 !!!", "bad_base64"),
    (base64.b64encode(b"hello, CA"), "bad_csr"),
    (b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "bad_csr"),
])
def test_malformed_request_bodies_are_refused_with_a_code(body, code):
    with pytest.raises(EstError) as err:
        est_codec.decode_csr(body)
    assert err.value.code == code


def test_request_whose_signature_does_not_verify_is_refused(csr):
    raw = bytearray(der(csr))
    raw[-1] ^= 0x01  # the last byte belongs to the signature
    with pytest.raises(EstError, match="signature does not verify") as err:
        est_codec.decode_csr(base64.b64encode(bytes(raw)))
    assert err.value.code == "bad_csr_signature"


def test_request_headers():
    est_codec.check_request_headers("application/pkcs10", None)
    est_codec.check_request_headers("Application/PKCS10; charset=utf-8", "base64")
    for content_type, cte in (("text/plain", None), (None, None), ("application/pkcs10", "binary")):
        with pytest.raises(EstError) as err:
            est_codec.check_request_headers(content_type, cte)
        assert err.value.code == "unsupported_media_type"


def test_certs_only_is_one_base64_line_that_openssl_reads(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    certs = [
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256())
        for name in (x509.Name.from_rfc4514_string("CN=a"), x509.Name.from_rfc4514_string("CN=b"))
    ]
    body = est_codec.encode_certs_only(certs)
    assert b"\n" not in body and b"\r" not in body
    # A SET OF in DER: the order is the encoding's, not ours.
    assert set(est_codec.decode_certs_only(body)) == set(certs)
    (tmp_path / "p7.der").write_bytes(base64.b64decode(body))
    out = subprocess.run(["openssl", "pkcs7", "-inform", "DER", "-in", str(tmp_path / "p7.der"),
                          "-print_certs"],
                         capture_output=True, text=True, check=True).stdout
    assert out.count("BEGIN CERTIFICATE") == 2


def test_csr_attrs_round_trip_and_are_der_openssl_parses(tmp_path):
    oids = [SignatureAlgorithmOID.ECDSA_WITH_SHA256, SignatureAlgorithmOID.RSA_WITH_SHA256,
            x509.ObjectIdentifier("1.3.6.1.4.1.311.21.8.1234567.99")]
    body = est_codec.encode_csr_attrs(oids)
    assert est_codec.decode_csr_attrs(body) == [o.dotted_string for o in oids]
    (tmp_path / "attrs.der").write_bytes(base64.b64decode(body))
    out = subprocess.run(["openssl", "asn1parse", "-inform", "DER", "-in", str(tmp_path / "attrs.der")],
                         capture_output=True, text=True, check=True).stdout
    assert "ecdsa-with-SHA256" in out and "sha256WithRSAEncryption" in out
    assert est_codec.decode_csr_attrs(b"") == []
    with pytest.raises(EstError):
        est_codec.decode_csr_attrs(base64.b64encode(b"\x30\x05\x06"))
