"""The issuing CA's OCSP responder (RFC 6960), bytes in and bytes out; the transport is
:mod:`.revocation_server`.

- A request about a certificate of the issuing CA (its CertID's issuer name and key hashes,
  SHA-1 or SHA-2, match) is answered ``good``, ``revoked`` (time and, unless unspecified,
  reason) or ``unknown`` for a serial the CA never issued, from the ledger as it is at that
  moment, so a revocation by another process shows at once. A nonce (RFC 8954: 1 to 32 octets)
  is echoed.
- Answers are signed by a delegated responder certificate the issuing CA issued for it
  (id-kp-OCSPSigning, id-pkix-ocsp-nocheck; sent along in the answer), or with
  ``delegated=False`` by the issuing CA itself. The responder is named by its key hash.
- What is not an OCSP request gets a ``malformedRequest`` answer; a request about another CA
  ``unauthorized``; a busy ledger ``tryLater``; a fault of ours ``internalError``. Never an
  exception: the transport answers every request with 200 and what this returns.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509 import ocsp

from services.ca_sim.authority import OCSP_SIGNER_RENEW_BEFORE, CertificateAuthority, ensure_ocsp_signer
from services.ca_sim.ledger import Ledger
from shared.clock import utcnow
from shared.logging import get_logger
from shared.pki import PrivateKey

log = get_logger("ca.ocsp")

#: An OCSP request about one certificate is about 100 bytes; a larger one is refused unread.
MAX_REQUEST_BYTES = 64 * 1024
#: How long an answer may be relied on (its nextUpdate); None leaves nextUpdate out, which
#: tells a client that newer information is always available.
DEFAULT_VALIDITY: timedelta | None = timedelta(minutes=10)
#: CertID hashes accepted: SHA-1 (what most clients send) and SHA-2.
CERT_ID_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
#: RFC 8954 2.1: a nonce is 1 to 32 octets.
MAX_NONCE_BYTES = 32


@dataclass(frozen=True)
class OcspAnswer:
    der: bytes
    #: The OCSPResponseStatus ("successful", "malformedRequest", ...).
    response_status: str
    #: good, revoked or unknown for a successful answer.
    cert_status: str | None = None
    serial: int | None = None
    next_update: datetime | None = None


class MalformedRequest(ValueError):
    pass


def _key_bits(public_key) -> bytes:
    """The content of the certificate's subjectPublicKey BIT STRING, which the CertID's key hash covers."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    raise TypeError(f"unsupported CA key {type(public_key).__name__}")


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize()


class OcspResponder:
    def __init__(self, ca: CertificateAuthority, *, delegated: bool = True,
                 validity: timedelta | None = DEFAULT_VALIDITY, clock: Callable[[], datetime] = utcnow) -> None:
        if ca.ledger is None:
            raise ValueError("the CA keeps no ledger of what it issued and revoked")
        if validity is not None and validity < timedelta(seconds=1):
            raise ValueError(f"an OCSP answer must be valid for at least a second, not {validity}")
        self.ca = ca
        self.ledger: Ledger = ca.ledger
        self.delegated = delegated
        self.validity = validity
        self.clock = clock
        self._lock = threading.Lock()
        name, key = ca.issuing.subject.public_bytes(), _key_bits(ca.issuing.public_key())
        self._issuer_hashes = {alg: (_digest(cls(), name), _digest(cls(), key)) for alg, cls in CERT_ID_HASHES.items()}
        self._signer: tuple[x509.Certificate, PrivateKey] | None = None
        if delegated:
            self._signer = ensure_ocsp_signer(ca, now=clock())

    def signer(self, now: datetime | None = None) -> tuple[x509.Certificate, PrivateKey]:
        """The certificate and key answers are signed with; a delegated one is replaced before it ends."""
        if not self.delegated:
            return self.ca.issuing, self.ca.issuing_key
        now = now or self.clock()
        with self._lock:
            assert self._signer is not None
            if self._signer[0].not_valid_after_utc - now <= OCSP_SIGNER_RENEW_BEFORE:
                self._signer = ensure_ocsp_signer(self.ca, now=now)
            return self._signer

    def answer(self, der: bytes) -> OcspAnswer:
        try:
            request, nonce = _parse(der)
        except MalformedRequest as exc:
            log.info("ocsp request malformed", reason=str(exc))
            return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        try:
            return self._answer(request, nonce)
        except sqlite3.OperationalError as exc:  # the ledger locked by a long write: ask again shortly
            log.warning("ocsp answer deferred", error=str(exc))
            return _unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER)
        except Exception:
            log.exception("ocsp answer failed", serial=format(request.serial_number, "x"))
            return _unsuccessful(ocsp.OCSPResponseStatus.INTERNAL_ERROR)

    def _answer(self, request: ocsp.OCSPRequest, nonce: bytes | None) -> OcspAnswer:
        try:
            algorithm = request.hash_algorithm
        except UnsupportedAlgorithm:
            algorithm = None
        if algorithm is None or self._issuer_hashes.get(algorithm.name) != (
                request.issuer_name_hash, request.issuer_key_hash):
            log.info("ocsp request for another issuer", serial=format(request.serial_number, "x"))
            return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
        now = self.clock()
        this_update = now.replace(microsecond=0)
        next_update = this_update + self.validity if self.validity else None
        state = self.ledger.lookup(request.serial_number)
        revocation = state.revocation if state else None
        if state is None:
            status = ocsp.OCSPCertStatus.UNKNOWN
        elif revocation is not None:
            status = ocsp.OCSPCertStatus.REVOKED
        else:
            status = ocsp.OCSPCertStatus.GOOD
        cert, key = self.signer(now)
        builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
            issuer_name_hash=request.issuer_name_hash, issuer_key_hash=request.issuer_key_hash,
            serial_number=request.serial_number, algorithm=algorithm, cert_status=status,
            this_update=this_update, next_update=next_update,
            revocation_time=revocation.revoked_at if revocation else None,
            revocation_reason=revocation.reason_flag if revocation else None,
        ).responder_id(ocsp.OCSPResponderEncoding.HASH, cert)
        if self.delegated:
            builder = builder.certificates([cert])
        if nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
        der = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
        return OcspAnswer(der, "successful", status.name.lower(), request.serial_number, next_update)


def _parse(der: bytes) -> tuple[ocsp.OCSPRequest, bytes | None]:
    if not der:
        raise MalformedRequest("the request is empty")
    if len(der) > MAX_REQUEST_BYTES:
        raise MalformedRequest(f"the request exceeds {MAX_REQUEST_BYTES} bytes")
    try:
        request = ocsp.load_der_ocsp_request(der)
        extensions = request.extensions
    except (ValueError, NotImplementedError) as exc:  # NotImplementedError: several certificates in one
        raise MalformedRequest(str(exc)) from None
    try:
        nonce = extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return request, None
    if not 1 <= len(nonce) <= MAX_NONCE_BYTES:
        raise MalformedRequest(f"the nonce has {len(nonce)} octets; RFC 8954 allows 1 to {MAX_NONCE_BYTES}")
    return request, nonce


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> OcspAnswer:
    der = ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)
    name = {ocsp.OCSPResponseStatus.MALFORMED_REQUEST: "malformedRequest",
            ocsp.OCSPResponseStatus.INTERNAL_ERROR: "internalError",
            ocsp.OCSPResponseStatus.TRY_LATER: "tryLater",
            ocsp.OCSPResponseStatus.UNAUTHORIZED: "unauthorized"}[status]
    return OcspAnswer(der, name)
