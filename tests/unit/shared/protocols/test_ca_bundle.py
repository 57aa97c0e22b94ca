"""The signed CA bundle: what a source signs reads back whole with the pinned signer, and each
way a bundle can be wrong is refused with its own code."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from shared.protocols import ca_bundle
from shared.protocols.ca_bundle import BundleError, answer, manifest_bytes, pem_of, read_answer, sha256_hex, sign
from tests.support.tls import NOW, make_ca, make_leaf

PUBLISHED = NOW - timedelta(minutes=1)


def signer_for(key) -> x509.Certificate:
    """A self-signed bundle-signing certificate (the receiver pins it; who issued it does not matter)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bundle signing")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - timedelta(hours=1))
            .not_valid_after(NOW + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))


@pytest.fixture(scope="module")
def cas():
    root = make_ca("Bundle Root")
    return root, make_ca("Bundle Issuing", issuer=root)


@pytest.fixture(scope="module")
def ec_signer():
    key = ec.generate_private_key(ec.SECP256R1())
    return key, signer_for(key)


def signed(manifest: bytes, key) -> bytes:
    return answer(manifest, sign(manifest, key))


def refused(body: bytes, signer: x509.Certificate, *, now: datetime = NOW) -> BundleError:
    with pytest.raises(BundleError) as caught:
        read_answer(body, signer=signer, now=now)
    return caught.value


def test_a_signed_bundle_reads_back_whole(cas, ec_signer):
    key, signer = ec_signer
    pem = pem_of([c.cert for c in cas])
    bundle = read_answer(signed(manifest_bytes(version=7, published_at=PUBLISHED, pem=pem), key),
                         signer=signer, now=NOW)
    assert (bundle.version, bundle.label, bundle.pem) == (7, "7", pem)
    assert bundle.published_at == PUBLISHED
    assert bundle.sha256 == sha256_hex(pem)
    assert [c.subject.rfc4514_string() for c in bundle.certificates] == ["CN=Bundle Root", "CN=Bundle Issuing"]


def test_an_rsa_signer_works_too(cas):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = pem_of([cas[0].cert])
    bundle = read_answer(signed(manifest_bytes(version=1, published_at=PUBLISHED, pem=pem), key),
                         signer=signer_for(key), now=NOW)
    assert bundle.version == 1 and len(bundle.certificates) == 1


def test_a_manifest_changed_after_signing_is_refused(cas, ec_signer):
    key, signer = ec_signer
    manifest = manifest_bytes(version=3, published_at=PUBLISHED, pem=pem_of([cas[0].cert]))
    tampered = manifest.replace(b'"version":3', b'"version":4')
    assert tampered != manifest
    error = refused(answer(tampered, sign(manifest, key)), signer)
    assert error.code == "bundle_signature_invalid"
    assert "CN=bundle signing" in error.message


def test_a_bundle_signed_by_another_key_is_refused(cas, ec_signer):
    _, signer = ec_signer
    other = ec.generate_private_key(ec.SECP256R1())
    manifest = manifest_bytes(version=3, published_at=PUBLISHED, pem=pem_of([cas[0].cert]))
    assert refused(signed(manifest, other), signer).code == "bundle_signature_invalid"


def test_certificates_that_do_not_match_the_signed_hash_are_refused(cas, ec_signer):
    key, signer = ec_signer
    fields = json.loads(manifest_bytes(version=3, published_at=PUBLISHED, pem=pem_of([cas[0].cert])))
    fields["pem"] = pem_of([c.cert for c in cas])  # one more certificate, the hash left as it was
    manifest = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    assert refused(signed(manifest, key), signer).code == "bundle_hash_mismatch"


def test_an_expired_certificate_is_refused(cas, ec_signer):
    key, signer = ec_signer
    manifest = manifest_bytes(version=3, published_at=PUBLISHED, pem=pem_of([c.cert for c in cas]))
    later = cas[0].cert.not_valid_after_utc + timedelta(days=1)
    error = refused(signed(manifest, key), signer, now=later)
    assert error.code == "bundle_certificate_expired"
    assert "CN=Bundle Root" in error.message


def test_a_certificate_that_is_not_a_ca_is_refused(cas, ec_signer):
    key, signer = ec_signer
    leaf = make_leaf(cas[1], hosts=("server.example",))
    manifest = manifest_bytes(version=3, published_at=PUBLISHED, pem=pem_of([cas[0].cert, leaf.cert]))
    error = refused(signed(manifest, key), signer)
    assert error.code == "bundle_certificate_not_ca"
    assert "CN=server.example" in error.message


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize("body", [
    b"<html>502 Bad Gateway</html>",
    b"\xff\xfe not even text",
    b"[]",
    b'{"manifest": "not base64!", "signature": ""}',
    json.dumps({"signature": _b64(b"x")}).encode(),
    b"{" + b" " * ca_bundle.MAX_ANSWER_BYTES + b"}",
], ids=["html", "binary", "json-list", "bad-base64", "no-manifest", "too-large"])
def test_garbage_is_unreadable(body, ec_signer):
    assert refused(body, ec_signer[1]).code == "bundle_unreadable"


@pytest.mark.parametrize("manifest", [
    b"not json",
    json.dumps({"format": "other/1", "version": 1}).encode(),
    json.dumps({"format": ca_bundle.FORMAT, "version": "one", "published_at": "x", "sha256": "", "pem": ""}).encode(),
], ids=["not-json", "other-format", "bad-fields"])
def test_a_signed_manifest_that_does_not_parse_is_unreadable(manifest, ec_signer):
    key, signer = ec_signer
    assert refused(signed(manifest, key), signer).code == "bundle_unreadable"
