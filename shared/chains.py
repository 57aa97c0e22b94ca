"""Who signed what: checking that a certificate was issued by a CA certificate, and putting
CA certificates in the order a trustpoint installs them (issuing CA first, root last).
Pure functions over ``cryptography`` objects."""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, padding, rsa


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer`` issued ``cert``: its name and its signature.

    cryptography's own check refuses SHA-1 and MD5 signatures outright; those are weak, not
    wrong, and a device with weak-crypto enabled accepts them, so they are verified here
    with the issuer's key directly.
    """
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except InvalidSignature:
        return False
    except (ValueError, TypeError, UnsupportedAlgorithm):
        pass  # an algorithm the strict check does not take: verify it by hand below
    try:
        digest = cert.signature_hash_algorithm
        key = issuer.public_key()
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), digest)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(digest))
        elif isinstance(key, dsa.DSAPublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, digest)
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def issuing_chain(leaf: x509.Certificate, candidates: list[x509.Certificate]) -> list[x509.Certificate]:
    """``candidates`` ordered as a trustpoint installs them: the CA that issued ``leaf`` first, then
    its issuer, up to the root; certificates outside that chain follow in their original order."""
    remaining = [c for c in candidates if c != leaf]
    chain: list[x509.Certificate] = []
    current = leaf
    while remaining:
        issuer = next((c for c in remaining if signed_by(current, c)), None)
        if issuer is None:
            break
        chain.append(issuer)
        remaining.remove(issuer)
        if issuer.subject == issuer.issuer:  # the root
            break
        current = issuer
    return chain + remaining
