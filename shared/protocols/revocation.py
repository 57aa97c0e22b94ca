"""Revocation answers from CRLs (RFC 5280) and OCSP (RFC 6960). Pure: bytes, certificates and
the time in, a :class:`RevocationAnswer` out; fetching and caching are
:mod:`shared.revocation_fetch`'s.

An answer is ``good``, ``revoked`` (with the time and the CRL reason, e.g. ``keyCompromise``)
or ``unknown``. Revocation data is trusted only when it is what it claims to be, so anything
else is ``unknown`` with a stable ``reason`` code and a ``detail`` a person can act on:

- a CRL that does not parse (``crl_unparseable``), names another issuer (``crl_wrong_issuer``),
  is not signed by the issuer (``crl_bad_signature``), is past its nextUpdate (``crl_stale``)
  or not yet valid (``crl_not_yet_valid``), or is of a kind this reader cannot use alone
  (``crl_unsupported``: indirect, delta, partial by reason, unknown critical extension);
- an OCSP answer that does not parse (``ocsp_unparseable``), is not a successful one
  (``ocsp_not_successful``), is signed by neither the issuer nor an OCSP-signing certificate
  the issuer made (``ocsp_unauthorized_responder``), has a bad signature
  (``ocsp_bad_signature``), is about another certificate (``ocsp_cert_id_mismatch``), does not
  echo the nonce sent (``ocsp_nonce_mismatch``), is past its nextUpdate (``ocsp_stale``) or
  not yet valid (``ocsp_not_yet_valid``); a responder that does not know the certificate
  answers ``ocsp_unknown_certificate``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, SignatureAlgorithmOID

from shared.chains import signed_by

Status = Literal["good", "revoked", "unknown"]
Source = Literal["crl", "ocsp"]

#: How far a thisUpdate may lie ahead of the reader's clock: the CA's clock may run a little fast.
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True, kw_only=True)
class RevocationAnswer:
    status: Status
    #: What answered: "crl", "ocsp", or None when nothing was asked (revocation checking off).
    source: Source | None
    #: revoked: the CRL reason (RFC 5280 name, "unspecified" when none is given); unknown: a
    #: stable code for why nothing could be said; good: None, or the code of what was missing
    #: when ``assumed_good``.
    reason: str | None = None
    revoked_at: datetime | None = None
    #: Until when the answer holds (the CRL's or the OCSP answer's nextUpdate).
    next_update: datetime | None = None
    #: The CRL or OCSP URL asked, when one was.
    url: str | None = None
    detail: str = ""
    #: True when no source could answer and the certificate counts as good only because the
    #: trustpoint is set to consider it valid then (``valid_if_unreachable``).
    assumed_good: bool = False


def unknown(source: Source | None, reason: str, detail: str, *, url: str | None = None) -> RevocationAnswer:
    return RevocationAnswer(status="unknown", source=source, reason=reason, detail=detail, url=url)


class UnusableData(Exception):
    """Revocation data that must not be trusted: ``reason`` is the code, the message the detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def _serial(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "X")


# --- CRL ----------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class CrlSnapshot:
    """A CRL checked against its issuer, indexed by serial number: what a cache keeps, so a
    CRL of 100,000 entries is parsed and verified once, not once per certificate."""

    issuer: x509.Name
    this_update: datetime
    next_update: datetime | None
    number: int | None
    #: Which certificates it covers: "all", "ca" or "end_entity" (its issuing distribution point).
    scope: str = "all"
    revoked: Mapping[int, x509.RevokedCertificate] = field(repr=False)

    def stale_at(self, now: datetime) -> bool:
        return self.next_update is not None and now > self.next_update

    def answer_for(self, cert: x509.Certificate, *, now: datetime, url: str | None = None) -> RevocationAnswer:
        """What this CRL says about ``cert`` (issued by the CRL's issuer) at ``now``."""
        if cert.issuer != self.issuer:
            return unknown("crl", "crl_wrong_issuer", f"the CRL{_at(url)} is issued by {self.issuer.rfc4514_string()}, "
                           f"not by the certificate's issuer {cert.issuer.rfc4514_string()}", url=url)
        if self.stale_at(now):
            assert self.next_update is not None
            return unknown("crl", "crl_stale", f"the CRL{_at(url)} expired at its nextUpdate "
                           f"{self.next_update:%Y-%m-%d %H:%M:%S} UTC and the CA has not published a newer one",
                           url=url)
        is_ca = _is_ca(cert)
        if (self.scope == "ca" and not is_ca) or (self.scope == "end_entity" and is_ca):
            covers = "CA" if self.scope == "ca" else "end-entity"
            return unknown("crl", "crl_out_of_scope", f"the CRL{_at(url)} covers {covers} certificates only", url=url)
        entry = self.revoked.get(cert.serial_number)
        if entry is None:
            return RevocationAnswer(status="good", source="crl", next_update=self.next_update, url=url,
                                    detail=f"serial {_serial(cert)} is not on the CRL{_at(url)}")
        reason = _entry_reason(entry)
        return RevocationAnswer(
            status="revoked", source="crl", reason=reason, revoked_at=entry.revocation_date_utc,
            next_update=self.next_update, url=url,
            detail=f"serial {_serial(cert)} was revoked on {entry.revocation_date_utc:%Y-%m-%d %H:%M:%S} UTC "
                   f"({reason}), says the CRL{_at(url)}",
        )


def _at(url: str | None) -> str:
    return f" at {url}" if url else ""


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """A CRL in DER or PEM; UnusableData (``crl_unparseable``) for anything else."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError:
        raise UnusableData("crl_unparseable", "the CRL does not parse (neither DER nor PEM X.509 CRL)") from None


def read_crl(data: bytes | x509.CertificateRevocationList, *, issuer: x509.Certificate, now: datetime
             ) -> CrlSnapshot:
    """The CRL checked as issued by ``issuer`` and usable at ``now``; UnusableData otherwise."""
    crl = data if isinstance(data, x509.CertificateRevocationList) else load_crl(data)
    if crl.issuer != issuer.subject:
        raise UnusableData("crl_wrong_issuer", f"the CRL is issued by {crl.issuer.rfc4514_string()}, not by "
                                               f"{_subject(issuer)}")
    if not _may_sign_crls(issuer):
        raise UnusableData("crl_bad_signature", f"{_subject(issuer)} may not sign CRLs (its key usage lacks cRLSign)")
    try:
        valid = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError, UnsupportedAlgorithm):
        valid = False
    if not valid:
        raise UnusableData("crl_bad_signature",
                           f"the CRL's signature does not verify with the key of {_subject(issuer)}")
    try:
        scope, number = _crl_extensions(crl)
        this_update, next_update = crl.last_update_utc, crl.next_update_utc
        revoked = {entry.serial_number: entry for entry in crl}
    except ValueError as exc:
        raise UnusableData("crl_unparseable", f"the CRL has a malformed part: {exc}") from None
    if this_update > now + CLOCK_SKEW:
        raise UnusableData("crl_not_yet_valid", f"the CRL's thisUpdate {this_update:%Y-%m-%d %H:%M:%S} UTC is in "
                                                "the future; check the clocks of the CA and the device")
    snapshot = CrlSnapshot(issuer=crl.issuer, this_update=this_update, next_update=next_update, number=number,
                           scope=scope, revoked=revoked)
    if snapshot.stale_at(now):
        assert next_update is not None
        raise UnusableData("crl_stale", f"the CRL expired at its nextUpdate {next_update:%Y-%m-%d %H:%M:%S} UTC "
                                        "and the CA has not published a newer one")
    return snapshot


def check_crl(crl_der: bytes, *, cert: x509.Certificate, issuer: x509.Certificate, now: datetime,
              url: str | None = None) -> RevocationAnswer:
    """What the CRL ``crl_der`` (DER or PEM) says about ``cert``, issued by ``issuer``."""
    if cert.issuer != issuer.subject:
        return unknown("crl", "issuer_mismatch", f"{_subject(issuer)} did not issue {_subject(cert)}", url=url)
    try:
        snapshot = read_crl(crl_der, issuer=issuer, now=now)
    except UnusableData as exc:
        return unknown("crl", exc.reason, _with_url(exc.detail, url), url=url)
    return snapshot.answer_for(cert, now=now, url=url)


def _with_url(detail: str, url: str | None) -> str:
    return f"{detail} ({url})" if url else detail


def _crl_extensions(crl: x509.CertificateRevocationList) -> tuple[str, int | None]:
    """(scope, CRL number); UnusableData for a CRL that cannot answer on its own."""
    scope, number = "all", None
    for ext in crl.extensions:
        value = ext.value
        if isinstance(value, x509.CRLNumber):
            number = value.crl_number
        elif isinstance(value, x509.DeltaCRLIndicator):
            raise UnusableData("crl_unsupported", "the CRL is a delta CRL; it answers only with its base CRL")
        elif isinstance(value, x509.IssuingDistributionPoint):
            if value.indirect_crl or value.only_some_reasons:
                raise UnusableData("crl_unsupported", "the CRL is indirect or covers only some reasons")
            if value.only_contains_ca_certs:
                scope = "ca"
            elif value.only_contains_user_certs:
                scope = "end_entity"
        elif ext.critical and isinstance(value, x509.UnrecognizedExtension):
            raise UnusableData("crl_unsupported", f"the CRL has a critical extension {ext.oid.dotted_string} "
                                                  "this device does not know")
    return scope, number


def _entry_reason(entry: x509.RevokedCertificate) -> str:
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.value
    except (x509.ExtensionNotFound, ValueError):
        return x509.ReasonFlags.unspecified.value


def _may_sign_crls(issuer: x509.Certificate) -> bool:
    try:
        return issuer.extensions.get_extension_for_class(x509.KeyUsage).value.crl_sign
    except (x509.ExtensionNotFound, ValueError):
        return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (x509.ExtensionNotFound, ValueError):
        return False


# --- OCSP ---------------------------------------------------------------------------------------

def ocsp_request(cert: x509.Certificate, issuer: x509.Certificate, *, nonce: bytes | None = None) -> bytes:
    """A DER OCSP request about ``cert`` (CertID with SHA-1, as responders expect), with a nonce
    extension when ``nonce`` is given."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def issuer_key_hash(issuer: x509.Certificate) -> bytes:
    """SHA-1 of the issuer's public key bits: how OCSP names a key (and a cache names an issuer)."""
    return x509.SubjectKeyIdentifier.from_public_key(issuer.public_key()).digest  # type: ignore[arg-type]


def check_ocsp(response_der: bytes, *, cert: x509.Certificate, issuer: x509.Certificate, now: datetime,
               nonce: bytes | None, url: str | None = None) -> RevocationAnswer:
    """What the OCSP answer ``response_der`` says about ``cert``, issued by ``issuer``, for a
    request sent with ``nonce`` (None: sent without)."""
    try:
        return _read_ocsp(response_der, cert=cert, issuer=issuer, now=now, nonce=nonce, url=url)
    except UnusableData as exc:
        return unknown("ocsp", exc.reason, _with_url(exc.detail, url), url=url)


def _read_ocsp(data: bytes, *, cert: x509.Certificate, issuer: x509.Certificate, now: datetime,
               nonce: bytes | None, url: str | None) -> RevocationAnswer:
    if cert.issuer != issuer.subject:
        raise UnusableData("issuer_mismatch", f"{_subject(issuer)} did not issue {_subject(cert)}")
    try:
        response = ocsp.load_der_ocsp_response(data)
    except ValueError:
        raise UnusableData("ocsp_unparseable", "the OCSP answer does not parse") from None
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise UnusableData("ocsp_not_successful",
                           f"the OCSP responder answered {response.response_status.name.lower()}")
    try:
        signer = _responder(response, issuer=issuer, now=now)
        _verify_signature(response, signer)
        single = _single_response(response, cert=cert, issuer=issuer)
        _check_nonce(response, nonce)
        this_update, next_update = single.this_update_utc, single.next_update_utc
        status = single.certificate_status
        revoked_at, reason = single.revocation_time_utc, single.revocation_reason
    except ValueError as exc:
        raise UnusableData("ocsp_unparseable", f"the OCSP answer has a malformed part: {exc}") from None
    if this_update > now + CLOCK_SKEW:
        raise UnusableData("ocsp_not_yet_valid", f"the OCSP answer's thisUpdate {this_update:%Y-%m-%d %H:%M:%S} "
                                                 "UTC is in the future; check the clocks of the CA and the device")
    if next_update is not None and now > next_update:
        raise UnusableData("ocsp_stale", f"the OCSP answer expired at its nextUpdate "
                                         f"{next_update:%Y-%m-%d %H:%M:%S} UTC")
    serial = _serial(cert)
    if status is ocsp.OCSPCertStatus.GOOD:
        return RevocationAnswer(status="good", source="ocsp", next_update=next_update, url=url,
                                detail=f"serial {serial} is good, says the OCSP responder{_at(url)}")
    if status is ocsp.OCSPCertStatus.REVOKED:
        name = (reason or x509.ReasonFlags.unspecified).value
        return RevocationAnswer(
            status="revoked", source="ocsp", reason=name, revoked_at=revoked_at, next_update=next_update, url=url,
            detail=f"serial {serial} was revoked on {revoked_at:%Y-%m-%d %H:%M:%S} UTC ({name}), says the OCSP "
                   f"responder{_at(url)}",
        )
    raise UnusableData("ocsp_unknown_certificate", f"the OCSP responder does not know serial {serial}")


def _responder(response: ocsp.OCSPResponse, *, issuer: x509.Certificate, now: datetime) -> x509.Certificate:
    """The certificate that signed the answer: the issuer, or an OCSP-signing certificate the
    issuer made (RFC 6960 4.2.2.2) sent with the answer."""
    if response.responder_name is not None:
        name = response.responder_name

        def names(c: x509.Certificate) -> bool:
            return c.subject == name
        described = name.rfc4514_string()
    else:
        key_hash = response.responder_key_hash

        def names(c: x509.Certificate) -> bool:
            return issuer_key_hash(c) == key_hash
        described = f"key {key_hash.hex() if key_hash else '?'}"
    if names(issuer):
        return issuer
    delegate = next((c for c in response.certificates if names(c)), None)
    if delegate is None:
        raise UnusableData("ocsp_unauthorized_responder",
                           f"the OCSP answer is signed by {described}, neither the issuer {_subject(issuer)} "
                           "nor an OCSP-signing certificate sent with the answer")
    if not signed_by(delegate, issuer):
        raise UnusableData("ocsp_unauthorized_responder",
                           f"the OCSP answer is signed by {_subject(delegate)}, which {_subject(issuer)} did not "
                           "issue")
    try:
        ekus = delegate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        ekus = x509.ExtendedKeyUsage([])
    if ExtendedKeyUsageOID.OCSP_SIGNING not in ekus:
        raise UnusableData("ocsp_unauthorized_responder",
                           f"the OCSP answer is signed by {_subject(delegate)}, which is not authorised for OCSP "
                           "signing (no id-kp-OCSPSigning extended key usage)")
    if not delegate.not_valid_before_utc <= now <= delegate.not_valid_after_utc:
        raise UnusableData("ocsp_unauthorized_responder",
                           f"the OCSP signing certificate {_subject(delegate)} is not valid now (valid "
                           f"{delegate.not_valid_before_utc:%Y-%m-%d} to {delegate.not_valid_after_utc:%Y-%m-%d})")
    return delegate


def _verify_signature(response: ocsp.OCSPResponse, signer: x509.Certificate) -> None:
    """The answer's signature with the signer's key, as the answer's algorithm says."""
    key = signer.public_key()
    data, signature = response.tbs_response_bytes, response.signature
    try:
        digest = response.signature_hash_algorithm
        if isinstance(key, rsa.RSAPublicKey):
            if response.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS:
                assert digest is not None
                pad: padding.AsymmetricPadding = padding.PSS(mgf=padding.MGF1(digest),
                                                             salt_length=padding.PSS.AUTO)
            else:
                pad = padding.PKCS1v15()
            key.verify(signature, data, pad, digest)  # type: ignore[arg-type]
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(digest))  # type: ignore[arg-type]
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
        elif isinstance(key, dsa.DSAPublicKey):
            key.verify(signature, data, digest)  # type: ignore[arg-type]
        else:
            raise UnusableData("ocsp_bad_signature", f"the OCSP signer's key ({type(key).__name__}) is not supported")
    except (InvalidSignature, UnsupportedAlgorithm, TypeError, AssertionError):
        raise UnusableData("ocsp_bad_signature",
                           f"the OCSP answer's signature does not verify with the key of {_subject(signer)}") from None


def _single_response(response: ocsp.OCSPResponse, *, cert: x509.Certificate, issuer: x509.Certificate
                     ) -> ocsp.OCSPSingleResponse:
    """The answer's entry for ``cert``: same serial, issuer name hash and issuer key hash."""
    for single in response.responses:
        if single.serial_number != cert.serial_number:
            continue
        try:
            expected = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, single.hash_algorithm).build()
        except (UnsupportedAlgorithm, ValueError, TypeError):
            continue
        if (single.issuer_name_hash, single.issuer_key_hash) == (expected.issuer_name_hash, expected.issuer_key_hash):
            return single
    raise UnusableData("ocsp_cert_id_mismatch",
                       f"the OCSP answer is not about serial {_serial(cert)} of {_subject(issuer)}")


def _check_nonce(response: ocsp.OCSPResponse, nonce: bytes | None) -> None:
    if nonce is None:
        return
    try:
        echoed = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        raise UnusableData("ocsp_nonce_mismatch", "the OCSP answer does not echo the nonce the request sent "
                                                  "(a replayed or pre-made answer)") from None
    if echoed != nonce:
        raise UnusableData("ocsp_nonce_mismatch", "the OCSP answer carries another nonce than the request sent "
                                                  "(a replayed answer)")
