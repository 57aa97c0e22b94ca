"""Pure certificate building for the CA simulator: the root, the issuing CA, the EST server's
TLS certificate, the CA bundle's signing certificate, the OCSP responder's signing certificate
and the certificates issued from requests. No I/O; the clock is a parameter.

Everything issued here is meant to lint clean with pkilint (RFC 5280): random positive serials
of at most 20 octets, SKI on every certificate and AKI on every one but the root, critical key
usage fitting the key type, and no empty subject unless the subjectAltName is critical.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from ipaddress import ip_address

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from services.ca_sim.profiles import CertificateProfile
from shared.errors import ValidationError
from shared.pki import PrivateKey

ROOT_VALIDITY = timedelta(days=20 * 365)
ISSUING_VALIDITY = timedelta(days=10 * 365)
TLS_VALIDITY = timedelta(days=365)
#: Issued certificates start a little in the past, so a device whose clock lags still accepts them.
BACKDATE = timedelta(minutes=5)
#: ... but never more than this share of an issued certificate's lifetime: a certificate of a
#: few seconds (``--validity-seconds``, for renewal tests and demos) backdated by five minutes
#: would be mostly over when issued, and due for renewal at once.
BACKDATE_SHARE = 0.1
#: Keys the CA signs requests for: RSA of at least this size, the NIST curves, Ed25519.
MIN_RSA_BITS = 1024
CURVES = ("secp256r1", "secp384r1", "secp521r1")
#: Names the CSR may ask for in its subjectAltName; others are dropped, not copied.
SAN_TYPES = (x509.DNSName, x509.IPAddress, x509.RFC822Name, x509.UniformResourceIdentifier)


@dataclass(frozen=True)
class RevocationUrls:
    """Where a relying party asks about an issued certificate: the CRL distribution point and
    the OCSP responder (AIA), both plain HTTP as RFC 5280 expects."""

    crl: str
    ocsp: str

    def extensions(self) -> tuple[x509.ExtensionType, ...]:
        return (
            x509.CRLDistributionPoints([x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(self.crl)], relative_name=None, reasons=None,
                crl_issuer=None,
            )]),
            x509.AuthorityInformationAccess([x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(self.ocsp),
            )]),
        )


def ca_name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certfleet CA simulator"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _signing_hash(key: PrivateKey, wanted: hashes.HashAlgorithm | None = None) -> hashes.HashAlgorithm | None:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None  # EdDSA has its hash built in
    return wanted or hashes.SHA256()


def _key_usage(*, digital_signature=False, key_encipherment=False, key_agreement=False,
               content_commitment=False, ca=False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=content_commitment,
        key_encipherment=key_encipherment, data_encipherment=False, key_agreement=key_agreement,
        key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False,
    )


def _ca_certificate(*, subject: x509.Name, public_key, issuer: x509.Certificate | None,
                    signing_key: PrivateKey, not_before: datetime, not_after: datetime,
                    path_length: int | None) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(digital_signature=True, ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(_authority_key_id(issuer), critical=False)
    return builder.sign(signing_key, _signing_hash(signing_key))


def _authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def build_root(key: PrivateKey, *, now: datetime) -> x509.Certificate:
    return _ca_certificate(
        subject=ca_name("certfleet Root CA"), public_key=key.public_key(), issuer=None, signing_key=key,
        not_before=now - BACKDATE, not_after=now + ROOT_VALIDITY, path_length=None,
    )


def build_issuing(key: PrivateKey, *, root: x509.Certificate, root_key: PrivateKey,
                  now: datetime) -> x509.Certificate:
    return _ca_certificate(
        subject=ca_name("certfleet Issuing CA"), public_key=key.public_key(), issuer=root,
        signing_key=root_key, not_before=now - BACKDATE,
        not_after=min(now + ISSUING_VALIDITY, root.not_valid_after_utc), path_length=0,
    )


def _end_entity_key_usage(public_key, allowed: frozenset[str]) -> x509.KeyUsage:
    """The profile's usages that make sense for this key: only RSA keys encrypt keys, only EC
    keys agree on them."""
    is_rsa = isinstance(public_key, rsa.RSAPublicKey)
    is_ec = isinstance(public_key, ec.EllipticCurvePublicKey)
    return _key_usage(
        digital_signature="digital_signature" in allowed,
        content_commitment="content_commitment" in allowed,
        key_encipherment=is_rsa and "key_encipherment" in allowed,
        key_agreement=is_ec and "key_agreement" in allowed,
    )


def _end_entity(*, subject: x509.Name, public_key, sans: list[x509.GeneralName], issuer: x509.Certificate,
                issuer_key: PrivateKey, not_before: datetime, not_after: datetime, key_usage: x509.KeyUsage,
                ekus: tuple[x509.ObjectIdentifier, ...], hash_algorithm: hashes.HashAlgorithm | None,
                extra: tuple[x509.ExtensionType, ...] = ()) -> x509.Certificate:
    if not (key_usage.digital_signature or key_usage.key_encipherment or key_usage.key_agreement
            or key_usage.content_commitment):
        key_usage = _key_usage(digital_signature=True)  # a KeyUsage extension may not be empty
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(min(not_after, issuer.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_id(issuer), critical=False)
    )
    if ekus:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
    if sans:
        # RFC 5280 4.2.1.6: with an empty subject the identity lives in the SAN, which is then critical.
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=len(subject) == 0)
    for extension in extra:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(issuer_key, _signing_hash(issuer_key, hash_algorithm))


def build_tls_server(public_key, *, names: list[str], issuer: x509.Certificate, issuer_key: PrivateKey,
                     now: datetime) -> x509.Certificate:
    """The EST server's certificate: SANs for every name or address a client may dial."""
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    return _end_entity(
        subject=x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certfleet CA simulator"),
            x509.NameAttribute(NameOID.COMMON_NAME, "certfleet EST server"),
        ]),
        public_key=public_key, sans=sans, issuer=issuer, issuer_key=issuer_key,
        not_before=now - BACKDATE, not_after=now + TLS_VALIDITY,
        key_usage=_end_entity_key_usage(public_key, frozenset({"digital_signature", "key_encipherment"})),
        ekus=(ExtendedKeyUsageOID.SERVER_AUTH,), hash_algorithm=None,
    )


def build_bundle_signer(public_key, *, issuer: x509.Certificate, issuer_key: PrivateKey,
                        now: datetime) -> x509.Certificate:
    """The certificate receivers pin to check the CA bundles this CA publishes: it signs, and
    certifies nothing (no CA, no TLS), so pinning it trusts no other use of the key."""
    return _end_entity(
        subject=x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certfleet CA simulator"),
            x509.NameAttribute(NameOID.COMMON_NAME, "certfleet CA bundle signing"),
        ]),
        public_key=public_key, sans=[], issuer=issuer, issuer_key=issuer_key,
        not_before=now - BACKDATE, not_after=now + ISSUING_VALIDITY,
        key_usage=_key_usage(digital_signature=True), ekus=(), hash_algorithm=None,
    )


def build_ocsp_signer(public_key, *, issuer: x509.Certificate, issuer_key: PrivateKey, now: datetime,
                      validity: timedelta) -> x509.Certificate:
    """The OCSP responder's delegated signing certificate (RFC 6960 4.2.2.2): issued by the CA
    whose certificates it speaks for, id-kp-OCSPSigning and nothing else, and id-pkix-ocsp-nocheck,
    since nobody could ask about the responder's own certificate without trusting it already.
    Short-lived for that reason; the responder replaces it before it ends."""
    return _end_entity(
        subject=x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certfleet CA simulator"),
            x509.NameAttribute(NameOID.COMMON_NAME, "certfleet OCSP responder"),
        ]),
        public_key=public_key, sans=[], issuer=issuer, issuer_key=issuer_key,
        not_before=now - BACKDATE, not_after=now + validity,
        key_usage=_key_usage(digital_signature=True), ekus=(ExtendedKeyUsageOID.OCSP_SIGNING,),
        hash_algorithm=None, extra=(x509.OCSPNoCheck(),),
    )


def check_request_key(public_key) -> None:
    """Refuse keys the CA does not certify, with the reason."""
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise ValidationError(
                f"RSA key of {public_key.key_size} bits is too small; use at least {MIN_RSA_BITS} bits",
                code="unsupported_key",
            )
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in CURVES:
            raise ValidationError(
                f"elliptic curve {public_key.curve.name} is not supported; use P-256, P-384 or P-521",
                code="unsupported_key",
            )
    elif not isinstance(public_key, ed25519.Ed25519PublicKey):
        raise ValidationError(
            f"{type(public_key).__name__} keys are not supported; use RSA, ECDSA or Ed25519",
            code="unsupported_key",
        )


def requested_sans(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    """The subjectAltNames a request asks for (names of other kinds are not copied)."""
    try:
        ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    except ValueError as exc:
        raise ValidationError(f"the request's extensions cannot be parsed: {exc}", code="bad_csr") from exc
    return [name for name in ext.value if isinstance(name, SAN_TYPES)]


def certified_sans(cert: x509.Certificate) -> list[x509.GeneralName]:
    """The subjectAltNames a certificate carries (of the kinds this CA issues)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [name for name in ext.value if isinstance(name, SAN_TYPES)]


def requested_names(csr: x509.CertificateSigningRequest) -> tuple[x509.Name, frozenset[x509.GeneralName]]:
    """What a certificate issued from the request is for: its subject and subjectAltNames."""
    return csr.subject, frozenset(requested_sans(csr))


def renewal_name_change(csr: x509.CertificateSigningRequest, old: x509.Certificate) -> str | None:
    """Why a renewal request may not be issued: it asks for names the certificate it renews
    does not hold (a renewal is authenticated by that certificate, so it vouches for those
    names only). None when the request keeps them; a request without subjectAltNames keeps
    them too (the certificate then names fewer)."""
    if csr.subject != old.subject:
        return (f"the renewal asks for subject {csr.subject.rfc4514_string()!r} but renews "
                f"{old.subject.rfc4514_string()!r}; keep the subject, or enroll anew")
    asked = frozenset(requested_sans(csr))
    held = frozenset(certified_sans(old))
    if asked and asked != held:
        return (f"the renewal asks for subjectAltNames {_names(asked)} but renews a certificate for "
                f"{_names(held) or 'none'}; keep the subjectAltNames, or enroll anew")
    return None


def _names(names: frozenset[x509.GeneralName]) -> str:
    return ", ".join(sorted(str(name.value) for name in names))


def backdate_for(validity: timedelta) -> timedelta:
    """How far before issuance a certificate valid ``validity`` from now starts."""
    return min(BACKDATE, validity * BACKDATE_SHARE)


def issue_from_request(csr: x509.CertificateSigningRequest, profile: CertificateProfile, *,
                       issuer: x509.Certificate, issuer_key: PrivateKey, now: datetime,
                       validity: timedelta | None = None, revocation: RevocationUrls | None = None
                       ) -> x509.Certificate:
    """Sign a (signature-checked) request under a profile: the subject and subjectAltNames come
    from the request; key usage, EKU, validity and hash from the profile. ``validity``, when
    given, replaces the profile's: the certificate ends that long after ``now``. ``revocation``
    puts a CRL distribution point and an OCSP URL in it."""
    public_key = csr.public_key()
    check_request_key(public_key)
    sans = requested_sans(csr)
    if len(csr.subject) == 0 and not sans:
        raise ValidationError(
            "the request has an empty subject and no subjectAltName; put the device's name in the "
            "subject (e.g. CN=...) or in a subjectAltName",
            code="empty_subject",
        )
    validity = validity or timedelta(days=profile.validity_days)
    return _end_entity(
        subject=csr.subject, public_key=public_key, sans=sans, issuer=issuer, issuer_key=issuer_key,
        not_before=now - backdate_for(validity), not_after=now + validity,
        key_usage=_end_entity_key_usage(public_key, profile.key_usage),
        ekus=profile.extended_key_usage, hash_algorithm=profile.hash_algorithm(),
        extra=revocation.extensions() if revocation else (),
    )
