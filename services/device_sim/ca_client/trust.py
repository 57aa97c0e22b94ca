"""How a device decides to trust a CA's HTTPS server, and how it reads the CA chain it serves.

The enrollment object chooses one of three ways:

- **trust anchors** (the default): the server's TLS certificate must chain to one of the
  device's trust anchors (``certfleet device-sim --trust-anchor FILE``) or to a certificate of
  the CA bundle certfleet pushed to it (:mod:`services.device_sim.ca_bundles`), and name the
  URL's host;
- **fingerprint**: the device fetches ``/cacerts`` without checking the server (nothing secret
  is sent), keeps the CA certificate whose digest is the enrollment object's fingerprint, and
  from then on verifies the server against that certificate alone, so the EST password only
  goes to a server that CA vouches for. Like the management center's "CA fingerprint", it is
  the digest of a CA certificate the server serves at ``/cacerts`` (the issuing CA or the
  root), in hex, colons and case ignored: SHA-256, or MD5/SHA-1/SHA-384/SHA-512 by its length;
- **ignore server certificate validation**: no check at all (a lab CA).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.bindings.openssl.binding import Binding
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto

from services.device_sim.ca_client.network import CaFailure
from services.device_sim.ca_client.tls import check_server
from services.device_sim.tasks import CurrentIdentity
from shared.certificate_import import has_ca_flag
from shared.errors import ConfigurationError

_OPENSSL = Binding()

#: Digest lengths in hex digits -> the hash they come from.
FINGERPRINT_HASHES = {32: "md5", 40: "sha1", 64: "sha256", 96: "sha384", 128: "sha512"}


# --- trust anchors ------------------------------------------------------------------------------

def load_trust_anchors(paths: Sequence[str | Path]) -> str:
    """The certificates in the PEM files ``paths``, as one PEM text ("" for no files)."""
    pems: list[str] = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"trust anchor {path}: cannot read it ({exc.strerror or exc})") from None
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError:
            raise ConfigurationError(
                f"trust anchor {path} holds no PEM certificate; give a file such as the CA "
                "simulator's DIR/tls-ca.pem"
            ) from None
        pems += [c.public_bytes(serialization.Encoding.PEM).decode() for c in certs]
    return "".join(pems)


# --- fingerprints -------------------------------------------------------------------------------

def normalise_fingerprint(text: str) -> str:
    return text.replace(":", "").replace(" ", "").strip().lower()


def configured_fingerprint(text: str, *, code: str) -> str:
    """An enrollment object's CA fingerprint, normalised ("" for none); CaFailure with ``code``
    unless it is a hex digest of one of the hashes a fingerprint may use."""
    fp = normalise_fingerprint(text)
    if fp and (len(fp) not in FINGERPRINT_HASHES or any(c not in "0123456789abcdef" for c in fp)):
        raise CaFailure(f"fingerprint {text!r} is not a hex digest; give the SHA-256 fingerprint of the CA "
                        "certificate (64 hex digits, colons allowed)", code=code)
    return fp


def fingerprint(cert: x509.Certificate, *, length: int = 64) -> str:
    """The certificate's digest in hex with the hash a fingerprint of ``length`` digits uses."""
    der = cert.public_bytes(serialization.Encoding.DER)
    return hashlib.new(FINGERPRINT_HASHES.get(length, "sha256"), der).hexdigest()


def pinned_certificate(chain: Sequence[x509.Certificate], wanted: str) -> x509.Certificate | None:
    """The certificate of ``chain`` whose fingerprint is ``wanted``, if any."""
    wanted = normalise_fingerprint(wanted)
    return next((c for c in chain if fingerprint(c, length=len(wanted)) == wanted), None)


# --- the CA chain -------------------------------------------------------------------------------

def order_ca_chain(certs: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """The issuing CA first, then each issuer up to the root.

    A certs-only PKCS#7 is a SET: its order says nothing. The issuing CA is the certificate
    that issued none of the others; certificates outside its chain are left out. ValueError
    when there is no single such chain or a link does not verify.
    """
    if not certs:
        raise ValueError("it serves no CA certificate")
    issuers = {c.issuer for c in certs if c.issuer != c.subject}
    lowest = [c for c in certs if c.subject not in issuers]
    if len(lowest) != 1:
        names = ", ".join(c.subject.rfc4514_string() for c in lowest) or "none"
        raise ValueError(f"its CA certificates do not form one chain (lowest: {names})")
    by_subject = {c.subject: c for c in certs}
    chain = [lowest[0]]
    while len(chain) < len(certs) and chain[-1].issuer != chain[-1].subject:
        issuer = by_subject.get(chain[-1].issuer)
        if issuer is None:
            break  # the server does not serve the root: the chain ends at the highest CA it has
        try:
            chain[-1].verify_directly_issued_by(issuer)
        except (InvalidSignature, ValueError, TypeError):
            raise ValueError(
                f"{chain[-1].subject.rfc4514_string()} is not signed by {issuer.subject.rfc4514_string()}"
            ) from None
        chain.append(issuer)
    return chain


def refuse_without_ca_flag(chain: Sequence[x509.Certificate], *, url: str) -> None:
    """CaFailure when a CA certificate the server serves has no CA flag in its basic constraints
    (an enrollment object may skip this check: skip_ca_flag_check)."""
    for cert in chain:
        if not has_ca_flag(cert):
            raise CaFailure(
                f"CA at {url} serves {cert.subject.rfc4514_string()} as a CA certificate, but it has no CA flag in "
                "its basic constraints; the device does not install it. Have the CA certificate issued with the "
                "CA flag, or set the enrollment object's skip_ca_flag_check",
                code="not_a_ca_certificate",
            )


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


# --- TLS contexts -------------------------------------------------------------------------------

#: TLS 1.2 cipher suites as the ``ssl`` module offered them (its default string), so moving to
#: pyOpenSSL changed no device's offer; TLS 1.3 suites are OpenSSL's defaults either way.
TLS12_CIPHERS = b"@SECLEVEL=2:ECDH+AESGCM:ECDH+CHACHA20:ECDH+AES:DHE+AES:!aNULL:!eNULL:!aDSS:!SHA1:!AESCCM"

#: Key-exchange groups the device offers, the post-quantum hybrid first, but with a key share for
#: X25519 alone (``*``): a CA that has the hybrid asks for it (one more round trip), and every other
#: CA takes X25519 at once. OpenSSL's default sends an ML-KEM share as well, a key pair made on every
#: connection (about 90 us of the device's CPU) that such a CA never uses.
TLS_GROUPS = b"X25519MLKEM768:*X25519:P-256:X448:P-384:P-521"
#: The same offer for an OpenSSL without the hybrid or the ``*`` syntax (before 3.5).
TLS_GROUPS_CLASSIC = b"X25519:P-256:X448:P-384:P-521"


def client_context(*, verify: bool, anchors_pem: str = "", identity: CurrentIdentity | None = None
                   ) -> SSL.Context:
    """A TLS client context for :class:`.tls.TlsConnection`: verifying the server against
    ``anchors_pem`` (none: nothing is trusted) and the URL's host, or not at all; presenting
    ``identity`` as client certificate when given."""
    if identity is None:
        return _shared_context(verify, anchors_pem)
    ctx = _new_context(verify, anchors_pem)
    # pyOpenSSL takes the certificate and key as they are: they never touch a file.
    ctx.use_certificate(identity.certificate)
    ctx.use_privatekey(identity.private_key)
    return ctx


@lru_cache(maxsize=32)
def _shared_context(verify: bool, anchors_pem: str) -> SSL.Context:
    # Contexts are thread-safe once built (the verify callback keeps its state on the connection);
    # building one per enrollment would waste the CPU.
    return _new_context(verify, anchors_pem)


def _offer_groups(ctx: SSL.Context) -> None:
    # pyOpenSSL has no call for the group list; OpenSSL's, under its older name, is in the binding.
    for groups in (TLS_GROUPS, TLS_GROUPS_CLASSIC):
        if _OPENSSL.lib.SSL_CTX_set1_curves_list(ctx._context, groups) == 1:  # noqa: SLF001
            return
        _OPENSSL.lib.ERR_clear_error()  # the refusal must not surface as a later call's error
    raise RuntimeError("OpenSSL took neither list of TLS key-exchange groups")


def _new_context(verify: bool, anchors_pem: str) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_cipher_list(TLS12_CIPHERS)
    _offer_groups(ctx)
    if not verify:
        ctx.set_verify(SSL.VERIFY_NONE)
        return ctx
    store = ctx.get_cert_store()
    assert store is not None  # a new context has its store
    for cert in x509.load_pem_x509_certificates(anchors_pem.encode()) if anchors_pem else ():
        store.add_cert(crypto.X509.from_cryptography(cert))
    # A pinned issuing CA is a trust anchor by itself: no need to reach a self-signed root.
    store.set_flags(crypto.X509StoreFlags.PARTIAL_CHAIN)
    ctx.set_verify(SSL.VERIFY_PEER, check_server)
    return ctx
